"""The Python API on several ranks: the same calls on every rank give the
global field and bodies on rank 0, raise the same exceptions everywhere, and
restart a checkpoint through the API at any rank count."""
import os

import numpy as np
import pytest
from mpi4py import MPI

import solver
from conftest import REPO

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(180)]

world = MPI.COMM_WORLD
HEAT = os.path.join(REPO, "configs", "heat2d.toml")
SET = {"heat.shape": [19, 13], "heat.initial": "random", "time.steps": 12}


def _everywhere(ok: bool) -> bool:
    return bool(world.allreduce(int(bool(ok)), op=MPI.MIN))


def _serial(path, steps, restart=None):
    """Rank 0 alone runs the same problem (the reference); None on the others."""
    if world.rank != 0:
        return None
    with solver.Simulation.from_toml(HEAT, set=SET, comm=MPI.COMM_SELF, output=path, backend="numpy",
                                     quiet=True, restart=restart) as sim:
        sim.run(steps=steps)
        return sim.field()


def test_gathered_field_is_the_serial_field(shared_tmp):
    with solver.Simulation.from_toml(HEAT, set=SET, output=os.path.join(shared_tmp, "par"), backend="numpy",
                                     quiet=True) as sim:
        sim.run(steps=7)
        local, where = sim.field(), sim.block()
        whole = sim.field(gather=True)
        cells = world.allreduce(local.size)
        diag = sim.diagnostics()
    reference = _serial(os.path.join(shared_tmp, "ser"), 7)
    if world.rank == 0:
        ok = np.array_equal(whole, reference) and np.array_equal(whole[where], local)
    else:
        ok = whole is None
    assert _everywhere(ok and cells == 19 * 13 and diag["step"] == 7)


def test_gathered_bodies_in_id_order_on_rank_0(shared_tmp):
    config = {"problem": {"kind": "nbody"}, "nbody": {"n": 11, "initial": "plummer", "seed": 3},
              "time": {"steps": 4, "dt": 1e-3}}
    with solver.Simulation(config, output=os.path.join(shared_tmp, "nb"), backend="numpy", quiet=True) as sim:
        sim.run()
        mine = sim.bodies()
        every = sim.bodies(gather=True)
    counts = world.allgather(len(mine["id"]))
    if world.rank == 0:
        ok = (list(every["id"]) == list(range(11)) and every["position"].shape == (11, 3)
              and np.array_equal(every["position"][mine["id"]], mine["position"]))
    else:
        ok = every is None
    assert _everywhere(ok and sum(counts) == 11)


@pytest.mark.parametrize("bad, match", [({"heat.shape": [4, 0]}, "heat.shape"), ({"time.dt": 10.0}, "stability")])
def test_bad_input_raises_on_every_rank(shared_tmp, bad, match):
    out = os.path.join(shared_tmp, "bad")
    raised = None
    try:
        solver.Simulation.from_toml(HEAT, set={**SET, **bad}, output=out, quiet=True)
    except solver.ConfigError as exc:
        raised = str(exc)
    assert _everywhere(raised is not None and match in raised)
    world.Barrier()
    assert _everywhere(not os.path.exists(out))


def test_t_end_lands_exactly(shared_tmp):
    with solver.Simulation.from_toml(HEAT, set={**SET, "time.dt": 1e-4}, output=os.path.join(shared_tmp, "t"),
                                     backend="numpy", quiet=True) as sim:
        sim.run(t_end=0.0009)
        assert _everywhere(sim.step == 9 and abs(sim.time - 0.0009) <= 1e-12 * 0.0009)


def test_checkpoint_and_restart_through_the_api(shared_tmp):
    """A checkpoint written by every rank, restarted by every rank, continues
    bit for bit as the straight run does; rank 0 alone can restart it too."""
    first = os.path.join(shared_tmp, "first")
    with solver.Simulation.from_toml(HEAT, set=SET, output=first, backend="numpy", quiet=True) as sim:
        sim.run(steps=5)
        path = sim.checkpoint()
        sim.run(steps=4)
        straight = sim.field(gather=True)
    with solver.Simulation(restart=path, output=os.path.join(shared_tmp, "branch"), backend="numpy",
                           quiet=True) as again:
        start = again.step
        again.run(steps=4)
        continued = again.field(gather=True)
    alone = _serial(os.path.join(shared_tmp, "alone"), 4, restart=path)
    ok = start == 5 and (world.rank != 0 or (np.array_equal(continued, straight)
                                            and np.array_equal(alone, straight)))
    assert _everywhere(ok)
