"""Heat across ranks: the decomposition must not change the answer.

Run under mpiexec with 2 or more ranks; sub-communicators of 1..size ranks
each solve the same problem and rank 0 compares the fields bit for bit."""
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, make_heat, on_each_rank_count, run_to_end
from solver.backends import status

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

world = MPI.COMM_WORLD


def _solve_on_each_rank_count(*overrides, backend="numpy"):
    """{k: global field} on world rank 0 for k = 1..world.size ranks."""
    def solve(sub):
        model = run_to_end(make_heat(sub, *overrides, backend=backend))
        field = gather_field(model)
        model.close()
        return field
    return on_each_rank_count(world, solve)


def _agree(ok_on_root, message=""):
    ok = world.bcast(bool(ok_on_root) if world.rank == 0 else None, root=0)
    assert ok, message


# (backend, steps per halo exchange): one step with one ghost layer, several
# steps with deep halos (edges and corners exchanged), the compiled wavefront
VARIANTS = [("numpy", 1), ("numpy", 3)] + [(name, 0) for name in ("cpu", "opencl", "cuda") if status()[name][0]]


@pytest.mark.parametrize("boundary", ["dirichlet", "neumann", "periodic"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_bitwise_identical_on_any_rank_count(shape, boundary):
    args = (f"heat.shape={shape}", f"heat.boundary={boundary}", "heat.initial=random", "time.steps=25",
            *(("heat.boundary_value=0.25",) if boundary != "periodic" else ()))
    runs = {(backend, steps): _solve_on_each_rank_count(*args, f"heat.fused_steps={steps}", backend=backend)
            for backend, steps in VARIANTS}
    ok, message = True, ""
    if world.rank == 0:
        reference = runs[VARIANTS[0]][1]
        assert np.isfinite(reference).all()
        for variant, results in runs.items():
            for k, field in results.items():
                if ok and not np.array_equal(field, reference):
                    ok, message = False, f"{variant} on {k} ranks differs from 1 rank by {np.abs(field - reference).max()}"
    _agree(ok, message)


@pytest.mark.parametrize("boundary", ["dirichlet", "periodic"])
@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_interior_pieces_change_nothing(shape, boundary, monkeypatch):
    """The interior swept in thin pieces (MPI progress between them) gives the
    same bits as in one piece, on any rank count and backend."""
    from solver.models.heat import model as heat
    args = (f"heat.shape={shape}", f"heat.boundary={boundary}", "heat.initial=random", "time.steps=25",
            *(("heat.boundary_value=0.25",) if boundary != "periodic" else ()))
    monkeypatch.setattr(heat, "PIECE_ROWS", 10 ** 9)
    whole = _solve_on_each_rank_count(*args, backend="numpy")
    monkeypatch.setattr(heat, "PIECE_ROWS", 1)
    monkeypatch.setattr(heat, "PIECE_COST", 0)
    monkeypatch.setattr(heat, "OVERLAP_LIMIT", float("inf"))     # overlap however much it recomputes
    ok, message = True, ""
    for backend, steps in VARIANTS:
        pieces = _solve_on_each_rank_count(*args, f"heat.fused_steps={steps}", backend=backend)
        if world.rank == 0:
            for k, field in pieces.items():
                if ok and not np.array_equal(field, whole[1]):
                    ok, message = False, f"{backend} ({steps} steps) in pieces on {k} ranks differs"
    _agree(ok, message)


def test_matches_an_independent_dense_reference():
    """Periodic 2D diffusion against numpy.roll, on all ranks together."""
    model = make_heat(world, "heat.shape=[17,12]", "heat.boundary=periodic", "heat.initial=random",
                      "time.steps=10")
    u = gather_field(model)
    run_to_end(model)
    out = gather_field(model)
    ok = True
    if world.rank == 0:
        cx, cy = model.coeffs
        for _ in range(10):
            u = u + cx * (np.roll(u, 1, 0) + np.roll(u, -1, 0) - 2 * u) + cy * (np.roll(u, 1, 1) + np.roll(u, -1, 1) - 2 * u)
        ok = np.allclose(out, u, rtol=0, atol=1e-13)
    _agree(ok, "parallel periodic field differs from the numpy.roll reference")


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_total_heat_conserved_in_parallel(boundary):
    model = make_heat(world, "heat.shape=[29,31,7]", f"heat.boundary={boundary}", "heat.initial=hotspot",
                      "time.steps=100")
    before = model.diagnostics()["heat"]
    run_to_end(model)
    after = model.diagnostics()["heat"]
    assert abs(after - before) <= 1e-12 * abs(before)


def test_uneven_blocks_cover_the_grid():
    model = make_heat(world, "heat.shape=[37,23]")
    counts = np.zeros(model.heat.shape, int)
    for where in world.allgather(model.decomp.global_slices):
        counts[where] += 1
    assert (counts == 1).all()
    sizes = world.allgather(model.decomp.local_shape)
    for d in range(2):
        along = {s[d] for s in sizes}
        assert max(along) - min(along) <= 1
