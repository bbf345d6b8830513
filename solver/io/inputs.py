"""HDF5 input, checked by one set of rules before anything is allocated.

Every file the solver reads (a checkpoint to restart from, a start field,
a particle file) goes through ``check_file``: it exists, opens as HDF5, is
one of our checkpoints where one is needed (format, version, the root
attributes a restart relies on), and holds the datasets the reader asks for
(``Want``: shape, number type).  Rank 0 checks; every rank gets the verdict
(``inspect``), so a bad file is one ConfigError on every rank.  The values
themselves (finite, in range) are checked by the model that reads them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..config import ConfigError
from ..parallel.mpi import root_decides
from .checkpoint import FORMAT, FORMAT_VERSION

REQUIRED_ATTRS = ("format", "format_version", "problem", "step", "time", "dt", "config", "nranks")
_KIND_NAMES = {"f": "floating-point numbers", "fiu": "numbers", "iu": "integers"}


@dataclass(frozen=True)
class Want:
    """A dataset an input file must hold.  ``shape``: sizes, where a name
    (e.g. "n") stands for a size that must be the same in every dataset
    naming it; ``dtype``: one exact type ("<f8"), else any of ``kinds``."""
    shape: tuple
    kinds: str = "fiu"
    dtype: str | None = None
    optional: bool = False


@dataclass
class FileInfo:
    path: str
    attrs: dict                                   # root attributes, as Python values
    shapes: dict                                  # dataset name -> shape
    dtypes: dict                                  # dataset name -> dtype string
    sizes: dict = field(default_factory=dict)     # named sizes of the Wants -> their values


def _plain(v):
    return v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v


def _check_attrs(attrs, path, what):
    """The root attributes of one of our checkpoints."""
    damaged = "(damaged checkpoint)"
    if attrs.get("format") != FORMAT:
        raise ConfigError(f"{what}: {path} is not a solver checkpoint (no format = '{FORMAT}' attribute)")
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ConfigError(f"{what}: {path} lacks the attributes {', '.join(missing)} {damaged}")
    version = attrs["format_version"]
    if not isinstance(version, int):
        raise ConfigError(f"{what}: {path} has an invalid format_version attribute {version!r} {damaged}")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{what}: {path} has format_version {version}, newer than this solver reads "
                          f"({FORMAT_VERSION}); upgrade solver")
    step, t, dt = attrs["step"], attrs["time"], attrs["dt"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"{what}: {path} has an invalid step attribute {step!r} {damaged}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ConfigError(f"{what}: {path} has an invalid time attribute {t!r} {damaged}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)):
        raise ConfigError(f"{what}: {path} has an invalid dt attribute {dt!r} {damaged}")
    basis = attrs.get("time_basis")
    if basis is not None:
        try:
            s0, t0 = (float(v) for v in basis)
            ok = math.isfinite(t0) and s0 == int(s0) and 0 <= s0 <= step
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{what}: {path} has an invalid time_basis attribute {basis!r} {damaged}")


def require(info, want, what, ours=True) -> dict:
    """Check that ``info`` (a file already opened by ``check_file``) holds
    the datasets ``want`` ({name: Want}); returns the named sizes, also
    kept in ``info.sizes``."""
    damaged = " (damaged checkpoint)" if ours else ""
    path, sizes = info.path, {}
    for name, w in want.items():
        if name not in info.shapes:
            if w.optional:
                continue
            raise ConfigError(f"{what}: {path} lacks the dataset /{name}{damaged}")
        dtype = np.dtype(info.dtypes[name])
        if w.dtype is not None and dtype.str != w.dtype:
            raise ConfigError(f"{what}: /{name} in {path} is {dtype}, expected {np.dtype(w.dtype)}{damaged}")
        if w.dtype is None and dtype.kind not in w.kinds:
            raise ConfigError(f"{what}: /{name} in {path} does not hold {_KIND_NAMES.get(w.kinds, w.kinds)} "
                              f"(dtype {dtype}){damaged}")
        found = info.shapes[name]
        expected = " x ".join(map(str, w.shape))
        if len(found) != len(w.shape) or any(size != e for size, e in zip(found, w.shape) if not isinstance(e, str)):
            raise ConfigError(f"{what}: /{name} in {path} has shape {list(found)}, expected {expected}{damaged}")
        for size, e in zip(found, w.shape):
            if isinstance(e, str) and size < 1:
                raise ConfigError(f"{what}: /{name} in {path} has shape {list(found)}: {e} must be at least 1")
            if isinstance(e, str) and sizes.setdefault(e, size) != size:
                shown = ", ".join(f"/{k} {list(info.shapes[k])}" for k in want if k in info.shapes)
                raise ConfigError(f"{what}: {path} has mismatched arrays: {shown} (the same {e} in each){damaged}")
    info.sizes.update(sizes)
    return sizes


def check_file(path, what, want=None, ours=True) -> FileInfo:
    """Open ``path`` and check it (serial).  ``what`` names the argument or key
    the path came from, in messages; ``ours``: it must be a solver checkpoint;
    ``want``: {dataset name: Want}."""
    if not os.path.exists(path):
        raise ConfigError(f"{what}: {path} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: {path} is not a file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(f.attrs[k]) for k in f.attrs}
            if ours:
                _check_attrs(attrs, path, what)
            shapes, dtypes = {}, {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    shapes[name], dtypes[name] = tuple(obj.shape), obj.dtype.str
            f.visititems(visit)
    except OSError as exc:
        raise ConfigError(f"{what}: {path} cannot be read as HDF5 (truncated or corrupt?): {exc}") from None
    info = FileInfo(path, attrs, shapes, dtypes)
    require(info, want or {}, what, ours)
    return info


def inspect(path, comm, what="--restart", want=None, ours=True) -> FileInfo:
    """``check_file`` on rank 0; every rank gets the verdict (collective)."""
    return root_decides(comm, check_file, path, what, want, ours)
