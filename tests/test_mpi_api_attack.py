"""The Python API on several ranks when one rank's arguments differ from the
others': every rank raises the same exception instead of leaving the others
waiting in a collective for good."""
import os

import pytest
from mpi4py import MPI

import solver
from solver import ConfigError

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]

world = MPI.COMM_WORLD
SMALL = {"heat": {"shape": [8, 6]}, "time": {"steps": 6}}


def _sim(path, **set_):
    return solver.Simulation(SMALL, set=set_ or None, output=os.path.join(path, "run"), backend="numpy", quiet=True)


def test_a_bad_t_end_on_one_rank_raises_on_every_rank_and_the_simulation_goes_on(shared_tmp):
    with _sim(shared_tmp) as sim:
        t_end = float("nan") if world.rank == 1 else sim.time + 2 * sim.dt
        with pytest.raises(ValueError, match="finite"):
            sim.run(t_end=t_end)
        assert sim.run(steps=2)["steps"] == 2 and sim.step == 2


def test_different_steps_on_different_ranks_raise_on_every_rank(shared_tmp):
    with _sim(shared_tmp) as sim:
        with pytest.raises(ValueError, match="same arguments"):
            sim.run(steps=2 + world.rank)
        assert sim.step == 0


def test_settings_that_differ_between_ranks_raise_on_every_rank_and_give_the_directory_back(shared_tmp):
    with pytest.raises(ConfigError, match="time.steps"):
        _sim(shared_tmp, **{"time.steps": 4 + 2 * world.rank})
    world.Barrier()
    assert not os.path.exists(os.path.join(shared_tmp, "run"))
