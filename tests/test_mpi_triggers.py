"""A request on any rank counts: every rank stops (or checkpoints) at the
same step, and every rank names the rank that asked."""
import os

import pytest
from mpi4py import MPI

from helpers import make_heat
from solver.driver import run
from solver.triggers import Triggers

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]
world = MPI.COMM_WORLD


def _run_with_requests(out, asks):
    """Run a heat model with no end in sight while ``asks(step, triggers)``
    may make requests on this rank (the run ends only when one is honoured);
    returns the summary."""
    model = make_heat(world, "heat.shape=[16,16]", "time.steps=100000000", "output.checkpoint_every=0",
                      "output.keep=0", backend="numpy")
    triggers = Triggers()
    real_advance = model.advance

    def advance(max_steps, timers=None):
        real_advance(max_steps, timers)
        asks(model.step_count, triggers)
    model.advance = advance
    if world.rank == 0:
        os.makedirs(os.path.join(out, "checkpoints"))
    world.Barrier()
    return run(model, model.settings, out, world, triggers, quiet=True)


def _checkpoints(out):
    return sorted(int(n[5:14]) for n in os.listdir(os.path.join(out, "checkpoints")) if n.endswith(".h5"))


def test_a_stop_request_on_the_last_rank_stops_every_rank(shared_tmp):
    last = world.size - 1

    def asks(step, triggers):
        if world.rank == last and step >= 37:
            triggers.request_stop("SIGTERM")
    summary = _run_with_requests(os.path.join(shared_tmp, "run"), asks)
    stops = world.allgather((summary["stopped"], summary["final"]["step"]))
    assert len(set(stops)) == 1, stops
    assert stops[0][0] == f"SIGTERM on rank {last}" and stops[0][1] >= 37


def test_a_checkpoint_request_on_the_last_rank_is_written_by_all(shared_tmp):
    """The last rank asks for a checkpoint; once it is on disk, rank 0 asks to stop."""
    last = world.size - 1
    out = os.path.join(shared_tmp, "run")
    asked = []

    def asks(step, triggers):
        if world.rank == last and step >= 50 and not asked:
            asked.append(step)
            triggers.request_checkpoint("SIGUSR1")
        if world.rank == 0 and _checkpoints(out):
            triggers.request_stop("SIGUSR2")
    summary = _run_with_requests(out, asks)
    assert summary["stopped"] == "SIGUSR2"
    if world.rank == 0:
        steps = _checkpoints(out)
        assert len(steps) == 2 and 50 <= steps[0] < steps[1] == summary["final"]["step"], steps
