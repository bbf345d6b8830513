"""Checkpoints altered after they were written, and links where a run keeps
its files: never a silent continuation, never a write through a link."""
import os

import h5py
import numpy as np
import pytest

from conftest import REPO, run_solver

pytestmark = pytest.mark.timeout(240)

CASE = ["--set", "heat.shape=[32,32]", "--set", "output.checkpoint_every=10", "--set", "output.keep=0"]


def _ok(r):
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return r


def _three_checkpoints(run):
    _ok(run_solver(["run", "--output", run, *CASE, "--set", "time.steps=30"]))
    return os.path.join(run, "checkpoints", "step_000000030.h5")


def _flip_value(path):
    with h5py.File(path, "r+") as f:
        u = f["heat/u"][...]
        u.view(np.uint64)[3, 4] ^= np.uint64(1 << 55)
        f["heat/u"][...] = u


def test_a_damaged_newest_checkpoint_is_passed_over_with_a_relative_run_path(tmp_path):
    _flip_value(_three_checkpoints(str(tmp_path / "t")))
    r = _ok(run_solver(["run", "--restart", "latest", "--output", "t", "--set", "time.steps=40"], cwd=str(tmp_path)))
    assert "step_000000030.h5.damaged" in r.stderr and "restart: from t/checkpoints/step_000000020.h5" in r.stdout
    assert os.path.exists(tmp_path / "t" / "checkpoints" / "step_000000030.h5.damaged")


@pytest.mark.parametrize("attr,value", [("dt", None), ("time", None), ("config", "diffusivity = 1.0")])
def test_a_changed_root_attribute_is_damage(tmp_path, attr, value):
    run = str(tmp_path / "run")
    newest = _three_checkpoints(run)
    with h5py.File(newest, "r+") as f:
        if value is None:                       # one bit of a number
            f.attrs[attr] = (np.array(f.attrs[attr]).view(np.uint64) ^ np.uint64(1 << 30)).view(np.float64)
        else:
            text = str(f.attrs[attr])
            assert value in text
            f.attrs[attr] = text.replace(value, value.replace("1.0", "0.5"))
    r = run_solver(["run", "--restart", newest, "--set", "time.steps=40"])
    assert r.returncode == 2 and "root attributes" in r.stderr, r.stderr
    r = _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", "time.steps=40"]))
    assert "from " + os.path.join(run, "checkpoints", "step_000000020.h5") in r.stdout


@pytest.mark.parametrize("edit", ["delete", "other"])
def test_an_edited_checksum_algorithm_does_not_switch_the_check_off(tmp_path, edit):
    run = str(tmp_path / "run")
    newest = _three_checkpoints(run)
    _flip_value(newest)
    with h5py.File(newest, "r+") as f:
        if edit == "delete":
            del f["heat/u"].attrs["checksum_algorithm"]
        else:
            f["heat/u"].attrs["checksum_algorithm"] = "sum64-splitmix64-v3"
    r = run_solver(["run", "--restart", newest, "--set", "time.steps=40"])
    assert r.returncode == 2 and "checksum" in r.stderr, r.stderr


def test_a_second_damaged_diagnostics_file_keeps_the_first(tmp_path):
    run = str(tmp_path / "run")
    _three_checkpoints(run)
    diag = os.path.join(run, "diagnostics.csv")
    for k, steps in ((1, 40), (2, 50)):
        with open(diag, "w") as fh:
            fh.write(f"damage {k}\n")
        _ok(run_solver(["run", "--restart", "latest", "--output", run, "--set", f"time.steps={steps}"]))
    with open(diag + ".damaged") as a, open(diag + ".damaged.2") as b:
        assert (a.read(), b.read()) == ("damage 1\n", "damage 2\n")


def test_a_linked_checkpoints_directory_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / "checkpoints")
    r = run_solver(["run", "--output", str(run), *CASE, "--set", "time.steps=10"])
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr
    assert os.listdir(victim) == [] and sorted(os.listdir(run)) == ["checkpoints"]


def test_a_bad_set_on_a_restart_is_named_as_the_users(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *CASE, "--set", "time.steps=10"]))
    r = run_solver(["run", "--restart", "latest", "--output", run, "--set", "output.keep=-1"])
    assert r.returncode == 2 and "stored" not in r.stderr and "output.keep" in r.stderr, r.stderr
    assert r.stderr.strip().startswith("solver: error: output.keep")
