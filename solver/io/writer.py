"""Checkpoint (and snapshot) writing off the step loop.

At a checkpoint step the model's state is copied (``checkpoint_datasets``
returns fresh arrays) and a thread writes it with its own duplicated
communicator while the main thread keeps stepping.  At most one write is in
flight.  Whether a write has finished, or failed, is decided collectively
(``poll_flags`` goes into the driver's per-step agreement), so every rank
learns of a failure on any rank at the same step boundary and none waits on
a collective that a failed writer will never enter.

Snapshots (``io.snapshots``) go through the same writer, one write at a
time with the checkpoints: a state buffer a model lends to one write is
never stepped into before that write ends.
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np

from ..parallel.mpi import MPI, emit
from .checkpoint import CheckpointAbandoned, now_utc, one_line, write_checkpoint
from .snapshots import snapshot_name


class WriterError(RuntimeError):
    """A checkpoint write failed on some rank; raised on every rank."""


class CheckpointWriter:
    def __init__(self, comm, directory, keep=0, background=True, on_complete=None, snapshots=None):
        self.comm = comm                                   # the main thread's communicator
        self.background = background = background and threads_allowed()
        self.io_comm = comm.Dup() if background else comm  # the writer thread's own
        self.directory, self.keep, self.on_complete = directory, keep, on_complete
        self.pending = False        # started, and not yet known to be finished on every rank
        self.last_path = None
        self.seconds = 0.0          # time spent writing, in the thread or inline
        self._thread = None
        self._error = None
        self._mine = set()          # checkpoints this process wrote: pruning may remove them
        self.snapshots = snapshots  # (directory, on_complete(path) on rank 0) of the run's snapshots

    # --- the write itself -------------------------------------------------------
    def _write(self, step, attrs, datasets, created, snapshot=False):
        t0 = time.perf_counter()
        what = f"snapshot of step {step}: " if snapshot else ""
        try:
            if snapshot:
                directory, on_complete = self.snapshots
                write_checkpoint(directory, step, self.io_comm, attrs, datasets, on_complete=on_complete,
                                 created=created, name=snapshot_name(step), kind="snapshot")
            else:
                self.last_path = write_checkpoint(self.directory, step, self.io_comm, attrs, datasets,
                                                  keep=self.keep, on_complete=self.on_complete, created=created,
                                                  mine=self._mine)
                self._mine.add(self.last_path)
        except CheckpointAbandoned as exc:
            self._error = (1, what + one_line(exc))
        except Exception as exc:
            self._error = (0, what + one_line(f"{type(exc).__name__}: {exc}"))
        finally:
            self.seconds += time.perf_counter() - t0

    def submit(self, step, attrs, datasets, snapshot=False):
        """Start writing a checkpoint, or with ``snapshot`` a snapshot
        (collective: every rank at the same step)."""
        self.settle()
        created = self.comm.bcast(now_utc(), root=0)
        if not self.background:
            self._write(step, attrs, datasets, created, snapshot)
            flags = np.array([int(self._error is not None)], dtype=np.int64)
            self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
            self.absorb(int(flags[0]), 0)
            return
        self._thread = threading.Thread(target=self._write, args=(step, attrs, datasets, created, snapshot),
                                        name="checkpoint-writer", daemon=True)
        self.pending = True
        self._thread.start()

    # --- collective bookkeeping ---------------------------------------------------
    def local_flags(self) -> tuple[int, int]:
        """(failed, busy) on this rank, for the driver's agreement."""
        busy = self._thread is not None and self._thread.is_alive()
        return int(self._error is not None), int(busy)

    def absorb(self, failed_anywhere: int, busy_anywhere: int):
        """Act on the agreed flags (collective: every rank calls with the same values)."""
        if failed_anywhere:
            if self._thread is not None:
                self._thread.join(timeout=10)   # let this rank's writer record its own error
            errors = self.comm.allgather(self._error)
            rank, (_, message) = min(((r, e) for r, e in enumerate(errors) if e is not None),
                                     key=lambda item: (item[1][0], item[0]))   # the cause, not an echo
            what = "background checkpoint writer" if self.background else "checkpoint writer"
            raise WriterError(f"{what} failed on rank {rank}: {message}")
        if self.pending and not busy_anywhere:
            self._thread.join()
            self.pending = False

    def settle(self):
        """Wait until no rank has a write in flight; raise on every rank if one failed."""
        while self.pending:
            flags = np.array(self.local_flags(), dtype=np.int64)
            self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
            self.absorb(*flags)
            if self.pending:
                time.sleep(0.001)

    def join(self):
        """Wait for this rank's write in flight, if any (not collective: every
        rank's writer is in the same write, or its failure has ended the job)."""
        if self._thread is not None:
            self._thread.join()

    def close(self):
        self.settle()
        if self.background:
            self.io_comm.Free()


_warned_threads = False


def threads_allowed() -> bool:
    """Whether MPI granted MPI_THREAD_MULTIPLE, which a writer thread needs;
    where not, checkpoints are written synchronously (said once)."""
    global _warned_threads
    if MPI.Query_thread() >= MPI.THREAD_MULTIPLE:
        return True
    if not _warned_threads and MPI.COMM_WORLD.rank == 0:
        emit(sys.stderr, "solver: warning: this MPI library does not grant MPI_THREAD_MULTIPLE: "
                         "checkpoints are written synchronously (output.background is ignored)\n")
    _warned_threads = True
    return False
