"""The time loop: step, and at step boundaries diagnostics, progress and output."""
from __future__ import annotations

import math
import os
import stat
import sys
import time as _time
from contextlib import contextmanager

import numpy as np

from .config import ConfigError
from .io.safefile import write_atomically
from .parallel.mpi import MPI, abort, all_ranks, emit

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class Timers:
    """Wall time per phase on this rank; ``report`` takes the max over ranks."""
    PHASES = ("compute", "halo", "diagnostics", "output")

    def __init__(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self._open = []                 # phases entered and not yet left, innermost last

    @contextmanager
    def __call__(self, name):
        """Time a phase; a phase inside another is not counted twice (the
        outer one is charged only for its own time)."""
        t0 = _time.perf_counter()
        self._open.append(name)
        try:
            yield
        finally:
            self._open.pop()
            spent = _time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + spent
            if self._open:
                self.seconds[self._open[-1]] -= spent

    def max_over(self, comm) -> dict:
        names = sorted(self.seconds)
        values = np.array([self.seconds[n] for n in names])
        comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)
        return dict(zip(names, values.tolist()))


class Progress:
    """Rank 0's progress: a live line on a terminal, plain lines in a log.

    Rates and ETAs are measured from the end of the first step taken, not
    from the start: that first step carries the start-up (JIT compilation,
    first touches of memory, device set-up) and would make the first ETA
    many times too long.  ``stream``: default sys.stdout as it is when the
    run starts; ``clock``: seconds, for tests."""

    def __init__(self, start_step, end_step, comm, stream=None, clock=_time.perf_counter):
        self.start, self.end = start_step, end_step
        self.root = comm.rank == 0
        self.stream = stream = sys.stdout if stream is None else stream     # a notebook's, when it has its own
        self.live = self.root and is_terminal(stream)
        self.clock = clock
        self._since = None              # (step, clock) once the first step is done: what rates count from
        self._last_draw = 0.0

    def note(self, text):
        """A line of its own from rank 0 (between progress lines)."""
        if self.root:
            emit(self.stream, ("\r\033[K" if self.live else "") + text + "\n")

    def _seen(self, step):
        """The clock starts at the first step boundary after the start."""
        if self._since is None and step > self.start:
            self._since = (step, self.clock())

    def _rate(self, step):
        """(steps per second, seconds left); (0, nan) until a second boundary has been seen."""
        self._seen(step)
        s0, t0 = self._since or (step, 0.0)
        elapsed = self.clock() - t0 if step > s0 else 0.0
        rate = (step - s0) / elapsed if elapsed > 0 else 0.0
        eta = (self.end - step) / rate if rate > 0 else float("nan")
        return rate, eta

    def tick(self, step, sim_time):
        """Called every step; draws the live line at most five times a second."""
        self._seen(step)
        if not self.live:
            return
        now = self.clock()
        if now - self._last_draw < 0.2 and step != self.end:
            return
        self._last_draw = now
        rate, eta = self._rate(step)
        speed = f"{rate:.1f} steps/s  " if rate > 0 else ""
        emit(self.stream, f"\r  step {step}/{self.end}  t={sim_time:.6g}  {speed}ETA {_eta(eta)}   ")

    def line(self, diag, warnings=()):
        if not self.root:
            return
        rate, eta = self._rate(diag["step"])
        text = "  ".join([f"step {diag['step']}/{self.end}", f"t={diag['time']:.6g}"] + [
            f"{k}={v:.6g}" for k, v in diag.items() if k not in ("step", "time")])
        if rate > 0:
            text += f"  {rate:.1f} steps/s  ETA {_eta(eta)}"
        text += "".join(f"  WARNING: {w}" for w in warnings)
        emit(self.stream, ("\r\033[K" if self.live else "") + text + "\n")


def is_terminal(stream) -> bool:
    """Whether a person watches ``stream``.  Under mpiexec every rank's stdout
    is a pseudo-terminal even when the job's output goes to a file, so look at
    the launcher's stdout too.  SOLVER_PROGRESS=live|plain overrides."""
    choice = os.environ.get("SOLVER_PROGRESS", "")
    if choice in ("live", "plain"):
        return choice == "live"
    if not stream.isatty():
        return False
    if "SLURM_JOB_ID" in os.environ and "SLURM_PTY_PORT" not in os.environ:
        return False
    try:
        target = os.readlink(f"/proc/{os.getppid()}/fd/1")
    except OSError:
        return True
    return target.startswith(("/dev/pts/", "/dev/tty"))


def _eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class DiagnosticsLog:
    """diagnostics.csv in the output directory, appended by rank 0: one row per
    diagnostics step of the run's one history.  A restart first cuts the file
    back to the rows before its step (those after it belong to a stretch of
    the run that the restart recomputes, or to a line cut off by a kill)."""

    def __init__(self, path, comm):
        self.path, self.root, self.columns = path, comm.rank == 0, None

    def begin(self, step):
        """Keep the rows before ``step`` (rank 0; an atomic rewrite that never
        writes through a link).  A file without a header of ours, or anything
        other than a plain file at that name, is moved aside (``.damaged``),
        not lost."""
        if not self.root:
            return
        try:
            plain = stat.S_ISREG(os.lstat(self.path).st_mode)
        except FileNotFoundError:
            return
        lines = [""]
        if plain:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().split("\n")
        header, kept = lines[0], []
        if not header.startswith("step,"):
            from .io.rotation import set_aside
            aside = set_aside(self.path, "damaged")          # never over an earlier damaged copy
            what = "has no header" if plain else "is not a plain file"
            emit(sys.stderr, f"solver: warning: {self.path} {what}; moved aside to "
                             f"{os.path.basename(aside)} and started anew\n")
            return
        width = len(header.split(","))
        for line in lines[1:]:
            cells = line.split(",")
            try:
                if len(cells) == width and int(float(cells[0])) < step:
                    kept.append(line)
            except ValueError:
                continue                     # a line cut short by a kill
        self.columns = header.split(",")
        try:
            write_atomically(self.path, "\n".join([header] + kept) + "\n", sync=False)
        except OSError as exc:
            self._fail(exc)

    def append(self, diag):
        """A row; the header too when the file is new."""
        if not self.root:
            return
        self.columns = self.columns or list(diag)
        try:
            added = [k for k in diag if k not in self.columns]
            if added:
                self._widen(added)
            with os.fdopen(os.open(self.path, _APPEND, 0o644), "a") as fh:      # never through a link
                if fh.tell() == 0:
                    fh.write(",".join(self.columns) + "\n")
                fh.write(",".join(str(int(diag["step"])) if c == "step" else repr(float(diag.get(c, float("nan"))))
                                  for c in self.columns) + "\n")
        except OSError as exc:
            self._fail(exc)

    def _widen(self, added):
        """Columns that a restart adds (an implicit scheme's iterations after
        explicit steps): the header grows and the earlier rows read nan."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                lines = [line for line in fh.read().split("\n")[1:] if line]
        except FileNotFoundError:
            lines = []
        self.columns = self.columns + added
        if lines:
            write_atomically(self.path, "\n".join([",".join(self.columns)]
                                                  + [line + ",nan" * len(added) for line in lines]) + "\n", sync=False)

    def _fail(self, exc):
        """Rank 0 alone cannot write: one line, and the job ends (the other
        ranks are in the step loop's collectives)."""
        emit(sys.stderr, f"solver: error: cannot write {self.path}: {exc.strerror or exc}; "
                         f"the checkpoints written so far are intact\n")
        abort(1)


class _Agreement:
    """The per-step collective that keeps every rank acting at the same step:
    every rank's requests (stop, checkpoint: a scheduler or a watchdog may
    signal any rank), every rank's writer state, whether every rank's state is
    still finite, and rank 0's choice of the next step to check (about every
    0.2 s of stepping).  The finiteness check reads the whole state, so it
    runs only when stepping since the last one took at least ``CHECK_RATIO``
    times what the check costs."""
    TARGET_SECONDS = 0.2
    CHECK_RATIO = 100

    def __init__(self, comm, triggers, writer, model, start_step, quantum=1):
        self.comm, self.triggers, self.writer, self.model = comm, triggers, writer, model
        self.quantum = quantum            # the model's steps per call: checks fall on whole calls
        self.next_step = start_step + quantum
        self._mark = (start_step, _time.perf_counter())
        self._check_cost, self._last_check = 0.0, -math.inf

    def due(self, step) -> bool:
        return step >= self.next_step or self.writer.pending

    def _state_bad(self) -> int:
        now = _time.perf_counter()
        if now - self._last_check < self.CHECK_RATIO * self._check_cost:
            return 0
        bad = int(not self.model.state_ok())
        self._last_check = _time.perf_counter()
        self._check_cost = self._last_check - now
        return bad

    def poll(self, step) -> tuple[str | None, str | None]:
        """(why stop, why checkpoint now), each None when nobody asked:
        collective, the same on every rank; raises FloatingPointError on every
        rank when some rank's state is not finite."""
        stop, checkpoint = self.triggers.take()
        flags = np.zeros(6, dtype=np.int64)
        flags[0:2] = stop, checkpoint
        flags[2:4] = self.writer.local_flags()
        flags[5] = self._state_bad()
        if self.comm.rank == 0:
            s0, t0 = self._mark
            now = _time.perf_counter()
            per_step = (now - t0) / max(1, step - s0)
            steps = max(1, min(10000, int(self.TARGET_SECONDS / per_step) if per_step > 0 else 1))
            flags[4] = -(-steps // self.quantum) * self.quantum
            self._mark = (step, now)
        self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        self.writer.absorb(int(flags[2]), int(flags[3]))
        if flags[5]:
            raise_not_finite(self.model, "the state")
        self.next_step = step + int(flags[4])
        why_stop = self._reason(stop and self.triggers.stop_reason) if flags[0] else None
        why_checkpoint = self._reason(checkpoint and self.triggers.checkpoint_reason) if flags[1] else None
        return why_stop, why_checkpoint

    def _reason(self, mine):
        """The lowest asking rank's reason, on every rank (collective: called
        on every rank once a request has been agreed on, which is rare)."""
        if self.comm.size == 1:
            return mine or "a request"
        for rank, reason in enumerate(self.comm.allgather(mine or None)):
            if reason:
                return reason if rank == 0 else f"{reason} on rank {rank}"
        return "a request"


def raise_not_finite(model, what):
    raise FloatingPointError(f"{what} stopped being finite by step {model.step_count} (t = {model.time:.6g}): "
                             f"the run is stopped and its newest checkpoint is the last good state; "
                             f"reduce time.dt or check the inputs")


def check_state(model, comm):
    """Every check whose failure ends a run with exit status 4, with the same
    verdict on every rank (collective): run before every checkpoint, so that
    the newest checkpoint after an exit 4 is always a good state.  A model may
    add checks of its own (``check_state``: bodies that met, for n-body)."""
    if not all_ranks(comm, model.state_ok()):
        raise_not_finite(model, "the state")
    own = getattr(model, "check_state", None)
    if own is not None:
        own()


def _next_multiple(step, every):
    """The first multiple of ``every`` after ``step`` (never, for 0)."""
    return (step // every + 1) * every if every else sys.maxsize


def _wait_for(writer):
    """Join this rank's write in flight; an exception meanwhile (a second
    Ctrl-C) ends the wait and is dropped, so that the one being raised is
    the one the caller sees."""
    try:
        writer.join()
    except BaseException:        # noqa: BLE001
        pass


def _earlier_timings(model) -> dict:
    """Seconds per phase spent before the restart checkpoint (the run so far)."""
    import json
    restart = getattr(model, "restart", None)
    try:
        return {k: float(v) for k, v in json.loads(restart.attrs.get("timings", "{}")).items()} if restart else {}
    except (ValueError, TypeError, AttributeError):
        return {}


def run(model, settings, output_dir, comm, triggers, helper=None, quiet=False, lineage=None) -> dict:
    """Advance ``model`` to its end step (or until asked to stop), writing
    checkpoints on the way; returns a summary.  Collective.  ``lineage``
    (run_id, parent) goes into every checkpoint's attributes."""
    from .io.checkpoint import timings_json
    from .io.writer import CheckpointWriter, WriterError
    from .io.xdmf import write_sidecar
    from .models import get

    timers = Timers()
    end = model.end_step
    start = model.step_count
    every = settings.output.checkpoint_every
    log_every = settings.output.log_every or max(1, (end - start) // 10)
    history = DiagnosticsLog(os.path.join(output_dir, "diagnostics.csv"), comm)
    history.begin(start)
    progress = Progress(start, end, comm)
    if quiet:
        progress.root = progress.live = False

    xdmf_grid = get(model.kind).xdmf_grid

    def after_write(path):                      # rank 0, once the file is in place
        write_sidecar(path, xdmf_grid)
        if helper is not None:
            helper.checkpoint_written(path)

    # the snapshot series (output.snapshot_every / snapshot_dt); a run that has
    # snapshots of its own keeps them in run.xdmf even when this part writes none
    from .io.snapshots import SnapshotSeries
    from .io.xdmf import SnapshotCollection
    series = SnapshotSeries(settings.output, output_dir, get(model.kind).SNAPSHOT_FIELDS, lineage,
                            SnapshotCollection(output_dir, xdmf_grid))
    start_due = series.begin(comm, start, model.time, bool(lineage and lineage.get("parent")))
    snaps = series if series.writing else None
    if (snaps is not None or series.listed) and helper is not None:
        helper.grid = None                      # run.xdmf lists the snapshots, not the checkpoints
    writer = CheckpointWriter(comm, os.path.join(output_dir, "checkpoints"), keep=settings.output.keep,
                              background=settings.output.background, on_complete=after_write,
                              snapshots=(snaps.directory, snaps.written) if snaps else None)
    agreement = _Agreement(comm, triggers, writer, model, start, model.block)
    warnings = []                               # the latest diagnostics warnings, for the summary

    measured_at = [None]                        # the step of the latest diagnostics

    def measure():
        """The global diagnostics, which must be finite (exit 4 otherwise)."""
        with timers("diagnostics"):
            with np.errstate(all="ignore"):
                diag = model.diagnostics()
        bad = [k for k in model.finite_keys if not math.isfinite(diag[k])]
        if bad:                                 # global values: every rank sees the same
            raise_not_finite(model, f"the {bad[0]} (= {diag[bad[0]]})")
        measured_at[0] = model.step_count
        return diag

    def diagnose():
        diag = measure()
        notes = model.warnings(diag)
        warnings[:] = notes                     # the state of the latest line, not of an earlier one
        history.append(diag)
        progress.line(diag, notes)
        return diag

    earlier = _earlier_timings(model)

    written_at = [None]                         # the step of the latest checkpoint

    def checkpoint():
        written_at[0] = model.step_count
        with timers("output"):
            check_state(model, comm)                       # never replace a good checkpoint with a bad state
            if measured_at[0] != model.step_count:
                measure()                                  # nor with one whose diagnostics overflow
            attrs = {**model.checkpoint_attrs(), **(lineage or {})}
            now = {**timers.seconds, "writing": writer.seconds}
            attrs["timings"] = timings_json({k: now.get(k, 0.0) + earlier.get(k, 0.0) for k in {*now, *earlier}})
            writer.submit(model.step_count, attrs, model.checkpoint_datasets())

    def snapshot():
        with timers("output"):
            writer.submit(model.step_count, snaps.attrs(model), snaps.chosen(model, comm), snapshot=True)

    def status(state):
        if helper is not None:
            rate, eta = progress._rate(model.step_count)
            helper.status = {**helper.status, "state": state, "step": model.step_count, "end_step": end,
                             "time": model.time, "steps_per_second": rate,
                             "eta_seconds": eta if math.isfinite(eta) else None}

    snap_next = sys.maxsize
    try:
        if snaps is not None:
            if start_due:
                snapshot()
            snap_next = snaps.next_step(start, model.time, model.dt)
        diag = diagnose()
        stop_reason = None
        t0 = _time.perf_counter()
        while model.step_count < end:
            step = model.step_count
            # up to the next step at which something happens (a model may take several at once)
            until = min(end, agreement.next_step, _next_multiple(step, log_every), _next_multiple(step, every),
                        snap_next)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):     # checked, not warned about
                model.advance(until - step, timers)
            step = model.step_count
            progress.tick(step, model.time)
            if step % log_every == 0 and step != end:
                diag = diagnose()
            if step >= snap_next:               # before a stop: a restart from here does not write it again
                snapshot()
                snap_next = snaps.next_step(step, model.time, model.dt)
            want = bool(every) and step % every == 0 and step != end
            if agreement.due(step):
                stop, asked = agreement.poll(step)
                status("running")
                if stop and step != end:
                    stop_reason = stop
                    progress.note(f"stopping at step {step} ({stop_reason}): writing the final checkpoint")
                    break
                if asked and step != end:
                    progress.note(f"checkpoint at step {step} ({asked})")
                    want = True
            if want:
                checkpoint()
        model.backend.sync()                    # a device backend may still be running queued steps
        loop_seconds = _time.perf_counter() - t0
        if diag is None or diag["step"] != model.step_count:
            diag = diagnose()
        checkpoint()
        with timers("output"):
            writer.close()
    except BaseException as exc:
        # let a write in flight (an earlier, good state) finish before the
        # exception leaves: before MPI shuts down, and before a restart in
        # this directory (a KeyboardInterrupt in a notebook) can race with it;
        # not after a failed write (its threads may be stuck in a collective)
        # nor on a second Ctrl-C (stop at once).  FloatingPointError and
        # ConfigError are raised on every rank at the same step: a model whose
        # state is still the last good one (a linear solve that failed) has it written
        try:
            if (isinstance(exc, (FloatingPointError, ConfigError)) and getattr(exc, "checkpoint_state", False)
                    and written_at[0] != model.step_count):
                checkpoint()
                with timers("output"):
                    writer.close()
        finally:
            if not (isinstance(exc, WriterError) or triggers.interrupted_again):
                _wait_for(writer)
        raise
    finally:
        triggers.finish()                       # a late signal must not change the exit status
    status("stopped" if stop_reason else "finished")
    return {"final": diag, "steps": model.step_count - start, "loop_seconds": loop_seconds,
            "timers": timers.max_over(comm), "checkpoint": writer.last_path, "stopped": stop_reason,
            "write_seconds": writer.seconds, "warnings": warnings}
