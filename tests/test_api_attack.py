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
