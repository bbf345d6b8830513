"""A user's cell field: each rank reads only its own block.

A field is named as the config names it (``heat.file``, ``heat.diffusivity``,
``heat.source``):

    "FILE.npy"            a NumPy array file, memory-mapped and sliced (np.load(mmap_mode="r"))
    "FILE.h5:DATASET"     that dataset of any HDF5 file
    "FILE.h5"             one of our checkpoints (its /heat/u), else the file's only dataset of the grid's shape

(a path that itself holds a ':' is written with a trailing ':', "a:b.h5:").
Rank 0 checks the file (kind, dataset, shape, number type) and every rank
gets the verdict, so a bad file is one ConfigError on every rank naming the
file, the dataset and what was expected; then each rank reads its block
(HDF5 through ``io/blocks.read_blocks``), so no rank holds more than its
share.  The values are checked by the caller, on every rank (``check_values``).
"""
from __future__ import annotations

import os

import numpy as np

from ..config import ConfigError
from ..parallel.mpi import MPI, all_ranks, root_decides

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
EXPECTED = "a NumPy .npy file, 'FILE.h5:DATASET', or an HDF5 file holding one dataset of the grid's shape"


def parse(spec: str) -> tuple[str, str]:
    """(path, dataset name or "") of a field's spec."""
    if spec.endswith(".npy") or ":" not in spec:
        return spec, ""
    path, name = spec.rsplit(":", 1)
    return path, name.strip("/")


def _shape_text(shape) -> str:
    return " x ".join(map(str, shape))


def _is_hdf5(path) -> bool:
    """HDF5's signature at offset 0 (where h5py's files and ours put it)."""
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_SIGNATURE


def _check(spec, what, shape):
    """Rank 0: ("npy", path, "", None) or ("h5", path, dataset, the file's
    FileInfo) after checking the file against ``shape``; ConfigError naming
    the file, dataset and what was expected."""
    from . import inputs
    from .checkpoint import FORMAT
    path, name = parse(spec)
    expected = _shape_text(shape)
    if not os.path.exists(path):
        raise ConfigError(f"{what}: {path} does not exist (expected {EXPECTED})")
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: {path} is not a file")
    if path.endswith(".npy"):
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConfigError(f"{what}: {path} cannot be read as a NumPy .npy file ({exc}); expected an array "
                              f"of {expected} numbers") from None
        if array.dtype.kind not in "fiu":
            raise ConfigError(f"{what}: {path} holds {array.dtype}, expected numbers (float or integer)")
        if tuple(array.shape) != tuple(shape):
            raise ConfigError(f"{what}: {path} has shape {list(array.shape)}, expected {expected} (heat.shape)")
        return "npy", path, "", None
    try:
        hdf5 = _is_hdf5(path)
    except OSError as exc:
        raise ConfigError(f"{what}: {path} cannot be read: {exc.strerror or exc}") from None
    if not hdf5:
        raise ConfigError(f"{what}: {path} is neither an HDF5 file nor a .npy file; expected {EXPECTED}")
    info = inputs.check_file(path, what, ours=False)
    if not name:
        if info.attrs.get("format") == FORMAT:          # one of our checkpoints: its field
            info = inputs.check_file(path, what, {"heat/u": inputs.Want(tuple(shape))})
            return "h5", path, "heat/u", info
        fits = sorted(k for k, s in info.shapes.items() if tuple(s) == tuple(shape))
        if len(fits) != 1:
            found = ", ".join(f"/{k} {list(s)}" for k, s in sorted(info.shapes.items())) or "no datasets"
            many = "several" if fits else "no"
            raise ConfigError(f"{what}: {path} holds {many} datasets of shape {expected} ({found}); "
                              f"name one as {path}:DATASET")
        name = fits[0]
    if name not in info.shapes:
        found = ", ".join(f"/{k}" for k in sorted(info.shapes)) or "no datasets"
        raise ConfigError(f"{what}: {path} has no dataset /{name} (it holds {found})")
    inputs.require(info, {name: inputs.Want(tuple(shape))}, f"{what}", ours=False)
    return "h5", path, name, info


def read(spec, comm, shape, where, what) -> np.ndarray:
    """This rank's block ``where`` (slices) of the field ``spec`` of global
    ``shape``, as float64 (collective).  A dataset that carries one of our
    checksums (a checkpoint's) is checked against it."""
    kind, path, name, info = root_decides(comm, _check, spec, what, tuple(shape))
    if kind == "npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return np.array(array[where], dtype=np.float64)
    from .blocks import read_blocks
    from .inputs import check_blocks
    block = read_blocks(path, comm, [(name, where)])[0]
    check_blocks(info, comm, what, [(name, where, block)])
    return block.astype(np.float64)


def describe(spec) -> str:
    """The file and dataset in words, for messages."""
    path, name = parse(spec)
    return f"{path}" + (f" (dataset /{name})" if name else "")


def check_values(comm, local, what, spec, positive=False, largest=None):
    """ConfigError on every rank unless every rank's values are finite
    (``positive``: > 0) and at most ``largest`` in magnitude."""
    with np.errstate(invalid="ignore"):
        ok = bool(np.isfinite(local).all())
        if ok and positive:
            ok = bool((local > 0).all())
        if ok and largest is not None:
            ok = bool((np.abs(local) <= largest).all())
    if not all_ranks(comm, ok):
        need = "positive (> 0) finite numbers" if positive else "finite numbers"
        size = f" of at most {largest:g} in magnitude" if largest is not None else ""
        raise ConfigError(f"{what}: {describe(spec)} holds values that are not {need}{size}")


_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix(z):
    """splitmix64's finaliser: every input bit moves every output bit."""
    z = (z ^ (z >> np.uint64(30))) * _MIX[0]
    z = (z ^ (z >> np.uint64(27))) * _MIX[1]
    return z ^ (z >> np.uint64(31))


def digest(comm, local, offset, shape) -> str:
    """A digest of a global field from each rank's block (collective): the
    sum over cells of a mix of the cell's global index and its value's bits,
    so it does not depend on the decomposition; 16 hex digits."""
    index = np.zeros(local.shape, np.uint64)
    for d, (o, n) in enumerate(zip(offset, local.shape)):
        axis = [1] * local.ndim
        axis[d] = -1
        index = index * np.uint64(shape[d]) + np.arange(o, o + n, dtype=np.uint64).reshape(axis)
    values = np.ascontiguousarray(local, dtype=np.float64) + 0.0          # -0.0 and 0.0 alike
    with np.errstate(over="ignore"):
        mixed = _mix(_mix(index * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)) ^ values.view(np.uint64))
        total = np.array([mixed.sum(dtype=np.uint64)], dtype=np.uint64)
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    return f"{int(total[0]):016x}"
