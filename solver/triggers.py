"""Requests to checkpoint or stop: signals, a wall-clock limit, request files.

Every rank installs the handlers (a launcher, a scheduler or a watchdog may
signal any of them), and a request on any rank counts: the driver folds every
rank's requests into the collective that agrees on the step, so all ranks act
at the same step.

    SIGUSR1         checkpoint at the next step boundary and go on
    SIGUSR2, SIGTERM, SIGINT, SIGHUP
                    checkpoint and stop (exit status 3); a second SIGINT stops at once
                    (exit status 130, no checkpoint).  A launcher (mpiexec, srun)
                    that exits while its ranks run also makes them checkpoint and stop.
                    Open MPI's mpiexec forwards SIGUSR1/2 untouched, but on SIGTERM it
                    runs its own kill sequence and exits 1 whatever the ranks return.
    time.wall_limit checkpoint and stop once this much wall time has passed
    OUTPUT/CHECKPOINT, OUTPUT/STOP   files, same as SIGUSR1 / SIGTERM (see io.aio)

Once the run is over (``finish``), these signals are ignored until the process
exits: the status the run decided (0, 2, 3, 4) is the one it exits with.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from .parallel.mpi import unblock_output

EXIT_STOPPED = 3        # stopped early on request, final checkpoint written: restart with --restart latest

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Triggers:
    """Requests as plain flags.  Signal handlers run between bytecodes of the
    main thread, possibly while it is inside ``take``: they only assign
    attributes (no locks, no I/O), and checkpoint requests are counted, so
    one that arrives while ``take`` runs is seen at the next call."""

    def __init__(self, wall_limit: float = 0.0):
        self.wall_limit = wall_limit
        self.t0 = time.monotonic()
        self.stop_reason = None
        self.checkpoint_reason = None
        self._checkpoints_asked = 0
        self._checkpoints_taken = 0
        self._interrupts = 0
        self._installed = False
        self._launcher = os.getppid() if _under_launcher() else None

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        self._installed = True
        for sig in (signal.SIGUSR1, *STOP_SIGNALS):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue                     # nohup: the user asked to ignore it
            signal.signal(sig, self._on_usr1 if sig == signal.SIGUSR1 else self._on_stop)

    def finish(self):
        """The run is over and its output complete (or its error decided): from
        here until the process exits, checkpoint and stop signals have nothing
        left to do and are ignored, so a second one does not change the exit
        status.  (Ignored, not handled: Python puts its own handlers back to
        the default actions while it shuts down, before MPI_Finalize runs, but
        leaves ignored signals ignored.)  Ctrl-C ends the process at once with
        one line.  Nothing changes where ``install`` was not called."""
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGINT, _interrupted_after_the_run)

    @property
    def interrupted_again(self) -> bool:
        """Whether a second Ctrl-C has asked to stop at once (nothing waited for)."""
        return self._interrupts > 1

    def _on_usr1(self, signum, frame):
        self.request_checkpoint("SIGUSR1")

    def _on_stop(self, signum, frame):
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt          # a second Ctrl-C: stop at once (see cli.main)
        unblock_output()      # a launcher shutting down may stop reading our output: never block on it
        self.request_stop(signal.Signals(signum).name)

    def request_checkpoint(self, reason: str):
        """Thread- and signal-safe: assignments only."""
        self.checkpoint_reason = reason
        self._checkpoints_asked += 1

    def request_stop(self, reason: str):
        """Thread- and signal-safe: assignments only."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def launcher_gone(self) -> bool:
        """Whether the process that launched this rank (mpiexec, srun's step
        daemon) has exited: a job whose launcher died (a second Ctrl-C makes
        Open MPI's mpiexec exit at once) must stop by itself, not run on."""
        return self._launcher is not None and os.getppid() != self._launcher

    def take(self) -> tuple[int, int]:
        """(stop, checkpoint) as seen on this rank now; a checkpoint request is consumed."""
        if self.launcher_gone():
            self.request_stop("the launcher exited")
        if self.wall_limit and self.stop_reason is None and time.monotonic() - self.t0 >= self.wall_limit:
            self.request_stop(f"time.wall_limit of {self.wall_limit:g} s")
        asked = self._checkpoints_asked
        ckpt = asked != self._checkpoints_taken
        self._checkpoints_taken = asked
        return int(self.stop_reason is not None), int(ckpt)


def _interrupted_after_the_run(signum, frame):
    os.write(2, b"solver: interrupted after the run's output was complete\n")
    os._exit(130)


def _under_launcher() -> bool:
    """Started by an MPI launcher or srun (not a plain process whose parent
    shell may come and go, as with nohup)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_ID"))
