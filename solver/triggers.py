"""Requests to checkpoint or stop: signals, a wall-clock limit, request files.

Every rank installs the handlers (a launcher may signal any of them) but only
rank 0's view counts: the driver folds it into a collective at a step
boundary, so all ranks act at the same step.

    SIGUSR1         checkpoint at the next step boundary and go on
    SIGUSR2, SIGTERM, SIGINT
                    checkpoint and stop (exit status 3); a second SIGINT aborts.
                    Open MPI's mpiexec forwards SIGUSR1/2 untouched, but on SIGTERM it
                    runs its own kill sequence and exits 1 whatever the ranks return.
    time.wall_limit checkpoint and stop once this much wall time has passed
    OUTPUT/CHECKPOINT, OUTPUT/STOP   files, same as SIGUSR1 / SIGTERM (see io.aio)
"""
from __future__ import annotations

import signal
import threading
import time

EXIT_STOPPED = 3        # stopped early on request, final checkpoint written: restart with --restart latest


class Triggers:
    def __init__(self, wall_limit: float = 0.0):
        self.wall_limit = wall_limit
        self.t0 = time.monotonic()
        self.stop_reason = None
        self.checkpoint_reason = None
        self._previous = {}
        self._lock = threading.Lock()

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in ((signal.SIGUSR1, self._on_usr1), (signal.SIGUSR2, self._on_stop),
                             (signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop)):
            self._previous[sig] = signal.signal(sig, handler)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_usr1(self, signum, frame):
        self.request_checkpoint("SIGUSR1")

    def _on_stop(self, signum, frame):
        if signum == signal.SIGINT and self.stop_reason is not None:
            raise KeyboardInterrupt          # a second Ctrl-C: give up at once
        from .parallel.mpi import unblock_output
        unblock_output()                     # a launcher shutting down may no longer read our output
        self.request_stop(signal.Signals(signum).name)

    def request_checkpoint(self, reason: str):
        with self._lock:
            self.checkpoint_reason = self.checkpoint_reason or reason

    def request_stop(self, reason: str):
        with self._lock:
            self.stop_reason = self.stop_reason or reason

    def take(self) -> tuple[int, int]:
        """(stop, checkpoint) as seen here now; a checkpoint request is consumed."""
        if self.wall_limit and self.stop_reason is None and time.monotonic() - self.t0 >= self.wall_limit:
            self.request_stop(f"time.wall_limit of {self.wall_limit:g} s")
        with self._lock:
            ckpt = self.checkpoint_reason is not None
            self.checkpoint_reason = None
            return int(self.stop_reason is not None), int(ckpt)
