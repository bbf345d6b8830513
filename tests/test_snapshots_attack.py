"""Snapshots under hostile input and odd settings: values that the chosen
precision cannot hold, files that are not ours where snapshots go."""
import os

import numpy as np
import pytest

from conftest import run_solver
from solver.io.snapshots import read_snapshot, snapshot_paths

pytestmark = pytest.mark.timeout(300)

HEAT = ["--backend", "numpy", "--set", "heat.shape=[12,10]", "--set", "heat.initial='random'"]


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _error_line(r):
    lines = [line for line in r.stderr.strip().splitlines() if not ("Epoll" in line and "Old events" in line)]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("solver: error: "), (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize("np_", [None, 2])
def test_a_field_float32_cannot_hold_is_an_error_on_every_rank_not_a_silent_inf(tmp_path, np_):
    """u of 1e100 (finite in float64) in the first rows only, so that under
    two ranks one rank's block overflows float32 and the other's does not."""
    start = np.zeros((12, 10))
    start[:2] = 1e100
    np.save(tmp_path / "start.npy", start)
    run = str(tmp_path / "run")
    r = run_solver(["run", "--backend", "numpy", "--set", "heat.shape=[12,10]", "--set", "heat.initial='file'",
                    "--set", f"heat.file='{tmp_path / 'start.npy'}'", "--set", "time.steps=4",
                    "--set", "output.snapshot_every=2", "--set", "output.snapshot_precision='float32'",
                    "--output", run], np=np_)
    line = _error_line(r)
    assert "snapshot_precision" in line and "float64" in line and "heat/u" in line, line
    for path in snapshot_paths(run):
        assert np.isfinite(read_snapshot(path)["heat/u"]).all(), path
