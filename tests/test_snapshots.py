"""Snapshots: output for looking at, apart from checkpoints (solver.io.snapshots)."""
import os

import h5py
import numpy as np
import pytest

from solver.io.snapshots import FORMAT, read_snapshot, snapshot_name, snapshot_paths

pytestmark = pytest.mark.timeout(300)


def _fake_snapshot(path, step, dtype=np.float32):
    with h5py.File(path, "w") as f:
        f.attrs.update(format=FORMAT, step=step, time=0.5 * step, problem="heat")
        u = f.create_dataset("heat/u", data=np.full((3, 4), step, dtype))
        u.attrs.update(origin=[0.125, 0.5], spacing=[0.25, 1.0], centering="cell")


def test_reader_lists_complete_snapshots_by_step_and_reads_them_as_float64(tmp_path):
    directory = tmp_path / "snapshots"
    directory.mkdir()
    for step in (1000000000, 20, 3):
        _fake_snapshot(directory / snapshot_name(step), step)
    (directory / ".snap_000000040.h5.1a2b3c4d.part").write_bytes(b"")     # a write in progress
    paths = snapshot_paths(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["snap_000000003.h5", "snap_000000020.h5",
                                                   "snap_1000000000.h5"]
    snap = read_snapshot(paths[1])
    assert (snap["step"], snap["time"], snap["problem"]) == (20, 10.0, "heat")
    assert snap["heat/u"].dtype == np.float64 and snap["arrays"]["heat/u"] is snap["heat/u"]
    assert np.array_equal(snap["heat/u"], np.full((3, 4), 20.0))
    assert np.array_equal(snap["origin"], [0.125, 0.5]) and np.array_equal(snap["spacing"], [0.25, 1.0])
    assert snapshot_paths(str(tmp_path / "nowhere")) == []
