"""The progress line's rate and ETA: counted from the end of the first step,
which carries the start-up and JIT compilation (a clock is injected: no timing)."""
import io

import pytest
from mpi4py import MPI

from solver.driver import Progress

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def plain(monkeypatch):
    monkeypatch.delenv("SOLVER_PROGRESS", raising=False)
    clock, out = FakeClock(), io.StringIO()
    return Progress(0, 100, MPI.COMM_SELF, stream=out, clock=clock), clock, out


def test_first_eta_leaves_out_the_start_up(plain):
    progress, clock, out = plain
    clock.now = 30.0                  # the first step: 30 s of start-up and compilation
    progress.tick(1, 0.01)
    clock.now = 31.0                  # then 9 steps in one second
    progress.tick(10, 0.1)
    progress.line({"step": 10, "time": 0.1})
    assert "9.0 steps/s  ETA 10s" in out.getvalue()          # 90 steps left at 9 steps/s


def test_no_rate_before_a_step_has_been_timed(plain):
    progress, clock, out = plain
    progress.line({"step": 0, "time": 0.0})
    clock.now = 12.0
    progress.tick(1, 0.01)
    progress.line({"step": 1, "time": 0.01})                  # only the start-up lies behind it
    assert "steps/s" not in out.getvalue() and "ETA" not in out.getvalue()
    assert out.getvalue().splitlines()[1].startswith("step 1/100")


def test_rate_without_ticks_counts_from_the_first_line_after_the_start(plain):
    """A caller that only draws lines still gets the first step left out."""
    progress, clock, out = plain
    clock.now = 5.0
    progress.line({"step": 2, "time": 0.02})
    clock.now = 7.0
    progress.line({"step": 12, "time": 0.12})
    assert out.getvalue().splitlines()[1].endswith("5.0 steps/s  ETA 18s")
