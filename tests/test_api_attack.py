"""The Python API misused from one process (a notebook): arguments of odd
types and values, calls after close, two Simulations side by side."""
import math

import numpy as np
import pytest

import solver

pytestmark = pytest.mark.timeout(120)

SMALL = {"heat": {"shape": [8, 6]}, "time": {"steps": 6}}


def _sim(tmp_path, name="run", config=SMALL):
    return solver.Simulation(config, output=tmp_path / name, backend="numpy", quiet=True)


@pytest.mark.parametrize("t_end", [math.nan, math.inf, -math.inf])
def test_run_to_a_time_that_is_not_finite_is_a_value_error_naming_it(tmp_path, t_end):
    with _sim(tmp_path) as sim:
        with pytest.raises(ValueError, match=r"run\(t_end=.*finite"):
            sim.run(t_end=t_end)
        assert sim.run(steps=1)["steps"] == 1          # nothing was started: the Simulation goes on


def test_run_takes_numpy_whole_numbers_and_times(tmp_path):
    with _sim(tmp_path) as sim:
        assert sim.run(steps=np.int64(2))["steps"] == 2
        assert sim.run(t_end=np.float64(sim.time + 2 * sim.dt))["steps"] == 2
        assert sim.step == 4
        for bad in (np.float64(1.0), 1.5, True, "2", -1):
            with pytest.raises(ValueError, match=r"run\(steps="):
                sim.run(steps=bad)


def test_a_branch_writes_a_snapshot_of_its_first_step_only_then_follows_the_cadence(tmp_path):
    """A branch's series starts at its first step; the later run() calls of
    the same Simulation keep to snapshot_every like any run."""
    from solver.io.snapshots import read_snapshot, snapshot_paths
    config = {**SMALL, "time": {"steps": 10}, "output": {"snapshot_every": 4, "checkpoint_every": 5}}
    with _sim(tmp_path, "trunk", config) as sim:
        sim.run()
    with solver.Simulation(restart=tmp_path / "trunk" / "checkpoints" / "step_000000005.h5",
                           output=tmp_path / "branch", backend="numpy", quiet=True) as sim:
        for _ in range(4):
            sim.run(steps=1)
    assert [read_snapshot(p)["step"] for p in snapshot_paths(str(tmp_path / "branch"))] == [5, 8]
