"""Non-blocking halo exchange for a block with one ghost layer per side.

``begin`` packs the faces and starts persistent sends and receives;
``finish`` waits and unpacks into the ghost layers.  Between the two the
caller updates the cells that need no ghost values, so the messages travel
while it computes.  The stencils here have no diagonal terms, so only faces
travel (no edges or corners).
"""
from __future__ import annotations

import numpy as np

from .mpi import MPI

# tags: data travelling towards the low / high neighbour along an axis
_TAG_DOWN, _TAG_UP = 0, 1


def _face(local_shape, axis, index):
    """Slice of the padded block: layer ``index`` along ``axis``, interior elsewhere."""
    return tuple(slice(index, index + 1) if d == axis else slice(1, n + 1)
                 for d, n in enumerate(local_shape))


class HaloExchange:
    def __init__(self, decomp, dtype):
        self.decomp = decomp
        n = decomp.local_shape
        self._sends, self._recvs = [], []   # (buffer, slice of padded block)
        requests = []
        for axis, (low, high) in enumerate(decomp.neighbors):
            tag = 2 * axis
            for nbr, send_at, recv_at, send_tag, recv_tag in (
                    (low, 1, 0, tag + _TAG_DOWN, tag + _TAG_UP),
                    (high, n[axis], n[axis] + 1, tag + _TAG_UP, tag + _TAG_DOWN)):
                if nbr == MPI.PROC_NULL:
                    continue
                send_slice, recv_slice = _face(n, axis, send_at), _face(n, axis, recv_at)
                shape = tuple(s.stop - s.start for s in send_slice)
                sbuf, rbuf = np.empty(shape, dtype), np.empty(shape, dtype)
                self._sends.append((sbuf, send_slice))
                self._recvs.append((rbuf, recv_slice))
                requests.append(decomp.comm.Recv_init(rbuf, source=nbr, tag=recv_tag))
                requests.append(decomp.comm.Send_init(sbuf, dest=nbr, tag=send_tag))
        self._requests = requests

    def begin(self, padded: np.ndarray) -> None:
        for buf, where in self._sends:
            np.copyto(buf, padded[where])
        if self._requests:
            MPI.Prequest.Startall(self._requests)

    def finish(self, padded: np.ndarray) -> None:
        if self._requests:
            MPI.Request.Waitall(self._requests)
        for buf, where in self._recvs:
            padded[where] = buf

    def free(self) -> None:
        for req in self._requests:
            req.Free()
        self._requests = []
