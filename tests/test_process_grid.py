"""The process grid: every rank gets at least one cell along each axis, and
among the grids that allow it the one with the least halo surface."""
import math

import pytest

from solver.config import ConfigError
from solver.parallel.cart import best_grid, choose_dims

pytestmark = pytest.mark.timeout(60)


def _surface(dims, shape):
    return sum((p - 1) * math.prod(shape) // n for p, n in zip(dims, shape))


def _every_grid(nranks, ndim):
    if ndim == 1:
        return [(nranks,)]
    return [(p, *rest) for p in range(1, nranks + 1) if nranks % p == 0 for rest in _every_grid(nranks // p, ndim - 1)]


@pytest.mark.parametrize("nranks, shape, dims", [
    (4, [1, 64], [1, 4]),            # a 1-wide axis: all ranks along the other
    (4, [64, 1], [4, 1]),
    (4, [2, 64], [1, 4]),            # [2, 2] fits, but cuts 64-cell faces
    (4, [100, 10], [4, 1]),
    (7, [64, 64], [7, 1]),           # a prime: one axis, the first of equal ones
    (7, [5, 64], [1, 7]),
    (13, [1, 1, 13], [1, 1, 13]),
    (8, [2, 2, 64], [1, 1, 8]),
    (6, [1, 6, 100], [1, 1, 6]),
    (4, [1, 64, 64], [1, 2, 2]),
])
def test_grid_fits_the_shape(nranks, shape, dims):
    assert choose_dims(nranks, shape) == dims


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 6, 8, 12, 16, 24, 64])
@pytest.mark.parametrize("ndim", [2, 3])
def test_square_and_cubic_grids_keep_mpi_dims_create(nranks, ndim):
    """On equal axes the grid is MPI_Dims_create's, larger counts first (as before)."""
    from mpi4py import MPI
    assert choose_dims(nranks, [256] * ndim) == sorted(MPI.Compute_dims(nranks, [0] * ndim), reverse=True)


@pytest.mark.parametrize("shape", [[37, 23], [19, 13, 11], [3, 50], [2, 5, 7], [1, 9, 4]])
@pytest.mark.parametrize("nranks", [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 30])
def test_chosen_grid_is_the_smallest_surface_that_fits(shape, nranks):
    fitting = [g for g in _every_grid(nranks, len(shape)) if all(p <= n for p, n in zip(g, shape))]
    dims = best_grid(nranks, shape)
    if not fitting:
        assert dims is None
        return
    assert tuple(dims) in fitting
    assert _surface(dims, shape) == min(_surface(g, shape) for g in fitting)


@pytest.mark.parametrize("nranks, shape, fewer, grid", [
    (3, [2, 2], 2, "[2, 1]"),
    (5, [2, 2], 4, "[2, 2]"),
    (7, [4, 4], 6, "[3, 2]"),
    (9, [1, 8, 1], 8, "[1, 8, 1]"),
])
def test_no_grid_fits_names_the_most_ranks_that_do(nranks, shape, fewer, grid):
    with pytest.raises(ConfigError) as info:
        choose_dims(nranks, shape)
    message = str(info.value)
    assert message.startswith("heat.shape:") and f"{nranks} ranks" in message and "\n" not in message
    assert f"at most {fewer} ranks (process grid {grid})" in message


def test_many_ranks_are_decided_at_once():
    assert choose_dims(2 ** 16, [4096, 4096]) == [256, 256]
    assert choose_dims(100003, [100003, 7]) == [100003, 1]          # a large prime
