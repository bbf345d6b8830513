"""Moving particle blocks between ranks for all-pairs forces.

``allgather``: every rank gets every block at once (one collective; O(n)
memory per rank), and sums sources in global id order, so forces do not
depend on the rank count.  ``ring``: a systolic ring; each rank passes the
block in hand to its right neighbour and receives the next from its left
with non-blocking point-to-point calls (double-buffered), computing against
the block in hand while the next travels; memory per rank is two blocks,
and sources are summed in an order that depends on the rank count (results
agree to round-off).
"""
from __future__ import annotations

import numpy as np

from .cart import block_range
from .mpi import MPI


def _dtype_of(array):
    return MPI._typedict[array.dtype.char]


class Blocks:
    """Particle ownership: rank r owns global ids [start_r, start_r + count_r)."""

    def __init__(self, comm, n):
        self.comm, self.n = comm, n
        self.ranges = [block_range(n, comm.size, r) for r in range(comm.size)]
        self.start, self.count = self.ranges[comm.rank]

    def allgather(self, local: np.ndarray) -> np.ndarray:
        """The global array (n, k) from every rank's rows."""
        k = local.shape[1] if local.ndim > 1 else 1
        out = np.empty((self.n,) + local.shape[1:], local.dtype)
        counts = [c * k for _, c in self.ranges]
        displs = [s * k for s, _ in self.ranges]
        self.comm.Allgatherv(np.ascontiguousarray(local), [out, counts, displs, _dtype_of(local)])
        return out

    def ring(self, local: np.ndarray, visit):
        """Call ``visit(block, first_id)`` for every rank's block, the local one
        first, while the next block is in flight."""
        size, rank = self.comm.size, self.comm.rank
        width = local.shape[1]
        biggest = max(c for _, c in self.ranges)
        held = np.zeros((biggest, width), local.dtype)
        spare = np.zeros_like(held)
        held[: self.count] = local
        right, left = (rank + 1) % size, (rank - 1) % size
        for stage in range(size):
            owner = (rank - stage) % size
            start, count = self.ranges[owner]
            requests = []
            if stage < size - 1:
                requests = [self.comm.Irecv(spare, source=left, tag=31),
                            self.comm.Isend(held, dest=right, tag=31)]
            visit(held[:count], start)
            if requests:
                MPI.Request.Waitall(requests)
                held, spare = spare, held
