"""The Open MPI settings our commands use and the README recommends: none
hides mpiexec's own errors and none makes a failed run slow to return."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import MPI_ENV, REPO, clean_env, run_solver

pytestmark = pytest.mark.timeout(120)

# orte_execute_quiet silences mpiexec's own errors ("not enough slots", "unable
# to find the specified executable": exit 1 or 134 and no output at all);
# odls_base_sigkill_timeout=T makes every non-zero exit under mpiexec take 2T
# seconds, because Open MPI 4.1's mpiexec runs its kill sequence (SIGCONT,
# sleep T, SIGTERM, sleep T, SIGKILL) on every job with a non-zero status,
# even when every rank has already exited by itself (README, "Running MPI yourself").
UNWANTED = ("orte_execute_quiet", "odls_base_sigkill_timeout")
EXPORT = re.compile(r"^\s*export\s+(.*)$")


def _exported(path):
    """Variables that ``export`` lines of ``path`` set (shell or make syntax)."""
    names = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            found = EXPORT.match(line)
            if found:
                names += re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*:?=", found.group(1))
    return names


def test_no_setting_hides_launcher_errors_or_slows_failed_runs():
    places = {"Makefile": _exported(os.path.join(REPO, "Makefile")),
              "README.md": _exported(os.path.join(REPO, "README.md")),
              "tests/conftest.py MPI_ENV": list(MPI_ENV)}
    for script in glob.glob(os.path.join(REPO, "slurm", "**", "*"), recursive=True):
        if os.path.isfile(script):
            with open(script, encoding="utf-8") as fh:
                places[os.path.relpath(script, REPO)] = re.findall(r"[A-Za-z_]+", fh.read())
    assert places["README.md"], "the README shows the variables to export"
    for where, names in places.items():
        bad = [n for n in names if any(u in n for u in UNWANTED)]
        assert not bad, f"{where} sets {bad}"


@pytest.mark.skipif(not shutil.which("mpiexec"), reason="needs mpiexec")
def test_the_launchers_own_errors_are_shown(tmp_path):
    missing = str(tmp_path / "no-such-program")
    r = subprocess.run([shutil.which("mpiexec"), "-n", "2", missing], env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "no-such-program" in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


@pytest.mark.skipif(not shutil.which("mpiexec"), reason="needs mpiexec")
def test_bad_input_under_mpiexec_is_our_line_then_the_launchers_report(tmp_path):
    """Status 2, our one line once, nothing written, and mpiexec's own report
    of the status after it (not hidden).  (Every rank returns 2 by itself,
    but the ranks cannot all be seen to exit by themselves: Open MPI 4.1's
    mpiexec starts its kill sequence at the first non-zero exit and, asleep
    in it, leaves a rank still in MPI_Finalize waiting for it until its
    SIGTERM, T = odls_base_sigkill_timeout seconds later.)"""
    r = subprocess.run([shutil.which("mpiexec"), "-n", "2", sys.executable, "-m", "solver", "run",
                        "--set", "heat.shape=[0,0]", "--output", str(tmp_path / "out")], cwd=REPO, env=clean_env(),
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("solver: error: heat.shape") and r.stderr.count("solver: error:") == 1, r.stderr
    assert "Exit code:    2" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("np", [None, 2])
def test_a_long_output_path_writes_its_checkpoints(tmp_path, np):
    """Open MPI 4.1's lockedfile component overflows a fixed buffer on a path
    of about 200 characters and aborts every rank at the first file open."""
    deep = tmp_path / ("d" * 120) / ("e" * 100)
    deep.mkdir(parents=True)
    run = str(deep / "run")
    r = run_solver(["run", "--set", "heat.shape=[12,12]", "--set", "time.steps=2", "--output", run], np=np)
    assert r.returncode == 0, r.launcher_stderr[-2000:]
    assert os.listdir(os.path.join(run, "checkpoints")).count("step_000000002.h5") == 1
