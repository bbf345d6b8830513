"""N-body on the cuda backend across ranks, on the simulated CUDA driver:
the source split follows the sources alone, so with the allgather
decomposition the rank count does not change the forces or the answer
(bitwise)."""
import numpy as np
import pytest
from mpi4py import MPI

from cuda_sim.fixture import cuda_sim  # noqa: F401  (the fixture)
from helpers import gather_particles, make_nbody

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(600)]
world = MPI.COMM_WORLD


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_cuda_sim_nbody_positions_do_not_depend_on_rank_count(cuda_sim, precision):   # noqa: F811
    """A device of 2 SMs: 2000 targets on one rank fill it alone, 1000 or
    fewer on each of several would not; the split must not follow them."""
    from solver.backends import cuda
    cuda._state["sms"] = 2
    results = {}
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            model = make_nbody(sub, "nbody.n=2000", "nbody.seed=3", "time.dt=0.002", "nbody.decomposition=allgather",
                               f"nbody.precision={precision}", backend="cuda")
            for _ in range(10):
                model.step()
            x, _ = gather_particles(model)
            a = model.blocks.allgather(model.a)          # the forces themselves, not only their effect
            if sub.rank == 0:
                results[k] = np.concatenate([x, a])
            sub.Free()
        world.Barrier()
    same = all(np.array_equal(x, results[1]) for x in results.values()) if world.rank == 0 else None
    assert world.bcast(same, root=0)
