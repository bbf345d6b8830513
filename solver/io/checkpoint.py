"""Checkpoints in parallel HDF5: one file per output step, the global arrays
in a layout that does not depend on the rank count (see the README).

Every rank writes its own block of each global dataset in one collective
call, through the low-level API so that a rank with an empty block still
takes part (h5py's high-level slicing hangs there).  Without MPI-IO (h5py
built without MPI, or ``SOLVER_IO_GATHER=1`` for file systems where MPI-IO
misbehaves) rank 0 gathers the blocks one rank at a time and writes the same
layout.  Files are written as ``.step_N.h5.part``, flushed, fsynced and only
then renamed: a file named ``step_*.h5`` is always a whole one.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from .. import __version__
from ..config import ConfigError
from ..parallel.mpi import MPI, emit, root_decides

FORMAT = "solver-checkpoint"
FORMAT_VERSION = 1
REQUIRED_ATTRS = ("format", "format_version", "problem", "step", "time", "dt", "config", "nranks")
_NAME = re.compile(r"^step_(\d{9})\.h5$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}.h5"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := _NAME.match(name))]
    return sorted(found)


def parallel_io(comm) -> bool:
    """Whether checkpoints go through MPI-IO (else: gathered through rank 0)."""
    if os.environ.get("SOLVER_IO_GATHER", "") not in ("", "0"):
        return False
    return bool(h5py.get_config().mpi)


def quiet_barrier(comm, poll_seconds=0.0005):
    """A barrier that sleeps while it waits.  MPI's blocking wait spins,
    and a writer thread spinning while rank 0 fsyncs would take the core
    from the compute it is meant to overlap with."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_seconds)


def quiet_all_ok(comm, ok: bool, poll_seconds=0.0005) -> bool:
    """Whether ``ok`` holds on every rank, waiting without spinning (see quiet_barrier)."""
    mine = np.array([1 if ok else 0], dtype=np.int32)
    every = np.empty_like(mine)
    request = comm.Iallreduce(mine, every, op=MPI.MIN)
    while not request.Test():
        time.sleep(poll_seconds)
    return bool(every[0])


class CheckpointAbandoned(OSError):
    """The write was given up on this rank because it failed on another."""


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------
# block-wise collective access through the low-level API
def _selections(dset, where, shape, memory=None, memory_shape=None):
    """(memory space, file space) selecting ``where`` in the file and the
    block in memory: the whole array, or ``memory`` slices of an array of
    ``memory_shape`` (so a padded block is written without a copy).  An
    empty block selects nothing."""
    fspace = dset.id.get_space()
    if 0 in shape:
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,))
        mspace.select_none()
        return mspace, fspace
    start = tuple(s.start for s in where) + (0,) * (len(dset.shape) - len(where))
    count = tuple(shape)
    fspace.select_hyperslab(start, count)
    if memory is None:
        mspace = h5py.h5s.create_simple(count)
    else:
        mspace = h5py.h5s.create_simple(tuple(memory_shape))
        mspace.select_hyperslab(tuple(s.start for s in memory), count)
    return mspace, fspace


def _xfer(collective):
    plist = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    if collective:
        plist.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return plist


def write_block(dset, where, local, collective=True, memory=None):
    """Write this rank's block at ``where`` (every rank must call): ``local``,
    or its part ``memory`` (slices) when given."""
    local = np.ascontiguousarray(local, dtype=dset.dtype)
    if 0 in dset.shape:
        return                           # nothing stored: every rank skips alike
    shape = local.shape if memory is None else tuple(s.stop - s.start for s in memory)
    mspace, fspace = _selections(dset, where, shape, memory, local.shape)
    data = local if local.size else np.zeros(1, dset.dtype)
    dset.id.write(mspace, fspace, data, dxpl=_xfer(collective))


def read_block(dset, where, collective=True) -> np.ndarray:
    """Read block ``where`` of ``dset`` (every rank must call)."""
    shape = tuple(s.stop - s.start for s in where) + tuple(dset.shape[len(where):])
    out = np.empty(shape, dset.dtype)
    if 0 in dset.shape:
        return out
    mspace, fspace = _selections(dset, where, shape)
    dset.id.read(mspace, fspace, out if out.size else np.zeros(1, dset.dtype), dxpl=_xfer(collective))
    return out


# ----------------------------------------------------------------------------
# writing
@dataclass
class Dataset:
    """One global dataset: its name, global shape, this rank's block and
    where it goes.  With ``memory``, the block is ``local[memory]`` (written
    straight from a padded array, without a copy)."""
    name: str
    shape: tuple
    local: np.ndarray
    where: tuple
    attrs: dict = field(default_factory=dict)
    memory: tuple | None = None

    @property
    def block(self) -> np.ndarray:
        return self.local if self.memory is None else self.local[self.memory]


def _set_root_attrs(f, step, nranks, created, attrs):
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["solver_version"] = __version__
    f.attrs["nranks"] = nranks
    f.attrs["created"] = created
    f.attrs["step"] = step
    for key, value in attrs.items():
        f.attrs[key] = value


def _create(f, ds, dcpl=None):
    dset = f.create_dataset(ds.name, shape=ds.shape, dtype=ds.local.dtype, dcpl=dcpl)
    for key, value in ds.attrs.items():
        dset.attrs[key] = value
    return dset


def _layout(path, step, nranks, created, attrs, datasets) -> np.ndarray:
    """Rank 0: the whole file but its raw data (attributes, and contiguous
    datasets allocated at creation, never filled), through serial HDF5.
    Returns each dataset's byte offset in the file (-1 for an empty one)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    offsets = np.full(len(datasets), -1, dtype=np.int64)
    with h5py.File(path, "w") as f:
        _set_root_attrs(f, step, nranks, created, attrs)
        for k, ds in enumerate(datasets):
            offset = _create(f, ds, dcpl).id.get_offset()
            offsets[k] = -1 if offset is None else offset
    return offsets


def _quiet_bcast(comm, array, poll_seconds=0.0005):
    """Broadcast ``array`` from rank 0, waiting without spinning (see quiet_barrier)."""
    request = comm.Ibcast(array, root=0)
    while not request.Test():
        time.sleep(poll_seconds)


def _write_raw(path, comm, step, offsets, datasets):
    """Every rank writes its blocks straight into the datasets' bytes with
    collective MPI-IO on the writer's communicator: mpi4py releases the GIL
    for the whole transfer, and no HDF5 call waits on other ranks (h5py holds
    the GIL in collective file creation and closing), so the step loop runs on.
    Every call here is collective: a failure on one rank must not even close
    the file, so it ends the job at once."""
    from mpi4py.util.dtlib import from_numpy_dtype
    fh = None
    try:
        fh = MPI.File.Open(comm, path, MPI.MODE_WRONLY)
        _injected_failure(step, comm.rank, "mid")
        for ds, offset in zip(datasets, offsets):
            if offset < 0:
                continue                 # nothing stored: every rank skips alike
            local = np.ascontiguousarray(ds.local)
            block = tuple(s.stop - s.start for s in ds.where) + tuple(ds.shape[len(ds.where):])
            etype = from_numpy_dtype(local.dtype)
            types = []
            if 0 in block:               # an empty block still takes part in the collective
                fh.Set_view(int(offset), etype, etype)
                buffer = [local, 0, etype]
            else:
                starts = [s.start for s in ds.where] + [0] * (len(ds.shape) - len(ds.where))
                inner = [0] * local.ndim if ds.memory is None else \
                    [s.start for s in ds.memory] + [0] * (local.ndim - len(ds.memory))
                types = [etype.Create_subarray(list(ds.shape), list(block), starts).Commit(),
                         etype.Create_subarray(list(local.shape), list(block), inner).Commit()]
                fh.Set_view(int(offset), etype, types[0])
                buffer = [local, 1, types[1]]
            quiet_barrier(comm)          # arrive together: the blocking write then waits for no one
            fh.Write_all(buffer)
            for t in types + [etype]:
                t.Free()
        fh.Sync()                        # every rank's bytes on stable storage before the rename
    except Exception as exc:             # noqa: BLE001
        _fatal_mid_write(comm, step, exc)
    if fh is not None:
        fh.Close()


def _write_gathered(path, comm, step, created, attrs, datasets):
    """Rank 0 writes everything, receiving one rank's blocks at a time."""
    if comm.rank != 0:
        for ds in datasets:
            comm.send((ds.where, np.ascontiguousarray(ds.block)), dest=0, tag=77)
        return
    with h5py.File(path, "w") as f:
        _injected_failure(step, comm.rank, "mid")
        _set_root_attrs(f, step, comm.size, created, attrs)
        for ds in datasets:
            dset = _create(f, ds)
            write_block(dset, ds.where, ds.block, collective=False)
            for source in range(1, comm.size):
                where, local = comm.recv(source=source, tag=77)
                write_block(dset, where, local, collective=False)


_slow_write_warned = False


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _raise_on_every_rank(comm, problem, elsewhere):
    """If ``problem`` happened on any rank: raise it there, and
    CheckpointAbandoned(``elsewhere``) on the others (collective)."""
    if not quiet_all_ok(comm, problem is None):
        if problem is not None:
            raise problem
        raise CheckpointAbandoned(elsewhere)


def _fatal_mid_write(comm, step, exc):
    """A rank that fails inside the collective write cannot tell the others,
    who wait in HDF5 for it: end the job, naming the rank and the cause."""
    from ..parallel.mpi import abort
    emit(sys.stderr, f"solver: rank {comm.rank}: error: the checkpoint of step {step} failed while being "
                     f"written ({type(exc).__name__}: {exc}); the other ranks cannot finish the collective write, "
                     f"so the job is aborted. Earlier checkpoints are intact: continue with --restart latest\n")
    abort(1)


def run_id_of(path):
    """The ``run_id`` attribute of a checkpoint (None when absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_id")
    except (OSError, KeyError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def prune(directory, keep, newest_step, mine=(), run_id=None):
    """Delete checkpoints older than ``newest_step`` beyond the ``keep``
    newest, but only ones this process wrote (``mine``) or of the same run
    (``run_id``): never a newer one, nor anybody else's."""
    older = [path for step, path in list_checkpoints(directory) if step < newest_step]
    for old in older[:max(0, len(older) - (keep - 1))]:
        if old not in mine and (run_id is None or run_id_of(old) != run_id):
            continue
        for stale in (old, old[:-3] + ".xdmf"):
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass


def write_checkpoint(directory, step, comm, attrs: dict, datasets: list, keep: int = 0,
                     on_complete=None, created=None, mine=()) -> str:
    """Write one checkpoint collectively and return its final path.

    Every rank passes the same dataset names and shapes in the same order.
    ``keep`` > 0 prunes older checkpoints of this run (see ``prune``; ``mine``:
    paths this process wrote).  ``on_complete(path)`` runs on rank 0 after
    the rename (sidecars, indexes)."""
    final = os.path.join(directory, checkpoint_name(step))
    partial = os.path.join(directory, "." + checkpoint_name(step) + ".part")
    if created is None:
        created = comm.bcast(now_utc(), root=0)
    # Agree before the first collective call: a rank that never arrives would
    # leave the others waiting in it for good.  Rank 0 then lays the file out
    # with serial HDF5 (attributes, datasets allocated, their offsets), and
    # every rank writes its blocks' bytes there with collective MPI-IO, which
    # releases the GIL for the whole transfer (see _write_raw).
    problem = None
    try:
        _injected_failure(step, comm.rank)
        for ds in datasets:
            expected = tuple(s.stop - s.start for s in ds.where) + tuple(ds.shape[len(ds.where):])
            if tuple(ds.block.shape) != expected:
                raise ValueError(f"{ds.name}: block of shape {ds.block.shape} for a selection of {expected}")
    except Exception as exc:
        problem = exc
    _raise_on_every_rank(comm, problem, f"checkpoint of step {step} abandoned: it failed on another rank")
    if parallel_io(comm):
        problem, offsets = None, np.zeros(len(datasets), dtype=np.int64)
        if comm.rank == 0:
            try:
                offsets[:] = _layout(partial, step, comm.size, created, attrs, datasets)
            except Exception as exc:     # noqa: BLE001 - no collective yet: every rank can be told
                problem = exc
        _raise_on_every_rank(comm, problem, f"checkpoint of step {step} abandoned: rank 0 could not create it")
        _quiet_bcast(comm, offsets)
        _write_raw(partial, comm, step, offsets, datasets)
    else:
        quiet_barrier(comm)
        try:
            global _slow_write_warned
            if comm.size > 1 and comm.rank == 0 and not _slow_write_warned and not h5py.get_config().mpi:
                emit(sys.stderr, "solver: warning: h5py has no MPI support: checkpoints are gathered "
                                 "through rank 0 (slower)\n")
                _slow_write_warned = True
            _write_gathered(partial, comm, step, created, attrs, datasets)
        except Exception as exc:         # noqa: BLE001 - any failure here strands the other ranks
            _fatal_mid_write(comm, step, exc)
    _test_delay = float(os.environ.get("SOLVER_TEST_SLOW_WRITE", "0") or 0)
    if _test_delay:
        time.sleep(_test_delay)          # tests: widen the window in which a job is killed mid-write
    quiet_barrier(comm)                  # every rank has closed the file
    problem = None
    if comm.rank == 0:
        try:
            _fsync_path(partial)
            os.replace(partial, final)
            _fsync_path(directory)
        except OSError as exc:
            problem = exc
    _raise_on_every_rank(comm, problem,
                         f"checkpoint of step {step} abandoned: it could not be put in place on rank 0")
    if comm.rank == 0:
        try:                             # a checkpoint in place is not lost over its sidecar or pruning
            if keep > 0:
                prune(directory, keep, step, mine, attrs.get("run_id"))
            if on_complete is not None:
                on_complete(final)
        except Exception as exc:         # noqa: BLE001
            emit(sys.stderr, f"solver: warning: after writing {final}: {type(exc).__name__}: {exc}\n")
    quiet_barrier(comm)
    return final


# ----------------------------------------------------------------------------
# reading (restart, initial fields from files)
@dataclass
class CheckpointInfo:
    path: str
    attrs: dict
    shapes: dict          # dataset name -> shape
    dtypes: dict


def read_checkpoint_info(path, what) -> CheckpointInfo:
    if not os.path.exists(path):
        raise ConfigError(f"{what}: {path} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: {path} is not a file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            if attrs.get("format") != FORMAT:
                raise ConfigError(f"{what}: {path} is not a solver checkpoint (no format = '{FORMAT}' attribute)")
            missing = [k for k in REQUIRED_ATTRS if k not in attrs]
            if missing:
                raise ConfigError(f"{what}: {path} lacks the attributes {', '.join(missing)} (damaged checkpoint)")
            if int(attrs["format_version"]) > FORMAT_VERSION:
                raise ConfigError(f"{what}: {path} has format_version {attrs['format_version']}, "
                                  f"newer than this solver reads ({FORMAT_VERSION}); upgrade solver")
            shapes, dtypes = {}, {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    shapes[name], dtypes[name] = tuple(obj.shape), obj.dtype.str
            f.visititems(visit)
    except OSError as exc:
        raise ConfigError(f"{what}: {path} cannot be read as HDF5 (truncated or corrupt?): {exc}") from None
    clean = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
             for k, v in attrs.items()}
    return CheckpointInfo(path, clean, shapes, dtypes)


def inspect_checkpoint(path, comm, what="--restart") -> CheckpointInfo:
    """Rank 0 opens and checks the file; every rank gets the verdict.  ``what``
    names the argument or key the path came from, in error messages."""
    return root_decides(comm, read_checkpoint_info, path, what)


def read_blocks(path, comm, requests) -> list[np.ndarray]:
    """This rank's blocks: ``requests`` is [(dataset name, where)], the same
    names on every rank.  Check the file with inspect_checkpoint first."""
    if parallel_io(comm):
        with h5py.File(path, "r", driver="mpio", comm=comm) as f:
            return [read_block(f[name], where) for name, where in requests]
    wheres = comm.gather([where for _, where in requests], root=0)
    if comm.rank == 0:
        with h5py.File(path, "r") as f:
            for source in range(comm.size - 1, -1, -1):
                blocks = [read_block(f[name], where, collective=False)
                          for (name, _), where in zip(requests, wheres[source])]
                if source:
                    comm.send(blocks, dest=source, tag=78)
            return blocks
    return comm.recv(source=0, tag=78)


def _injected_failure(step, rank, phase="before"):
    """Tests: SOLVER_TEST_FAIL_WRITE=STEP[:RANK[:PHASE]] makes that checkpoint
    fail (on that rank), before the collective write or ``mid`` it."""
    spec = os.environ.get("SOLVER_TEST_FAIL_WRITE", "")
    if not spec:
        return
    at, on_rank, when = (spec.split(":") + ["", ""])[:3]
    if int(at) == step and (not on_rank or int(on_rank) == rank) and (when or "before") == phase:
        raise OSError(f"injected failure writing the checkpoint of step {step}")


def _read_particles_serial(path):
    if not os.path.isfile(path):
        raise ConfigError(f"nbody.file: {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("nbody/position", "nbody/velocity", "nbody/mass") if k not in f]
            if missing:
                raise ConfigError(f"nbody.file: {path} lacks {', '.join('/' + k for k in missing)}")
            names = ["nbody/position", "nbody/velocity", "nbody/mass"] + (["nbody/id"] if "nbody/id" in f else [])
            for k in names:
                if not isinstance(f[k], h5py.Dataset) or f[k].dtype.kind not in ("fiu" if k != "nbody/id" else "iu"):
                    raise ConfigError(f"nbody.file: /{k} in {path} is not a dataset of "
                                      f"{'numbers' if k != 'nbody/id' else 'integers'}")
            shapes = {k: f[k].shape for k in ("nbody/position", "nbody/velocity", "nbody/mass")}
            n = shapes["nbody/mass"][0] if len(shapes["nbody/mass"]) == 1 else -1
            if n < 1 or shapes["nbody/position"] != (n, 3) or shapes["nbody/velocity"] != (n, 3):
                raise ConfigError(f"nbody.file: {path} has mismatched arrays: position {shapes['nbody/position']}, "
                                  f"velocity {shapes['nbody/velocity']}, mass {shapes['nbody/mass']} "
                                  f"(need (n, 3), (n, 3) and (n,) with n >= 1)")
            pos, vel, mass = (np.asarray(f[k][...], np.float64) for k in ("nbody/position", "nbody/velocity",
                                                                            "nbody/mass"))
            if "nbody/id" in f:
                ids = np.asarray(f["nbody/id"][...])
                if ids.shape != (n,) or not np.array_equal(np.sort(ids), np.arange(n)):
                    raise ConfigError(f"nbody.file: /nbody/id in {path} is not a permutation of 0..{n - 1}")
                order = np.argsort(ids, kind="stable")
                pos, vel, mass = pos[order], vel[order], mass[order]
    except OSError as exc:
        raise ConfigError(f"nbody.file: cannot read {path} as HDF5: {exc}") from None
    if not (np.isfinite(pos).all() and np.isfinite(vel).all() and np.isfinite(mass).all()):
        raise ConfigError(f"nbody.file: {path} holds values that are not finite")
    if (mass < 0).any():
        raise ConfigError(f"nbody.file: {path} holds negative masses")
    return pos, vel, mass


def read_particles(path, comm):
    """(position, velocity, mass) of all particles in id order, on every rank;
    rank 0 reads and checks the file (ConfigError on every rank if it is bad)."""
    return root_decides(comm, _read_particles_serial, path)


def read_heat_field(path, comm, shape, where) -> np.ndarray:
    """This rank's block ``where`` of ``/heat/u`` from a checkpoint file;
    ConfigError when the file is missing, not ours, or of another shape."""
    info = inspect_checkpoint(path, comm, "heat.file")
    if "heat/u" in info.dtypes and info.dtypes["heat/u"][1:2] not in ("f", "i", "u"):
        raise ConfigError(f"heat.file: /heat/u in {path} does not hold numbers (dtype {info.dtypes.get('heat/u')})")
    if info.shapes.get("heat/u") != tuple(shape):
        found = info.shapes.get("heat/u")
        raise ConfigError(f"heat.file: {path} holds /heat/u of shape {list(found) if found else 'none'}, "
                          f"but heat.shape is {list(shape)}")
    return read_blocks(path, comm, [("heat/u", where)])[0].astype(np.float64)


def timings_json(seconds: dict) -> str:
    return json.dumps({k: round(v, 6) for k, v in seconds.items()}, sort_keys=True)
