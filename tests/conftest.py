"""Shared helpers: running the solver as a user would (python -m solver, or
under mpiexec), with an environment cleaned of the parent's MPI state."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
    # nothing that hides mpiexec's own errors (orte_execute_quiet) or lengthens
    # its kill sequence (odls_base_sigkill_timeout): see README, "Running MPI yourself"
    # hwloc in mpiexec would load an installed OpenCL driver (PoCL), which
    # takes SIGUSR1 from Open MPI's forwarding (see README, "Running MPI yourself")
    "HWLOC_COMPONENTS": "-opencl",
}
_INHERITED_MPI = ("OMPI_", "PMIX_", "OPAL_", "PRTE_", "ORTE_", "HYDRA_", "PMI_")


def clean_env(extra=None):
    """The parent's environment without the variables an initialised MPI
    leaves behind (a child mpiexec would otherwise join the parent's job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_MPI)}
    env.update(MPI_ENV)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def solver_cmd(args, np=None):
    cmd = [sys.executable, "-m", "solver", *args]
    if np is not None:
        cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(np), *cmd]
    return cmd


# mpiexec's own lines: "mpiexec: Forwarding signal ...", "[host:pid] N more
# processes have sent help message ...", "Set MCA parameter ... to see all help"
_LAUNCHER_LINE = re.compile(r"^(mpiexec: |\[[^\]\s]+:\d+\] |Set MCA parameter \"orte_base_help_aggregate\")")


def without_launcher_report(text: str) -> str:
    """``text`` (a job's stderr) without what mpiexec itself adds: its report
    of a non-zero exit (a block between lines of dashes), its notes on
    forwarded signals, and the warning its event library may print while
    MPI_Abort takes the ranks down.  Tests of our one-line errors read what
    the solver printed; the launcher's own report is shown to users, not
    hidden (tests/test_launcher_settings.py)."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() and set(line.strip()) == {"-"}:
            inside = not inside
            continue
        if inside or _LAUNCHER_LINE.match(line) or ("Epoll" in line and "Old events" in line):
            continue
        kept.append(line)
    return "".join(kept)


def run_solver(args, np=None, cwd=None, timeout=120, env=None):
    """Run the solver in a subprocess; returns the CompletedProcess.  Under
    mpiexec (``np``), ``stderr`` holds what the solver printed and
    ``launcher_stderr`` all of it (``without_launcher_report``)."""
    r = subprocess.run(solver_cmd(args, np), cwd=cwd or REPO, env=clean_env(env), capture_output=True,
                       text=True, timeout=timeout)
    r.launcher_stderr = r.stderr
    if np is not None:
        r.stderr = without_launcher_report(r.stderr)
    return r


@pytest.fixture
def shared_tmp(tmp_path):
    """One temporary directory, the same on every rank of an MPI test (rank 0's)."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    return world.bcast(str(tmp_path) if world.rank == 0 else None, root=0)


@pytest.fixture
def solver():
    return run_solver


@contextlib.contextmanager
def small_tmpfs(tmp_path, size):
    """A tmpfs of ``size`` ("1m", "5m") at tmp_path/disk, where this process
    may mount one (the test is skipped otherwise); unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def kill_when(proc, ready, what, timeout=120):
    """SIGKILL the process group of ``proc`` (started with
    start_new_session) once ``ready()`` holds; fails naming ``what`` if
    the process ends or ``timeout`` seconds pass first.  Always reaped."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline and proc.poll() is None, what
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
