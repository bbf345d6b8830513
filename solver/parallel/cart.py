"""Cartesian domain decomposition of a global grid over MPI ranks.

Any rank count and any grid size: blocks differ by at most one cell along an
axis (no divisibility requirement); axes may be periodic.
"""
from __future__ import annotations

from dataclasses import dataclass

from .mpi import MPI
from ..config import ConfigError


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """(start, size) of block ``index`` when ``n`` cells are split in ``parts``;
    the first ``n % parts`` blocks get one extra cell."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


def choose_dims(nranks: int, shape) -> list[int]:
    """Process grid from MPI_Dims_create, its largest factors given to the
    longest axes; an error when some axis would get ranks with no cells."""
    ndim = len(shape)
    dims = sorted(MPI.Compute_dims(nranks, [0] * ndim), reverse=True)
    order = sorted(range(ndim), key=lambda d: -shape[d])
    placed = [0] * ndim
    for d, n in zip(order, dims):
        placed[d] = n
    if any(p > n for p, n in zip(placed, shape)):
        raise ConfigError(
            f"heat.shape: {list(shape)} cannot be split over {nranks} ranks "
            f"(process grid {placed} puts more ranks than cells along an axis); "
            f"use fewer ranks or a larger grid")
    return placed


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
