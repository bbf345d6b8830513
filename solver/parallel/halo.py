"""Non-blocking halo exchange for a block with ``width`` ghost layers per side.

``begin`` packs the outgoing regions and starts persistent sends and
receives; ``finish`` waits and unpacks into the ghost layers.  Between the two
the caller updates the cells that need no ghost values, so the messages travel
while it computes.  One ghost layer needs only faces (the stencils have no
diagonal terms); a deeper halo, used to take several steps per exchange, also
needs the edge and corner regions, which come straight from the diagonal
neighbours.
"""
from __future__ import annotations

import itertools

import numpy as np

from .mpi import MPI


def _region(n, width, direction, ghost):
    """Slice of the padded block next to ``direction`` (-1, 0, +1 per axis):
    the ghost layers there, or the owned cells that fill a neighbour's."""
    out = []
    for size, d in zip(n, direction):
        if d == 0:
            out.append(slice(width, width + size))
        elif d < 0:
            out.append(slice(0, width) if ghost else slice(width, 2 * width))
        else:
            out.append(slice(width + size, size + 2 * width) if ghost else slice(size, size + width))
    return tuple(out)


def _neighbour(decomp, direction):
    """Rank of the block at ``direction`` from this one, or PROC_NULL past a wall."""
    coords = []
    for c, d, dims, periodic in zip(decomp.coords, direction, decomp.dims, decomp.periods):
        c += d
        if not 0 <= c < dims:
            if not periodic:
                return MPI.PROC_NULL
            c %= dims
        coords.append(c)
    return decomp.comm.Get_cart_rank(coords)


class HaloExchange:
    """Regions move between the padded block and the message buffers through
    ``backend.pack`` and ``backend.unpack``, so the block may live on a device."""

    def __init__(self, decomp, dtype, backend, width=1):
        self.backend = backend
        n = decomp.local_shape
        directions = [d for d in itertools.product((-1, 0, 1), repeat=decomp.ndim)
                      if any(d) and (width > 1 or sum(map(abs, d)) == 1)]
        tag = {d: k for k, d in enumerate(itertools.product((-1, 0, 1), repeat=decomp.ndim))}
        self._sends, self._recvs = [], []   # (buffer, slice of padded block)
        requests = []
        for d in directions:
            nbr = _neighbour(decomp, d)
            if nbr == MPI.PROC_NULL:
                continue
            send_at, recv_at = _region(n, width, d, ghost=False), _region(n, width, d, ghost=True)
            shape = tuple(s.stop - s.start for s in send_at)
            sbuf, rbuf = backend.halo_buffer(shape, dtype), backend.halo_buffer(shape, dtype)
            self._sends.append((sbuf, send_at))
            self._recvs.append((rbuf, recv_at))
            # what travels towards d is tagged d; it arrives from the side -d
            opposite = tuple(-x for x in d)
            requests.append(decomp.comm.Recv_init(rbuf, source=nbr, tag=tag[opposite]))
            requests.append(decomp.comm.Send_init(sbuf, dest=nbr, tag=tag[d]))
        self._requests = requests

    def begin(self, padded: np.ndarray) -> None:
        for buf, where in self._sends:
            self.backend.pack(padded, where, buf)
        if self._requests:
            MPI.Prequest.Startall(self._requests)

    def progress(self) -> None:
        """Let MPI move the messages in flight.  Large messages go by
        rendezvous, which advances only inside MPI calls: without this, a
        halo waits in finish() for the neighbour's whole interior sweep."""
        if self._requests:
            MPI.Request.Testall(self._requests)

    def finish(self, padded: np.ndarray) -> None:
        if self._requests:
            MPI.Request.Waitall(self._requests)
        for buf, where in self._recvs:
            self.backend.unpack(buf, padded, where)

    def free(self) -> None:
        for req in self._requests:
            req.Free()
        self._requests = []
