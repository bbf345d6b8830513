"""A checksum of a global dataset that does not depend on how it is split.

Each element contributes mix(bits XOR index * GOLDEN), where ``bits`` are
the element's value bits (zero-extended to 64 bits), ``index`` its flat
index in the global array (C order) and ``mix`` the SplitMix64 finaliser,
a bijection of 64-bit words; the checksum is the sum of the contributions
modulo 2**64.  The sum does not care in which order, or on which rank, the
elements are hashed, so every rank hashes its own block and one reduction
gives the whole dataset's sum; and since ``mix`` is a bijection for a fixed
index, any change of a single value changes the sum.  The name of the
algorithm is stored beside the value (``ALGORITHM``) so it can change.
"""
from __future__ import annotations

import numpy as np

ALGORITHM = "sum64-splitmix64-v1"
VALUE_ATTR, ALGORITHM_ATTR = "checksum", "checksum_algorithm"
MASK = (1 << 64) - 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S1, _S2, _S3 = np.uint64(30), np.uint64(27), np.uint64(31)
CHUNK = 1 << 15          # elements hashed at a time: the temporaries stay in the cache


def _bits(block: np.ndarray) -> np.ndarray:
    """The value bits of ``block`` as unsigned integers (a view, no copy)."""
    if block.dtype.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"no checksum for elements of {block.dtype.itemsize} bytes ({block.dtype})")
    return block.view(np.dtype(f"u{block.dtype.itemsize}"))


def partial(block: np.ndarray, shape, where) -> int:
    """This rank's share of the checksum of a dataset of global ``shape``:
    ``block`` lies at ``where`` (slices of the leading axes; the others whole)."""
    shape = tuple(int(n) for n in shape)
    block = np.asarray(block)
    if block.size == 0:
        return 0
    starts = [s.start for s in where] + [0] * (len(shape) - len(where))
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]
    bits = _bits(block).reshape(block.shape)
    # the flat index of each element: one term per axis; the trailing axes' terms summed once
    # (index * GOLDEN is linear in the per-axis terms, so each term carries the factor)
    def term(d):
        return (np.arange(block.shape[d], dtype=np.uint64) + np.uint64(starts[d])) * np.uint64(strides[d]) * _GOLDEN
    inner = np.zeros(block.shape[1:], dtype=np.uint64)
    for d in range(1, block.ndim):
        inner = inner + term(d).reshape((-1,) + (1,) * (block.ndim - 1 - d))
    lead = term(0)
    rows = max(1, CHUNK // max(1, inner.size))
    total = 0
    z = t = None
    for r0 in range(0, block.shape[0], rows):
        r1 = min(block.shape[0], r0 + rows)
        want = (r1 - r0,) + block.shape[1:]
        if z is None or z.shape != want:
            z, t = np.empty(want, np.uint64), np.empty(want, np.uint64)
        np.add(lead[r0:r1].reshape((-1,) + (1,) * (block.ndim - 1)), inner, out=z)
        np.bitwise_xor(z, bits[r0:r1], out=z)
        np.right_shift(z, _S1, out=t)
        z ^= t
        z *= _M1
        np.right_shift(z, _S2, out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, _S3, out=t)
        z ^= t
        total += int(z.sum(dtype=np.uint64))
    return total & MASK


def of_array(array: np.ndarray) -> int:
    """The checksum of a whole array (serial)."""
    array = np.asarray(array)
    if array.ndim == 0:
        array = array.reshape(1)
    return partial(array, array.shape, (slice(0, array.shape[0]),))


def attrs(value: int) -> dict:
    """The dataset attributes that store a checksum."""
    return {VALUE_ATTR: np.uint64(value & MASK), ALGORITHM_ATTR: ALGORITHM}


ATTRS_ATTR = "attrs_checksum"       # a root attribute: SHA-256 of every other root attribute


def _canonical(value) -> bytes:
    """One byte string per attribute value, the same for what was written and
    what h5py reads back (str or bytes, Python or NumPy numbers, arrays)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogateescape")
    array = np.asarray(value)
    if array.dtype.kind in "fc":
        array = array.astype(np.complex128 if array.dtype.kind == "c" else np.float64)
    elif array.dtype.kind in "iub":
        array = array.astype(np.int64)
    else:
        return b"o" + repr(value).encode()
    return array.dtype.str.encode() + repr(array.shape).encode() + array.tobytes()


def of_attrs(attrs: dict) -> str:
    """The checksum of a checkpoint's root attributes (step, time, dt, the
    stored config...): a flipped bit there would silently change the run that
    continues from it, as one in the data would."""
    import hashlib
    sha = hashlib.sha256()
    for key in sorted(k for k in attrs if k != ATTRS_ATTR):
        for part in (key.encode(), _canonical(attrs[key])):
            sha.update(len(part).to_bytes(8, "little") + part)
    return sha.hexdigest()
