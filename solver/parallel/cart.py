"""Cartesian domain decomposition of a global grid over MPI ranks.

Any rank count and any grid size: blocks differ by at most one cell along an
axis (no divisibility requirement); axes may be periodic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .mpi import MPI
from ..config import ConfigError


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """(start, size) of block ``index`` when ``n`` cells are split in ``parts``;
    the first ``n % parts`` blocks get one extra cell."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


def _divisors(n: int) -> list[int]:
    small = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
    return sorted(set(small + [n // k for k in small]))


def _grids(nranks: int, limits):
    """Every process grid of ``nranks`` ranks whose count along each axis is
    at most that axis's entry of ``limits``."""
    if len(limits) == 1:
        if nranks <= limits[0]:
            yield (nranks,)
        return
    for p in _divisors(nranks):
        if p > limits[0]:
            break
        for rest in _grids(nranks // p, limits[1:]):
            yield (p, *rest)


def _halo_surface(dims, shape) -> int:
    """Cells on the faces between blocks (the wrap-around faces of a periodic
    grid add the same amount to every grid, so they do not change the choice)."""
    return sum(p * math.prod(shape[:d] + shape[d + 1:]) for d, p in enumerate(dims))


def best_grid(nranks: int, shape) -> list[int] | None:
    """The process grid of ``nranks`` that gives every rank at least one cell
    along each axis (all a block needs: the heat model takes no more steps per
    exchange than its thinnest block is wide) with the least halo surface;
    ties go to the grid with more ranks along longer axes (for equal axes,
    earlier ones), which is MPI_Dims_create's grid on a cube.  None: no grid fits."""
    shape = tuple(shape)
    order = sorted(range(len(shape)), key=lambda d: -shape[d])
    grids = list(_grids(nranks, shape))
    if not grids:
        return None
    return list(min(grids, key=lambda g: (_halo_surface(g, shape), [-g[d] for d in order])))


def choose_dims(nranks: int, shape) -> list[int]:
    """The process grid (``best_grid``); an error naming the most ranks the
    grid can be split over when ``nranks`` cannot."""
    dims = best_grid(nranks, shape)
    if dims is not None:
        return dims
    fewer = next(k for k in range(min(nranks - 1, math.prod(shape)), 0, -1) if best_grid(k, shape) is not None)
    raise ConfigError(
        f"heat.shape: {list(shape)} cannot be split over {nranks} ranks (every process grid puts more ranks "
        f"than cells along some axis); use at most {fewer} ranks (process grid {best_grid(fewer, shape)}) "
        f"or a larger grid")


@dataclass
class Decomposition:
    """This rank's block of the global grid and its neighbours."""
    comm: MPI.Cartcomm
    global_shape: tuple[int, ...]
    dims: tuple[int, ...]
    coords: tuple[int, ...]
    periodic: bool | tuple           # every axis, or one flag per axis
    offset: tuple[int, ...]          # global index of this block's first cell
    local_shape: tuple[int, ...]
    neighbors: tuple[tuple[int, int], ...]   # (low, high) rank per axis; MPI.PROC_NULL at a wall

    @property
    def ndim(self) -> int:
        return len(self.global_shape)

    @property
    def global_slices(self) -> tuple[slice, ...]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.local_shape))

    @property
    def periods(self) -> tuple[bool, ...]:
        """Whether each axis is periodic."""
        if isinstance(self.periodic, (tuple, list)):
            return tuple(bool(p) for p in self.periodic)
        return (bool(self.periodic),) * self.ndim

    def at_wall(self, axis: int, side: int) -> bool:
        return self.neighbors[axis][side] == MPI.PROC_NULL


def decompose(comm, shape, periodic) -> Decomposition:
    """``periodic``: one flag for every axis, or a sequence of one per axis."""
    shape = tuple(int(n) for n in shape)
    dims = choose_dims(comm.size, shape)
    periods = [bool(p) for p in periodic] if isinstance(periodic, (tuple, list)) else [bool(periodic)] * len(shape)
    periodic = tuple(periods) if isinstance(periodic, (tuple, list)) else bool(periodic)
    cart = comm.Create_cart(dims, periods=periods, reorder=False)
    coords = tuple(cart.Get_coords(cart.rank))
    offset, local = zip(*(block_range(n, p, c) for n, p, c in zip(shape, dims, coords)))
    neighbors = tuple(tuple(cart.Shift(d, 1)) for d in range(len(shape)))
    return Decomposition(cart, shape, tuple(dims), coords, periodic, tuple(offset), tuple(local), neighbors)
