"""Exit status 4 leaves the last good state as the newest checkpoint: every
check that can end a run with 4 runs before every checkpoint, including the
n-body check for bodies that meet without softening (which the diagnostics
would catch only at their own cadence)."""
import os

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(180)


def _steps(run):
    d = os.path.join(run, "checkpoints")
    return sorted(int(n[5:14]) for n in os.listdir(d) if n.startswith("step_") and n.endswith(".h5"))


def test_bodies_that_meet_are_never_checkpointed(tmp_path):
    path = tmp_path / "collide.h5"
    with h5py.File(path, "w") as f:                 # no attraction: they meet at the origin at step 2
        f["nbody/position"] = np.array([[-1.0, 0, 0], [1.0, 0, 0]])
        f["nbody/velocity"] = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
        f["nbody/mass"] = np.array([0.0, 0.0])
    run = str(tmp_path / "run")
    args = ["run", "--output", run, "--set", "problem.kind='nbody'", "--set", "nbody.initial='file'",
            "--set", f"nbody.file='{path}'", "--set", "nbody.softening=0", "--set", "time.dt=0.5",
            "--set", "time.steps=10", "--set", "output.checkpoint_every=1", "--set", "output.log_every=5",
            "--set", "output.keep=0"]
    r = run_solver(args)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "same position" in r.stderr and "(at step 2)" in r.stderr, r.stderr
    assert _steps(run) == [1]                       # the state before the collision, nothing after it
    r = run_solver(["run", "--output", run, "--restart", "latest"])
    assert r.returncode == 4, (r.returncode, r.stdout[-1000:], r.stderr)   # meets it again, no carry-on
    assert "same position" in r.stderr and _steps(run) == [1]


def test_diagnostics_that_overflow_are_checked_before_every_checkpoint(tmp_path):
    """A state whose cells are finite but whose global diagnostics are not
    (the total heat overflows) ends the run with exit 4 before it is
    checkpointed, also at a checkpoint step that is not a diagnostics step."""
    from mpi4py import MPI

    from helpers import make_heat
    from solver.driver import run
    from solver.triggers import Triggers
    model = make_heat(MPI.COMM_SELF, "heat.shape=[16,16]", "time.steps=100", "output.checkpoint_every=1",
                      "output.log_every=50", "output.keep=0")
    real = model.diagnostics

    def diagnostics():                          # the total overflows from step 7 on
        d = real()
        if model.step_count >= 7:
            d["heat"] = float("inf")
        return d
    model.diagnostics = diagnostics
    out = str(tmp_path / "run")
    os.makedirs(os.path.join(out, "checkpoints"))
    with pytest.raises(FloatingPointError, match="the heat"):
        run(model, model.settings, out, MPI.COMM_SELF, Triggers(), quiet=True)
    assert _steps(out) == [1, 2, 3, 4, 5, 6]
