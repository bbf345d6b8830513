"""Reference backend: NumPy array expressions.  Slow but obviously right;
every other backend is checked against it."""
from __future__ import annotations

import numpy as np

name = "numpy"


def available():
    return True, ""


def zeros(shape, dtype=np.float64):
    return np.zeros(shape, dtype)


def to_host(array):
    return np.asarray(array)


def from_host(array):
    return np.array(array, copy=True)


def heat_update(src, dst, coeffs, lo, hi):
    """dst = src + sum_d c_d (src[-1] + src[+1] - 2 src) on interior cells [lo, hi).

    ``src`` and ``dst`` are padded blocks (one ghost layer per side), ``lo`` and
    ``hi`` interior indices.  Every cell is computed by the same expression in
    the same order wherever the block boundaries fall, so the result does not
    depend on the decomposition."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    centre = tuple(slice(l + 1, h + 1) for l, h in zip(lo, hi))
    u = src[centre]
    acc = None
    for d, c in enumerate(coeffs):
        minus = centre[:d] + (slice(lo[d], hi[d]),) + centre[d + 1:]
        plus = centre[:d] + (slice(lo[d] + 2, hi[d] + 2),) + centre[d + 1:]
        term = src[minus] + src[plus]
        term -= 2.0 * u
        term *= c
        if acc is None:
            acc = term
        else:
            acc += term
    acc += u
    dst[centre] = acc
