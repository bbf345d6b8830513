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
    @njit(cache=True, boundscheck=False)
    def _heat2d(src, dst, c0, c1, a0, b0, a1, b1):
        for i in range(a0 + 1, b0 + 1):
            for j in range(a1 + 1, b1 + 1):
                u = src[i, j]
                t0 = ((src[i - 1, j] + src[i + 1, j]) - 2.0 * u) * c0
                t1 = ((src[i, j - 1] + src[i, j + 1]) - 2.0 * u) * c1
                dst[i, j] = (t0 + t1) + u

    @njit(cache=True, boundscheck=False)
    def _heat3d(src, dst, c0, c1, c2, a0, b0, a1, b1, a2, b2):
        for i in range(a0 + 1, b0 + 1):
            for j in range(a1 + 1, b1 + 1):
                for k in range(a2 + 1, b2 + 1):
                    u = src[i, j, k]
                    t0 = ((src[i - 1, j, k] + src[i + 1, j, k]) - 2.0 * u) * c0
                    t1 = ((src[i, j - 1, k] + src[i, j + 1, k]) - 2.0 * u) * c1
                    t2 = ((src[i, j, k - 1] + src[i, j, k + 1]) - 2.0 * u) * c2
                    dst[i, j, k] = ((t0 + t1) + t2) + u

    @njit(cache=True, fastmath=True, boundscheck=False)
    def _accel(xi, yi, zi, xj, yj, zj, mj, j0, i0, eps2, G, out, tile):
        ni, nj = xi.shape[0], xj.shape[0]
        bad = 0
        a = 0
        while a < nj:
            b = min(nj, (j0 + a) // tile * tile + tile - j0)
            for i in range(ni):
                px, py, pz = xi[i], yi[i], zi[i]
                ax = 0.0
                ay = 0.0
                az = 0.0
                for j in range(a, b):
                    dx = xj[j] - px
                    dy = yj[j] - py
                    dz = zj[j] - pz
                    r2 = dx * dx + dy * dy + dz * dz + eps2
                    if r2 > 0.0:
                        w = mj[j] / (r2 * math.sqrt(r2))
                        ax += w * dx
                        ay += w * dy
                        az += w * dz
                    elif i0 + i != j0 + j:
                        bad += 1
                out[i, 0] += G * ax
                out[i, 1] += G * ay
                out[i, 2] += G * az
            a = b
        return bad

    @njit(cache=True, fastmath=True, boundscheck=False)
    def _potential(xi, yi, zi, xj, yj, zj, mj, j0, i0, eps2, G, phi, tile):
        ni, nj = xi.shape[0], xj.shape[0]
        a = 0
        while a < nj:
            b = min(nj, (j0 + a) // tile * tile + tile - j0)
            for i in range(ni):
                s = 0.0
                for j in range(a, b):
                    if i0 + i == j0 + j:
                        continue
                    dx = xj[j] - xi[i]
                    dy = yj[j] - yi[i]
                    dz = zj[j] - zi[i]
                    r2 = dx * dx + dy * dy + dz * dz + eps2
                    if r2 > 0.0:
                        s += mj[j] / math.sqrt(r2)
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
    bad = _accel(*_columns(xi), *_columns(xj), np.ascontiguousarray(mj), j0, first,
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
