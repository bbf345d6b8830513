"""Implicit schemes as a user meets them: the config keys, PETSc options
from the config, PETSC_OPTIONS and '--', a solve that fails (exit 4 with the
last good state written), restarts that change the scheme and dt, and a
machine without petsc4py (one line; explicit runs unaffected)."""
import importlib.util
import json
import os

import h5py
import numpy as np
import pytest

from solver.config import ConfigError
from solver.models import load_settings

pytestmark = pytest.mark.timeout(300)
needs_petsc = pytest.mark.skipif(importlib.util.find_spec("petsc4py") is None, reason="petsc4py is not installed")
SMALL = ["--set", "heat.shape=[48,40]", "--set", "time.scheme='crank_nicolson'", "--set", "time.dt=1e-3"]


def _attrs(path):
    with h5py.File(path, "r") as f:
        return dict(f.attrs), f["heat/u"][...]


def _newest(run):
    names = sorted(n for n in os.listdir(os.path.join(run, "checkpoints")) if n.endswith(".h5"))
    return os.path.join(run, "checkpoints", names[-1])


@pytest.mark.parametrize("scheme", ["backward_euler", "crank_nicolson", "bdf2"])
def test_dt_auto_is_refused_for_an_implicit_scheme_with_why(scheme):
    with pytest.raises(ConfigError, match=r"time\.dt: 'auto' is the explicit scheme's stability limit.*"
                                          r"stable at any step.*set time\.dt to a number"):
        load_settings(None, "<t>", [f"time.scheme={scheme}"])
    settings = load_settings(None, "<t>", [f"time.scheme={scheme}", "time.dt=0.01", "time.t_end=0.1"])
    assert settings.time.implicit and settings.time.dt == 0.01


def test_an_unknown_scheme_and_a_scheme_for_nbody_are_refused():
    with pytest.raises(ConfigError, match="did you mean 'crank_nicolson'"):
        load_settings(None, "<t>", ["time.scheme=crank_nicholson"])
    with pytest.raises(ConfigError, match="time.scheme: 'bdf2' is an implicit scheme of the heat equation"):
        load_settings("[problem]\nkind = 'nbody'\n[time]\nscheme = 'bdf2'\ndt = 0.01\n", "<t>", [])
    with pytest.raises(ConfigError, match="solver.petsc_options: expected PETSc options"):
        load_settings(None, "<t>", ["solver.petsc_options='ksp_type cg'"])


def test_without_petsc4py_an_implicit_run_is_one_line_and_explicit_runs_work(tmp_path, solver):
    """An import of petsc4py that fails (a package that raises ImportError)."""
    fake = tmp_path / "fake" / "petsc4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named petsc4py')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = solver(["run", *SMALL, "--set", "time.steps=2", "--output", str(tmp_path / "a")], env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "petsc4py is not installed" in lines[0] and "pip install" in lines[0], r.stderr
    assert "time.scheme = 'crank_nicolson'" in lines[0]
    assert not os.path.exists(tmp_path / "a")
    r = solver(["run", "--set", "heat.shape=[32,32]", "--set", "time.steps=3", "--output", str(tmp_path / "b")],
               env=env)
    assert r.returncode == 0, r.stderr
    r = solver(["info"], env=env)
    assert r.returncode == 0 and "PETSc (implicit heat schemes): not available" in r.stdout


@needs_petsc
def test_info_reports_petsc_and_its_packages(solver):
    from petsc4py import PETSc
    r = solver(["info"])
    assert r.returncode == 0, r.stderr
    version = ".".join(map(str, PETSc.Sys.getVersion()))
    line = next(x for x in r.stdout.splitlines() if x.startswith("PETSc"))
    assert version in line and "external packages:" in line


@needs_petsc
def test_iterations_and_residual_in_the_progress_line_and_diagnostics(tmp_path, solver):
    r = solver(["run", *SMALL, "--set", "time.steps=4", "--set", "output.log_every=2", "--output", str(tmp_path / "r")])
    assert r.returncode == 0, r.stderr
    assert "crank_nicolson through PETSc" in r.stdout
    assert "iterations=" in r.stdout and "residual=" in r.stdout
    with open(tmp_path / "r" / "diagnostics.csv") as fh:
        rows = [line.split(",") for line in fh.read().split()]
    header = rows[0]
    last = dict(zip(header, rows[-1]))
    assert float(last["iterations"]) >= 1 and 0 < float(last["residual"]) < 1e-3
    attrs, _ = _attrs(_newest(str(tmp_path / "r")))
    assert json.loads(attrs["time_schemes"]) == [[0, "crank_nicolson"]]


@needs_petsc
def test_a_solve_that_fails_stops_with_exit_4_and_the_last_good_state(tmp_path, solver):
    """-ksp_max_it 1 with a tight tolerance (given after '--') cannot
    converge: one line naming PETSc's reason, and a checkpoint of the state
    before the step that failed."""
    run = str(tmp_path / "r")
    r = solver(["run", *SMALL, "--set", "time.steps=6", "--set", "output.checkpoint_every=2", "--output", run,
                "--", "-ksp_max_it", "1", "-ksp_rtol", "1e-14"])
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "DIVERGED_MAX_IT" in lines[0] and "step 1 " in lines[0], r.stderr
    attrs, u = _attrs(_newest(run))
    assert int(attrs["step"]) == 0 and float(attrs["time"]) == 0.0 and np.isfinite(u).all()


@needs_petsc
def test_the_config_options_reach_petsc_and_the_environment_and_command_line_win(tmp_path, solver):
    failing = ["--set", "solver.petsc_options='-ksp_max_it 1 -ksp_rtol 1e-14'", "--set", "time.steps=3"]
    r = solver(["run", *SMALL, *failing, "--output", str(tmp_path / "a")])
    assert r.returncode == 4 and "DIVERGED_MAX_IT" in r.stderr
    r = solver(["run", *SMALL, *failing, "--output", str(tmp_path / "b"), "--", "-ksp_max_it", "200"])
    assert r.returncode == 0, r.stderr
    r = solver(["run", *SMALL, *failing, "--output", str(tmp_path / "c")], env={"PETSC_OPTIONS": "-ksp_max_it 200"})
    assert r.returncode == 0, r.stderr


@needs_petsc
def test_restarts_change_the_scheme_and_dt_on_other_rank_counts(tmp_path, solver):
    """explicit -> crank_nicolson (2 ranks) -> bdf2 with another dt -> explicit
    again with dt = 'auto': the checkpoint records which scheme took each step."""
    run = str(tmp_path / "r")
    r = solver(["run", "--set", "heat.shape=[48,40]", "--set", "time.steps=10", "--output", run])
    assert r.returncode == 0, r.stderr
    r = solver(["run", "--restart", "latest", "--output", run, "--set", "time.scheme='crank_nicolson'",
                "--set", "time.dt=1e-4", "--set", "time.steps=15"], np=2)
    assert r.returncode == 0, r.stderr
    r = solver(["run", "--restart", "latest", "--output", run, "--set", "time.scheme='bdf2'",
                "--set", "time.dt=5e-5", "--set", "time.steps=20"])
    assert r.returncode == 0, r.stderr
    r = solver(["run", "--restart", "latest", "--output", run, "--set", "time.scheme='explicit'",
                "--set", "time.dt='auto'", "--set", "time.steps=25"], np=2)
    assert r.returncode == 0, r.stderr
    attrs, u = _attrs(_newest(run))
    assert json.loads(attrs["time_schemes"]) == [[0, "explicit"], [10, "crank_nicolson"], [15, "bdf2"],
                                                  [20, "explicit"]]
    h2 = 1.0 / 48 ** 2, 1.0 / 40 ** 2
    explicit_dt = 0.9 / (2 * (1 / h2[0] + 1 / h2[1]))
    assert float(attrs["time"]) == pytest.approx(15 * explicit_dt + 5 * 1e-4 + 5 * 5e-5, rel=1e-9)
    with open(os.path.join(run, "diagnostics.csv")) as fh:
        rows = [line.split(",") for line in fh.read().split()]
    header, rows = rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]
    assert all(len(r) == len(header) for r in rows) and "iterations" in header
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 25
    for r in rows:                      # iterations where an implicit scheme took the steps, nan elsewhere
        step = int(r["step"])           # (the lines at 10, 15 and 20 are the next run's first)
        if 10 < step < 20 and step != 15:
            assert float(r["iterations"]) >= 1, r
        elif step < 10 or step > 20:
            assert r["iterations"] == "nan", r


@needs_petsc
def test_bench_implicit_runs_and_writes_its_results(tmp_path, solver):
    r = solver(["bench", "implicit", "--size", "128", "--sizes", "32", "--search", "128", "--explicit-steps", "30",
                "--dir", str(tmp_path / "b")])
    assert r.returncode == 0, r.stderr
    assert "Speed-up:" in r.stdout and "| 32^2 |" in r.stdout
    with open(tmp_path / "b" / "implicit.json") as fh:
        out = json.load(fh)
    t = out["time_to_solution"]
    assert t["error"] <= 1e-4 and t["steps"] >= 1 and t["iterations_per_step"] >= 1
    assert [r["pc"] for r in out["multigrid"]] == ["hypre", "mg"]
    r = solver(["bench", "implicit", "--size", "32", "--search", "32", "--dir", str(tmp_path / "c")])
    assert r.returncode == 2 and "does not reach a relative error" in r.stderr
