"""A running job under mpiexec: signals, request files, kill -9 mid-write,
and writer failures: a checkpoint when asked, a clean stop with the
documented exit status, and never a hang or a half-written checkpoint."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, clean_env, run_solver, solver_cmd

pytestmark = pytest.mark.timeout(240)

EXIT_STOPPED = 3
LONG = ["run", "--set", "heat.shape=[64,64]", "--set", "time.steps=100000000", "--set", "output.log_every=50",
        "--set", "output.checkpoint_every=0"]


def _start(args, np_, extra_env=None):
    env = clean_env({"SOLVER_PROGRESS": "plain", **(extra_env or {})})
    return subprocess.Popen(solver_cmd(args, np_), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, timeout=60, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(run_dir):
    ckpt = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(n[5:14]) for n in os.listdir(ckpt) if n.startswith("step_") and n.endswith(".h5"))


def _kill_session(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
    proc.wait(timeout=30)


def _signal_run(tmp_path, np_, first, then, extra_env=None):
    """Start a long run, send ``first`` and wait for its checkpoint, then ``then``."""
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], np_, extra_env)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), what="the run to start")
        if first is not None:
            proc.send_signal(first)
            _wait_for(lambda: _steps(run), what=f"the {first.name} checkpoint")
            assert proc.poll() is None, f"{first.name} must not stop the run"
        proc.send_signal(then)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    return run, proc.returncode, out, err


def test_usr1_checkpoints_and_usr2_stops_cleanly(tmp_path):
    run, code, out, err = _signal_run(tmp_path, 2, signal.SIGUSR1, signal.SIGUSR2)
    assert code == EXIT_STOPPED, (code, out[-2000:], err[-2000:])
    steps = _steps(run)
    assert len(steps) == 2 and steps[1] > steps[0]
    assert "SIGUSR2" in out and "--restart latest" in out
    last = steps[-1]
    r = run_solver(["run", "--output", run, "--restart", "latest", "--set", f"time.steps={last + 7}"], np=3)
    assert r.returncode == 0, r.stderr
    assert _steps(run)[-1] == last + 7


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_to_mpiexec_still_writes_the_final_checkpoint(tmp_path, sig):
    """Open MPI's mpiexec sends SIGTERM to the ranks after its grace period and
    then exits 1 whatever they return (documented); the ranks checkpoint
    within the grace period (five seconds here)."""
    run, code, out, err = _signal_run(tmp_path, 2, None, sig, {"OMPI_MCA_odls_base_sigkill_timeout": "5"})
    assert code in (EXIT_STOPPED, 1), (code, err[-2000:])
    assert len(_steps(run)) == 1          # mpiexec stops relaying output, so the files tell


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_serial_run_stops_with_status_3(tmp_path, sig):
    run, code, out, err = _signal_run(tmp_path, None, signal.SIGUSR1, sig)
    assert code == EXIT_STOPPED, (code, err[-2000:])
    assert len(_steps(run)) == 2 and sig.name in out


def test_stop_request_file(tmp_path):
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], 2)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), what="the run to start")
        open(os.path.join(run, "CHECKPOINT"), "w").close()
        _wait_for(lambda: _steps(run), what="the requested checkpoint")
        open(os.path.join(run, "STOP"), "w").close()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode == EXIT_STOPPED, err
    assert len(_steps(run)) == 2 and not os.path.exists(os.path.join(run, "STOP"))


def test_wall_limit_stops_with_a_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    r = run_solver(LONG + ["--output", run, "--set", "time.wall_limit=1.5"], np=2, timeout=120)
    assert r.returncode == EXIT_STOPPED, r.stderr
    assert "wall_limit" in r.stdout and len(_steps(run)) == 1


def test_kill_9_during_a_checkpoint_leaves_a_restartable_run(tmp_path):
    run = str(tmp_path / "run")
    args = ["run", "configs/heat2d.toml", "--set", "heat.shape=[40,30]", "--set", "time.steps=60",
            "--set", "output.checkpoint_every=10", "--set", "output.keep=0", "--output", run]
    proc = _start(args, 2, {"SOLVER_TEST_SLOW_WRITE": "1.0"})
    ckpt = os.path.join(run, "checkpoints")
    try:
        _wait_for(lambda: _steps(run) and any(n.endswith(".part") for n in os.listdir(ckpt)),
                  what="a checkpoint being written after a complete one")
        _kill_session(proc)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    complete = _steps(run)
    assert complete and complete[-1] < 60
    for step in complete:                         # every file that looks complete is complete
        with h5py.File(os.path.join(ckpt, f"step_{step:09d}.h5"), "r") as f:
            assert f["heat/u"].shape == (40, 30) and int(f.attrs["step"]) == step
    r = run_solver(["run", "configs/heat2d.toml", "--set", "heat.shape=[40,30]", "--set", "time.steps=60",
                    "--set", "output.checkpoint_every=10", "--output", run, "--restart", "latest"], np=2)
    assert r.returncode == 0, r.stderr
    straight = str(tmp_path / "straight")
    r = run_solver(args[:-1] + [straight], np=1)
    assert r.returncode == 0, r.stderr
    with h5py.File(os.path.join(ckpt, "step_000000060.h5"), "r") as a, \
            h5py.File(os.path.join(straight, "checkpoints", "step_000000060.h5"), "r") as b:
        assert np.array_equal(a["heat/u"][...], b["heat/u"][...])


def _failing_write(tmp_path, background, spec):
    """A 2-rank run whose checkpoint write fails as SOLVER_TEST_FAIL_WRITE=spec says."""
    run = str(tmp_path / "run")
    args = ["run", "--set", "heat.shape=[32,32]", "--set", "time.steps=50", "--set", "output.checkpoint_every=5",
            "--set", f"output.background={str(background).lower()}", "--output", run]
    proc = _start(args, 2, {"SOLVER_TEST_FAIL_WRITE": spec})
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode not in (0, 2, EXIT_STOPPED), (proc.returncode, err)
    return run, err


@pytest.mark.parametrize("background", [True, False])
def test_writer_failure_on_one_rank_stops_every_rank(tmp_path, background):
    run, err = _failing_write(tmp_path, background, "10:1")
    assert "injected failure" in err
    if background:           # said once, naming the rank that failed
        assert err.count("solver: error: background checkpoint writer failed on rank 1") == 1, err
    assert _steps(run) == [5]


@pytest.mark.parametrize("background", [True, False])
def test_writer_failure_inside_the_collective_write_aborts_the_job(tmp_path, background):
    """A rank that fails after the collective write began cannot tell the
    others, who wait inside HDF5: the job is aborted with that rank's message."""
    run, err = _failing_write(tmp_path, background, "10:1:mid")
    assert "solver: rank 1: error: the checkpoint of step 10 failed while being written" in err, err
    assert _steps(run) == [5]
    r = run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"], np=2)
    assert r.returncode == 0, r.stderr


def _interrupted(proc, *waits):
    """Send SIGINT after each of ``waits`` (a condition and what it means), then
    collect the output; the job is killed whatever happens."""
    try:
        for condition, what in waits:
            _wait_for(condition, what=what)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode == 130, (proc.returncode, err)
    return out, err


def test_ctrl_c_twice_stops_at_once_with_one_line(tmp_path):
    """Serially: the first Ctrl-C asks for a checkpoint and a stop; a second
    one while that checkpoint is being written stops at once (status 130)."""
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], None, {"SOLVER_TEST_SLOW_WRITE": "30"})
    ckpt = os.path.join(run, "checkpoints")
    out, err = _interrupted(proc, (lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), "the run to start"),
                            (lambda: any(n.endswith(".part") for n in os.listdir(ckpt)), "the final checkpoint"))
    assert err.strip().splitlines() == ["solver: interrupted again: stopped at once, without a final checkpoint; "
                                        "no checkpoint had been written"]
    assert "stopping at step" in out and _steps(run) == []


# Start-up held where it reads the config: the config reader waits on a FIFO
# (the solver itself refuses a FIFO as a config, so the wait is put there
# from outside, as a debugger would), then the solver's own main runs.
_HELD_START = """
import sys
import solver.config
def held(path, what, limit=0):
    with open(sys.argv[1]) as fifo:     # blocks until the test opens the FIFO; then reads until Ctrl-C
        fifo.read()
solver.config.read_small_text = held
from solver.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """Ctrl-C while start-up waits (here: on reading its config) is one line,
    status 130, nothing written."""
    fifo = str(tmp_path / "hold")
    os.mkfifo(fifo)
    run = str(tmp_path / "run")
    config = str(tmp_path / "config.toml")
    with open(config, "w") as fh:
        fh.write("")
    proc = subprocess.Popen([sys.executable, "-c", _HELD_START, fifo, "run", config, "--output", run], cwd=REPO,
                            env=clean_env({"SOLVER_PROGRESS": "plain"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    writer = []

    def reading():
        try:        # succeeds once the solver has the FIFO open; held open, so its read waits
            writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            return False
    try:
        out, err = _interrupted(proc, (reading, "the solver to open its config"))
    finally:
        for fd in writer:
            os.close(fd)
    assert err.strip().splitlines() == ["solver: interrupted during start-up; no checkpoint was written"]
    assert not os.path.exists(run)


def test_ctrl_c_twice_to_mpiexec_still_leaves_a_checkpoint(tmp_path):
    """Open MPI's mpiexec exits at once on a second Ctrl-C and leaves its ranks
    behind; they notice their launcher is gone, checkpoint and stop."""
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], 2)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), what="the run to start")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        _wait_for(lambda: subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).returncode != 0,
                  what="the ranks to end")
    finally:
        _kill_session(proc)
    assert len(_steps(run)) == 1
    r = run_solver(["run", "--output", run, "--restart", "latest", "--set", f"time.steps={_steps(run)[0] + 5}"])
    assert r.returncode == 0, r.stderr


def test_signal_handlers_take_no_lock():
    """A handler runs between two bytecodes of the main thread, which may hold
    any lock of the Triggers at that moment: handlers must not need one."""
    import threading

    from solver.triggers import Triggers
    triggers = Triggers()
    held = [v for v in vars(triggers).values() if hasattr(v, "acquire") and hasattr(v, "release")]
    for lock in held:
        lock.acquire()
    done = threading.Event()

    def handle():
        triggers._on_usr1(signal.SIGUSR1, None)
        triggers._on_stop(signal.SIGUSR2, None)
        done.set()
    threading.Thread(target=handle, daemon=True).start()
    finished = done.wait(timeout=10)
    for lock in held:
        lock.release()
    assert finished, "a signal handler blocked on a lock"
    assert triggers.take() == (1, 1) and triggers.take() == (1, 0)


# --- a request on any rank, and signals after the stop ---------------------------------
def _rank_pid(launcher, rank):
    """The pid of ``rank`` among the launcher's children (Open MPI puts
    OMPI_COMM_WORLD_RANK in each rank's environment), or None."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                parent = next(int(line.split()[1]) for line in fh if line.startswith("PPid:"))
            if parent != launcher:
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in fh.read().split(b"\0"):
                    return int(entry)
        except (OSError, StopIteration, ValueError):
            continue
    return None


@pytest.mark.parametrize("np_, first, then", [(2, signal.SIGUSR1, signal.SIGTERM), (2, None, signal.SIGINT),
                                              (4, signal.SIGUSR1, signal.SIGUSR2), (4, None, signal.SIGHUP)],
                         ids=["2-USR1-TERM", "2-INT", "4-USR1-USR2", "4-HUP"])
def test_a_signal_to_the_last_rank_counts(tmp_path, np_, first, then):
    """Schedulers and watchdogs signal the processes on a node, not rank 0:
    a request on any rank is agreed on by all, at the same step."""
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], np_)
    last = np_ - 1
    try:
        _wait_for(lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), what="the run to start")
        pid = _rank_pid(proc.pid, last)
        assert pid is not None, "rank not found among mpiexec's children"
        if first is not None:
            os.kill(pid, first)
            _wait_for(lambda: _steps(run), what=f"the {first.name} checkpoint")
            assert proc.poll() is None, f"{first.name} must not stop the run"
        os.kill(pid, then)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode == EXIT_STOPPED, (proc.returncode, out[-2000:], err[-2000:])
    assert f"({then.name} on rank {last}): writing the final checkpoint" in out, out[-2000:]
    if first is not None:
        assert f"({first.name} on rank {last})" in out
    assert len(_steps(run)) == (2 if first is not None else 1)


def test_signals_after_the_stop_keep_exit_status_3(tmp_path):
    """Once the run has stopped with its checkpoint, more stop signals (a
    scheduler that repeats itself) change nothing: the status stays 3, which
    is what slurm/solver-step.sh requeues on."""
    run = str(tmp_path / "run")
    proc = _start(LONG + ["--output", run], None)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(run, "diagnostics.csv")), what="the run to start")
        proc.send_signal(signal.SIGUSR2)
        seen = []
        for line in proc.stdout:                 # until the run says it stopped, then at once
            seen.append(line)
            if line.startswith("stopped at step"):
                break
        for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode == EXIT_STOPPED, (proc.returncode, "".join(seen)[-2000:], err[-2000:])
    assert len(_steps(run)) == 1


def test_after_the_run_stop_signals_are_ignored_until_exit():
    """In the process itself: ``finish`` leaves the checkpoint and stop signals
    ignored (not merely handled: Python resets its own handlers to the default
    actions when it shuts down, before MPI_Finalize, while ignored ones stay)."""
    from solver.triggers import Triggers, _interrupted_after_the_run
    names = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    saved = {sig: signal.getsignal(sig) for sig in names}
    try:
        triggers = Triggers()
        triggers.install()
        triggers.finish()
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in names[:4])
        assert signal.getsignal(signal.SIGINT) is _interrupted_after_the_run
        os.kill(os.getpid(), signal.SIGTERM)        # ignored: this process lives on
        os.kill(os.getpid(), signal.SIGUSR2)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# --- the launcher's death -------------------------------------------------------------
def _last_row_step(path):
    try:
        with open(path) as fh:
            rows = fh.read().strip().splitlines()
        return int(float(rows[-1].split(",")[0])) if len(rows) > 1 else -1
    except (OSError, ValueError):
        return -1


def test_launcher_killed_during_a_write_loses_that_write_only(tmp_path):
    """kill -9 of mpiexec: the ranks notice and start their stop checkpoint,
    but Open MPI ends them about a second after their launcher is gone, so a
    write that takes longer is lost. The last complete checkpoint is intact
    and the run continues from it."""
    run = str(tmp_path / "run")
    small = ["run", "--set", "heat.shape=[32,32]", "--set", "output.log_every=20", "--output", run]
    r = run_solver(small + ["--set", "time.steps=20"], np=2)
    assert r.returncode == 0, r.stderr
    proc = _start(small + ["--restart", "latest", "--set", "time.steps=100000000",
                           "--set", "output.checkpoint_every=0"], 2, {"SOLVER_TEST_SLOW_WRITE": "60"})
    try:
        _wait_for(lambda: _last_row_step(os.path.join(run, "diagnostics.csv")) > 20, what="the restarted run to step")
        os.kill(proc.pid, signal.SIGKILL)                       # mpiexec only; its ranks live on for now
        proc.wait(timeout=30)
        _wait_for(lambda: subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).returncode != 0,
                  timeout=60, what="Open MPI to end the ranks")
    finally:
        _kill_session(proc)
    assert _steps(run) == [20]
    with h5py.File(os.path.join(run, "checkpoints", "step_000000020.h5"), "r") as f:
        assert f["heat/u"].shape == (32, 32) and int(f.attrs["step"]) == 20
    r = run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=30"], np=2)
    assert r.returncode == 0, r.stderr
    assert "restart: from" in r.stdout and _steps(run)[-1] == 30
