"""The cuda backend across ranks on the simulated driver: bit for bit the
reference's on 1..N ranks (sub-communicators of the world), with the
interior swept while the halo travels, and through a CUDA-aware MPI; and
the halo exchange's counts on every rank.  Run under mpiexec -n 2 and 4."""
import numpy as np
import pytest
from mpi4py import MPI

import cuda_sim as sim
import test_mpi_heat as tmh
from cuda_sim.halo_counts import measure

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(600)]
world = MPI.COMM_WORLD
VARIANTS = [("numpy", 1), ("cuda", 1), ("cuda", 2), ("cuda", 3)]


@pytest.fixture
def cuda_sim(monkeypatch):
    sim.install()
    monkeypatch.setattr(tmh, "VARIANTS", VARIANTS)
    try:
        yield sim
    finally:
        sim.uninstall()


@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "periodic"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_cuda_sim_bitwise_identical_on_any_rank_count(cuda_sim, shape, boundary):
    tmh.test_bitwise_identical_on_any_rank_count(shape, boundary)


@pytest.mark.parametrize("boundary", ["dirichlet", "periodic"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_cuda_sim_interior_pieces_change_nothing(cuda_sim, shape, boundary, monkeypatch):
    """Overlap forced: the interior swept in pieces while the halo travels."""
    tmh.test_interior_pieces_change_nothing(shape, boundary, monkeypatch)


@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_cuda_sim_gpu_aware_mpi_is_bitwise_equal_on_any_rank_count(cuda_sim, shape, monkeypatch):
    """Device buffers handed to MPI (the simulator's device memory is host
    memory, so any MPI moves it): the same bits on 1..N ranks."""
    from helpers import gather_field, heat_settings, run_to_end
    from solver.backends import get_backend
    from solver.models.heat.model import HeatModel
    monkeypatch.setattr(MPI, "Query_cuda_support", lambda: True, raising=False)
    args = (f"heat.shape={shape}", "heat.initial=random", "heat.boundary=periodic", "time.steps=12",
            "heat.fused_steps=2")
    reference = tmh._solve_on_each_rank_count(*args, backend="numpy")
    ok, message = True, ""
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            model = HeatModel(heat_settings(*args), sub, get_backend("cuda", sub, -1, True))
            model.set_initial()
            field = gather_field(run_to_end(model))
            if sub.rank == 0 and world.rank == 0 and not np.array_equal(field, reference[k]):
                ok, message = False, f"gpu-aware cuda on {k} ranks differs"
            model.close()
            sub.Free()
        world.Barrier()
    tmh._agree(ok, message)


@pytest.mark.parametrize("shape, width", [([24, 20, 16], 2), ([40, 36], 3)])
def test_cuda_sim_exchange_counts_on_every_rank(cuda_sim, shape, width):
    worst, messages, ordered, _ = measure(world, shape, width, 3 * width, "periodic")
    ok = worst["launches"] <= 4 and worst["host_syncs"] <= 1 and worst["dtoh"] <= 2 and worst["htod"] <= 2
    ok = ok and messages <= 2 * len(shape) and ordered and worst["timed_events"] == 0
    assert all(world.allgather(ok)), (worst, messages, ordered)
