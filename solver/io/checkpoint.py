"""Checkpoints in parallel HDF5: one file per output step, the global arrays
in a layout that does not depend on the rank count (see the README).

The commit protocol: every rank agrees that it can write before the first
collective call; rank 0 creates the file exclusively under a new temporary
name (``.step_N.h5.TAG.part``: a link planted there is never followed) and
lays it out; every rank writes its blocks (``io.blocks``) and checks that the
file holds them; the file is fsynced and only then renamed, so a file named
``step_*.h5`` is always a whole one; then older checkpoints of the run are
pruned (``io.rotation``).  A failure before the collective write, or one that
every rank learns of after it (a short write on a full disk), is raised on
every rank and leaves no temporary behind; one inside it ends the job.

Every dataset carries a checksum of its values (``io.checksum``), summed
over the ranks' blocks before the file is laid out.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time

import h5py
import numpy as np

from .. import __version__
from ..parallel.mpi import MPI, emit, quiet_all_ok, quiet_barrier, quiet_bcast
from . import checksum
from .blocks import layout, parallel_io, write_gathered, write_raw
from .rotation import checkpoint_name, prune
from .safefile import discard, reserve_temporary

FORMAT = "solver-checkpoint"
FORMAT_VERSION = 1


class CheckpointAbandoned(OSError):
    """The write was given up on this rank because it failed on another."""


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def timings_json(seconds: dict) -> str:
    return json.dumps({k: round(v, 6) for k, v in seconds.items()}, sort_keys=True)


def one_line(text) -> str:
    """A message on one line (HDF5 errors span several)."""
    return " ".join(str(text).split())


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise_on_every_rank(comm, problem, elsewhere):
    """If ``problem`` happened on any rank: raise it there, and
    CheckpointAbandoned(``elsewhere``) on the others (collective)."""
    if not quiet_all_ok(comm, problem is None):
        if problem is not None:
            raise problem
        raise CheckpointAbandoned(elsewhere)


def _fatal_mid_write(comm, step, exc, partial, kind="checkpoint"):
    """A rank that fails inside the collective write cannot tell the others,
    who wait in it for this one: remove the temporary file and end the job,
    naming the rank and the cause."""
    from ..parallel.mpi import abort
    discard(partial)
    emit(sys.stderr, one_line(f"solver: rank {comm.rank}: error: the {kind} of step {step} failed while being "
                              f"written ({type(exc).__name__}: {exc}); the other ranks cannot finish the collective "
                              f"write, so the job is aborted. Earlier {kind}s are intact: continue with "
                              f"--restart latest") + "\n")
    abort(1)


def _injected_failure(step, rank, phase="before", kind="checkpoint"):
    """Tests: SOLVER_TEST_FAIL_WRITE=STEP[:RANK[:PHASE]] makes that checkpoint
    fail (on that rank), before the collective write or ``mid`` it."""
    spec = os.environ.get("SOLVER_TEST_FAIL_WRITE", "")
    if not spec:
        return
    at, on_rank, when = (spec.split(":") + ["", ""])[:3]
    if int(at) == step and (not on_rank or int(on_rank) == rank) and (when or "before") == phase:
        raise OSError(f"injected failure writing the {kind} of step {step}")


def root_attrs(step, nranks, created, attrs) -> dict:
    """Every checkpoint's root attributes, then the model's ``attrs``."""
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "solver_version": __version__,
            "nranks": nranks, "created": created, "step": step, **attrs}
    head[checksum.ATTRS_ATTR] = checksum.of_attrs(head)
    return head


_slow_write_warned = False


def _write_file(partial, comm, step, head, datasets, kind="checkpoint"):
    """The collective write of the whole file (every rank); ``kind`` names
    the file in messages ("checkpoint" or "snapshot")."""
    def opened():
        _injected_failure(step, comm.rank, "mid", kind)
    if parallel_io(comm):
        problem, offsets = None, np.zeros(len(datasets), dtype=np.int64)
        if comm.rank == 0:
            try:
                offsets[:] = layout(partial, head, datasets)
            except Exception as exc:     # noqa: BLE001 - no collective yet: every rank can be told
                problem = OSError(one_line(f"the {kind} of step {step} could not be created "
                                           f"({type(exc).__name__}: {exc})"))
        _raise_on_every_rank(comm, problem, f"{kind} of step {step} abandoned: rank 0 could not create it")
        quiet_bcast(comm, offsets)
        try:
            lost = write_raw(partial, comm, offsets, datasets, opened)
        except Exception as exc:         # noqa: BLE001 - any failure here strands the other ranks
            _fatal_mid_write(comm, step, exc, partial, kind)
        # every rank is past the collective write: a loss on any rank is raised on every rank
        problem = OSError(f"the {kind} of step {step} was not stored whole (disk full or over quota?): "
                          + "; ".join(lost)) if lost else None
        _raise_on_every_rank(comm, problem, f"{kind} of step {step} abandoned: it was not stored whole on "
                                            f"another rank")
        return
    quiet_barrier(comm)
    try:
        global _slow_write_warned
        if comm.size > 1 and comm.rank == 0 and not _slow_write_warned and not h5py.get_config().mpi:
            emit(sys.stderr, "solver: warning: h5py has no MPI support: checkpoints are gathered "
                             "through rank 0 (slower)\n")
            _slow_write_warned = True
        write_gathered(partial, comm, head, datasets, opened)
    except Exception as exc:             # noqa: BLE001
        _fatal_mid_write(comm, step, exc, partial, kind)


def _sum_over_ranks(comm, values) -> list[int]:
    """Sums modulo 2**64 over the ranks (collective, waiting without spinning)."""
    mine = np.array(values, dtype=np.uint64)
    total = np.empty_like(mine)
    request = comm.Iallreduce(mine, total, op=MPI.SUM)     # unsigned: wraps modulo 2**64
    while not request.Test():
        time.sleep(0.0005)
    return [int(v) for v in total]


def write_checkpoint(directory, step, comm, attrs: dict, datasets: list, keep: int = 0,
                     on_complete=None, created=None, mine=(), name=None, kind="checkpoint") -> str:
    """Write one checkpoint collectively and return its final path.

    Every rank passes the same dataset names and shapes in the same order.
    ``keep`` > 0 prunes older checkpoints of this run (see ``prune``; ``mine``:
    paths this process wrote).  ``on_complete(path)`` runs on rank 0 after
    the rename (sidecars, indexes).  ``name``: the file's name, when it is
    not a checkpoint's (snapshots are written the same way), and ``kind``
    what messages call it ("snapshot")."""
    final = os.path.join(directory, name or checkpoint_name(step))
    if created is None:
        created = comm.bcast(now_utc(), root=0)
    # Agree before the first collective call: a rank that never arrives would
    # leave the others waiting in it for good.
    problem, partial, sums = None, "", []
    try:
        _injected_failure(step, comm.rank, kind=kind)
        for ds in datasets:
            expected = tuple(s.stop - s.start for s in ds.where) + tuple(ds.shape[len(ds.where):])
            if tuple(ds.block.shape) != expected:
                raise ValueError(f"{ds.name}: block of shape {ds.block.shape} for a selection of {expected}")
        sums = [checksum.partial(ds.block, ds.shape, ds.where) for ds in datasets]
        if comm.rank == 0:
            partial = reserve_temporary(final)
    except Exception as exc:
        problem = exc
    try:
        _raise_on_every_rank(comm, problem, f"{kind} of step {step} abandoned: it failed on another rank")
        partial = comm.bcast(partial, root=0)
        datasets = [dataclasses.replace(ds, attrs={**ds.attrs, **checksum.attrs(total)})
                    for ds, total in zip(datasets, _sum_over_ranks(comm, sums))]
        _write_file(partial, comm, step, root_attrs(step, comm.size, created, attrs), datasets, kind)
        slow = "SOLVER_TEST_SLOW_SNAPSHOT" if name else "SOLVER_TEST_SLOW_WRITE"      # snapshots: their own
        _test_delay = float(os.environ.get(slow, "0") or 0)
        if _test_delay:
            time.sleep(_test_delay)      # tests: widen the window in which a job is killed mid-write
        quiet_barrier(comm)              # every rank has closed the file
        problem = None
        if comm.rank == 0:
            try:
                _fsync_path(partial)
                os.replace(partial, final)
                partial = ""
                _fsync_path(directory)
            except OSError as exc:
                problem = exc
        _raise_on_every_rank(comm, problem,
                             f"{kind} of step {step} abandoned: it could not be put in place on rank 0")
    except BaseException:
        if partial and comm.rank == 0:
            discard(partial)             # the temporary this write made; never a finished checkpoint
        raise
    if comm.rank == 0:
        try:                             # a checkpoint in place is not lost over its sidecar or pruning
            if keep > 0:
                prune(directory, keep, step, mine, attrs.get("run_id"))
            if on_complete is not None:
                on_complete(final)
        except Exception as exc:         # noqa: BLE001
            emit(sys.stderr, one_line(f"solver: warning: after writing {final}: {type(exc).__name__}: {exc}") + "\n")
    quiet_barrier(comm)
    return final
