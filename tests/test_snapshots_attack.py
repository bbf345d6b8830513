"""Snapshots under hostile input and odd settings: values that the chosen
precision cannot hold, files that are not ours where snapshots go."""
import os

import numpy as np
import pytest

from conftest import run_solver, small_tmpfs
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


def _warned_moved(r, path, aside):
    """Whether stderr holds exactly one warning line (rank 0's) naming ``path`` and where it went."""
    lines = [line for line in r.stderr.splitlines() if line.startswith("solver: warning: ") and path in line]
    return len(lines) == 1 and f"moved aside to {aside}" in lines[0]


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


@pytest.mark.parametrize("plant", ["fifo", "link to a fifo", "link to a file"])
def test_something_not_a_file_at_a_snapshot_name_is_set_aside_unread_and_kept(tmp_path, plant):
    """A FIFO (or a link to one) opened for reading would block the restart
    for good; a link is not ours either. Each is moved aside, kept as it is."""
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=6", "--set", "output.snapshot_every=2", "--output", run]))
    name = os.path.join(run, "snapshots", "snap_000000003.h5")
    elsewhere = tmp_path / "elsewhere"
    if plant == "fifo":
        os.mkfifo(name)
    elif plant == "link to a fifo":
        os.mkfifo(elsewhere)
        os.symlink(elsewhere, name)
    else:
        elsewhere.write_bytes(b"not a snapshot")
        os.symlink(elsewhere, name)
    r = _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=10"], timeout=60))
    assert [read_snapshot(p)["step"] for p in snapshot_paths(run)] == [0, 2, 4, 6, 8, 10]
    moved = os.path.join(run, "snapshots", "snap_000000003.h5.abandoned")
    assert _warned_moved(r, name, "snap_000000003.h5.abandoned")
    assert os.path.lexists(moved) and not os.path.lexists(name)
    if plant != "fifo":
        assert os.readlink(moved) == str(elsewhere)
    assert "snap_000000003" not in open(os.path.join(run, "run.xdmf")).read()
    if plant == "link to a file":
        assert elsewhere.read_bytes() == b"not a snapshot"


def test_the_reader_lists_only_regular_files(tmp_path):
    """snapshot_paths (used by scripts and plotting) never hands out a FIFO to open."""
    directory = tmp_path / "snapshots"
    directory.mkdir()
    os.mkfifo(directory / "snap_000000003.h5")
    assert snapshot_paths(str(tmp_path)) == []


def test_a_run_xdmf_already_in_a_fresh_runs_directory_is_moved_aside_not_replaced(tmp_path):
    """A directory holding only run.xdmf takes a fresh run (as one a run left
    that died before its first checkpoint), but that file is not this run's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.xdmf").write_text("mine\n")
    r = _ok(run_solver(["run", *HEAT, "--set", "time.steps=4", "--set", "output.snapshot_every=2",
                        "--output", str(run)]))
    assert (run / "run.xdmf.abandoned").read_text() == "mine\n"
    assert _warned_moved(r, str(run / "run.xdmf"), "run.xdmf.abandoned"), r.stderr
    assert "snap_000000004.h5" in (run / "run.xdmf").read_text()


@pytest.mark.parametrize("restart", [False, True])
def test_a_file_where_the_snapshots_directory_goes_is_one_line_and_nothing_is_written(tmp_path, restart):
    run = tmp_path / "run"
    args = ["run", *HEAT, "--set", "time.steps=4", "--set", "output.snapshot_every=2", "--output", str(run)]
    if restart:
        _ok(run_solver(args))
        for name in os.listdir(run / "snapshots"):
            os.remove(run / "snapshots" / name)
        os.rmdir(run / "snapshots")
        args += ["--restart", "latest", "--set", "time.steps=8"]
    else:
        run.mkdir()
    (run / "snapshots").write_text("mine\n")
    names, before = set(run.rglob("*")), {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    line = _error_line(run_solver(args))
    assert "snapshots" in line and "not a directory" in line, line
    assert set(run.rglob("*")) == names
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_planted_files_with_odd_attributes_are_set_aside_or_passed_over_not_a_crash(tmp_path):
    """A file at a snapshot's name whose run_id is an array is not ours (moved
    aside); one that claims to be ours with a step that is not a number is
    kept but left out of run.xdmf. Neither ends the restart with a traceback."""
    import h5py
    run = str(tmp_path / "run")
    _ok(run_solver(["run", *HEAT, "--set", "time.steps=4", "--set", "output.snapshot_every=2", "--output", run]))
    run_id = read_snapshot(snapshot_paths(run)[0])["attrs"]["run_id"]
    snapdir = os.path.join(run, "snapshots")
    with h5py.File(os.path.join(snapdir, "snap_000000003.h5"), "w") as f:
        f.attrs.update(run_id=np.array([1, 2]), step=3)
    with h5py.File(os.path.join(snapdir, "snap_000000001.h5"), "w") as f:
        f.attrs.update(run_id=run_id, step="x")
    r = _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=8"], np=2))
    assert "Traceback" not in r.stderr
    assert os.path.exists(os.path.join(snapdir, "snap_000000003.h5.abandoned"))
    assert _warned_moved(r, os.path.join(snapdir, "snap_000000003.h5"), "snap_000000003.h5.abandoned")
    xdmf = open(os.path.join(run, "run.xdmf")).read()
    assert [f"snap_{s:09d}" in xdmf for s in (0, 1, 2, 4, 6, 8)] == [True, False, True, True, True, True]


def _xdmf_steps(run):
    import re
    return [int(s) for s in re.findall(r"snapshots/snap_(\d+)\.h5", open(os.path.join(run, "run.xdmf")).read())]


def test_killed_mid_snapshot_then_restarted_on_other_rank_counts_with_other_settings(tmp_path):
    """kill -9 while a snapshot is being written (after some checkpoints), then
    --restart latest on 3 ranks, then on 2 with another cadence and precision:
    run.xdmf lists exactly the snapshot files, each step (and time) once; the
    snapshots up to the checkpoint are untouched; the recomputed stretch holds
    the same field; the killed write's temporary file is left alone."""
    import shutil
    import subprocess

    from conftest import REPO, clean_env, kill_when, solver_cmd
    run = str(tmp_path / "run")
    snapdir = os.path.join(run, "snapshots")
    args = ["run", *HEAT, "--set", "time.steps=40", "--set", "output.snapshot_every=3",
            "--set", "output.checkpoint_every=5", "--output", run]
    proc = subprocess.Popen(solver_cmd(args), cwd=REPO, env=clean_env({"SOLVER_TEST_SLOW_SNAPSHOT": "0.3"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(proc, lambda: (os.path.exists(os.path.join(run, "checkpoints", "step_000000010.h5"))
                             and any(n.endswith(".part") for n in os.listdir(snapdir))),
              "no snapshot was being written")
    parts = sorted(n for n in os.listdir(snapdir) if n.endswith(".part"))
    newest = max(int(n[5:-3]) for n in os.listdir(os.path.join(run, "checkpoints")) if n.endswith(".h5"))
    before = {read_snapshot(p)["step"]: p for p in snapshot_paths(run)}
    saved = tmp_path / "saved"
    shutil.copytree(snapdir, saved)
    kept = {s: open(p, "rb").read() for s, p in before.items() if s <= newest}

    _ok(run_solver(["run", "--restart", "latest", "--output", run], np=3))
    _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=52",
                    "--set", "output.snapshot_every=4", "--set", "output.snapshot_precision='float32'"], np=2))
    snaps = [read_snapshot(p) for p in snapshot_paths(run)]
    steps = [s["step"] for s in snaps]
    assert steps == list(range(0, 40, 3)) + [40, 44, 48, 52]     # 40: on the new cadence, and missing
    assert _xdmf_steps(run) == steps
    times = [s["time"] for s in snaps]
    assert all(a < b for a, b in zip(times, times[1:]))
    for s in snaps:
        if s["step"] in kept:
            assert open(s["path"], "rb").read() == kept[s["step"]], s["step"]
        elif s["step"] in before:        # recomputed after the newest checkpoint: the same state
            old = read_snapshot(str(saved / os.path.basename(before[s["step"]])))
            assert np.array_equal(s["heat/u"], old["heat/u"]), s["step"]
    assert parts and all(os.path.exists(os.path.join(snapdir, n)) for n in parts)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (where this process may mount one)."""
    with small_tmpfs(tmp_path, "1m") as disk:
        yield disk


def test_a_disk_that_fills_during_a_snapshot_ends_the_run_with_one_line_and_every_earlier_snapshot_whole(small_disk):
    """heat 128^2 (128 KiB a snapshot) every step on 1 MiB, two ranks."""
    run = str(small_disk / "run")
    r = run_solver(["run", "--backend", "numpy", "--set", "heat.shape=[128,128]", "--set", "time.steps=60",
                    "--set", "output.snapshot_every=1", "--output", run], np=2)
    lines = [line for line in r.stderr.splitlines() if line.startswith("solver:")]
    assert r.returncode == 1 and len(lines) == 1 and "snapshot of step" in lines[0], r.stderr
    assert "No space left" in lines[0]
    steps = [read_snapshot(p)["step"] for p in snapshot_paths(run)]
    assert steps and steps == list(range(len(steps)))
    assert not [n for n in os.listdir(os.path.join(run, "snapshots")) if not n.startswith("snap_")]
    assert _xdmf_steps(run) == steps
