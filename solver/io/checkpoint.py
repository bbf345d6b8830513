"""Checkpoints in parallel HDF5: one file per output step, the global arrays
in a layout that does not depend on the rank count (see the README).

The commit protocol: every rank agrees that it can write before the first
collective call; rank 0 lays the file out as ``.step_N.h5.part``; every rank
writes its blocks (``io.blocks``); the file is fsynced and only then renamed,
so a file named ``step_*.h5`` is always a whole one; then older checkpoints
of the run are pruned (``io.rotation``).  A failure before the collective
write is raised on every rank; one inside it ends the job.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

import h5py
import numpy as np

from .. import __version__
from ..parallel.mpi import emit, quiet_all_ok, quiet_barrier, quiet_bcast
from .blocks import layout, parallel_io, write_gathered, write_raw
from .rotation import checkpoint_name, prune

FORMAT = "solver-checkpoint"
FORMAT_VERSION = 1


class CheckpointAbandoned(OSError):
    """The write was given up on this rank because it failed on another."""


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def timings_json(seconds: dict) -> str:
    return json.dumps({k: round(v, 6) for k, v in seconds.items()}, sort_keys=True)


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


def _fatal_mid_write(comm, step, exc):
    """A rank that fails inside the collective write cannot tell the others,
    who wait in it for this one: end the job, naming the rank and the cause."""
    from ..parallel.mpi import abort
    emit(sys.stderr, f"solver: rank {comm.rank}: error: the checkpoint of step {step} failed while being "
                     f"written ({type(exc).__name__}: {exc}); the other ranks cannot finish the collective write, "
                     f"so the job is aborted. Earlier checkpoints are intact: continue with --restart latest\n")
    abort(1)


def _injected_failure(step, rank, phase="before"):
    """Tests: SOLVER_TEST_FAIL_WRITE=STEP[:RANK[:PHASE]] makes that checkpoint
    fail (on that rank), before the collective write or ``mid`` it."""
    spec = os.environ.get("SOLVER_TEST_FAIL_WRITE", "")
    if not spec:
        return
    at, on_rank, when = (spec.split(":") + ["", ""])[:3]
    if int(at) == step and (not on_rank or int(on_rank) == rank) and (when or "before") == phase:
        raise OSError(f"injected failure writing the checkpoint of step {step}")


def root_attrs(step, nranks, created, attrs) -> dict:
    """Every checkpoint's root attributes, then the model's ``attrs``."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "solver_version": __version__,
            "nranks": nranks, "created": created, "step": step, **attrs}


_slow_write_warned = False


def _write_file(partial, comm, step, head, datasets):
    """The collective write of the whole file (every rank)."""
    def opened():
        _injected_failure(step, comm.rank, "mid")
    if parallel_io(comm):
        problem, offsets = None, np.zeros(len(datasets), dtype=np.int64)
        if comm.rank == 0:
            try:
                offsets[:] = layout(partial, head, datasets)
            except Exception as exc:     # noqa: BLE001 - no collective yet: every rank can be told
                problem = exc
        _raise_on_every_rank(comm, problem, f"checkpoint of step {step} abandoned: rank 0 could not create it")
        quiet_bcast(comm, offsets)
        try:
            write_raw(partial, comm, offsets, datasets, opened)
        except Exception as exc:         # noqa: BLE001 - any failure here strands the other ranks
            _fatal_mid_write(comm, step, exc)
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
        _fatal_mid_write(comm, step, exc)


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
    # leave the others waiting in it for good.
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
    _write_file(partial, comm, step, root_attrs(step, comm.size, created, attrs), datasets)
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
