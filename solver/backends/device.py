"""What the device backends (``opencl``, ``cuda``) share: how boxes, the
levels of a fused sweep and their wall ghosts map onto kernel launches,
and how the per-group partials of a reduction come back.  Each backend
only launches; this module holds no device state."""
from __future__ import annotations

import math
import os

import numpy as np


def choose(comm, wanted, count, kind) -> int:
    """The device index this rank takes (collective): ``wanted``
    (backend.device), or -1 for the rank's index on its node; a device that
    is not there is one ConfigError on every rank."""
    from ..config import ConfigError
    from ..parallel.mpi import all_ranks, node_rank
    local = node_rank(comm)
    if not all_ranks(comm, wanted < count):
        raise ConfigError(f"backend.device: there is no {kind} device {wanted} here ({count} found; "
                          f"python -m solver info lists them)")
    return wanted if wanted >= 0 else local


def launcher_local_rank() -> int:
    """The rank on the node as the launcher says (Open MPI, SLURM), else 0:
    for a backend used without ``bind`` (tests, tools)."""
    return int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def real_of(dtype):
    """(the kernels' ``real``, the NumPy type) for bodies of ``dtype``."""
    return ("float", np.float32) if np.dtype(dtype) == np.float32 else ("double", np.float64)


def box3(shape, box):
    """The kernels' view of ``box`` of an array of ``shape`` as a 3-D box (a
    2-D array is 1 x n0 x n1): the arguments (n1, n2, lo0, lo1, lo2, m1, m2,
    count) as int64, and the cell count."""
    shape = (1,) * (3 - len(shape)) + tuple(shape)
    box = (slice(0, 1),) * (3 - len(box)) + tuple(box)
    m = [s.stop - s.start for s in box]
    count = math.prod(m)
    args = [shape[1], shape[2]] + [s.start for s in box] + [m[1], m[2], count]
    return [np.int64(a) for a in args], count


def levels(lo, hi, grow, steps):
    """(level s, its box lo, its box hi) of a fused sweep: level s covers
    the box grown by steps - s cells on its growing sides (see numpy_.heat_fused)."""
    for s in range(1, steps + 1):
        e = steps - s
        yield (s, [lo[a] - (e if grow[2 * a] else 0) for a in range(len(lo))],
               [hi[a] + (e if grow[2 * a + 1] else 0) for a in range(len(lo))])


def wall_faces(shape, lo, hi, grow):
    """The ghost faces beyond the wall sides of the box [lo, hi), in the
    reference's order: (side index 2 axis + side, first ghost, stride and
    count along the face's first axis (count 1 in 2-D), stride and count
    along its last axis, the stride from a ghost to its edge cell), as the
    heat_wall kernel takes them; then where the face's first cell lies in
    the wall's sums (the padded block without the axis) and the sums'
    strides along the same two axes."""
    ndim = len(shape)
    strides = [math.prod(shape[a + 1:]) for a in range(ndim)]
    for a in range(ndim):
        others = [b for b in range(ndim) if b != a]
        counts = [hi[b] - lo[b] for b in others]
        face = [shape[b] for b in others]
        face_strides = [math.prod(face[k + 1:]) for k in range(len(face))]
        for side in (0, 1):
            if grow[2 * a + side] or min(counts) <= 0:
                continue
            ghost = lo[a] - 1 if side == 0 else hi[a]
            start = ghost * strides[a] + sum(lo[b] * strides[b] for b in others)
            sa, ca = (strides[others[0]], counts[0]) if ndim == 3 else (0, 1)
            at = sum(lo[b] * fs for b, fs in zip(others, face_strides))
            fa = face_strides[0] if ndim == 3 else 0
            yield (2 * a + side, start, sa, ca, strides[others[-1]], counts[-1],
                   strides[a] if side == 0 else -strides[a], at, fa, face_strides[-1])


def reductions(reduce):
    """``box_stats``, ``all_finite`` and ``box_error`` (the contracts of
    numpy_'s) for a backend whose ``reduce(kernel, array, box, width,
    *extra)`` runs a reduction kernel and returns its per-group partials."""
    def box_stats(array, box):
        partial = reduce("box_stats", array, box, 4)
        if partial[:, 3].any():              # NaN or infinity: let the model's checks see it
            return float("nan"), float("nan"), float("nan")
        return float(partial[:, 0].sum()), float(partial[:, 1].min()), float(partial[:, 2].max())

    def all_finite(array, box) -> bool:
        return not reduce("box_stats", array, box, 4)[:, 3].any()

    def box_error(array, box, mode, factor, background):
        partial = reduce("box_error", array, box, 2, mode.buffer, np.float64(factor), np.float64(background))
        return float(partial[:, 0].sum()), float(partial[:, 1].max())
    return box_stats, all_finite, box_error
