"""What a person looks at: XDMF read back by VTK's reader, PNG plots, and
the asyncio helpers (request files, status endpoint)."""
import json
import os
import time
import urllib.request

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name, shape, extent in (("2d", [12, 7], [1.0, 0.5]), ("3d", [6, 5, 4], [3.0, 2.0, 1.0])):
        run = str(base / name)
        r = run_solver(["run", "--set", f"heat.shape={shape}", "--set", f"heat.extent={extent}",
                        "--set", "heat.initial=random", "--set", "time.steps=6", "--set", "output.checkpoint_every=3",
                        "--set", "output.keep=0", "--set", "output.snapshot_every=0",
                        "--output", run], np=2)
        assert r.returncode == 0, r.stderr
        out[name] = (run, shape, extent)
    return out


def _vtk_read(path, time_index=None):
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(path)
    reader.UpdateInformation()
    if time_index is not None:
        times = reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.TIME_STEPS())
        reader.UpdateTimeStep(times[time_index])
    else:
        reader.Update()
    data = reader.GetOutputDataObject(0)
    if data.IsA("vtkMultiBlockDataSet"):
        data = data.GetBlock(0)
    return data, vtk_to_numpy(data.GetCellData().GetArray("u"))


@pytest.mark.parametrize("name", ["2d", "3d"])
def test_sidecar_reads_back_through_vtk(runs, name):
    run, shape, extent = runs[name]
    h5 = os.path.join(run, "checkpoints", "step_000000006.h5")
    data, values = _vtk_read(h5[:-3] + ".xdmf")
    with h5py.File(h5, "r") as f:
        u = f["heat/u"][...]
    # VTK orders points x fastest: our last array axis is x
    assert values.size == u.size and np.array_equal(values, u.ravel())
    # VTK's axes x, y, z are our last, ..., first axis (a 2D mesh lies in VTK's y-z plane)
    used = [k for k, d in enumerate(data.GetDimensions()) if d > 1]
    assert [data.GetDimensions()[k] - 1 for k in used] == shape[::-1]
    spacing = [data.GetSpacing()[k] for k in used]
    assert np.allclose(spacing, [e / n for e, n in zip(extent[::-1], shape[::-1])])
    assert data.GetNumberOfCells() == u.size


def test_time_series_lists_every_checkpoint(runs):
    run, shape, _ = runs["2d"]
    vtk = pytest.importorskip("vtk")
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(os.path.join(run, "run.xdmf"))
    reader.UpdateInformation()
    times = reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.TIME_STEPS())
    steps = sorted(int(n[5:14]) for n in os.listdir(os.path.join(run, "checkpoints")) if n.endswith(".h5"))
    assert len(times) == len(steps) == 2
    _, values = _vtk_read(os.path.join(run, "run.xdmf"), time_index=0)
    with h5py.File(os.path.join(run, "checkpoints", "step_000000003.h5"), "r") as f:
        assert np.array_equal(values, f["heat/u"][...].ravel())


@pytest.mark.parametrize("name", ["2d", "3d"])
def test_plot_writes_pngs(runs, name):
    pytest.importorskip("matplotlib")
    run = runs[name][0]
    r = run_solver(["plot", run])
    assert r.returncode == 0, r.stderr
    for png in ("field_000000006.png", "history.png"):
        path = os.path.join(run, "plots", png)
        assert os.path.getsize(path) > 1000
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_of_missing_run_is_one_clear_error(tmp_path):
    r = run_solver(["plot", str(tmp_path)])
    assert r.returncode == 2 and r.stderr.count("solver: error:") == 1


def test_async_helper_serves_status_and_watches_request_files(tmp_path):
    import socket
    from solver.io.aio import AsyncHelper
    from solver.triggers import Triggers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    triggers = Triggers()
    helper = AsyncHelper(str(tmp_path), triggers, None, status_port=port, poll_seconds=0.05)
    try:
        helper.status = {"state": "running", "step": 12}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert json.loads(resp.read()) == {"state": "running", "step": 12}
        (tmp_path / "CHECKPOINT").touch()
        deadline = time.monotonic() + 5
        while triggers.checkpoint_reason is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert triggers.take() == (0, 1)
        (tmp_path / "STOP").touch()
        while triggers.stop_reason is None and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert triggers.take()[0] == 1 and not (tmp_path / "STOP").exists()
    finally:
        helper.close()


def test_snapshots_are_rendered_off_the_loop(tmp_path):
    pytest.importorskip("matplotlib")
    run = str(tmp_path / "run")
    r = run_solver(["run", "--set", "heat.shape=[16,16]", "--set", "time.steps=4", "--set", "output.checkpoint_every=2",
                    "--set", "output.snapshots=true", "--output", run])
    assert r.returncode == 0, r.stderr
    pictures = sorted(n for n in os.listdir(os.path.join(run, "snapshots")) if n.endswith(".png"))
    assert pictures == ["field_000000002.png", "field_000000004.png"]
