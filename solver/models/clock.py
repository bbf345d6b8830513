"""Time keeping shared by the models: where a run ends, where a restart
picks up, the simulated time of a step, and optional phase timers."""
from __future__ import annotations

import contextlib
import math
import sys

from ..config import INT_MAX, ConfigError


def check_dt(dt, why):
    """A time step the arithmetic can use: finite, positive and not so small
    that time stands still.  ``why`` says where it came from."""
    if not (isinstance(dt, float) and math.isfinite(dt) and dt >= sys.float_info.min * 2 ** 52):
        raise ConfigError(f"time.dt: the time step {why} is {dt!r}, which is not a usable positive number; "
                          f"check the units of the problem, or set time.dt explicitly")
    return dt


def _step_count(ratio):
    """Steps of dt to cover a span ``ratio`` dt long; refused past int64."""
    if not ratio < INT_MAX:
        raise ConfigError(f"time.t_end: reaching it takes {ratio:.3g} steps, more than a step counter holds "
                          f"({INT_MAX}); use a larger time.dt or an earlier time.t_end")
    return max(0, math.ceil(ratio - 1e-9))


def fit_snapshot_dt(dt, every):
    """dt, shrunk (never grown) so that a whole number of steps spans
    ``every`` (output.snapshot_dt): snapshots land on its multiples exactly.
    A dt that already divides it is kept bit for bit."""
    ratio = every / dt
    if round(ratio) >= 1 and abs(ratio - round(ratio)) <= 1e-9 * ratio:
        return dt
    return every / max(1, math.ceil(ratio))


def fit_end(time_settings, dt, restart=None, snapshot_dt=0.0):
    """(dt, end step).  With ``time.t_end`` the step count follows from dt, and
    dt shrinks (never grows) so that the run lands on t_end exactly; a restart
    that keeps its dt and still lands there keeps the dt bit for bit.  With
    ``snapshot_dt`` dt first shrinks to divide it (``fit_snapshot_dt``)."""
    if snapshot_dt:
        dt = fit_snapshot_dt(dt, snapshot_dt)
    t_end = time_settings.t_end
    if t_end is None:
        return dt, time_settings.steps
    if restart is None:
        steps = max(1, _step_count(t_end / dt))
        return t_end / steps, steps
    step = int(restart.attrs["step"])
    left = t_end - float(restart.attrs["time"])
    steps = _step_count(left / dt)
    if steps and abs(left / steps - dt) > 1e-9 * dt:
        dt = min(dt, left / steps)
    return dt, step + steps


class Clock:
    """Step count and simulated time.  Time is t0 + (step - s0) dt from a fixed
    basis (s0, t0), not a running sum: a straight run and a restart with the
    same dt give bitwise the same time at the same step.  The basis is stored
    in every checkpoint, so a chain of restarts that changes dt keeps time
    running forward."""

    def __init__(self):
        self.step, self.time, self.dt = 0, 0.0, None
        self._basis = (0, 0.0)

    @property
    def basis(self) -> tuple[int, float]:
        return self._basis

    def resume(self, restart):
        """Continue from a checkpoint's step and time (call after dt is set)."""
        attrs = restart.attrs
        self.step, self.time = int(attrs["step"]), float(attrs["time"])
        stored = attrs.get("time_basis")
        if stored is not None:
            basis = (int(stored[0]), float(stored[1]))
        else:        # files that predate the stored basis counted time from step 0
            basis = (0, 0.0) if self.step * float(attrs["dt"]) == self.time else (self.step, self.time)
        if self.dt != float(attrs["dt"]) or basis[1] + (self.step - basis[0]) * self.dt != self.time:
            basis = (self.step, self.time)
        self._basis = basis

    def tick(self, steps=1):
        self.step += steps
        s0, t0 = self._basis
        self.time = t0 + (self.step - s0) * self.dt


def timed(timers, name):
    """``timers(name)`` as a context manager, or nothing when not timing."""
    return contextlib.nullcontext() if timers is None else timers(name)


class Clocked:
    """Mixin: a model's step count, time and dt, read from its ``clock``."""
    block = 1        # steps one ``advance`` call takes when it may: checks fall on whole calls

    def step(self, timers=None):
        self.advance(1, timers)

    @property
    def step_count(self) -> int:
        return self.clock.step

    @property
    def time(self) -> float:
        return self.clock.time

    @property
    def dt(self) -> float:
        return self.clock.dt
