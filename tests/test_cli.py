"""The command line as a user meets it: runs, output, and bad input."""
import os

import h5py
import numpy as np
import pytest

from conftest import run_solver

pytestmark = pytest.mark.timeout(180)


def _write(tmp_path, text, name="case.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_run_writes_checkpoint_layout(tmp_path):
    out = tmp_path / "out"
    r = run_solver(["run", "configs/heat2d.toml", "--set", "heat.shape=[24,20]", "--set", "time.steps=40",
                    "--set", "output.checkpoint_every=10", "--set", "output.keep=2", "--output", str(out)])
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    names = sorted(os.listdir(out / "checkpoints"))
    assert names == ["step_000000030.h5", "step_000000030.xdmf", "step_000000040.h5", "step_000000040.xdmf"]
    with h5py.File(out / "checkpoints" / "step_000000040.h5", "r") as f:
        for key in ("format", "format_version", "problem", "step", "time", "dt", "config",
                    "solver_version", "nranks", "created"):
            assert key in f.attrs, key
        assert f.attrs["step"] == 40 and f.attrs["problem"] == "heat"
        u = f["heat/u"]
        assert u.shape == (24, 20)
        assert list(u.attrs["origin"]) == pytest.approx([0.5 / 24, 0.5 / 20])
        assert list(u.attrs["spacing"]) == pytest.approx([1 / 24, 1 / 20])
        assert "shape = [24, 20]" in f.attrs["config"]
    assert (out / "diagnostics.csv").read_text().startswith("step,time,heat,min,max,err_l2,err_max")


@pytest.mark.parametrize("np_", [1, 3])
def test_mpi_runs_agree_with_serial_run(tmp_path, np_):
    """The same config on 1 and 3 ranks (the latter under mpiexec) writes the same field."""
    args = ["run", "configs/heat3d.toml", "--set", "heat.shape=[10,9,7]", "--set", "time.steps=20",
            "--set", "heat.initial=random"]
    serial = run_solver(args + ["--output", str(tmp_path / "a")])
    parallel = run_solver(args + ["--output", str(tmp_path / "b")], np=np_)
    assert serial.returncode == 0 and parallel.returncode == 0, serial.stderr + parallel.stderr
    with h5py.File(tmp_path / "a/checkpoints/step_000000020.h5") as fa, \
            h5py.File(tmp_path / "b/checkpoints/step_000000020.h5") as fb:
        assert np.array_equal(fa["heat/u"][...], fb["heat/u"][...])
        assert fb.attrs["nranks"] == np_


def test_default_problem_runs_without_arguments(tmp_path):
    r = run_solver(["--set", "time.steps=20"], np=2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1 and runs[0].startswith("default-")
    assert sorted(os.listdir(tmp_path / "runs" / runs[0] / "checkpoints")) == ["step_000000020.h5",
                                                                                 "step_000000020.xdmf"]


BAD_INPUT = [
    ("malformed TOML", "[heat\nshape = [4,4]\n", [], "malformed TOML"),
    ("unknown key", "[heat]\nshpae = [4,4]\n", [], "did you mean heat.shape"),
    ("wrong type", "[time]\nsteps = 'many'\n", [], "time.steps"),
    ("zero size", "[heat]\nshape = [0,4]\n", [], "heat.shape"),
    ("negative size", "[heat]\nshape = [4,-4]\n", [], "heat.shape"),
    ("unstable dt", "[heat]\nshape = [64,64]\n[time]\ndt = 0.01\n", [], "stability limit"),
    ("unknown backend", "", ["--backend", "quantum"], "backend.name"),
    ("bad override", "", ["--set", "heat.shape=[4,"], "--set"),
    ("unknown option", "", ["--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize("np_", [None, 2])
@pytest.mark.parametrize("what, text, extra, fragment", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(tmp_path, np_, what, text, extra, fragment):
    config = _write(tmp_path, text)
    r = run_solver(["run", config, "--output", str(tmp_path / "out"), *extra], np=np_, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    ours = [line for line in r.stderr.splitlines() if line.startswith("solver: error:")]
    assert len(ours) == 1 and fragment in ours[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("np_", [None, 2])
def test_missing_config_file(tmp_path, np_):
    r = run_solver(["run", str(tmp_path / "nope.toml")], np=np_, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("solver: error:") == 1 and "not found" in r.stderr


def test_more_ranks_than_cells_along_an_axis(tmp_path):
    r = run_solver(["run", "--set", "heat.shape=[2,2]", "--output", str(tmp_path / "o")], np=3, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("solver: error:") == 1 and "heat.shape" in r.stderr and "3 ranks" in r.stderr


def test_process_grid_follows_the_domain(tmp_path):
    """[1, 64] on 4 ranks is split along its long axis ([1, 4]), not refused as [2, 2]."""
    args = ["run", "--set", "heat.shape=[1,64]", "--set", "time.steps=10", "--set", "heat.initial=random"]
    serial = run_solver(args + ["--output", str(tmp_path / "a")])
    parallel = run_solver(args + ["--output", str(tmp_path / "b")], np=4)
    assert serial.returncode == 0 and parallel.returncode == 0, serial.stderr + parallel.stderr
    with h5py.File(tmp_path / "a/checkpoints/step_000000010.h5") as fa, \
            h5py.File(tmp_path / "b/checkpoints/step_000000010.h5") as fb:
        assert np.array_equal(fa["heat/u"][...], fb["heat/u"][...])


def test_serial_bad_input_prints_exactly_one_line(tmp_path):
    r = run_solver(["run", _write(tmp_path, "[heat]\nshape = [4, 0]\n")])
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    first = run_solver(["run", "--set", "heat.shape=[8,8]", "--set", "time.steps=5", "--output", str(out)])
    assert first.returncode == 0, first.stderr
    before = {p: (out / "checkpoints" / p).read_bytes() for p in os.listdir(out / "checkpoints")}
    second = run_solver(["run", "--set", "heat.shape=[8,8]", "--set", "time.steps=7", "--output", str(out)])
    assert second.returncode == 2 and "already exists and is not empty" in second.stderr
    after = {p: (out / "checkpoints" / p).read_bytes() for p in os.listdir(out / "checkpoints")}
    assert before == after


def test_info_reports_mpi_and_hdf5():
    r = run_solver(["info"])
    assert r.returncode == 0, r.stderr
    assert "MPI support: True" in r.stdout and "backend numpy: available" in r.stdout
