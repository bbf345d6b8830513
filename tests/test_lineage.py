"""One run directory holds one run's history: restarts never delete or mix
up checkpoints of another history, fresh runs never share a directory, and
diagnostics.csv stays consistent with the checkpoints."""
import os

import h5py
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(240)

SMALL = ["--set", "heat.shape=[32,32]", "--set", "output.log_every=10"]


def _steps(run):
    d = os.path.join(run, "checkpoints")
    return sorted(int(n[5:14]) for n in os.listdir(d) if n.startswith("step_") and n.endswith(".h5"))


def _snapshot(run):
    """Every file of a run directory with its bytes."""
    out = {}
    for root, _, files in os.walk(run):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, run)] = fh.read()
    return out


def _rows(run):
    with open(os.path.join(run, "diagnostics.csv")) as fh:
        lines = fh.read().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _refused(r):
    assert r.returncode == 2, (r.returncode, r.stdout[-800:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("solver: error:"), r.stderr
    return lines[0]


@pytest.fixture
def run300(tmp_path):
    """32x32 heat to step 300, a checkpoint every 100 steps, keep 3."""
    run = str(tmp_path / "r1")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=300",
                    "--set", "output.checkpoint_every=100", "--set", "output.keep=3"]))
    assert _steps(run) == [100, 200, 300]
    return run


def test_restart_from_an_older_checkpoint_into_its_own_run_is_refused(run300):
    before = _snapshot(run300)
    line = _refused(run_solver(["run", "--output", run300, "--restart",
                                os.path.join(run300, "checkpoints", "step_000000100.h5"),
                                "--set", "time.steps=150", "--set", "output.checkpoint_every=50",
                                "--set", "output.keep=1"]))
    assert "older than the newest checkpoint" in line and "--output" in line
    assert _snapshot(run300) == before
    # latest still means the newest state of that run
    _ok(run_solver(["run", "--output", run300, "--restart", "latest", "--set", "time.steps=310"]))
    assert _steps(run300) == [200, 300, 310]


def test_a_branch_goes_into_a_new_directory_and_leaves_its_parent_alone(run300, tmp_path):
    before = _snapshot(run300)
    branch = str(tmp_path / "branch")
    parent = os.path.join(run300, "checkpoints", "step_000000100.h5")
    _ok(run_solver(["run", "--output", branch, "--restart", parent, "--set", "time.steps=150",
                    "--set", "output.checkpoint_every=50", "--set", "output.keep=1"]))
    assert _snapshot(run300) == before
    assert _steps(branch) == [150]
    with h5py.File(os.path.join(branch, "checkpoints", "step_000000150.h5")) as f:
        assert f.attrs["parent"] == os.path.abspath(parent)
        with h5py.File(parent) as p:
            assert f.attrs["run_id"] != p.attrs["run_id"]
    _, rows = _rows(branch)
    assert [int(r[0]) for r in rows] == list(range(100, 151, 10))


def test_a_restart_into_another_runs_directory_is_refused(run300, tmp_path):
    other = str(tmp_path / "other")
    _ok(run_solver(["run", "--output", other, *SMALL, "--set", "time.steps=20"]))
    before = _snapshot(other)
    _refused(run_solver(["run", "--output", other, "--restart", run300, "--set", "time.steps=400"]))
    _refused(run_solver(["run", "--output", other, *SMALL, "--set", "time.steps=20"]))      # a fresh run neither
    assert _snapshot(other) == before


def test_a_fresh_run_never_writes_into_a_used_directory(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    line = _refused(run_solver(["run", "--output", str(used), *SMALL, "--set", "time.steps=5"]))
    assert "not empty" in line
    assert os.listdir(used) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _ok(run_solver(["run", "--output", str(empty), *SMALL, "--set", "time.steps=5"]))
    assert _steps(str(empty)) == [5]


def test_bad_input_after_the_directory_is_claimed_leaves_nothing_behind(tmp_path):
    out = tmp_path / "never"
    _refused(run_solver(["run", "--output", str(out), "--set", "heat.shape=[32,32]", "--set", "time.dt=1.0"]))
    assert not out.exists()


def test_default_directories_of_runs_started_in_one_second_differ(tmp_path, monkeypatch):
    import datetime

    from solver import restart
    from solver.models import load_settings

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(restart.datetime, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None)
    first, second = restart._claim_new(settings, ""), restart._claim_new(settings, "")
    assert first.path == os.path.join("runs", "default-20260102-030405")
    assert second.path == first.path + "-2"
    assert os.path.isfile(os.path.join(second.path, restart.MARKER))


def test_a_directory_in_use_by_a_running_job_is_refused(run300):
    from solver import restart
    from solver.io.inputs import inspect
    from solver.parallel.mpi import MPI
    info = inspect(os.path.join(run300, "checkpoints", "step_000000300.h5"), MPI.COMM_SELF)
    held = restart._claim_continued(run300, info)          # this process holds the run's lock
    r = run_solver(["run", "--output", run300, "--restart", "latest", "--set", "time.steps=400"])
    os.close(held._lock)
    assert "in use by another running job" in _refused(r)


def test_diagnostics_follow_the_restart_and_survive_a_cut_line(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=100", "--set", "output.checkpoint_every=50"]))
    # a job killed after step 100 would leave rows past its newest checkpoint and a cut line
    with open(os.path.join(run, "diagnostics.csv"), "a") as fh:
        fh.write("110,0.1,0.2,0.0,1.0,0.0,0.0\n120,0.1,0.2,0.")
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=150"]))
    header, rows = _rows(run)
    steps = [r[0] for r in rows]
    assert steps == [str(s) for s in range(0, 151, 10)]          # integers, once each, in order
    assert all(len(r) == len(header) for r in rows)


def test_keep_prunes_only_older_checkpoints_of_the_same_run(tmp_path):
    from solver.io.rotation import prune

    d = tmp_path / "checkpoints"
    d.mkdir()
    for step, run_id in ((10, "a"), (20, "other"), (30, "a"), (40, "a"), (50, "a")):
        with h5py.File(d / f"step_{step:09d}.h5", "w") as f:
            f.attrs["run_id"] = run_id
    prune(str(d), 1, 40, run_id="a")
    assert sorted(os.listdir(d)) == ["step_000000020.h5", "step_000000040.h5", "step_000000050.h5"]


def test_bench_io_deletes_only_what_it_created(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "run").mkdir()
    (d / "run" / "keep.txt").write_text("mine")
    (d / "results.txt").write_text("mine")
    r = run_solver(["bench", "io", "--shape", "32,32", "--steps", "4", "--every", "2", "--repeats", "1",
                    "--dir", str(d)], timeout=200)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(d)) == ["results.txt", "run"]
    assert os.listdir(d / "run") == ["keep.txt"]


def test_a_fresh_run_cannot_take_over_a_directory_a_starting_job_holds(tmp_path):
    import fcntl

    from solver.restart import MARKER
    out = tmp_path / "starting"
    out.mkdir()
    (out / MARKER).write_text('{"run_id": "starting"}\n')
    fd = os.open(out / MARKER, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)              # as the job that created it holds it
    try:
        assert "in use" in _refused(run_solver(["run", "--output", str(out), *SMALL, "--set", "time.steps=5"]))
    finally:
        os.close(fd)
    assert sorted(os.listdir(out)) == [MARKER]


def test_a_directory_left_by_a_run_that_died_before_any_output_is_reused(tmp_path):
    from solver.restart import MARKER
    out = tmp_path / "died"
    (out / "checkpoints").mkdir(parents=True)
    (out / MARKER).write_text('{"run_id": "dead"}\n')
    _ok(run_solver(["run", "--output", str(out), *SMALL, "--set", "time.steps=5"]))
    assert _steps(str(out)) == [5]
    assert "dead" not in (out / MARKER).read_text()
