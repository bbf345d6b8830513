"""Checks that must be collective: a bad value on one rank stops every rank
at the same step, with the same error, and no rank waits in a collective."""
import os

import numpy as np
import pytest
from mpi4py import MPI

from helpers import make_heat
from solver.backends import get_backend
from solver.config import ConfigError
from solver.models import load_settings
from solver.driver import run
from solver.models.nbody import resolve_settings
from solver.models.nbody.model import NBodyModel
from solver.parallel.mpi import agree
from solver.triggers import Triggers

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]
world = MPI.COMM_WORLD


def test_a_nan_on_the_last_rank_stops_every_rank(shared_tmp):
    model = make_heat(world, "heat.shape=[24,24]", "time.steps=300", "output.checkpoint_every=10",
                      "output.keep=0", backend="cpu")
    real_advance = model.advance

    def advance(max_steps, timers=None):
        real_advance(max_steps, timers)
        if world.rank == world.size - 1 and model.step_count >= 15:
            model._u[model._inner][1, 1] = np.inf
    model.advance = advance
    out = os.path.join(shared_tmp, "run")
    if world.rank == 0:
        os.makedirs(os.path.join(out, "checkpoints"))
    world.Barrier()
    with pytest.raises(FloatingPointError, match="stopped being finite") as caught:
        run(model, model.settings, out, world, Triggers(), quiet=True)
    messages = world.allgather(str(caught.value))
    assert len(set(messages)) == 1                    # the same step and words on every rank
    if world.rank == 0:
        assert sorted(n for n in os.listdir(os.path.join(out, "checkpoints")) if n.endswith(".h5")) == \
            ["step_000000010.h5"]


def test_a_nan_in_one_ranks_bodies_is_the_same_error_everywhere():
    settings = resolve_settings(load_settings("[problem]\nkind = 'nbody'\n", "<test>",
                                              ["nbody.initial='file'", "nbody.file='given'", "nbody.n=8"]))
    pos = np.random.default_rng(1).random((8, 3))
    pos[7, 2] = np.nan                                  # in the last rank's rows
    initial = (pos, np.zeros((8, 3)), np.full(8, 0.125))
    model = NBodyModel(settings, world, get_backend("numpy"), None, initial)
    with pytest.raises(ConfigError, match="not finite") as caught:
        agree(world, model.set_initial)
    assert len(set(world.allgather(str(caught.value)))) == 1


def test_a_problem_too_big_for_a_node_is_refused_on_every_rank():
    with pytest.raises(ConfigError, match="GiB") as caught:
        agree(world, make_heat, world, "heat.shape=[400000,400000]")
    assert len(set(world.allgather(str(caught.value)))) == 1
