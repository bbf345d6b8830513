"""HDF5 input, checked by one set of rules before anything is allocated.

Every file the solver reads (a checkpoint to restart from, a start field,
a particle file) goes through ``check_file``: it exists, opens as HDF5, is
one of our checkpoints where one is needed (format, version, the root
attributes a restart relies on), and holds the datasets the reader asks for
(``Want``: shape, number type).  Rank 0 checks; every rank gets the verdict
(``inspect``), so a bad file is one ConfigError on every rank.  The values
themselves (finite, in range) are checked by the model that reads them;
that they are the values that were written, by their checksums
(``verify``, ``check_blocks``, ``check_arrays``; files without checksums,
such as checkpoints of older versions, pass).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..config import ConfigError
from ..parallel.mpi import MPI, root_decides
from . import checksum
from .blocks import parallel_io, read_block
from .checkpoint import FORMAT, FORMAT_VERSION, one_line

REQUIRED_ATTRS = ("format", "format_version", "problem", "step", "time", "dt", "config", "nranks")
_KIND_NAMES = {"f": "floating-point numbers", "fiu": "numbers", "iu": "integers"}


class NewerFormat(ConfigError):
    """A checkpoint of a newer solver: not damaged, only not readable here."""


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
    checksums: dict = field(default_factory=dict)  # dataset name -> (algorithm, stored value)


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
        raise NewerFormat(f"{what}: {path} has format_version {version}, newer than this solver reads "
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


def _stored_sum(value):
    """A stored checksum as an int (None where it is not one: never matches)."""
    try:
        return int(np.asarray(value).item()) if np.asarray(value).dtype.kind in "iu" else None
    except (TypeError, ValueError):
        return None


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
            stored = attrs.get(checksum.ATTRS_ATTR)
            if stored is not None and stored != checksum.of_attrs(attrs):
                raise ChecksumMismatch(f"{what}: the root attributes of {path} (step, time, dt, config...) do not "
                                       f"match their checksum (changed after it was written: damaged checkpoint)")
            if ours:
                _check_attrs(attrs, path, what)
            shapes, dtypes, sums = {}, {}, {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    shapes[name], dtypes[name] = tuple(obj.shape), obj.dtype.str
                    if checksum.ALGORITHM_ATTR in obj.attrs or checksum.VALUE_ATTR in obj.attrs:
                        sums[name] = (str(_plain(obj.attrs.get(checksum.ALGORITHM_ATTR, ""))),
                                      _stored_sum(obj.attrs.get(checksum.VALUE_ATTR)))
            f.visititems(visit)
    except OSError as exc:
        raise ConfigError(one_line(f"{what}: {path} cannot be read as HDF5 (truncated or corrupt?): {exc}")) from None
    info = FileInfo(path, attrs, shapes, dtypes, checksums=sums)
    require(info, want or {}, what, ours)
    return info


def inspect(path, comm, what="--restart", want=None, ours=True) -> FileInfo:
    """``check_file`` on rank 0; every rank gets the verdict (collective)."""
    return root_decides(comm, check_file, path, what, want, ours)


# --- checksums ------------------------------------------------------------------
class ChecksumMismatch(ConfigError):
    """A dataset's values are not the ones its checkpoint was written with."""


def _known(info, names):
    """The datasets among ``names`` that carry a checksum.  One whose algorithm
    is missing or not this version's (edited metadata: a newer format says so
    in ``format_version``) cannot match, so it counts as damaged."""
    return [name for name in names if name in info.checksums]


def _mismatch(info, what, names, totals):
    for name, total in zip(names, totals):
        if total != info.checksums[name][1]:
            raise ChecksumMismatch(f"{what}: /{name} in {info.path} does not match its checksum (its values "
                                   f"changed after it was written: damaged checkpoint)")


def _total(comm, partials) -> list[int]:
    """Sums of the ranks' partial checksums, modulo 2**64 (collective)."""
    mine = np.array(partials, dtype=np.uint64)
    total = np.empty_like(mine)
    comm.Allreduce(mine, total, op=MPI.SUM)
    return [int(v) for v in total]


def check_blocks(info, comm, what, blocks):
    """Check the checksums of datasets whose blocks the ranks have read
    (collective): ``blocks`` is [(name, where, block)], the blocks of each
    name together covering its dataset once."""
    names = _known(info, [name for name, _, _ in blocks]) if comm.rank == 0 else []
    names = comm.bcast(names, root=0)
    wanted = {name: (where, block) for name, where, block in blocks}
    partials = [checksum.partial(wanted[n][1], info.shapes[n], wanted[n][0]) for n in names]
    _mismatch(info, what, names, _total(comm, partials))


def check_arrays(info, what, arrays):
    """Check whole datasets read by one process: ``arrays`` is {name: array}."""
    names = _known(info, list(arrays))
    _mismatch(info, what, names, [checksum.of_array(arrays[n]) for n in names])


VERIFY_BYTES = 16 << 20          # the most a rank reads at once while verifying


def verify(info, comm, what="--restart"):
    """Read every dataset of ``info`` that has a checksum and check it
    (collective): the ranks share the rows of each dataset, read a few MiB at
    a time.  ChecksumMismatch (the same on every rank) when one differs."""
    names = comm.bcast(_known(info, sorted(info.checksums)) if comm.rank == 0 else None, root=0)
    if not names:
        return
    parallel = parallel_io(comm)
    parts, size, rank = [], (comm.size if parallel else 1), (comm.rank if parallel else 0)
    problem = None
    try:
        if parallel or comm.rank == 0:
            kwargs = {"driver": "mpio", "comm": comm} if parallel else {}
            with h5py.File(info.path, "r", **kwargs) as f:
                parts = [_hash_rows(f[name], size, rank, parallel) for name in names]
        else:
            parts = [0] * len(names)
    except (OSError, ValueError) as exc:
        problem = one_line(f"{what}: {info.path} cannot be read (truncated or corrupt?): {exc}")
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise ConfigError(problems[0])
    _mismatch(info, what, names, _total(comm, parts))


def _hash_rows(dset, size, rank, collective) -> int:
    """This rank's share (rows split ``size`` ways) of ``dset``'s checksum;
    every rank makes the same number of (collective) reads."""
    n = dset.shape[0] if dset.ndim else 0
    if dset.ndim == 0 or 0 in dset.shape:
        return 0
    base, extra = divmod(n, size)
    start, count = rank * base + min(rank, extra), base + (1 if rank < extra else 0)
    row = max(1, dset.dtype.itemsize * math.prod(dset.shape[1:]))
    step = max(1, VERIFY_BYTES // row)
    total = 0
    for k in range(-(-(base + (1 if extra else 0)) // step)):
        a, b = start + min(count, k * step), start + min(count, (k + 1) * step)
        where = (slice(a, b),)
        total += checksum.partial(read_block(dset, where, collective), dset.shape, where)
    return total & checksum.MASK
