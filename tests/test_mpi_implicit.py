"""Implicit schemes across ranks: PETSc's DMDA has our decomposition (a
rank's PETSc vector is its block), and the answer on 1..size ranks agrees
within the solver's tolerance (not bitwise: Krylov reductions sum in an
order that depends on the rank count).

Run under mpiexec with 2 and with 4 ranks."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, make_heat, on_each_rank_count, run_to_end

pytest.importorskip("petsc4py")

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(300)]

world = MPI.COMM_WORLD


@pytest.fixture(scope="module", autouse=True)
def petsc_on_every_rank():
    """PETSc's initialisation is collective over the world: every rank takes
    part before sub-communicators solve (a run's ranks all do, in the model)."""
    from solver.models.heat.implicit import petsc
    petsc()


def _files(directory, shape):
    if world.rank == 0:
        rng = np.random.default_rng(5)
        np.save(f"{directory}/D.npy", rng.uniform(0.3, 2.5, shape))
        np.save(f"{directory}/Q.npy", rng.uniform(-1.0, 3.0, shape))
    world.Barrier()
    return f"heat.diffusivity='{directory}/D.npy'", f"heat.source='{directory}/Q.npy'"


def _faces(ndim):
    kinds = [["dirichlet", "robin"], ["periodic", "periodic"], ["neumann", "robin"]][:ndim]
    values = [[0.8, -0.3], [0, 0], [0.5, 1.0]][:ndim]
    transfer = [[0, 2.0], [0, 0], [0, 0.7]][:ndim]
    return f"heat.boundary={kinds}", f"heat.boundary_value={values}", f"heat.boundary_transfer={transfer}"


def _on_each_rank_count(*overrides):
    """{k: global field} on world rank 0 for k = 1..world.size ranks; each
    run also checks that its PETSc vector is its block."""
    def solve(sub):
        model = make_heat(sub, *overrides)
        ranges = model.implicit.da.getRanges()
        assert tuple(tuple(r) for r in ranges) == tuple((s.start, s.stop)
                                                        for s in reversed(model.decomp.global_slices))
        assert np.array_equal(model.implicit.state(), model.local_field())
        field = gather_field(run_to_end(model))
        model.close()
        return field
    return on_each_rank_count(world, solve)


@pytest.mark.parametrize("scheme", ["backward_euler", "crank_nicolson", "bdf2"])
@pytest.mark.parametrize("shape", [[37, 30], [14, 11, 13]], ids=["2d", "3d"])
def test_rank_counts_agree_within_the_solver_tolerance(shared_tmp, scheme, shape):
    fields = _files(shared_tmp, shape)
    results = _on_each_rank_count(f"heat.shape={shape}", "heat.initial='random'", *_faces(len(shape)), *fields,
                                  f"time.scheme='{scheme}'", "time.dt=2e-3", "time.steps=6",
                                  "solver.petsc_options='-ksp_rtol 1e-10'")
    if world.rank == 0:
        one = results[1]
        scale = np.max(np.abs(one))
        for k, field in results.items():
            assert np.isfinite(field).all()
            np.testing.assert_allclose(field, one, rtol=0, atol=1e-8 * scale, err_msg=f"{k} ranks")
