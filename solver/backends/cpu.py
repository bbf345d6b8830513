"""Compiled CPU backend: Numba kernels, one thread per rank (ranks own the
cores; threads inside a rank would oversubscribe them).  Kernels are cached
on disk, so only the first run on a machine pays for compilation.

Heat evaluates ((sum_d c_d ((u[-1] + u[+1]) - 2 u)) + u), or with variable
coefficients HeatStencil's formula, in exactly the reference backend's
order, without fast-math, so fields are bitwise equal to the NumPy
backend's.  Several steps are taken per sweep along axis 0 (a
wavefront whose intermediate levels stay in cache; steps from the L2 size).
2-D sweeps rows.  3-D sweeps planes in tiles of axis 1, skewed by one row per
level so that tiles hand rows on instead of recomputing them; every plane is
one compiled loop nest on flat arrays, the intermediate levels sit in
64-byte-aligned planes and are computed in whole vectors, and the next input
and output planes are prefetched while the others are computed.  The n-body kernels use the same fixed tiles of global
ids as the reference (so results still do not depend on the rank count) but
sum inside a tile in another order, with fast-math: they agree with the
reference to round-off (tested to 1e-12 relative).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from .numpy_ import (TILE, all_finite, box_error, box_stats, from_host, halo_buffer, pack,  # noqa: F401
                     sync, to_host, unpack, zeros)                                      # (host arrays)

name = "cpu"


def _use_full_vector_width():
    """LLVM tunes recent Xeons to 256-bit vectors ("prefer-256-bit"); the
    force kernel is compute bound and runs about 1.6x faster with all 512
    bits (measured here).  Applied only where the CPU has AVX-512, and never
    over the user's own Numba CPU settings.  Results do not change: the heat
    kernels keep their exact operation order at any vector width."""
    chosen = ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_ENABLE_AVX")
    if any(name in os.environ for name in chosen) or "numba" in sys.modules:
        return
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except Exception:                 # no llvmlite, or it cannot read the CPU: keep the defaults
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_use_full_vector_width()

try:
    import numba
    from numba import njit
    _IMPORT_ERROR = None
except ImportError as exc:          # the backend is optional
    numba, _IMPORT_ERROR = None, exc


def available():
    if numba is None:
        return False, f"numba is not installed ({_IMPORT_ERROR})"
    return True, ""


if numba is not None:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    # Rows are taken as 1-D views shifted by one cell, so the inner loop has
    # no index arithmetic that could wrap around: LLVM vectorises it.
    @njit(cache=True, nogil=True, boundscheck=False)
    def _row(um, up, ul, ur, u0, out, n, c0, c1):
        for j in range(n):
            u = u0[j]
            t0 = ((um[j] + up[j]) - 2.0 * u) * c0
            t1 = ((ul[j] + ur[j]) - 2.0 * u) * c1
            out[j] = (t0 + t1) + u

    @njit(cache=True, nogil=True, boundscheck=False)
    def _row_variable(um, uc, up, out, a, b, f, w, k0, k1, q):
        """HeatStencil's variable update of cells [a, b) of a row: k0 the
        axis-0 face coefficients, k1 those of axis 1, q the source, flat
        (the row's cell 0 at f, rows of w cells).  Whole rows and flat
        fields indexed by unsigned offsets: no index can wrap around, and
        few distinct arrays keep LLVM's alias checks few enough for it to
        vectorise the loop."""
        one = np.uint64(1)
        ww = np.uint64(w)
        for k in range(np.uint64(b - a)):
            j = np.uint64(a) + k
            g = np.uint64(f) + j
            x = uc[j]
            t0 = k0[g] * (um[j] - x) + k0[g + ww] * (up[j] - x)
            t1 = k1[g] * (uc[j - one] - x) + k1[g + one] * (uc[j + one] - x)
            out[j] = ((t0 + t1) + q[g]) + x

    @njit(cache=True, nogil=True, boundscheck=False)
    def _mirror(ghost, edge, ca, cb):
        """A row of wall ghosts from the edge row: ghost = ca * edge + cb."""
        for j in range(ghost.shape[0]):
            ghost[j] = ca * edge[j] + cb

    @njit(cache=True, nogil=True, boundscheck=False)
    def _add(total, row):
        """total += row (a wall's sums of its edge cells)."""
        for j in range(total.shape[0]):
            total[j] += row[j]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _span(lo, hi, grow, axis, e):
        """[a, b) of ``axis`` at extension e: grown sides reach e cells further."""
        a = lo[axis] - (e if grow[2 * axis] else 0)
        b = hi[axis] + (e if grow[2 * axis + 1] else 0)
        return a, b

    @njit(cache=True, nogil=True, boundscheck=False)
    def _walls(slab, lo, hi, grow, e, wa, wb):
        """Wall ghosts of one 2-D row along axis 1 (the row's own axis)."""
        a, b = _span(lo, hi, grow, 1, e)
        if not grow[2]:
            slab[a - 1] = wa[2] * slab[a] + wb[2]
        if not grow[3]:
            slab[b] = wa[3] * slab[b - 1] + wb[3]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _row_sums(slab, i, lo, hi, acc, e2, e3):
        """Row i's edge cells at the axis-1 walls into their sums (owned rows only)."""
        if lo[0] <= i < hi[0]:
            if acc[2]:
                e2[i] += slab[lo[1]]
            if acc[3]:
                e3[i] += slab[hi[1] - 1]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _slab(um, uc, up, out, lo, hi, grow, e, c, i, variable, k0, k1, q):
        """Level s of one 2-D row (row i) from level s - 1's three."""
        a, b = _span(lo, hi, grow, 1, e)
        if variable:
            _row_variable(um, uc, up, out, a, b, i * uc.shape[0], uc.shape[0], k0, k1, q)
        else:
            _row(um[a:b], up[a:b], uc[a - 1:b - 1], uc[a + 1:b + 1], uc[a:b], out[a:b], b - a, c[0], c[1])

    @njit(cache=True, nogil=True, boundscheck=False)
    def _faces(ghost, edge, lo, hi, grow, e, ca, cb):
        """The ghost row beyond an axis-0 wall, from the edge row."""
        a, b = _span(lo, hi, grow, 1, e)
        _mirror(ghost[a:b], edge[a:b], ca, cb)

    @njit(cache=True, nogil=True, boundscheck=False)
    def _sweep(src, dst, ring, c, steps, lo, hi, grow, wa, wb, variable, k0, k1, q, acc, e0, e1, e2, e3):
        """``steps`` FTCS steps of a 2-D box in one sweep along axis 0 (a wavefront): at sweep
        position r, level s computes slab r - s + 1 from level s - 1, whose
        slabs live in a ring of four per level, so each cell goes to and from
        memory once per ``steps`` steps instead of once per step (the
        coefficient fields of the variable update, read by every level, stay
        in cache between them).

        ``lo``/``hi`` bound the box written to ``dst`` (padded indices).
        ``grow[2a + side]``: the inputs are valid ``steps`` cells beyond that
        side (halo or owned cells), so level s covers ``steps - s`` more; else
        the side is a wall whose ghosts are rebuilt from each level's edge
        (ghost = wa * edge + wb), and where ``acc`` says so its edge cells of
        levels 0 to steps - 1 are added to its sums (e0 ... e3).  Every cell
        sees the reference's arithmetic on the same inputs, so the result is
        bitwise the step-by-step result."""
        k0, k1, q = k0.reshape(-1), k1.reshape(-1), q.reshape(-1)
        e = steps - 1
        first, last = _span(lo, hi, grow, 0, e)
        for i in range(first, last):                                # level 0's wall ghosts
            _walls(src[i], lo, hi, grow, e, wa, wb)
            _row_sums(src[i], i, lo, hi, acc, e2, e3)
        if not grow[0]:
            _faces(src[lo[0] - 1], src[lo[0]], lo, hi, grow, e, wa[0], wb[0])
            if acc[0]:
                _add(e0[lo[1]:hi[1]], src[lo[0], lo[1]:hi[1]])
        if not grow[1]:
            _faces(src[hi[0]], src[hi[0] - 1], lo, hi, grow, e, wa[1], wb[1])
            if acc[1]:
                _add(e1[lo[1]:hi[1]], src[hi[0] - 1, lo[1]:hi[1]])
        for r in range(first, hi[0] + steps - 1):
            for s in range(1, steps + 1):
                e = steps - s
                i = r - s + 1
                a, b = _span(lo, hi, grow, 0, e)
                if i < a or i >= b:
                    continue
                if s == 1:
                    um, uc, up = src[i - 1], src[i], src[i + 1]
                else:
                    um, uc, up = ring[s - 2, (i - 1) & 3], ring[s - 2, i & 3], ring[s - 2, (i + 1) & 3]
                out = dst[i] if s == steps else ring[s - 1, i & 3]
                _slab(um, uc, up, out, lo, hi, grow, e, c, i, variable, k0, k1, q)
                if s < steps:
                    _walls(out, lo, hi, grow, e, wa, wb)
                    _row_sums(out, i, lo, hi, acc, e2, e3)
                    if i == lo[0] and not grow[0]:
                        _faces(ring[s - 1, (i - 1) & 3], out, lo, hi, grow, e, wa[0], wb[0])
                        if acc[0]:
                            _add(e0[lo[1]:hi[1]], out[lo[1]:hi[1]])
                    if i == hi[0] - 1 and not grow[1]:
                        _faces(ring[s - 1, (i + 1) & 3], out, lo, hi, grow, e, wa[1], wb[1])
                        if acc[1]:
                            _add(e1[lo[1]:hi[1]], out[lo[1]:hi[1]])

    def _make_prefetch(rw):
        """A hint to fetch the cache line of ``ary[index]`` (a flat C array)
        ahead of its use, to read (rw 0) or to write (1): no result, and no
        fault even past the array's end."""
        @intrinsic
        def prefetch(typingctx, ary, index):
            def codegen(context, builder, signature, args):
                data = context.make_array(signature.args[0])(context, builder, args[0]).data
                byte = ir.IntType(8).as_pointer()
                i32 = ir.IntType(32)
                fnty = ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32])
                fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
                builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), byte), i32(rw), i32(2), i32(1)])
                return context.get_dummy_value()
            return types.void(ary, index), codegen
        return prefetch

    _prefetch_read, _prefetch_write = _make_prefetch(0), _make_prefetch(1)

    @njit(cache=True, nogil=True, boundscheck=False)
    def _ahead(src, dst, ahead, lines):
        """Up to ``lines`` prefetches from each memory stream: ahead[0:2] is
        the range of ``src`` to be read next, ahead[2:4] that of ``dst`` to be
        written next (flat indices), so that their lines arrive while this
        plane is computed instead of stalling the loads and stores later."""
        for _ in range(lines):
            if ahead[0] < ahead[1]:
                _prefetch_read(src, ahead[0])
                ahead[0] += 8
            if ahead[2] < ahead[3]:
                _prefetch_write(dst, ahead[2])
                ahead[2] += 8

    @njit(cache=True, nogil=True, boundscheck=False)
    def _plane(u, bm, bc, bp, ru, out, bo, ro, a1, b1, a2, b2, c0, c1, c2, src, dst, ahead, lines):
        """Cells [a1, b1) x [a2, b2) of one plane, into ``out`` (flat; the
        plane's cell (0, 0) at bo, rows of ro cells) from the planes below,
        at and above it in ``u`` (flat; at bm, bc, bp, rows of ru), with a
        few prefetches per row (_ahead).  Unsigned flat indices have no
        negative-index wrap-around to check, so the k loop is plain vector
        code, and no views are made per row."""
        one = np.uint64(1)
        r = np.uint64(ru)
        n = np.uint64(b2 - a2)
        for j in range(a1, b1):
            _ahead(src, dst, ahead, lines)
            at = j * ru + a2
            m, c, p = np.uint64(bm + at), np.uint64(bc + at), np.uint64(bp + at)
            o = np.uint64(bo + j * ro + a2)
            for k in range(n):
                x = u[c + k]
                t0 = ((u[m + k] + u[p + k]) - 2.0 * x) * c0
                t1 = ((u[c + k - r] + u[c + k + r]) - 2.0 * x) * c1
                t2 = ((u[c + k - one] + u[c + k + one]) - 2.0 * x) * c2
                out[o + k] = ((t0 + t1) + t2) + x

    @njit(cache=True, nogil=True, boundscheck=False)
    def _plane_variable(u, bm, bc, bp, ru, out, bo, ro, a1, b1, a2, b2, k0, k1, k2, q, kb, n2, size,
                        src, dst, ahead, lines):
        """_plane with HeatStencil's variable update: the face coefficients
        k0, k1, k2 and the source q are flat arrays of the padded block
        (plane i at kb, rows of n2 cells, planes of ``size``)."""
        one = np.uint64(1)
        r = np.uint64(ru)
        w = np.uint64(n2)
        p0 = np.uint64(size)
        n = np.uint64(b2 - a2)
        for j in range(a1, b1):
            _ahead(src, dst, ahead, lines)
            at = j * ru + a2
            m, c, p = np.uint64(bm + at), np.uint64(bc + at), np.uint64(bp + at)
            o = np.uint64(bo + j * ro + a2)
            f = np.uint64(kb + j * n2 + a2)
            for k in range(n):
                x = u[c + k]
                t0 = k0[f + k] * (u[m + k] - x) + k0[f + k + p0] * (u[p + k] - x)
                t1 = k1[f + k] * (u[c + k - r] - x) + k1[f + k + w] * (u[c + k + r] - x)
                t2 = k2[f + k] * (u[c + k - one] - x) + k2[f + k + one] * (u[c + k + one] - x)
                out[o + k] = (((t0 + t1) + t2) + q[f + k]) + x

    @njit(cache=True, nogil=True, boundscheck=False)
    def _walls3(slab, k0, a1, b1, a2, b2, grow, wa, wb):
        """Wall ghosts of one plane's box [a1, b1) x [a2, b2) along axes 1 and
        2 (``slab``'s column k0 + k holds cell k): ghost = wa * edge + wb."""
        a, b = k0 + a2, k0 + b2
        for j in range(a1, b1):
            if not grow[4]:
                slab[j, a - 1] = wa[4] * slab[j, a] + wb[4]
            if not grow[5]:
                slab[j, b] = wa[5] * slab[j, b - 1] + wb[5]
        if not grow[2]:
            _mirror(slab[a1 - 1, a:b], slab[a1, a:b], wa[2], wb[2])
        if not grow[3]:
            _mirror(slab[b1, a:b], slab[b1 - 1, a:b], wa[3], wb[3])

    @njit(cache=True, nogil=True, boundscheck=False)
    def _plane_sums(slab, k0, i, a1, b1, lo, hi, acc, e2, e3, e4, e5):
        """Plane i's edge cells at the walls of axes 1 and 2, among this
        tile's rows [a1, b1), into their sums (owned planes and rows only)."""
        if i < lo[0] or i >= hi[0]:
            return
        if acc[4] or acc[5]:
            for j in range(max(a1, lo[1]), min(b1, hi[1])):
                if acc[4]:
                    e4[i, j] += slab[j, k0 + lo[2]]
                if acc[5]:
                    e5[i, j] += slab[j, k0 + hi[2] - 1]
        if acc[2] and a1 <= lo[1] < b1:
            _add(e2[i, lo[2]:hi[2]], slab[lo[1], k0 + lo[2]:k0 + hi[2]])
        if acc[3] and a1 <= hi[1] - 1 < b1:
            _add(e3[i, lo[2]:hi[2]], slab[hi[1] - 1, k0 + lo[2]:k0 + hi[2]])

    @njit(cache=True, nogil=True, boundscheck=False)
    def _faces3(ghost, edge, k0, a1, b1, a2, b2, ca, cb, lo, hi, add, total):
        """The ghost plane beyond an axis-0 wall, from the edge plane; with
        ``add``, the edge plane's owned cells of these rows into ``total``."""
        for j in range(a1, b1):
            _mirror(ghost[j, k0 + a2:k0 + b2], edge[j, k0 + a2:k0 + b2], ca, cb)
        if add:
            for j in range(max(a1, lo[1]), min(b1, hi[1])):
                _add(total[j, lo[2]:hi[2]], edge[j, k0 + lo[2]:k0 + hi[2]])

    @njit(cache=True, nogil=True, boundscheck=False)
    def _copy(dst, d, src, s, n):
        for k in range(n):
            dst[d + k] = src[s + k]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _sweep3(src, dst, ring, kept, c, steps, lo, hi, grow, cuts, wa, wb, variable, f0, f1, f2, fq,
                acc, e0, e1, e2, e3, e4, e5):
        """_sweep for 3-D blocks, in tiles of axis 1 (cut at ``cuts``) skewed
        by one row per level: tile t computes rows [cuts[t] + e, cuts[t + 1] + e)
        of the level e steps short of the last (the first and last tiles
        reach the box's ends), so what a level needs from the tile before is
        its last two rows of the level below, kept for every plane in ``kept``
        (levels, planes, 2 rows): no tile recomputes another's cells.

        Level s - 1 of plane i lives in ring[s - 2, i % 3], whose rows are
        padded to whole 64-byte lines with cell 0 at RING_PAD: the levels
        between the first and the last are computed from one line boundary to
        the next (a few cells beyond their rows, never read as valid), so most
        of their vector loads and all their stores are aligned.  Level 1 reads
        ``src`` and the last level writes ``dst`` in place; their next planes
        are prefetched while the others are computed.  Ghost planes beyond an
        axis-0 wall are mirrored just before the next level reads them, which
        is why three slots suffice.  ``variable``: the update reads the face
        coefficients f0, f1, f2 and the source fq (padded blocks).  Walls
        and their sums as in _sweep; a level's rows belong to one tile, and
        tiles run in order, so each cell's sums take the levels in order."""
        n1, n2 = src.shape[1], src.shape[2]
        size = n1 * n2
        rr = ring.shape[3]
        plane = n1 * rr
        flat, flat_src, flat_dst, flat_kept = ring.reshape(-1), src.reshape(-1), dst.reshape(-1), kept.reshape(-1)
        k0f, k1f, k2f, qf = f0.reshape(-1), f1.reshape(-1), f2.reshape(-1), fq.reshape(-1)
        first, last = _span(lo, hi, grow, 0, steps - 1)
        tiles = cuts.shape[0] - 1
        sides = grow.copy()
        ahead = np.zeros(4, np.int64)
        for t in range(tiles):
            sides[2] = grow[2] if t == 0 else True            # the wall ghosts of axis 1 are the end tiles'
            sides[3] = grow[3] if t == tiles - 1 else True
            x0, x1 = cuts[t], cuts[t + 1]
            # prefetches per row computed; none in one step, whose plain streams the hardware
            # prefetchers follow better alone (measured)
            lines = (x1 - x0 + 2) * n2 // (8 * steps * (x1 - x0)) + 1 if steps > 1 else 0
            for r in range(first, hi[0] + steps - 1):
                ahead[:] = 0
                if r + 2 <= last:                            # level 1's rows of the plane after next
                    ahead[0] = (r + 2) * size + (x0 + steps - 2) * n2
                    ahead[1] = (r + 2) * size + (x1 + steps) * n2
                if lo[0] <= r - steps + 2 < hi[0]:           # the last level's rows of the next plane
                    ahead[2] = (r - steps + 2) * size + x0 * n2 + lo[2]
                    ahead[3] = (r - steps + 2) * size + (x1 - 1) * n2 + hi[2]
                for s in range(1, steps + 1):
                    e = steps - s
                    i = r - s + 1
                    a, b = _span(lo, hi, grow, 0, e)
                    if i < a or i >= b:
                        continue
                    a1, b1 = _span(lo, hi, grow, 1, e)
                    a1 = a1 if t == 0 else x0 + e
                    b1 = b1 if t == tiles - 1 else x1 + e
                    a2, b2 = _span(lo, hi, grow, 2, e)
                    if s == 1:                               # level 0 is src: its wall ghosts go there
                        _walls3(src[i], 0, a1, b1, a2, b2, sides, wa, wb)
                        _plane_sums(src[i], 0, i, a1, b1, lo, hi, acc, e2, e3, e4, e5)
                        u, ru, k0, bm, bc, bp = flat_src, n2, 0, (i - 1) * size, i * size, (i + 1) * size
                        below = src[i - 1:i + 2]
                        at = 1 - i % 3                       # below[(at + i) % 3] is plane i
                    else:
                        u, ru, k0 = flat, rr, RING_PAD
                        base = 3 * (s - 2)
                        bm = (base + (i - 1) % 3) * plane + RING_PAD
                        bc = (base + i % 3) * plane + RING_PAD
                        bp = (base + (i + 1) % 3) * plane + RING_PAD
                        below = ring[s - 2]
                        at = 0
                    if i == lo[0] and not grow[0]:
                        _faces3(below[(at + i - 1) % 3], below[(at + i) % 3], k0, a1, b1, a2, b2, wa[0], wb[0],
                                lo, hi, acc[0], e0)
                    if i == hi[0] - 1 and not grow[1]:
                        _faces3(below[(at + i + 1) % 3], below[(at + i) % 3], k0, a1, b1, a2, b2, wa[1], wb[1],
                                lo, hi, acc[1], e1)
                    if s == steps:
                        if variable:
                            _plane_variable(u, bm, bc, bp, ru, flat_dst, i * size, n2, a1, b1, a2, b2,
                                            k0f, k1f, k2f, qf, i * size, n2, size, flat_src, flat_dst, ahead, lines)
                        else:
                            _plane(u, bm, bc, bp, ru, flat_dst, i * size, n2, a1, b1, a2, b2, c[0], c[1], c[2],
                                   flat_src, flat_dst, ahead, lines)
                        continue
                    # whole lines of the ring; level 1 stops at src's row end (reads stay inside src),
                    # and so does every level of the variable update (its fields are src-sized)
                    a, b = a2 - a2 % 8, b2 + (-b2) % 8
                    if s == 1 or variable:
                        b = min(b, n2 - 1)
                    out = (3 * (s - 1) + i % 3) * plane
                    if variable:
                        _plane_variable(u, bm, bc, bp, ru, flat, out + RING_PAD, rr, a1, b1, a, b,
                                        k0f, k1f, k2f, qf, i * size, n2, size, flat_src, flat_dst, ahead, lines)
                    else:
                        _plane(u, bm, bc, bp, ru, flat, out + RING_PAD, rr, a1, b1, a, b,
                               c[0], c[1], c[2], flat_src, flat_dst, ahead, lines)
                    _walls3(ring[s - 1, i % 3], RING_PAD, a1, b1, a2, b2, sides, wa, wb)
                    _plane_sums(ring[s - 1, i % 3], RING_PAD, i, a1, b1, lo, hi, acc, e2, e3, e4, e5)
                    keep = ((s - 1) * kept.shape[1] + i) * 2 * rr
                    if t > 0:                                # the tile before's last two rows
                        _copy(flat, out + (a1 - 2) * rr, flat_kept, keep, 2 * rr)
                    if t < tiles - 1:
                        _copy(flat_kept, keep, flat, out + (b1 - 2) * rr, 2 * rr)

    def _make_accel(softened):
        """A force kernel over tiles of sources, vectorised per tile (loops over
        a slice from 0).  ``softened`` (eps2 >= 1e-30, so r2 > 0 always): 1/sqrt
        from a single-precision estimate and two Newton steps in double
        (relative error ~4e-16, needs r2 < 3e38), no guard.  Otherwise the exact
        divide and square root, with pairs at r = 0 zeroed by a select and
        counted (self-pairs excepted)."""
        @njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
        def accel(xi, yi, zi, xj, yj, zj, mj, j0, i0, eps2, G, out, tile):
            ni, nj = xi.shape[0], xj.shape[0]
            bad = 0
            a = 0
            while a < nj:
                b = min(nj, (j0 + a) // tile * tile + tile - j0)
                tx, ty, tz, tm = xj[a:b], yj[a:b], zj[a:b], mj[a:b]
                for i in range(ni):
                    px, py, pz = xi[i], yi[i], zi[i]
                    ax = 0.0
                    ay = 0.0
                    az = 0.0
                    coincident = 0
                    for j in range(b - a):
                        dx = tx[j] - px
                        dy = ty[j] - py
                        dz = tz[j] - pz
                        r2 = dx * dx + dy * dy + dz * dz + eps2
                        if softened:
                            inv = np.float64(np.float32(1.0) / np.sqrt(np.float32(r2)))
                            h = 0.5 * r2
                            inv = inv * (1.5 - h * inv * inv)
                            inv = inv * (1.5 - h * inv * inv)
                            w = tm[j] * inv * inv * inv
                        else:
                            inv = 1.0 / math.sqrt(r2)
                            w = tm[j] * inv * inv * inv if r2 > 0.0 else 0.0
                            coincident += 1 if r2 == 0.0 else 0
                        ax += w * dx
                        ay += w * dy
                        az += w * dz
                    if coincident:
                        own = i0 + i - j0
                        bad += coincident - (1 if a <= own < b else 0)
                    out[i, 0] += G * ax
                    out[i, 1] += G * ay
                    out[i, 2] += G * az
                a = b
            return bad
        return accel

    _accel_fast = _make_accel(True)
    _accel_exact = _make_accel(False)

    def _make_accel_jerk(softened):
        """The force and jerk kernel (Hermite): as _make_accel, with the
        sources' velocities.  Targets are rows (k, 3); sources are stored by
        coordinate, (3, n), so that a tile is a contiguous slice."""
        @njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
        def accel_jerk(xi, vi, ids, xs, vs, mj, j0, eps2, G, acc, jerk, tile):
            ni, nj = xi.shape[0], xs.shape[1]
            bad = 0
            a = 0
            while a < nj:
                b = min(nj, (j0 + a) // tile * tile + tile - j0)
                tx, ty, tz, tm = xs[0, a:b], xs[1, a:b], xs[2, a:b], mj[a:b]
                tu, tv, tw = vs[0, a:b], vs[1, a:b], vs[2, a:b]
                for i in range(ni):
                    px, py, pz = xi[i, 0], xi[i, 1], xi[i, 2]
                    qu, qv, qw = vi[i, 0], vi[i, 1], vi[i, 2]
                    ax = 0.0
                    ay = 0.0
                    az = 0.0
                    jx = 0.0
                    jy = 0.0
                    jz = 0.0
                    coincident = 0
                    for j in range(b - a):
                        dx = tx[j] - px
                        dy = ty[j] - py
                        dz = tz[j] - pz
                        du = tu[j] - qu
                        dv = tv[j] - qv
                        dw = tw[j] - qw
                        r2 = dx * dx + dy * dy + dz * dz + eps2
                        if softened:
                            inv = np.float64(np.float32(1.0) / np.sqrt(np.float32(r2)))
                            h = 0.5 * r2
                            inv = inv * (1.5 - h * inv * inv)
                            inv = inv * (1.5 - h * inv * inv)
                            inv2 = inv * inv
                        else:
                            inv = 1.0 / math.sqrt(r2) if r2 > 0.0 else 0.0
                            inv2 = inv * inv
                            coincident += 1 if r2 == 0.0 else 0
                        w = tm[j] * inv * inv2
                        rv = 3.0 * (dx * du + dy * dv + dz * dw) * inv2
                        ax += w * dx
                        ay += w * dy
                        az += w * dz
                        jx += w * (du - rv * dx)
                        jy += w * (dv - rv * dy)
                        jz += w * (dw - rv * dz)
                    if coincident:
                        own = ids[i] - j0
                        bad += coincident - (1 if a <= own < b else 0)
                    acc[i, 0] += G * ax
                    acc[i, 1] += G * ay
                    acc[i, 2] += G * az
                    jerk[i, 0] += G * jx
                    jerk[i, 1] += G * jy
                    jerk[i, 2] += G * jz
                a = b
            return bad
        return accel_jerk

    _accel_jerk_fast = _make_accel_jerk(True)
    _accel_jerk_exact = _make_accel_jerk(False)

    @njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    def _accel_jerk(xi, vi, ids, xs, vs, mj, j0, eps2, G, acc, jerk, tile):
        if eps2 >= 1e-30:
            return _accel_jerk_fast(xi, vi, ids, xs, vs, mj, j0, eps2, G, acc, jerk, tile)
        return _accel_jerk_exact(xi, vi, ids, xs, vs, mj, j0, eps2, G, acc, jerk, tile)

    @njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    def _hermite_predict(x, v, a, j, h, xs, vs):
        """numpy_.hermite_predict, into predictions stored by coordinate (3, n)."""
        for i in range(x.shape[0]):
            hi = h[i]
            for c in range(3):
                xs[c, i] = x[i, c] + hi * (v[i, c] + (0.5 * hi) * (a[i, c] + (hi / 3.0) * j[i, c]))
                vs[c, i] = v[i, c] + hi * (a[i, c] + (0.5 * hi) * j[i, c])

    @njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    def _hermite_level(dt, wanted, max_level):
        """numpy_.hermite_levels for one body."""
        if not wanted > 0.0:
            return max_level + 1
        ratio = dt / wanted
        if not math.isfinite(ratio):
            return max_level + 1
        mantissa, exponent = math.frexp(ratio)
        level = exponent - (1 if mantissa == 0.5 else 0)
        return min(max(level, 0), max_level + 1)

    @njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    def _hermite_correct(x, v, a, j, level, active, h, a1, j1, tau, eta, dt, max_level, result):
        """numpy_.hermite_correct; result: (deepest level asked for, position of a
        body that asked for more than max_level or -1, the step it asked for)."""
        deepest, worst, asked = 0, -1, 0.0
        for q in range(active.shape[0]):
            i = active[q]
            hq = h[q]
            s2 = hq * hq / 12.0
            na = nj = n2 = n3 = 0.0
            for c in range(3):
                a0, j0 = a[i, c], j[i, c]
                v1 = v[i, c] + (0.5 * hq) * (a0 + a1[q, c]) + s2 * (j0 - j1[q, c])
                x[i, c] = x[i, c] + (0.5 * hq) * (v[i, c] + v1) + s2 * (a0 - a1[q, c])
                v[i, c] = v1
                da = a0 - a1[q, c]
                d3 = (12.0 * da + (6.0 * hq) * (j0 + j1[q, c])) / (hq * hq * hq)
                d2 = (-6.0 * da - hq * (4.0 * j0 + 2.0 * j1[q, c])) / (hq * hq) + hq * d3
                a[i, c], j[i, c] = a1[q, c], j1[q, c]
                na += a1[q, c] * a1[q, c]
                nj += j1[q, c] * j1[q, c]
                n2 += d2 * d2
                n3 += d3 * d3
            if eta == 0.0:
                continue
            na, nj, n2, n3 = math.sqrt(na), math.sqrt(nj), math.sqrt(n2), math.sqrt(n3)
            top = na * n2 + nj * nj
            bottom = nj * n3 + n2 * n2
            wanted = math.sqrt(eta * (top / bottom)) if bottom > 0.0 else math.inf
            old = level[i]
            needed = _hermite_level(dt, wanted, max_level)
            new = old
            if needed > old:
                new = needed
            elif needed < old and tau % (np.int64(2) << (max_level - old)) == 0:
                new = old - 1
            if new > deepest:
                deepest = new
                if new > max_level:
                    worst, asked = q, wanted
            level[i] = min(new, max_level)
        result[0], result[1], result[2] = deepest, worst, asked

    @njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    def _hermite_block(x, v, a, j, level, m, ids, eps2, G, eta, dt, max_level, tile, xs, vs, stats):
        """A whole block on one rank: every block step (predict all, force and
        jerk on the active bodies, correct them) until the bodies meet at dt.
        stats += [block steps, active bodies, deepest level]; returns
        (position of a body that asked for more than max_level or -1, its step,
        coincident pairs), stopping at the first block step with either."""
        n = x.shape[0]
        ticks = np.int64(1) << max_level
        unit = dt / ticks
        t = np.zeros(n, np.int64)
        nxt = np.empty(n, np.int64)
        for i in range(n):
            nxt[i] = np.int64(1) << (max_level - level[i])
        h = np.empty(n)
        active = np.empty(n, np.int64)
        xi, vi, a1, j1 = np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3))
        idi, hk = np.empty(n, np.int64), np.empty(n)
        result = np.zeros(3)
        while True:
            tau = nxt.min()
            if tau > ticks:
                return -1, 0.0, 0
            k = 0
            for i in range(n):
                h[i] = (tau - t[i]) * unit
                if nxt[i] == tau:
                    active[k] = i
                    k += 1
            _hermite_predict(x, v, a, j, h, xs, vs)
            for q in range(k):
                i = active[q]
                idi[q], hk[q] = ids[i], h[i]
                for c in range(3):
                    xi[q, c], vi[q, c] = xs[c, i], vs[c, i]
                    a1[q, c] = 0.0
                    j1[q, c] = 0.0
            bad = _accel_jerk(xi[:k], vi[:k], idi[:k], xs, vs, m, 0, eps2, G, a1[:k], j1[:k], tile)
            _hermite_correct(x, v, a, j, level, active[:k], hk[:k], a1[:k], j1[:k], tau, eta, dt, max_level, result)
            for q in range(k):
                i = active[q]
                t[i] = tau
                nxt[i] = tau + (np.int64(1) << (max_level - level[i]))
            stats[0] += 1
            stats[1] += k
            stats[2] = max(stats[2], result[0])
            if result[1] >= 0 or bad:
                worst = int(result[1])
                return (active[worst] if worst >= 0 else -1), result[2], bad

    @njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
    def _potential(xi, yi, zi, xj, yj, zj, mj, j0, i0, eps2, G, phi, tile):
        ni, nj = xi.shape[0], xj.shape[0]
        a = 0
        while a < nj:
            b = min(nj, (j0 + a) // tile * tile + tile - j0)
            tx, ty, tz, tm = xj[a:b], yj[a:b], zj[a:b], mj[a:b]
            for i in range(ni):
                px, py, pz = xi[i], yi[i], zi[i]
                own = i0 + i - j0 - a                 # the self-pair's index in this tile, if any
                s = 0.0
                for j in range(b - a):
                    dx = tx[j] - px
                    dy = ty[j] - py
                    dz = tz[j] - pz
                    r2 = dx * dx + dy * dy + dz * dz + eps2
                    s += tm[j] / math.sqrt(r2) if (r2 > 0.0 and j != own) else 0.0
                phi[i] -= G * s
            a = b


RING_PAD = 8              # cells before the first of a 3-D ring row: whole vectors of 8 can start left of it
CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"
FALLBACK_L2 = 1 << 20     # per core, when the machine does not say: what most x86 server cores have at least
TILE_ROWS = None          # 3-D tiles: rows of axis 1 per tile (None: from the L2 size)


def _size(text: str) -> int:
    """Bytes of a sysfs cache size: '48K', '2048K', '1M', '512'."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _count(cpus: str) -> int:
    """CPUs in a sysfs list such as '0-3,8-11'."""
    n = 0
    for part in cpus.strip().split(","):
        a, _, b = part.partition("-")
        n += int(b or a) - int(a) + 1 if a else 0
    return n


def cache_sizes(root: str = CACHE_DIR) -> dict:
    """{level: bytes per core} of the data and unified caches sysfs lists
    under ``root`` (a cache shared by several CPUs is split among them);
    {} where there is no such directory or it cannot be read."""
    sizes = {}
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith("index"))
    except OSError:
        return sizes

    def read(name, field):
        with open(os.path.join(root, name, field)) as fh:
            return fh.read().strip()

    for name in names:
        try:
            if read(name, "type") not in ("Data", "Unified"):
                continue
            try:
                sharing = max(1, _count(read(name, "shared_cpu_list")))
            except OSError:
                sharing = 1
            sizes[int(read(name, "level"))] = _size(read(name, "size")) // sharing
        except (OSError, ValueError):
            continue
    return sizes


_l2 = None


def l2_bytes() -> int:
    """This machine's L2 cache per core: from sysfs, else sysconf, else FALLBACK_L2."""
    global _l2
    if _l2 is None:
        _l2 = cache_sizes().get(2, 0)
        if not _l2:
            try:
                _l2 = max(0, os.sysconf("SC_LEVEL2_CACHE_SIZE"))
            except (ValueError, OSError, AttributeError):
                _l2 = 0
        _l2 = _l2 or FALLBACK_L2
    return _l2


def _ring_row(n2) -> int:
    """Cells per 3-D ring row: RING_PAD before, room for whole vectors after, whole lines."""
    return (n2 + 2 * RING_PAD + 8) // 8 * 8


def _tile_rows(padded_shape, steps, l2=None, fields=0) -> int:
    """Rows per 3-D tile: as many as keep a tile's working set, about
    (3 (steps - 1) + 6) rows of every tile row (three ring slots per
    intermediate level, the three input planes level 1 reads, and the input
    and output lines passing through), and (steps + 1) rows of each of
    ``fields`` coefficient fields, within 60% of L2 (measured: more than
    that and the sweep slows sharply); at least ``steps``."""
    if TILE_ROWS:
        return max(TILE_ROWS, steps)
    row = 8 * _ring_row(padded_shape[2])
    budget = 0.6 * (l2 or l2_bytes())
    return max(steps, int(budget // ((3 * steps + 3 + fields * (steps + 1)) * row)) - 2)


def heat_block(padded_shape, fields=0, l2=None) -> int:
    """Steps per sweep, at most 8, from the L2 size.  2-D: as many as keep
    every level's ring of four rows and a row of each of ``fields``
    coefficient fields within 3/4 of L2 (rows as wide as a strip, with
    fields).  3-D: the most that still leave
    tiles (_tile_rows) of at least twice as many rows as steps, so that the
    steps are not bought with thin tiles."""
    l2 = l2 or l2_bytes()
    if len(padded_shape) == 2:
        columns = min(padded_shape[-1], _strip_columns(fields, l2) or padded_shape[-1])
        return max(1, min(8, 1 + int(0.75 * l2) // ((4 + fields) * 8 * columns)))
    for steps in range(8, 1, -1):
        if _tile_rows(padded_shape, steps, l2, fields) >= 2 * steps:
            return steps
    return 1


_rings: dict = {}


def _kept(shape, steps, row):
    """Reusable rows that 3-D tiles hand on to the next: two per level and plane."""
    key = ("kept", shape[0], steps, row)
    if key not in _rings:
        _rings[key] = np.zeros((max(steps - 1, 1), shape[0], 2, row))
    return _rings[key]


def _ring(shape, steps):
    """Reusable ring planes for a sweep of ``steps`` steps on blocks of ``shape``:
    2-D, four rows per intermediate level; 3-D, three planes per intermediate
    level, rows padded to whole 64-byte lines and starting on one."""
    key = (shape[1:], steps)
    ring = _rings.get(key)
    if ring is None:
        if len(_rings) > 8:
            _rings.clear()
        if len(shape) == 2:
            ring = np.empty((max(steps - 1, 1), 4) + shape[1:])
        else:
            rows = _ring_row(shape[2])
            levels = max(steps - 1, 1)
            size = levels * 3 * shape[1] * rows
            buf = np.zeros(size + 8)
            at = (-buf.ctypes.data % 64) // 8
            ring = buf[at:at + size].reshape(levels, 3, shape[1], rows)
        _rings[key] = ring
    return ring


STRIP_COLUMNS = None      # 2-D variable coefficients: columns per strip (None: from the L2 size; 0: whole rows)


def _strip_columns(fields, l2=None) -> int:
    """Columns per 2-D strip with ``fields`` coefficient fields (0: whole
    rows): as many as keep what eight levels touch at one sweep position,
    four ring rows and a row of each field per level, within 3/4 of L2."""
    if not fields:
        return 0
    if STRIP_COLUMNS is not None:
        return STRIP_COLUMNS
    return max(256, int(0.75 * (l2 or l2_bytes())) // (8 * (4 + fields) * 8))


def _strips(lo, hi, grow, acc, steps, width):
    """A 2-D box as strips of at most ``width`` columns (near-equal, none
    narrower than ``steps``, so none reaches past a wall), each swept on its
    own so that every level's rows of u and of the coefficient fields stay
    in L2; they grow into each other at the intermediate levels like any box
    whose side faces owned cells (recomputing steps - 1 columns there; the
    results are the same bits)."""
    n = min(-(-(hi[1] - lo[1]) // width), (hi[1] - lo[1]) // steps) if width else 1
    if n <= 1:
        yield lo, hi, grow, acc
        return
    cuts = [lo[1] + (hi[1] - lo[1]) * k // n for k in range(n + 1)]
    for k in range(n):
        slo, shi, sgrow, sacc = lo.copy(), hi.copy(), grow.copy(), acc.copy()
        slo[1], shi[1] = cuts[k], cuts[k + 1]
        if k > 0:
            sgrow[2], sacc[2] = True, False
        if k < n - 1:
            sgrow[3], sacc[3] = True, False
        yield slo, shi, sgrow, sacc


_NONE: dict = {}


def _none(ndim):
    """A placeholder array of ``ndim`` dimensions for an argument not used."""
    if ndim not in _NONE:
        _NONE[ndim] = np.zeros((1,) * ndim)
    return _NONE[ndim]


def heat_fused(src, dst, stencil, steps, lo, hi, grow):
    """Same contract as numpy_.heat_fused, in wavefront sweeps.  A 3-D box is
    swept in skewed tiles of axis 1 (see _sweep3), at least as wide as the
    steps taken (a short last tile joins the one before), so no tile's level
    is empty and none reaches past a wall.  Constant or variable
    coefficients are chosen once per sweep."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    ndim = src.ndim
    ring = _ring(src.shape, steps)
    variable = stencil.faces is not None
    c = np.zeros(ndim) if variable else np.asarray(stencil.coeffs, dtype=np.float64)
    wa = np.array([w[0] for w in stencil.walls], dtype=np.float64)
    wb = np.array([w[1] for w in stencil.walls], dtype=np.float64)
    sums = tuple(stencil.sums) + (None,) * (2 * ndim - len(stencil.sums))
    acc = np.array([not grow[k] and sums[k] is not None for k in range(2 * ndim)], dtype=np.bool_)
    totals = [sums[k] if acc[k] else _none(ndim - 1) for k in range(2 * ndim)]
    fields = list(stencil.faces) + [stencil.source] if variable else [_none(ndim)] * (ndim + 1)
    lo, hi, grow = (np.asarray(x, dtype=np.int64) for x in (lo, hi, grow))
    grow = grow.astype(np.bool_)
    if ndim == 2:
        for slo, shi, sgrow, sacc in _strips(lo, hi, grow, acc, steps, _strip_columns(ndim + 1 if variable else 0)):
            _sweep(src, dst, ring, c, steps, slo, shi, sgrow, wa, wb, variable, *fields, sacc, *totals)
        return
    width = _tile_rows(src.shape, steps, fields=ndim + 1 if variable else 0)
    cuts = list(range(lo[1], hi[1], width))
    if len(cuts) > 1 and hi[1] - cuts[-1] < max(width // 2, steps):
        cuts.pop()
    cuts.append(hi[1])
    kept = _kept(src.shape, steps, ring.shape[3])
    _sweep3(src, dst, ring, kept, c, steps, lo, hi, grow, np.asarray(cuts, dtype=np.int64), wa, wb, variable,
            *fields, acc, *totals)


def _columns(x):
    return tuple(np.ascontiguousarray(x[:, c]) for c in range(3))


def nbody_accel(xi, xj, mj, j0, eps2, G, out, i0=None):
    """Same contract as numpy_.nbody_accel."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    first = -(2 ** 62) if i0 is None else i0           # disjoint ids: no self-pairs
    acc = np.zeros(out.shape, dtype=np.float64) if out.dtype != np.float64 else out
    kernel = _accel_fast if eps2 >= 1e-30 else _accel_exact
    bad = kernel(*_columns(xi), *_columns(xj), np.ascontiguousarray(mj), j0, first,
                 float(eps2), float(G), acc, TILE)
    if acc is not out:
        with np.errstate(over="ignore", invalid="ignore"):       # an overflow is caught by the model's checks
            out += acc.astype(out.dtype)
    return int(bad)


def nbody_potential(xi, xj, mj, j0, i0, eps2, G):
    """Same contract as numpy_.nbody_potential."""
    phi = np.zeros(len(xi), dtype=np.float64)
    if len(xi) and len(xj):
        _potential(*_columns(xi), *_columns(xj), np.ascontiguousarray(mj), j0, i0, float(eps2), float(G), phi, TILE)
    return phi


def _by_coordinate(x):
    """(3, n) contiguous: the transpose of a (n, 3) view of such an array, without a copy."""
    return np.ascontiguousarray(x.T, dtype=np.float64)


def nbody_accel_jerk(xi, vi, ids, xj, vj, mj, j0, eps2, G, acc, jerk):
    """Same contract as numpy_.nbody_accel_jerk."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    sums = [q if q.dtype == np.float64 and q.flags.c_contiguous else np.zeros(q.shape) for q in (acc, jerk)]
    bad = _accel_jerk(np.ascontiguousarray(xi, dtype=np.float64), np.ascontiguousarray(vi, dtype=np.float64),
                      np.ascontiguousarray(ids, dtype=np.int64), _by_coordinate(xj), _by_coordinate(vj),
                      np.ascontiguousarray(mj, dtype=np.float64), j0, float(eps2), float(G), sums[0], sums[1], TILE)
    for q, total in zip((acc, jerk), sums):
        if total is not q:
            q += total
    return int(bad)


def hermite_predict(x, v, a, j, h, xp, vp):
    """Same contract as numpy_.hermite_predict (fastest when xp and vp are
    views (n, 3) of arrays (3, n), as the model keeps them)."""
    _hermite_predict(x, v, a, j, h, xp.T, vp.T)


def hermite_correct(x, v, a, j, level, active, h, a1, j1, tau, eta, dt, max_level):
    """Same contract as numpy_.hermite_correct."""
    if len(active) == 0:
        return 0, -1, 0.0
    result = np.zeros(3)
    _hermite_correct(x, v, a, j, level, active, h, np.ascontiguousarray(a1), np.ascontiguousarray(j1), np.int64(tau),
                     float(eta), float(dt), max_level, result)
    return int(result[0]), int(result[1]), float(result[2])


def hermite_block(x, v, a, j, level, m, ids, eps2, G, eta, dt, max_level, stats):
    """Optional (one rank): a whole block of numpy_.hermite_predict,
    nbody_accel_jerk and hermite_correct in one compiled loop (the same
    formulas), without a Python call per block step.  ``stats`` (float64)
    += [block steps, active bodies, deepest level].  Returns (index of a body
    that asked for a step below dt / 2^max_level or -1, the step it asked
    for, coincident pairs), stopping at the first block step with either."""
    n = len(x)
    if n == 0:
        return -1, 0.0, 0
    xs, vs = np.empty((3, n)), np.empty((3, n))
    worst, asked, bad = _hermite_block(x, v, a, j, level, np.ascontiguousarray(m, dtype=np.float64), ids,
                                       float(eps2), float(G), float(eta), float(dt), max_level, TILE, xs, vs, stats)
    return int(worst), float(asked), int(bad)
