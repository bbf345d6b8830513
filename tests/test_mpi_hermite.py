"""Hermite block steps across ranks: the active bodies are gathered
(allgather) or the bodies pass round the ring; the answer must not depend
on the rank count beyond round-off."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_particles
from solver.backends import get_backend
from solver.models import load_settings
from solver.models.nbody import make

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(300)]
world = MPI.COMM_WORLD


def hermite(comm, *overrides, backend="numpy"):
    settings = load_settings("[problem]\nkind = 'nbody'\n", "<test>", ["nbody.integrator=hermite", *overrides])
    model = make(settings, comm, get_backend(backend), None)
    model.set_initial()
    return model


def _on_each_rank_count(*overrides, backend="numpy"):
    """Positions (on world rank 0) and block steps after running on 1, 2, ... world.size ranks."""
    results = {}
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            model = hermite(sub, *overrides, backend=backend)
            while model.step_count < model.end_step:
                model.step()
            x, _ = gather_particles(model)
            if sub.rank == 0:
                results[k] = x, model.stats["block_steps"], model.stats["active"]
            sub.Free()
        world.Barrier()
    return results


STARTS = {"plummer": ("nbody.n=400", "nbody.seed=2", "nbody.softening=0.01", "time.dt=0.03125", "time.steps=8"),
          "binary": ("nbody.initial=plummer_binary", "nbody.n=100", "nbody.seed=2", "nbody.softening=1e-4",
                     "time.dt=0.015625", "time.steps=2")}


@pytest.mark.parametrize("decomposition", ["allgather", "ring"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("start", STARTS)
def test_the_answer_does_not_depend_on_the_rank_count(start, decomposition, backend):
    """1 to world.size ranks (run at -n 4: 1, 2, 3 and 4): a Plummer sphere,
    and one with a hard binary (block steps of two bodies): positions within
    1e-12 relative, and the same block steps."""
    results = _on_each_rank_count(*STARTS[start], f"nbody.decomposition={decomposition}", backend=backend)
    worst, same = 0.0, True
    if world.rank == 0:
        reference, steps, active = results[1]
        scale = np.abs(reference).max()
        worst = max(np.abs(x - reference).max() / scale for x, _, _ in results.values())
        same = all(s == steps and a == active for _, s, a in results.values())
    worst, same = world.bcast((worst, same), root=0)
    assert worst <= 1e-12 and same, worst


@pytest.mark.parametrize("decomposition", ["allgather", "ring"])
def test_more_ranks_than_bodies(decomposition):
    """The Pythagorean problem's three bodies on every rank count: ranks without bodies take part."""
    model = hermite(world, "nbody.initial=pythagorean", "nbody.softening=0.0", "nbody.eta=0.001", "time.dt=0.0625",
                    "time.steps=24", f"nbody.decomposition={decomposition}")
    assert sum(world.allgather(model.blocks.count)) == 3
    while model.step_count < model.end_step:
        model.step()
    d = model.diagnostics()
    assert d["energy_error"] < 1e-6 and d["momentum"] < 1e-6 and d["block_steps"] > 24     # (steps differ: not exact)


def test_ring_and_allgather_agree():
    a = hermite(world, "nbody.n=301", "nbody.decomposition=ring", "time.dt=0.03125", "time.steps=4")
    b = hermite(world, "nbody.n=301", "nbody.decomposition=allgather", "time.dt=0.03125", "time.steps=4")
    for model in (a, b):
        while model.step_count < model.end_step:
            model.step()
    assert np.allclose(a.x, b.x, rtol=0, atol=1e-13)
    assert a.diagnostics()["energy"] == pytest.approx(b.diagnostics()["energy"], rel=1e-13)
