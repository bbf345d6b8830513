"""Compiled CPU backend: Numba kernels, one thread per rank (ranks own the
cores; threads inside a rank would oversubscribe them).  Kernels are cached
on disk, so only the first run on a machine pays for compilation.

Heat evaluates ((sum_d c_d ((u[-1] + u[+1]) - 2 u)) + u) in exactly the
reference backend's order, without fast-math, so fields are bitwise equal to
the NumPy backend's.  The n-body kernels use the same fixed tiles of global
ids as the reference (so results still do not depend on the rank count) but
sum inside a tile in another order, with fast-math: they agree with the
reference to round-off (tested to 1e-12 relative).
"""
from __future__ import annotations

import math

import numpy as np

from .numpy_ import TILE, from_host, to_host, zeros  # noqa: F401  (same host arrays)

name = "cpu"

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
    def _heat2d(src, dst, c0, c1, a0, b0, a1, b1):
        n = b1 - a1
        for i in range(a0 + 1, b0 + 1):
            _row(src[i - 1, a1 + 1:b1 + 1], src[i + 1, a1 + 1:b1 + 1], src[i, a1:b1], src[i, a1 + 2:b1 + 2],
                 src[i, a1 + 1:b1 + 1], dst[i, a1 + 1:b1 + 1], n, c0, c1)

    @njit(cache=True, nogil=True, boundscheck=False)
    def _heat3d(src, dst, c0, c1, c2, a0, b0, a1, b1, a2, b2):
        n = b2 - a2
        for i in range(a0 + 1, b0 + 1):
            for j in range(a1 + 1, b1 + 1):
                um = src[i - 1, j, a2 + 1:b2 + 1]
                up = src[i + 1, j, a2 + 1:b2 + 1]
                vm = src[i, j - 1, a2 + 1:b2 + 1]
                vp = src[i, j + 1, a2 + 1:b2 + 1]
                wm = src[i, j, a2:b2]
                wp = src[i, j, a2 + 2:b2 + 2]
                u0 = src[i, j, a2 + 1:b2 + 1]
                out = dst[i, j, a2 + 1:b2 + 1]
                for k in range(n):
                    u = u0[k]
                    t0 = ((um[k] + up[k]) - 2.0 * u) * c0
                    t1 = ((vm[k] + vp[k]) - 2.0 * u) * c1
                    t2 = ((wm[k] + wp[k]) - 2.0 * u) * c2
                    out[k] = ((t0 + t1) + t2) + u

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
                    zeros = 0
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
                            zeros += 1 if r2 == 0.0 else 0
                        ax += w * dx
                        ay += w * dy
                        az += w * dz
                    if zeros:
                        own = i0 + i - j0
                        bad += zeros - (1 if a <= own < b else 0)
                    out[i, 0] += G * ax
                    out[i, 1] += G * ay
                    out[i, 2] += G * az
                a = b
            return bad
        return accel

    _accel_fast = _make_accel(True)
    _accel_exact = _make_accel(False)

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


def heat_update(src, dst, coeffs, lo, hi):
    """Same contract and the same arithmetic as numpy_.heat_update."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    if len(coeffs) == 2:
        _heat2d(src, dst, coeffs[0], coeffs[1], lo[0], hi[0], lo[1], hi[1])
    else:
        _heat3d(src, dst, coeffs[0], coeffs[1], coeffs[2], lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


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
        out += acc.astype(out.dtype)
    return int(bad)


def nbody_potential(xi, xj, mj, j0, i0, eps2, G):
    """Same contract as numpy_.nbody_potential."""
    phi = np.zeros(len(xi), dtype=np.float64)
    if len(xi) and len(xj):
        _potential(*_columns(xi), *_columns(xj), np.ascontiguousarray(mj), j0, i0, float(eps2), float(G), phi, TILE)
    return phi
