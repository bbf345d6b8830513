"""MPI start-up, abort-on-uncaught-exception, rank-0 output and collective verdicts.

The rule that keeps jobs from hanging: an error either happens on every rank
at once (``agree`` makes sure of it, for bad input), or it aborts the whole job
(``install_abort_hook``), so no rank is ever left waiting in a collective.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import mpi4py

# The background checkpoint writer calls MPI from its own thread.
mpi4py.rc.thread_level = "multiple"
# hwloc in MPI_Init would load an installed OpenCL driver into every rank
# (threads and memory for nothing: the opencl backend finds its devices itself)
os.environ.setdefault("HWLOC_COMPONENTS", "-opencl")
# Open MPI 4.1's "lockedfile" shared-file-pointer component builds its lock
# file's name in a fixed buffer: an output path of about 200 characters
# overflows it and every rank aborts in the first collective file open.  We
# never use shared file pointers; a site's own choice is kept.
os.environ.setdefault("OMPI_MCA_sharedfp", "^lockedfile")
from mpi4py import MPI  # noqa: E402  (initialises MPI)

import numpy as np  # noqa: E402

from ..config import ConfigError  # noqa: E402

world = MPI.COMM_WORLD


def is_root(comm=None) -> bool:
    return (comm or world).rank == 0


def emit(stream, text: str) -> None:
    """Write and flush; output nobody reads any more is dropped, not waited
    on (after a stop request the streams are made non-blocking, because a
    launcher that is shutting down may stop reading them, and a launcher
    that has exited leaves a pipe or terminal that fails every write)."""
    try:
        stream.write(text)
        stream.flush()
    except OSError:          # would block, broken pipe, or EIO from a terminal that went away
        pass


def unblock_output() -> None:
    """From here on, never block on stdout or stderr (see emit).  Safe in a
    signal handler: two fcntl calls on fixed descriptors, no locks."""
    for fd in (1, 2):
        try:
            os.set_blocking(fd, False)
        except OSError:
            pass


def log(msg: str, comm=None, end: str = "\n") -> None:
    """Print on rank 0 only, flushed, so that logs of N ranks read as one."""
    if is_root(comm):
        emit(sys.stdout, msg + end)


def error_line(msg: str, comm=None) -> None:
    """One line on stderr from rank 0 only: how bad input is reported."""
    if is_root(comm):
        emit(sys.stderr, f"solver: error: {msg}\n")


def agree(comm, fn, *args, **kwargs):
    """Call ``fn`` on every rank; if it raises ConfigError on any rank, raise
    the lowest rank's ConfigError on all ranks, so they stop together."""
    try:
        result, message = fn(*args, **kwargs), None
    except ConfigError as exc:
        result, message = None, str(exc)
    if comm.size > 1:
        messages = [m for m in comm.allgather(message) if m is not None]
    else:
        messages = [message] if message is not None else []
    if messages:
        raise ConfigError(messages[0])
    return result


def root_decides(comm, fn, *args):
    """Call ``fn`` on rank 0 only (file system checks, reading a small file)
    and give every rank its result, or the same ConfigError."""
    result, problem = None, None
    if comm.rank == 0:
        try:
            result = fn(*args)
        except ConfigError as exc:
            problem = str(exc)
    result, problem = comm.bcast((result, problem), root=0)
    if problem:
        raise ConfigError(problem)
    return result


def all_ranks(comm, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (collective)."""
    return bool(comm.allreduce(1 if ok else 0, op=MPI.MIN)) if comm.size > 1 else bool(ok)


def available_memory() -> int | None:
    """Bytes this node can still give this process: MemAvailable, or less
    under any cgroup limit above it (SLURM's --mem, containers; see
    ``memory``); None where neither can be read."""
    from .memory import available_memory as read
    return read()


def node_rank(comm) -> int:
    """This rank's index among the ranks of ``comm`` on its node (collective):
    how ranks sharing a node share out its GPUs."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    rank = node.rank
    node.Free()
    return rank


def check_memory(comm, need: int, what: str) -> None:
    """Refuse, on every rank, a problem whose ranks would need more memory on
    some node than that node has available (collective).  ``need`` is this
    rank's estimate in bytes; ``what`` names the problem in the message."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    on_node = node.allreduce(need, op=MPI.SUM)
    ranks_on_node = node.size
    node.Free()
    avail = available_memory()
    short = avail is not None and on_node > avail
    report = comm.allgather((short, need, on_node, ranks_on_node, avail))
    for short, need, on_node, ranks, avail in report:
        if short:
            gib = 2 ** 30
            raise ConfigError(f"{what} needs about {need / gib:.3g} GiB per rank, {on_node / gib:.3g} GiB for the "
                              f"{ranks} rank{'s' if ranks > 1 else ''} of a node that has {avail / gib:.3g} GiB "
                              f"available; use more nodes or a smaller problem")


def abort(code: int = 1) -> None:
    """End every rank of the job now (MPI_Abort when there is more than one)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if world.size > 1:
        world.Abort(code)
    os._exit(code)


def _abort_on_exception(exc_type, exc, tb):
    sys.stderr.write(f"solver: rank {world.rank} of {world.size}: uncaught exception, aborting all ranks\n")
    traceback.print_exception(exc_type, exc, tb)
    abort(1)


def _abort_on_thread_exception(args):
    _abort_on_exception(args.exc_type, args.exc_value, args.exc_traceback)


def install_abort_hook() -> None:
    """An uncaught exception on any rank (or in any thread) aborts every rank."""
    sys.excepthook = _abort_on_exception
    threading.excepthook = _abort_on_thread_exception


def library_version() -> str:
    return MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0]


# ----------------------------------------------------------------------------
# waiting without spinning: MPI's blocking waits busy-poll, and a writer
# thread spinning while rank 0 fsyncs would take the core from the compute
# it is meant to overlap with
def _sleep_until_done(request, poll_seconds):
    while not request.Test():
        time.sleep(poll_seconds)


def quiet_barrier(comm, poll_seconds=0.0005):
    """A barrier that sleeps while it waits."""
    _sleep_until_done(comm.Ibarrier(), poll_seconds)


def quiet_all_ok(comm, ok: bool, poll_seconds=0.0005) -> bool:
    """Whether ``ok`` holds on every rank, waiting without spinning."""
    mine = np.array([1 if ok else 0], dtype=np.int32)
    every = np.empty_like(mine)
    _sleep_until_done(comm.Iallreduce(mine, every, op=MPI.MIN), poll_seconds)
    return bool(every[0])


def quiet_bcast(comm, array, poll_seconds=0.0005):
    """Broadcast ``array`` from rank 0 in place, waiting without spinning."""
    _sleep_until_done(comm.Ibcast(array, root=0), poll_seconds)
