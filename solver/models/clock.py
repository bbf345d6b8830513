"""Time keeping shared by the models: where a run ends, where a restart
picks up, the simulated time of a step, and optional phase timers."""
from __future__ import annotations

import contextlib
import math


def fit_end(time_settings, dt, restart=None):
    """(dt, end step).  With ``time.t_end`` the step count follows from dt and,
    on a fresh start, dt shrinks so the run lands on t_end exactly; a restart
    keeps its dt and counts on from the checkpoint."""
    t_end = time_settings.t_end
    if t_end is None:
        return dt, time_settings.steps
    if restart is None:
        steps = max(1, math.ceil(t_end / dt - 1e-9))
        return t_end / steps, steps
    left = t_end - float(restart.attrs["time"])
    return dt, int(restart.attrs["step"]) + max(0, math.ceil(left / dt - 1e-9))


class Clock:
    """Step count and simulated time.  Time is t0 + (step - s0) dt from a fixed
    basis, not a running sum: a straight run and a restart with the same dt
    give bitwise the same time at the same step."""

    def __init__(self):
        self.step, self.time, self.dt = 0, 0.0, None
        self._basis = (0, 0.0)

    def resume(self, restart):
        """Continue from a checkpoint's step and time (call after dt is set)."""
        self.step, self.time = int(restart.attrs["step"]), float(restart.attrs["time"])
        if self.dt != float(restart.attrs["dt"]):
            self._basis = (self.step, self.time)

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
