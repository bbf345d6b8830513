"""Restart: bitwise continuation on any rank count, and one clear error for
every checkpoint that cannot be continued."""
import os
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(300)

CASE = ["run", "configs/heat2d.toml", "--set", "heat.shape=[37,23]", "--set", "heat.initial=random",
        "--set", "heat.boundary=neumann", "--set", "output.checkpoint_every=0", "--set", "output.log_every=1000"]


def _final(run_dir, step):
    with h5py.File(os.path.join(run_dir, "checkpoints", f"step_{step:09d}.h5"), "r") as f:
        return f["heat/u"][...], float(f.attrs["time"]), int(f.attrs["nranks"])


def _ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.mark.parametrize("before, after", [(1, 1), (4, 2), (2, 3)])
def test_restart_is_bitwise_identical_to_a_straight_run(tmp_path, before, after):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    _ok(run_solver(CASE + ["--set", "time.steps=40", "--output", straight], np=before))
    _ok(run_solver(CASE + ["--set", "time.steps=17", "--output", split], np=before))
    r = _ok(run_solver(CASE + ["--set", "time.steps=40", "--output", split, "--restart", "latest"], np=after))
    assert "restart: from" in r.stdout
    a, ta, _ = _final(straight, 40)
    b, tb, nb = _final(split, 40)
    assert nb == after
    assert np.array_equal(a, b) and ta == tb


@pytest.mark.parametrize("first, then, before, after", [("opencl", "numpy", 2, 1), ("cpu", "opencl", 1, 3)])
def test_restart_across_backends_is_bitwise(tmp_path, first, then, before, after):
    """A checkpoint written on one backend continues on another, on another rank count, bit for bit."""
    from solver.backends import status
    if not (status()[first][0] and status()[then][0]):
        pytest.skip(f"{first} or {then} is not available here")
    case = CASE + ["--set", "heat.shape=[19,13,11]", "--set", "heat.extent=1.0", "--set", "heat.modes=1",
                   "--set", "heat.boundary=dirichlet",
                   "--set", "heat.boundary_value=0.25"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    _ok(run_solver(case + ["--set", "time.steps=30", "--output", straight, "--backend", "numpy"]))
    _ok(run_solver(case + ["--set", "time.steps=13", "--output", split, "--backend", first], np=before))
    r = _ok(run_solver(case + ["--set", "time.steps=30", "--output", split, "--restart", "latest",
                               "--backend", then], np=after))
    assert f"backend {then}" in r.stdout
    a, ta, _ = _final(straight, 30)
    b, tb, _ = _final(split, 30)
    assert np.array_equal(a, b) and ta == tb


def test_restart_without_config_uses_the_stored_one(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(CASE + ["--set", "time.steps=10", "--output", run]))
    ckpt = os.path.join(run, "checkpoints", "step_000000010.h5")
    r = _ok(run_solver(["run", "--restart", ckpt, "--set", "time.steps=25"], np=2))
    assert os.path.exists(os.path.join(run, "checkpoints", "step_000000025.h5"))
    with h5py.File(os.path.join(run, "checkpoints", "step_000000025.h5"), "r") as f:
        assert f["heat/u"].shape == (37, 23)
    assert "nothing to do" not in r.stdout


def test_finished_run_needs_more_steps(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(CASE + ["--set", "time.steps=5", "--output", run]))
    r = _ok(run_solver(CASE + ["--set", "time.steps=5", "--output", run, "--restart", "latest"]))
    assert "nothing to do" in r.stdout
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step_000000005.h5", "step_000000005.xdmf"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("good") / "run")
    _ok(run_solver(CASE + ["--set", "time.steps=6", "--output", run]))
    return run


def _bad(tmp_path, name, make):
    path = str(tmp_path / name)
    make(path)
    return path


def _copy_truncated(src):
    def make(path):
        data = open(src, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    return make


def _random_bytes(path):
    open(path, "wb").write(np.random.default_rng(0).bytes(4096))


def _foreign_hdf5(path):
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)


def _wrong_shape(src):
    def make(path):
        shutil.copy(src, path)
        with h5py.File(path, "a") as f:
            del f["heat/u"]
            f["heat/u"] = np.zeros((5, 5))
    return make


BAD = [
    ("missing file", lambda src: (lambda p: None), [], "does not exist"),
    ("truncated", _copy_truncated, [], "cannot be read as HDF5"),
    ("random bytes", lambda src: _random_bytes, [], "cannot be read as HDF5"),
    ("not ours", lambda src: _foreign_hdf5, [], "not a solver checkpoint"),
    ("dataset of wrong shape", _wrong_shape, [], "damaged"),
    ("other grid in config", lambda src: (lambda p: shutil.copy(src, p)), ["--set", "heat.shape=[30,23]"], "heat.shape"),
    ("other physics in config", lambda src: (lambda p: shutil.copy(src, p)), ["--set", "heat.diffusivity=2.0"],
     "heat.diffusivity"),
]


@pytest.mark.parametrize("np_", [None, 2])
@pytest.mark.parametrize("what, maker, extra, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_restart_is_one_clear_error(tmp_path, good_run, np_, what, maker, extra, fragment):
    src = os.path.join(good_run, "checkpoints", "step_000000006.h5")
    path = _bad(tmp_path, "ckpt.h5", maker(src))
    out = tmp_path / "out"
    r = run_solver(CASE + ["--set", "time.steps=9", "--output", str(out), "--restart", path, *extra], np=np_,
                   timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    ours = [line for line in r.stderr.splitlines() if line.startswith("solver: error:")]
    assert len(ours) == 1 and fragment in ours[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_restart_latest_with_no_checkpoints(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    r = run_solver(CASE + ["--output", str(tmp_path / "empty"), "--restart", "latest"], np=2)
    assert r.returncode == 2 and "no complete checkpoint" in r.stderr


def test_restart_latest_needs_an_output_dir():
    r = run_solver(["run", "--restart", "latest"])
    assert r.returncode == 2 and "--output" in r.stderr
