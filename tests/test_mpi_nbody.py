"""N-body across ranks: the rank count must not change the answer
(bitwise with the allgather decomposition, round-off with the ring)."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_particles, make_nbody

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(300)]
world = MPI.COMM_WORLD


def _positions_on_each_rank_count(*overrides, steps=100):
    results = {}
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            model = make_nbody(sub, *overrides)
            for _ in range(steps):
                model.step()
            x, _ = gather_particles(model)
            if sub.rank == 0:
                results[k] = x
            sub.Free()
        world.Barrier()
    return results


@pytest.mark.parametrize("decomposition, tolerance", [("allgather", 0.0), ("ring", 1e-12)])
def test_plummer_positions_do_not_depend_on_rank_count(decomposition, tolerance):
    results = _positions_on_each_rank_count("nbody.n=1000", "nbody.seed=2", "time.dt=0.002",
                                            f"nbody.decomposition={decomposition}")
    worst = 0.0
    if world.rank == 0:
        reference = results[1]
        scale = np.abs(reference).max()
        worst = max(np.abs(x - reference).max() / scale for x in results.values())
    worst = world.bcast(worst, root=0)
    assert worst <= tolerance, worst


@pytest.mark.parametrize("decomposition", ["allgather", "ring"])
def test_more_ranks_than_bodies(decomposition):
    """Three bodies on every rank count: ranks without particles take part."""
    model = make_nbody(world, "nbody.initial=figure8", "nbody.softening=0.0", "time.dt=1e-3",
                       f"nbody.decomposition={decomposition}")
    counts = world.allgather(model.blocks.count)
    assert sum(counts) == 3
    for _ in range(50):
        model.step()
    d = model.diagnostics()
    assert d["energy_error"] < 1e-6 and d["momentum"] < 1e-14


def test_ring_and_allgather_agree():
    a = make_nbody(world, "nbody.n=301", "nbody.decomposition=ring", "time.dt=0.002")
    b = make_nbody(world, "nbody.n=301", "nbody.decomposition=allgather", "time.dt=0.002")
    for _ in range(20):
        a.step()
        b.step()
    assert np.allclose(a.x, b.x, rtol=0, atol=1e-13)
    assert a.diagnostics()["energy"] == pytest.approx(b.diagnostics()["energy"], rel=1e-13)
