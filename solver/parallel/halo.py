"""Non-blocking halo exchange for a block with ``width`` ghost layers per side.

``begin`` packs the outgoing regions and starts persistent sends and
receives; ``finish`` waits and unpacks into the ghost layers.  Between the two
the caller updates the cells that need no ghost values, so the messages travel
while it computes.  One ghost layer needs only faces (the stencils have no
diagonal terms); a deeper halo, used to take several steps per exchange, also
needs the edge and corner regions, which come straight from the diagonal
neighbours.

A backend whose arrays live on a device (``halo_plan``) gets
``DeviceHaloExchange`` instead: every region in one buffer, gathered by
one kernel and one copy, the host waiting on one event, and back the same
way.  It sends faces only (6 messages in 3-D); a deeper halo takes its
edges and corners by exchanging the axes in turn, each axis's message
carrying the ghost layers of the axes before it, put together on the host
from what has arrived.  With a CUDA-aware MPI (device buffers, nothing to
put together on the host) every region goes in one round instead.
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

    def __new__(cls, decomp, dtype, backend, width=1):
        if cls is HaloExchange and hasattr(backend, "halo_plan"):
            cls = DeviceHaloExchange
        return super().__new__(cls)

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


def _box(ranges):
    return tuple(slice(a, b) for a, b in ranges)


def _copy_part(dst, dst_box, src, src_box, part):
    """dst[part] = src[part], ``part`` a box in block coordinates inside both boxes."""
    dst[tuple(slice(p.start - d.start, p.stop - d.start) for p, d in zip(part, dst_box))] = \
        src[tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, src_box))]


class DeviceHaloExchange(HaloExchange):
    """The exchange for a block in device memory (see the module's text):
    ``begin`` queues the gathering and returns at once, so the interior
    kernels are queued before the host waits; ``progress`` starts the
    messages once the gathered regions are in; ``finish`` waits for them
    (the one host wait, if progress has not seen them), exchanges the axes
    in turn and queues what arrived back into the block."""

    def __init__(self, decomp, dtype, backend, width=1):
        self.backend = backend
        n, w, nd = decomp.local_shape, width, decomp.ndim
        on_device = getattr(backend, "messages_on_device", lambda: False)()
        tag = {d: k for k, d in enumerate(itertools.product((-1, 0, 1), repeat=nd))}
        owned = [(w, w + k) for k in n]
        messages = []            # (phase, neighbour, direction, send ranges, recv ranges)
        if on_device:            # one round, every region that a width needs, straight from device memory
            for d in itertools.product((-1, 0, 1), repeat=nd):
                if any(d) and (w > 1 or sum(map(abs, d)) == 1):
                    nbr = _neighbour(decomp, d)
                    if nbr != MPI.PROC_NULL:
                        messages.append((0, nbr, d, _ranges(_region(n, w, d, ghost=False)),
                                         _ranges(_region(n, w, d, ghost=True))))
        else:                    # faces; a deep halo's axes in turn, each carrying the earlier axes' ghosts
            has = {(a, s): _neighbour(decomp, tuple((1 if s else -1) if b == a else 0 for b in range(nd)))
                   != MPI.PROC_NULL for a in range(nd) for s in (0, 1)}
            for a in range(nd):
                for side in (0, 1):
                    d = tuple((1 if side else -1) if b == a else 0 for b in range(nd))
                    nbr = _neighbour(decomp, d)
                    if nbr == MPI.PROC_NULL:
                        continue
                    send, recv = list(owned), list(owned)
                    send[a] = (w, 2 * w) if side == 0 else (n[a], n[a] + w)
                    recv[a] = (0, w) if side == 0 else (n[a] + w, n[a] + 2 * w)
                    if w > 1:
                        for b in range(a):
                            ext = (w - (w if has[(b, 0)] else 0), w + n[b] + (w if has[(b, 1)] else 0))
                            send[b] = recv[b] = ext
                    messages.append((a if w > 1 else 0, nbr, d, send, recv))
        self.phases = 1 + max((m[0] for m in messages), default=0)
        shape = tuple(k + 2 * w for k in n)
        # what the device gathers: each message's owned part; what it scatters: each whole receive region
        send_parts = [_box([(max(lo, o0), min(hi, o1)) for (lo, hi), (o0, o1) in zip(m[3], owned)])
                      for m in messages]
        self.plan = backend.halo_plan(shape, send_parts, [_box(m[4]) for m in messages], dtype)
        self._phase_requests = [[] for _ in range(self.phases)]
        self._assembly = [[] for _ in range(self.phases)]     # (message buffer, its box, [(source, box, part)])
        received = []                                         # (recv view, recv box) of earlier phases
        for k, (phase, nbr, d, send, recv) in enumerate(messages):
            send_box, recv_box = _box(send), _box(recv)
            packed = self.plan.send_views[k]
            if send_parts[k] == send_box:
                buf = packed
            else:
                buf = np.empty(tuple(b - a for a, b in send), dtype)
                parts = [(packed, send_parts[k], send_parts[k])]
                for part in _pieces(send, owned):
                    if part == send_parts[k]:
                        continue
                    source = next((v, rb) for v, rb in reversed(received) if _inside(part, rb))
                    parts.append((source[0], source[1], part))
                self._assembly[phase].append((buf, send_box, parts))
            rview = self.plan.recv_views[k]
            opposite = tuple(-x for x in d)
            self._phase_requests[phase] += [decomp.comm.Recv_init(rview, source=nbr, tag=tag[opposite]),
                                            decomp.comm.Send_init(buf, dest=nbr, tag=tag[d])]
            received.append((rview, recv_box))
        self._requests = [r for rs in self._phase_requests for r in rs]
        self.messages = len(messages)
        self._started = False

    def begin(self, padded) -> None:
        self.backend.halo_gather(padded, self.plan)
        self._started = False

    def _start(self):
        self._started = True
        if self._phase_requests[0]:
            MPI.Prequest.Startall(self._phase_requests[0])

    def progress(self) -> None:
        if not self._started:
            if self.backend.halo_ready(self.plan):
                self._start()
        elif self._phase_requests[0]:
            MPI.Request.Testall(self._phase_requests[0])

    def finish(self, padded) -> None:
        if not self._started:
            self.backend.halo_wait(self.plan)
            self._start()
        for phase in range(self.phases):
            if phase:
                for buf, box, parts in self._assembly[phase]:
                    for source, source_box, part in parts:
                        _copy_part(buf, box, source, source_box, part)
                if self._phase_requests[phase]:
                    MPI.Prequest.Startall(self._phase_requests[phase])
            if self._phase_requests[phase]:
                MPI.Request.Waitall(self._phase_requests[phase])
        self.backend.halo_scatter(self.plan, padded)


def _ranges(box):
    return [(s.start, s.stop) for s in box]


def _inside(part, box):
    return all(b.start <= p.start and p.stop <= b.stop for p, b in zip(part, box))


def _pieces(ranges, owned):
    """The boxes that cut ``ranges`` along the owned range of every axis
    (below it, inside it, above it), each a box of slices."""
    cuts = []
    for (lo, hi), (o0, o1) in zip(ranges, owned):
        cuts.append([(a, b) for a, b in ((lo, min(hi, o0)), (max(lo, o0), min(hi, o1)), (max(lo, o1), hi)) if a < b])
    return [_box(c) for c in itertools.product(*cuts)]
