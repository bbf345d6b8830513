"""n-body from the command line: configs, restart, output, bad input."""
import os

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(240)
PLUMMER = ["run", "configs/nbody_plummer.toml", "--set", "nbody.n=200", "--set", "output.checkpoint_every=0",
           "--set", "output.log_every=1000"]


def _ckpt(run, step):
    return os.path.join(run, "checkpoints", f"step_{step:09d}.h5")


def test_checkpoint_layout_in_id_order(tmp_path):
    run = str(tmp_path / "run")
    r = run_solver(PLUMMER + ["--set", "time.steps=5", "--output", run], np=3)
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(run, 5), "r") as f:
        assert f.attrs["problem"] == "nbody" and f.attrs["nranks"] == 3
        assert f["nbody/position"].shape == (200, 3) and f["nbody/velocity"].shape == (200, 3)
        assert f["nbody/mass"].shape == (200,) and np.array_equal(f["nbody/id"][...], np.arange(200))
        assert np.allclose(f["nbody/mass"][...], 1 / 200)


@pytest.mark.parametrize("before, after", [(1, 1), (4, 2), (2, 3)])
def test_restart_is_bitwise_on_any_rank_count(tmp_path, before, after):
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_solver(PLUMMER + ["--set", "time.steps=30", "--output", straight], np=before).returncode == 0
    assert run_solver(PLUMMER + ["--set", "time.steps=12", "--output", split], np=before).returncode == 0
    r = run_solver(PLUMMER + ["--set", "time.steps=30", "--output", split, "--restart", "latest"], np=after)
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(straight, 30), "r") as fa, h5py.File(_ckpt(split, 30), "r") as fb:
        for name in ("position", "velocity"):
            assert np.array_equal(fa[f"nbody/{name}"][...], fb[f"nbody/{name}"][...]), name
        assert fa.attrs["time"] == fb.attrs["time"] and fa.attrs["energy0"] == fb.attrs["energy0"]


def test_figure_eight_on_more_ranks_than_bodies(tmp_path):
    run = str(tmp_path / "run")
    r = run_solver(["run", "configs/nbody_figure8.toml", "--set", "time.dt=1e-3", "--output", run], np=4)
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(run, 6326), "r") as f:
        x = f["nbody/position"][...]
    assert np.abs(x[0] - [0.97000436, -0.24308753, 0.0]).max() < 1e-4


def test_particles_from_a_file_and_polyvertex_xdmf(tmp_path):
    src = str(tmp_path / "start.h5")
    rng = np.random.default_rng(0)
    with h5py.File(src, "w") as f:
        f["nbody/position"] = rng.normal(size=(17, 3))
        f["nbody/velocity"] = np.zeros((17, 3))
        f["nbody/mass"] = np.full(17, 0.1)
    run = str(tmp_path / "run")
    r = run_solver(["run", "--set", "problem.kind=nbody", "--set", "nbody.initial=file", "--set", f"nbody.file='{src}'",
                    "--set", "time.steps=3", "--set", "time.dt=0.001", "--output", run], np=2)
    assert r.returncode == 0, r.stderr
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    reader = vtk.vtkXdmfReader()
    reader.SetFileName(_ckpt(run, 3)[:-3] + ".xdmf")
    reader.Update()
    grid = reader.GetOutputDataObject(0)
    with h5py.File(_ckpt(run, 3), "r") as f:
        assert np.array_equal(vtk_to_numpy(grid.GetPoints().GetData()), f["nbody/position"][...])
        assert np.array_equal(vtk_to_numpy(grid.GetPointData().GetArray("mass")), f["nbody/mass"][...])
    assert grid.GetNumberOfCells() == 17
    pytest.importorskip("matplotlib")
    r = run_solver(["plot", run])
    assert r.returncode == 0, r.stderr
    shown = sorted(n for n in os.listdir(os.path.join(run, "plots")) if not n.startswith("."))   # not plot's list
    assert shown == ["history.png", "particles_000000003.png"]


def _file(tmp_path, name, **arrays):
    path = str(tmp_path / name)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[f"nbody/{key}"] = value
    return path


BAD = [
    ("n < 1", lambda t: ["--set", "nbody.n=0"], "nbody.n"),
    ("negative softening", lambda t: ["--set", "nbody.softening=-0.1"], "nbody.softening"),
    ("unknown initial", lambda t: ["--set", "nbody.initial=galaxy"], "nbody.initial"),
    ("mismatched file", lambda t: ["--set", "nbody.initial=file", "--set", "nbody.file='" + _file(
        t, "m.h5", position=np.zeros((4, 3)), velocity=np.zeros((3, 3)), mass=np.ones(4)) + "'"], "mismatched"),
    ("negative mass", lambda t: ["--set", "nbody.initial=file", "--set", "nbody.file='" + _file(
        t, "n.h5", position=np.eye(3), velocity=np.zeros((3, 3)), mass=[1.0, -1.0, 1.0]) + "'"], "negative"),
    ("coincident, no softening", lambda t: ["--set", "nbody.softening=0.0", "--set", "nbody.initial=file",
                                            "--set", "nbody.file='" + _file(
        t, "c.h5", position=[[0, 0, 0], [1, 0, 0], [1, 0, 0]], velocity=np.zeros((3, 3)), mass=np.ones(3)) + "'"],
     "same position"),
]


@pytest.mark.parametrize("np_", [None, 2])
@pytest.mark.parametrize("what, extra, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_error(tmp_path, np_, what, extra, fragment):
    out = tmp_path / "out"
    r = run_solver(["run", "--set", "problem.kind=nbody", "--set", "time.steps=3", *extra(tmp_path),
                    "--output", str(out)], np=np_, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    ours = [line for line in r.stderr.splitlines() if line.startswith("solver: error:")]
    assert len(ours) == 1 and fragment in ours[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_restart_of_another_problem_is_refused(tmp_path):
    run = str(tmp_path / "run")
    assert run_solver(PLUMMER + ["--set", "time.steps=2", "--output", run]).returncode == 0
    r = run_solver(["run", "configs/heat2d.toml", "--restart", _ckpt(run, 2), "--output", str(tmp_path / "o")])
    assert r.returncode == 2 and "holds a 'nbody' run" in r.stderr
