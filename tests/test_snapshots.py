"""Snapshots: output for looking at, apart from checkpoints (solver.io.snapshots)."""
import os
import signal
import subprocess

import h5py
import numpy as np
import pytest

from conftest import REPO, clean_env, kill_when, run_solver, solver_cmd
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


# --- runs -------------------------------------------------------------------------------------
HEAT = ["--backend", "numpy", "--set", "heat.shape=[12,10]", "--set", "heat.initial=random"]
NBODY = ["--backend", "numpy", "--set", "problem.kind='nbody'", "--set", "nbody.n=10", "--set", "time.dt=0.001"]


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _steps(run):
    return [read_snapshot(p)["step"] for p in snapshot_paths(run)]


def _checkpoints(run):
    return sorted(int(n[5:-3]) for n in os.listdir(os.path.join(run, "checkpoints")) if n.endswith(".h5"))


def _intact(path):
    """Whether every dataset and the root attributes of ``path`` match their checksums."""
    from solver.io import checksum
    with h5py.File(path, "r") as f:
        if checksum.of_attrs(dict(f.attrs)) != f.attrs[checksum.ATTRS_ATTR]:
            return False
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return all(int(f[n].attrs["checksum"]) == checksum.of_array(f[n][...]) for n in names)


def _xdmf_times(run):
    """The times of run.xdmf's temporal collection, as VTK's XDMF reader sees them."""
    vtk = pytest.importorskip("vtk")
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(os.path.join(run, "run.xdmf"))
    reader.UpdateInformation()
    return list(reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.TIME_STEPS()) or [])


def test_cadence_in_steps_starts_at_step_0_without_intermediate_checkpoints(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=10", "--set", "output.snapshot_every=3",
                    "--set", "output.checkpoint_every=0", "--output", run]))
    assert _steps(run) == [0, 3, 6, 9]
    assert _checkpoints(run) == [10]
    snaps = [read_snapshot(p) for p in snapshot_paths(run)]
    assert all(s["attrs"]["format"] == "solver-snapshot" and s["problem"] == "heat" for s in snaps)
    assert all(_intact(p) for p in snapshot_paths(run))
    assert np.array_equal(snaps[0]["origin"], [1 / 24, 0.05]) and np.array_equal(snaps[0]["spacing"], [1 / 12, 0.1])
    with h5py.File(os.path.join(run, "checkpoints", "step_000000010.h5")) as f:
        dt = float(f.attrs["dt"])
    assert [s["time"] for s in snaps] == [k * dt for k in (0, 3, 6, 9)]


def test_cadence_in_simulated_time_lands_on_each_multiple(tmp_path):
    run = str(tmp_path / "run")
    # dt = 'auto' is about 1.84e-3 here: 0.005 is no multiple of it, so dt shrinks to 0.005 / 3
    _ok(run_solver(["run", *HEAT, "--set", "time.t_end=0.02", "--set", "output.snapshot_dt=0.005",
                    "--output", run]))
    snaps = [read_snapshot(p) for p in snapshot_paths(run)]
    assert [s["step"] for s in snaps] == [0, 3, 6, 9, 12]
    for k, snap in enumerate(snaps):
        assert abs(snap["time"] - k * 0.005) <= 1e-15
    assert float(snaps[1]["attrs"]["dt"]) == pytest.approx(0.005 / 3, rel=1e-14)


def test_float32_snapshots_hold_the_state_rounded(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=4", "--set", "output.snapshot_every=2",
                    "--set", "output.snapshot_precision='float32'", "--output", run]))
    path = snapshot_paths(run)[-1]
    with h5py.File(path) as f:
        assert f["heat/u"].dtype == np.float32 and f.attrs["precision"] == "float32"
    with h5py.File(os.path.join(run, "checkpoints", "step_000000004.h5")) as f:
        exact = f["heat/u"][...]
    assert read_snapshot(path)["step"] == 4
    assert np.array_equal(read_snapshot(path)["heat/u"], exact.astype(np.float32).astype(np.float64))


def test_a_subset_of_fields_and_of_bodies(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *NBODY, "--set", "time.steps=6", "--set", "output.snapshot_every=3",
                    "--set", "output.snapshot_fields=['ids','positions']", "--set", "output.snapshot_bodies=4",
                    "--output", run], np=2))
    snap = read_snapshot(snapshot_paths(run)[-1])
    assert snap["step"] == 6 and sorted(snap["arrays"]) == ["nbody/id", "nbody/position"]
    with h5py.File(os.path.join(run, "checkpoints", "step_000000006.h5")) as f:
        assert np.array_equal(snap["nbody/position"], f["nbody/position"][:4])
    assert np.array_equal(snap["nbody/id"], np.arange(4))
    # trajectories: VTK animates the positions of every snapshot
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(os.path.join(run, "run.xdmf"))
    reader.UpdateInformation()
    times = reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.TIME_STEPS())
    snaps = [read_snapshot(p) for p in snapshot_paths(run)]
    assert list(times) == [s["time"] for s in snaps] and len(snaps) == 3
    for t, s in zip(times, snaps):
        reader.UpdateTimeStep(t)
        data = reader.GetOutputDataObject(0)
        if data.IsA("vtkMultiBlockDataSet"):
            data = data.GetBlock(0)
        assert np.array_equal(vtk_to_numpy(data.GetPoints().GetData()), s["nbody/position"])


def test_snapshots_are_never_pruned_while_checkpoints_are(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=10", "--set", "output.snapshot_every=2",
                    "--set", "output.checkpoint_every=2", "--set", "output.keep=2", "--output", run]))
    assert _checkpoints(run) == [8, 10]
    assert _steps(run) == [0, 2, 4, 6, 8, 10]


def _vtk_frames(run):
    """Every frame of run.xdmf as VTK's XDMF reader animates it: [(time, u)]."""
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(os.path.join(run, "run.xdmf"))
    reader.UpdateInformation()
    frames = []
    for t in reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.TIME_STEPS()):
        reader.UpdateTimeStep(t)
        data = reader.GetOutputDataObject(0)
        if data.IsA("vtkMultiBlockDataSet"):
            data = data.GetBlock(0)
        frames.append((t, vtk_to_numpy(data.GetCellData().GetArray("u")).copy()))
    return frames


def _frames_match_snapshots(run):
    frames, snaps = _vtk_frames(run), [read_snapshot(p) for p in snapshot_paths(run)]
    assert [t for t, _ in frames] == [s["time"] for s in snaps]
    assert all(np.array_equal(u, s["heat/u"].ravel()) for (_, u), s in zip(frames, snaps))


def test_a_restart_appends_to_run_xdmf_and_a_branch_starts_its_own(tmp_path):
    run, branch = str(tmp_path / "run"), str(tmp_path / "branch")
    every = ["--set", "output.snapshot_every=2", "--set", "output.checkpoint_every=4", "--set", "output.keep=0"]
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=8", *every, "--output", run]))
    assert _steps(run) == [0, 2, 4, 6, 8]
    # continue the run from step 4 on another cadence: the stretch after step 4 is recomputed,
    # and the snapshots the first pass wrote there (step 8) do not stay in its history
    _ok(run_solver(["run", "--restart", os.path.join(run, "checkpoints", "step_000000004.h5"), "--discard-newer",
                    "--set", "time.steps=10", "--set", "output.snapshot_every=3"], np=2))
    assert _steps(run) == [0, 2, 4, 6, 9]
    _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=12"]))
    assert _steps(run) == [0, 2, 4, 6, 9, 12]
    times = _xdmf_times(run)
    assert len(times) == len(set(times)) == 6
    _frames_match_snapshots(run)
    with open(os.path.join(run, "run.xdmf")) as fh:
        before = fh.read()
    # a branch from step 8 into a directory of its own: its own series, from its first step
    _ok(run_solver(["run", "--restart", os.path.join(run, "checkpoints", "step_000000008.h5"),
                    "--set", "time.steps=11", "--output", branch]))
    assert _steps(branch) == [8, 9]
    assert len(_xdmf_times(branch)) == 2
    _frames_match_snapshots(branch)
    with open(os.path.join(run, "run.xdmf")) as fh:
        assert fh.read() == before
    assert np.array_equal(read_snapshot(snapshot_paths(branch)[1])["heat/u"],
                          read_snapshot(snapshot_paths(run)[4])["heat/u"])


def test_a_run_killed_while_writing_a_snapshot_leaves_every_earlier_one_readable(tmp_path):
    run = str(tmp_path / "run")
    snapdir = os.path.join(run, "snapshots")
    args = ["run", *HEAT, "--set", "time.steps=100000", "--set", "output.snapshot_every=1", "--output", run]
    # each write waits before its rename: the kill falls while a temporary file is there
    proc = subprocess.Popen(solver_cmd(args), cwd=REPO, env=clean_env({"SOLVER_TEST_SLOW_SNAPSHOT": "0.5"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(proc, lambda: len(snapshot_paths(run)) >= 3 and any(n.endswith(".part") for n in os.listdir(snapdir)),
              "no snapshot was being written")
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(snapdir)
    assert any(n.startswith(".snap_") and n.endswith(".part") for n in names)     # the write cut short
    paths = snapshot_paths(run)
    assert len(paths) >= 3 and all(n.startswith(".") or n.startswith("snap_") for n in names)
    assert [read_snapshot(p)["step"] for p in paths] == list(range(len(paths)))
    assert all(_intact(p) for p in paths)
    # no checkpoint was written: the run starts again in its directory, and the killed
    # run's snapshots are moved aside (kept, out of the new run's history)
    _ok(run_solver(args[:-2] + ["--set", "time.steps=2", "--output", run]))
    assert _steps(run) == [0, 1, 2]
    assert all(os.path.exists(p + ".abandoned") for p in paths)
    assert len(_xdmf_times(run)) == 3


@pytest.mark.parametrize("problem", ["heat", "nbody"])
def test_1_2_and_4_ranks_write_the_same_snapshots(tmp_path, problem):
    args = HEAT if problem == "heat" else NBODY + ["--set", "output.snapshot_bodies=7"]
    found = []
    for np_ in (1, 2, 4):
        run = str(tmp_path / f"run{np_}")
        _ok(run_solver(["run", *args, "--set", "time.steps=4", "--set", "output.snapshot_every=2",
                        "--set", "output.snapshot_precision='float32'", "--output", run], np=np_))
        found.append([read_snapshot(p) for p in snapshot_paths(run)])
    for other in found[1:]:
        assert [s["step"] for s in other] == [s["step"] for s in found[0]] == [0, 2, 4]
        for a, b in zip(found[0], other):
            assert a["time"] == b["time"] and sorted(a["arrays"]) == sorted(b["arrays"])
            assert all(np.array_equal(a[name], b[name]) for name in a["arrays"])


@pytest.mark.parametrize("setting, message", [
    ("output.snapshot_fields=['u','v']", "output.snapshot_fields: must be one of 'u'"),
    ("output.snapshot_precision='half'", "output.snapshot_precision"),
    ("output.snapshot_bodies=3", "output.snapshot_bodies: applies to n-body runs only"),
    ("output.snapshot_dt=0.3", "is not a whole multiple of 0.3"),
    ("output.snapshot_every=-1", "output.snapshot_every: must be >= 0"),
])
def test_bad_snapshot_keys_are_one_line_and_nothing_is_written(tmp_path, setting, message):
    run = str(tmp_path / "run")
    r = run_solver(["run", *HEAT, "--set", "time.t_end=0.001", "--set", "output.snapshot_every=0",
                    "--set", setting, "--output", run])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not os.path.exists(run)


def test_one_cadence_only(tmp_path):
    r = run_solver(["run", *HEAT, "--set", "output.snapshot_every=2", "--set", "output.snapshot_dt=0.5",
                    "--output", str(tmp_path / "run")])
    assert r.returncode == 2 and "not both" in r.stderr


def test_dt_shrinks_to_divide_snapshot_dt_and_is_kept_when_it_does():
    from solver.models.clock import fit_snapshot_dt
    assert fit_snapshot_dt(0.3, 1.0) == 0.25
    assert fit_snapshot_dt(0.25, 1.0) == 0.25
    assert fit_snapshot_dt(2.0, 1.0) == 1.0
    dt = 1.0 / 3.0
    assert fit_snapshot_dt(dt, 1.0) is dt


def test_a_snapshot_is_no_restart_point(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=2", "--set", "output.snapshot_every=1", "--output", run]))
    r = run_solver(["run", "--restart", snapshot_paths(run)[1], "--output", str(tmp_path / "other")])
    assert r.returncode == 2 and "is not a solver checkpoint" in r.stderr
    assert not os.path.exists(tmp_path / "other")


def test_a_cadence_given_with_set_replaces_the_other_from_the_file():
    from solver.config import ConfigError
    from solver.models import load_settings
    out = load_settings("[output]\nsnapshot_every = 5\n", "run.toml", ["output.snapshot_dt=0.5"]).output
    assert (out.snapshot_every, out.snapshot_dt) == (0, 0.5)
    out = load_settings(None, "<default>", ["output.snapshot_dt=0.5"]).output
    assert (out.snapshot_every, out.snapshot_dt) == (0, 0.5)
    with pytest.raises(ConfigError, match="not both"):
        load_settings("[output]\nsnapshot_every = 5\nsnapshot_dt = 0.5\n", "run.toml")


def test_a_failed_snapshot_write_ends_the_run_on_every_rank_and_leaves_no_file(tmp_path):
    run = str(tmp_path / "run")
    r = run_solver(["run", *HEAT, "--set", "time.steps=10", "--set", "output.snapshot_every=3", "--output", run],
                   np=2, env={"SOLVER_TEST_FAIL_WRITE": "6:1"})
    assert r.returncode == 1 and "snapshot of step 6" in r.stderr and "injected failure" in r.stderr, r.stderr
    assert _steps(run) == [0, 3]
    assert not [n for n in os.listdir(os.path.join(run, "snapshots")) if n.endswith(".part")]


def test_a_snapshot_write_that_fails_is_called_a_snapshot_in_the_message(tmp_path, monkeypatch):
    """The writer's messages name the kind of file that failed: not "the checkpoint of step N"."""
    from mpi4py import MPI

    from helpers import disk_filling_write, make_heat
    from solver.io import blocks, checkpoint
    from solver.io.writer import CheckpointWriter, WriterError
    model = make_heat(MPI.COMM_SELF, "heat.shape=[64,64]", "heat.initial=random")
    writer = CheckpointWriter(MPI.COMM_SELF, str(tmp_path), background=False,
                              snapshots=(str(tmp_path), lambda path: None))

    def no_room(*args):
        raise OSError("no room for the layout")
    monkeypatch.setattr(checkpoint, "layout", no_room)
    monkeypatch.setattr(checkpoint, "write_gathered", lambda *args: no_room())
    with pytest.raises(WriterError) as caught:
        writer.submit(7, model.checkpoint_attrs(), model.checkpoint_datasets(), snapshot=True)
    message = str(caught.value)
    assert "snapshot of step 7" in message and "no room for the layout" in message, message
    assert "checkpoint of step" not in message, message
    if blocks.parallel_io(MPI.COMM_SELF):
        monkeypatch.undo()
        monkeypatch.setattr(checkpoint, "write_raw", disk_filling_write(checkpoint.write_raw))
        writer._error = None
        with pytest.raises(WriterError, match="the snapshot of step 8 was not stored whole") as caught:
            writer.submit(8, model.checkpoint_attrs(), model.checkpoint_datasets(), snapshot=True)
        assert "checkpoint of step" not in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_discard_newer_moves_the_runs_newer_snapshots_aside_and_a_plain_restart_removes_only_its_own(tmp_path):
    """--discard-newer keeps the snapshots after its step as .discarded (as it
    keeps the newer checkpoints), with one line each; a plain continued
    restart removes only this run's snapshots after its step (that stretch
    is recomputed) and moves another run's aside."""
    run = str(tmp_path / "run")
    snapdir = os.path.join(run, "snapshots")
    every = ["--set", "output.snapshot_every=2", "--set", "output.checkpoint_every=4", "--set", "output.keep=0"]
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=8", *every, "--output", run]))
    old = {s: open(os.path.join(snapdir, snapshot_name(s)), "rb").read() for s in (6, 8)}
    r = _ok(run_solver(["run", "--restart", os.path.join(run, "checkpoints", "step_000000004.h5"),
                        "--discard-newer", "--set", "time.steps=7", "--set", "output.checkpoint_every=0"]))
    for s in (6, 8):
        aside = os.path.join(snapdir, snapshot_name(s) + ".discarded")
        assert open(aside, "rb").read() == old[s], s
        assert [line for line in r.stderr.splitlines() if snapshot_name(s) in line and "moved aside" in line]
    assert _steps(run) == [0, 2, 4, 6]
    # a plain continued restart: a snapshot of this run after the checkpoint (a killed
    # run's) is removed; a file of another run there is moved aside, never deleted
    run_id = read_snapshot(snapshot_paths(run)[0])["attrs"]["run_id"]
    for s, owner in ((9, run_id), (10, "another run")):
        _fake_snapshot(os.path.join(snapdir, snapshot_name(s)), s)
        with h5py.File(os.path.join(snapdir, snapshot_name(s)), "a") as f:
            f.attrs["run_id"] = owner
    _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=8"]))
    assert _steps(run) == [0, 2, 4, 6, 8]
    assert not os.path.exists(os.path.join(snapdir, snapshot_name(9) + ".abandoned"))
    assert read_snapshot(os.path.join(snapdir, snapshot_name(10) + ".abandoned"))["attrs"]["run_id"] == "another run"
    assert sorted(os.listdir(snapdir)) == sorted([snapshot_name(s) for s in (0, 2, 4, 6, 8)] + [
        snapshot_name(6) + ".discarded", snapshot_name(8) + ".discarded", snapshot_name(10) + ".abandoned"])


def test_a_restart_that_turns_snapshots_off_keeps_the_runs_series_in_run_xdmf(tmp_path):
    """run.xdmf is one collection over the run's snapshots across restarts,
    up to the restart step, even when a restart writes no more of them; a
    run that never had snapshots lists its checkpoints."""
    import re

    def listed(run):
        return re.findall(r"(snapshots/snap_\d+|checkpoints/step_\d+)\.h5", open(os.path.join(run, "run.xdmf")).read())
    run = str(tmp_path / "run")
    every = ["--set", "output.snapshot_every=2", "--set", "output.checkpoint_every=4", "--set", "output.keep=0"]
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=8", *every, "--output", run]))
    off = ["--set", "output.snapshot_every=0", "--set", "output.checkpoint_every=2"]
    _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=12", *off]))
    assert _checkpoints(run) == [4, 8, 10, 12]
    assert listed(run) == [f"snapshots/snap_{s:09d}" for s in (0, 2, 4, 6, 8)]
    _ok(run_solver(["run", "--restart", os.path.join(run, "checkpoints", "step_000000004.h5"), "--discard-newer",
                    "--set", "time.steps=6", *off]))
    assert listed(run) == [f"snapshots/snap_{s:09d}" for s in (0, 2, 4)]
    other = str(tmp_path / "other")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=4", *off, "--output", other]))
    _ok(run_solver(["run", "--restart", "latest", "--output", other, "--set", "time.steps=6"]))
    assert listed(other) == [f"checkpoints/step_{s:09d}" for s in (2, 4, 6)]
    assert not os.path.exists(os.path.join(other, "snapshots"))
