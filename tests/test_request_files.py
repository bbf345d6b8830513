"""Request files (OUTPUT/STOP, OUTPUT/CHECKPOINT) are taken once, whatever
their file type, without being opened or followed, so a restart does not
stop again on the same request."""
import os
import signal
import subprocess
import time

import pytest

from conftest import REPO, clean_env, run_solver, solver_cmd

pytestmark = pytest.mark.timeout(180)


def _make(path, kind, tmp_path):
    if kind == "file":
        path.write_text("please stop\n")
    elif kind == "empty directory":
        path.mkdir()
    elif kind == "directory with contents":
        path.mkdir()
        (path / "note").write_text("why\n")
    elif kind == "link to a file":
        (tmp_path / "target").write_text("untouched\n")
        os.symlink(tmp_path / "target", path)
    elif kind == "link to a directory":
        (tmp_path / "target").mkdir()
        (tmp_path / "target" / "inside").write_text("untouched\n")
        os.symlink(tmp_path / "target", path)
    elif kind == "dangling link":
        os.symlink(tmp_path / "nowhere", path)
    elif kind == "fifo":
        os.mkfifo(path)


KINDS = ["file", "empty directory", "directory with contents", "link to a file", "link to a directory",
         "dangling link", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_of_any_kind_is_taken_once(tmp_path, kind):
    from solver.io.aio import take_request
    run = tmp_path / "run"
    run.mkdir()
    stop = run / "STOP"
    _make(stop, kind, tmp_path)
    how = take_request(str(stop))
    assert how is not None
    assert not os.path.lexists(stop)
    assert take_request(str(stop)) is None                      # taken once
    if kind == "directory with contents":
        aside = [n for n in os.listdir(run) if n.startswith("STOP.taken-")]
        assert len(aside) == 1 and (run / aside[0] / "note").read_text() == "why\n"
        assert aside[0] in how
    else:
        assert os.listdir(run) == [] and how.endswith(("removed", "its target is untouched"))
    if kind == "link to a file":
        assert (tmp_path / "target").read_text() == "untouched\n"
    if kind == "link to a directory":
        assert (tmp_path / "target" / "inside").read_text() == "untouched\n"
    if kind == "dangling link":
        assert not (tmp_path / "nowhere").exists()


def test_a_request_that_cannot_be_removed_is_taken_only_once(tmp_path, monkeypatch):
    from solver.io.aio import take_request
    stop = tmp_path / "STOP"
    stop.write_text("")

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(os, "unlink", refuse)
    refused = set()
    how = take_request(str(stop), refused)
    assert "cannot be removed" in how and "remove it" in how
    assert take_request(str(stop), refused) is None and stop.exists()


LONG = ["run", "--set", "heat.shape=[32,32]", "--set", "time.steps=100000000", "--set", "output.log_every=50",
        "--set", "output.checkpoint_every=0"]


def _steps(run):
    d = os.path.join(run, "checkpoints")
    return sorted(int(n[5:14]) for n in os.listdir(d) if n.startswith("step_") and n.endswith(".h5"))


@pytest.mark.parametrize("kind", ["empty directory", "dangling link"])
def test_a_stop_request_stops_one_run_not_its_restart(tmp_path, kind):
    run = tmp_path / "run"
    proc = subprocess.Popen(solver_cmd(LONG + ["--output", str(run)]), cwd=REPO,
                            env=clean_env({"SOLVER_PROGRESS": "plain"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "diagnostics.csv").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.05)
        _make(run / "STOP", kind, tmp_path)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 3, (proc.returncode, err)
    assert not (tmp_path / "nowhere").exists()
    last = _steps(str(run))[-1]
    r = run_solver(["run", "--output", str(run), "--restart", "latest", "--set", f"time.steps={last + 100}"])
    assert r.returncode == 0, (r.returncode, r.stdout[-1000:], r.stderr)      # not stopped again
    assert _steps(str(run))[-1] == last + 100 and not os.path.lexists(run / "STOP")
    said = {"empty directory": "a directory, removed", "dangling link": "a symbolic link, removed; its target"}
    assert f"(request file STOP: {said[kind]}" in out                         # said in the stop line
