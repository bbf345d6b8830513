"""The user's physics across ranks: variable D, a source and a condition per
face (a periodic axis among walls) give the same bits on any rank count and
backend, with D, Q and the start read per rank from .npy and HDF5 files.

Run under mpiexec with 2 or more ranks: sub-communicators of 1..size ranks
each solve the same problem and rank 0 compares the fields bit for bit."""
import h5py
import numpy as np
import pytest
from mpi4py import MPI

from helpers import gather_field, make_heat, run_to_end
from solver.backends import status

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(300)]

world = MPI.COMM_WORLD
VARIANTS = [("numpy", 1), ("numpy", 3)] + [("cpu", 0)] * status()["cpu"][0] + [("opencl", 0)] * status()["opencl"][0]


def _shared_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fields")) if world.rank == 0 else None
    return world.bcast(path, root=0)


def _files(directory, shape):
    """D (0.3 to 2.5) and Q as .npy, and a start as an HDF5 dataset, written by rank 0."""
    if world.rank == 0:
        rng = np.random.default_rng(11)
        np.save(f"{directory}/D.npy", rng.uniform(0.3, 2.5, shape))
        np.save(f"{directory}/Q.npy", rng.uniform(-1.0, 3.0, shape))
        with h5py.File(f"{directory}/start.h5", "w") as f:
            f["temperature"] = rng.uniform(0.0, 1.0, shape)
    world.Barrier()
    return (f"heat.diffusivity='{directory}/D.npy'", f"heat.source='{directory}/Q.npy'", "heat.initial=file",
            f"heat.file='{directory}/start.h5:temperature'")


def _faces(ndim):
    kinds = [["dirichlet", "robin"], ["periodic", "periodic"], ["neumann", "robin"]][:ndim]
    values = [[0.8, -0.3], [0, 0], [0.5, 1.0]][:ndim]
    transfer = [[0, 2.0], [0, 0], [0, 0.7]][:ndim]
    return (f"heat.boundary={kinds}", f"heat.boundary_value={values}", f"heat.boundary_transfer={transfer}")


def _solve_on_each_rank_count(*overrides, backend="numpy"):
    """{k: (global field, heat_in)} on world rank 0 for k = 1..world.size ranks."""
    results = {}
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            model = run_to_end(make_heat(sub, *overrides, backend=backend))
            field, heat_in = gather_field(model), model.diagnostics()["heat_in"]
            if sub.rank == 0:
                results[k] = field, heat_in
            model.close()
            sub.Free()
        world.Barrier()
    return results


@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11]])
def test_variable_coefficients_and_mixed_faces_are_bitwise_identical_on_any_rank_count(shape, tmp_path_factory):
    args = (f"heat.shape={shape}", *_faces(len(shape)), *_files(_shared_dir(tmp_path_factory), shape),
            "time.steps=25")
    runs = {(backend, steps): _solve_on_each_rank_count(*args, f"heat.fused_steps={steps}", backend=backend)
            for backend, steps in VARIANTS}
    ok, message = True, ""
    if world.rank == 0:
        reference, heat_in = runs[VARIANTS[0]][1]
        assert np.isfinite(reference).all()
        for variant, results in runs.items():
            for k, (field, added) in results.items():
                if ok and not np.array_equal(field, reference):
                    ok, message = False, f"{variant} on {k} ranks differs from 1 rank by {np.abs(field - reference).max()}"
                if ok and abs(added - heat_in) > 1e-12 * abs(heat_in):
                    ok, message = False, f"{variant} on {k} ranks adds {added} of heat, 1 rank {heat_in}"
    ok = world.bcast(ok, root=0)
    assert ok, message


def test_heat_balance_holds_in_parallel(tmp_path_factory):
    """Every rank's walls and sources add up: the change of total heat is the heat added."""
    shape = [29, 31, 7]
    model = make_heat(world, f"heat.shape={shape}", *_faces(3), *_files(_shared_dir(tmp_path_factory), shape),
                      "time.steps=60", backend="cpu" if status()["cpu"][0] else "numpy")
    start = model.diagnostics()
    run_to_end(model)
    d = model.diagnostics()
    assert abs(d["heat"] - start["heat"]) > 1e-3
    assert abs(d["balance"]) <= 1e-12 * (abs(start["heat"]) + abs(d["heat_in"]))


def test_each_rank_reads_its_own_block_of_a_field(tmp_path_factory):
    """The block each rank holds is its slice of the file."""
    shape = [23, 17]
    directory = _shared_dir(tmp_path_factory)
    _files(directory, shape)
    model = make_heat(world, f"heat.shape={shape}", "heat.initial=file", f"heat.file='{directory}/start.h5'")
    with h5py.File(f"{directory}/start.h5", "r") as f:
        expected = f["temperature"][model.decomp.global_slices]
    assert np.array_equal(model.local_field(), expected)
