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


_scratch: dict = {}


def _buffers(shape, dtype):
    """Two reusable work arrays per block shape: fresh temporaries of this
    size would be page-faulted in on every step."""
    key = (tuple(shape), np.dtype(dtype).str)
    if key not in _scratch:
        if len(_scratch) > 16:
            _scratch.clear()
        _scratch[key] = (np.empty(shape, dtype), np.empty(shape, dtype))
    return _scratch[key]


def heat_update(src, dst, coeffs, lo, hi):
    """dst = (sum_d c_d ((src[-1] + src[+1]) - 2 src)) + src on interior cells [lo, hi).

    ``src`` and ``dst`` are padded blocks (one ghost layer per side), ``lo`` and
    ``hi`` interior indices.  Every cell is computed by the same expressions in
    the same order wherever the block boundaries fall, so the result does not
    depend on the decomposition; compiled backends keep this order."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    centre = tuple(slice(l + 1, h + 1) for l, h in zip(lo, hi))
    u = src[centre]
    acc = dst[centre]
    twice, term = _buffers(u.shape, u.dtype)
    np.multiply(u, 2.0, out=twice)
    for d, c in enumerate(coeffs):
        minus = centre[:d] + (slice(lo[d], hi[d]),) + centre[d + 1:]
        plus = centre[:d] + (slice(lo[d] + 2, hi[d] + 2),) + centre[d + 1:]
        out = acc if d == 0 else term
        np.add(src[minus], src[plus], out=out)
        out -= twice
        out *= c
        if d > 0:
            acc += term
    acc += u
