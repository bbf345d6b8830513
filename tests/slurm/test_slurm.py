"""The batch scripts in slurm/, submitted as they are to a real SLURM
controller with two nodes on this machine (`make test-slurm` starts it and
sets SLURM_CONF; without it these tests are skipped)."""
import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, clean_env, run_solver

if not os.environ.get("SLURM_CONF"):
    pytest.skip("needs the private SLURM cluster: make test-slurm", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

# Neumann walls and a random start keep values O(1): no slow subnormal arithmetic.
SMALL = ["--set", "heat.shape=[32,24]", "--set", "heat.boundary='neumann'", "--set", "heat.initial='random'",
         "--set", "output.checkpoint_every=0"]


def _env(extra=None):
    env = clean_env(extra)
    env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    env["OMPI_MCA_btl"] = os.environ.get("OMPI_MCA_btl", "self,tcp")
    return env


def _sbatch(script, args, log, sbatch_options=(), env=None, wait=True):
    """Submit ``script`` from the repository root and follow it through its
    requeues: (job id, exit status), or with ``wait=False`` the running sbatch."""
    cmd = ["sbatch", "--parsable", "--wait", "-o", str(log), *sbatch_options, script, *args]
    if wait:
        r = subprocess.run(cmd, cwd=REPO, env=_env(env), capture_output=True, text=True, timeout=280)
        return r.stdout.strip().split(";")[0], r.returncode
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def _final_field(run):
    d = os.path.join(run, "checkpoints")
    newest = sorted(n for n in os.listdir(d) if n.endswith(".h5"))[-1]
    with h5py.File(os.path.join(d, newest)) as f:
        return int(f.attrs["step"]), f["heat/u"][...]


def _direct(tmp_path, name, args, np_=2):
    run = str(tmp_path / name)
    r = run_solver(["run", "configs/heat2d.toml", *args, "--output", run], np=np_, timeout=280)
    assert r.returncode == 0, r.stderr
    return _final_field(run)


def test_a_two_node_run_equals_a_direct_mpiexec_run(tmp_path):
    run, log = str(tmp_path / "slurm"), tmp_path / "job.out"
    args = [*SMALL, "--set", "time.steps=300"]
    job, status = _sbatch("slurm/heat.sbatch", args, log, ["--nodes=2", "--ntasks-per-node=1"], {"RUN_DIR": run})
    assert status == 0, log.read_text()
    assert "on 2 ranks" in log.read_text()
    step, field = _final_field(run)
    assert step == 300
    direct_step, direct = _direct(tmp_path, "direct", args)
    assert np.array_equal(field, direct)


def test_the_time_limit_signal_checkpoints_requeues_and_resumes_bitwise(tmp_path):
    run, log = str(tmp_path / "long"), tmp_path / "job.out"
    args = [*SMALL, "--set", "time.steps=40000", "--set", "output.log_every=10000"]
    proc = _sbatch("slurm/heat.sbatch", args, log, ["--nodes=2", "--ntasks-per-node=1"], {"RUN_DIR": run},
                   wait=False)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(run, "diagnostics.csv")):        # the ranks are stepping
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text() if log.exists() else ""
            time.sleep(0.1)
        job = subprocess.run(["squeue", "-h", "-o", "%i", "-n", "heat"], env=_env(), capture_output=True,
                             text=True).stdout.split()
        assert len(job) == 1
        subprocess.run(["scancel", "--batch", "--signal=USR2", job[0]], env=_env(), check=True)
        proc.wait(timeout=280)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "(SIGUSR2): writing the final checkpoint" in text
    assert "requeueing job" in text and "start 2 on" in text and "restart: from" in text
    step, field = _final_field(run)
    assert step == 40000
    _, straight = _direct(tmp_path, "straight", args)
    assert np.array_equal(field, straight)


def test_a_job_that_fails_on_bad_input_is_not_requeued(tmp_path):
    log = tmp_path / "job.out"
    job, status = _sbatch("slurm/heat.sbatch", ["--set", "heat.shape=[0,0]"], log,
                          ["--nodes=1", "--ntasks-per-node=1"], {"RUN_DIR": str(tmp_path / "bad")})
    text = log.read_text()
    assert status == 2, text
    assert "solver: error: heat.shape" in text
    assert "requeueing" not in text and "start 2" not in text


def test_an_array_gives_one_correct_result_per_task(tmp_path):
    prefix = str(tmp_path / "sweep")
    args = [*SMALL, "--set", "time.steps=50"]
    job, status = _sbatch("slurm/sweep.sbatch", args, tmp_path / "task-%a.out", ["--array=0-2", "--ntasks-per-node=2"],
                          {"RUN_PREFIX": prefix})
    assert status == 0, [p.read_text() for p in tmp_path.glob("task-*.out")]
    for task, diffusivity in enumerate(["0.5", "1.0", "2.0"]):
        step, field = _final_field(f"{prefix}_{task}")
        _, direct = _direct(tmp_path, f"direct{task}", [*args, "--set", f"heat.diffusivity={diffusivity}"], np_=1)
        assert step == 50 and np.array_equal(field, direct), task


def test_tasks_started_without_mpi_support_are_told_so(tmp_path):
    r = subprocess.run(["srun", "--nodes=1", "--ntasks=2", "--mpi=none", shutil.which("python") or "python",
                        "-m", "solver", "run", *SMALL, "--output", str(tmp_path / "none")],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("srun started 2 tasks without MPI support") == 2
    assert not (tmp_path / "none").exists()
