"""A user's own start field, D and Q through every door: plain HDF5 files
and .npy files, read on 1, 3 and 4 ranks to the same run; a bad field is one
line and exit 2 with nothing written; a restart from a changed field is
refused, and one from the same fields continues bit for bit."""
import os

import h5py
import numpy as np
import pytest

from conftest import run_solver
from solver.backends import status

pytestmark = pytest.mark.timeout(300)
SHAPE = [23, 17]
BASE = ["run", "--set", f"heat.shape={SHAPE}", "--set", "time.steps=12", "--set", "output.log_every=4",
        "--set", "heat.boundary=[['dirichlet','robin'],['neumann','neumann']]",
        "--set", "heat.boundary_value=[[1.0,0.2],[0.5,-0.5]]", "--set", "heat.boundary_transfer=[[0,3.0],[0,0]]"]


def _ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


def _final(run_dir, step=12):
    with h5py.File(os.path.join(run_dir, "checkpoints", f"step_{step:09d}.h5"), "r") as f:
        return f["heat/u"][...], dict(f.attrs)


def _one_line(r):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("solver: error: "), r.stderr
    return lines[0]


@pytest.fixture
def fields(tmp_path):
    """start.h5 (dataset /temperature, and another of another shape), start.npy, D.npy, Q in materials.h5."""
    rng = np.random.default_rng(2)
    start = rng.uniform(0, 1, SHAPE)
    with h5py.File(tmp_path / "start.h5", "w") as f:
        f["temperature"] = start
        f["meta/scale"] = np.ones(3)
    np.save(tmp_path / "start.npy", start)
    np.save(tmp_path / "D.npy", rng.uniform(0.5, 2.0, SHAPE))
    with h5py.File(tmp_path / "materials.h5", "w") as f:
        f["Q"] = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    return tmp_path


def _physics(d):
    return ["--set", f"heat.diffusivity='{d / 'D.npy'}'", "--set", f"heat.source='{d / 'materials.h5'}:Q'"]


@pytest.mark.parametrize("start", ["start.h5", "start.h5:temperature", "start.npy"])
def test_a_start_file_gives_the_same_run_on_1_3_and_4_ranks(fields, start):
    args = BASE + _physics(fields) + ["--set", "heat.initial=file", "--set", f"heat.file='{fields / start}'"]
    results = []
    for np_ in (None, 3, 4):
        out = fields / f"run{np_}"
        r = _ok(run_solver(args + ["--output", str(out)], np=np_))
        assert "heat_in=" in r.stdout and "balance=" in r.stdout
        results.append(_final(out)[0])
    assert all(np.array_equal(results[0], other) for other in results[1:])


def test_a_changed_field_is_refused_on_restart_and_the_same_one_continues_bitwise(fields):
    args = BASE + _physics(fields) + ["--set", "heat.initial=random"]
    straight, split = fields / "straight", fields / "split"
    _ok(run_solver(args + ["--output", str(straight)], np=2))
    _ok(run_solver(args + ["--output", str(split), "--set", "time.steps=5"], np=2))
    _, attrs = _final(split, 5)
    assert "D.npy" in attrs["heat_fields"]
    original = np.load(fields / "D.npy")
    changed = original.copy()
    changed[11, 8] = np.nextafter(changed[11, 8], 3.0)                   # one value, by one unit in the last place
    np.save(fields / "D.npy", changed)
    line = _one_line(run_solver(args + ["--output", str(split), "--restart", "latest"], np=3))
    assert "heat.diffusivity" in line and "D.npy" in line and "a restart cannot change it" in line
    assert sorted(os.listdir(split / "checkpoints")) == ["step_000000005.h5", "step_000000005.xdmf"]
    np.save(fields / "D.npy", original)                                    # the same values again
    backend = ["--backend", "opencl"] if status()["opencl"][0] else []
    _ok(run_solver(args + ["--output", str(split), "--restart", "latest", *backend], np=3))
    a, attrs_a = _final(straight)
    b, attrs_b = _final(split)
    assert np.array_equal(a, b)
    assert attrs_b["heat_balance"][1] == pytest.approx(attrs_a["heat_balance"][1], rel=1e-12)


BAD_D = {
    "zero": lambda a: a.__setitem__((3, 4), 0.0),
    "negative": lambda a: a.__setitem__((0, 0), -1.0),
    "nan": lambda a: a.__setitem__((22, 16), np.nan),
}


@pytest.mark.parametrize("np_", [None, 3])
@pytest.mark.parametrize("bad", [*BAD_D, "shape", "text", "dataset", "several"])
def test_a_bad_diffusivity_is_one_line_and_nothing_is_written(fields, bad, np_):
    D = np.load(fields / "D.npy")
    spec = str(fields / "bad.npy")
    if bad in BAD_D:
        BAD_D[bad](D)
        np.save(spec, D)
        expected = "holds values that are not positive (> 0) finite numbers"
    elif bad == "shape":
        np.save(spec, D[:, :-1])
        expected = "has shape [23, 16], expected 23 x 17"
    elif bad == "text":
        spec = str(fields / "bad.h5")
        (fields / "bad.h5").write_text("not HDF5")
        expected = "is neither an HDF5 file nor a .npy file"
    elif bad == "dataset":
        spec = f"{fields / 'materials.h5'}:D"
        expected = "has no dataset /D (it holds /Q)"
    else:
        with h5py.File(fields / "two.h5", "w") as f:
            f["a"], f["b"] = D, D
        spec = str(fields / "two.h5")
        expected = "holds several datasets of shape 23 x 17"
    out = fields / "out"
    line = _one_line(run_solver(BASE + ["--set", f"heat.diffusivity='{spec}'", "--output", str(out)], np=np_))
    assert "heat.diffusivity" in line and expected in line, line
    assert not out.exists()


def test_a_start_file_of_the_wrong_shape_or_kind_names_file_dataset_and_expectation(fields):
    with h5py.File(fields / "small.h5", "w") as f:
        f["u"] = np.zeros((5, 5))
    line = _one_line(run_solver(BASE + ["--set", "heat.initial=file", "--set", f"heat.file='{fields / 'small.h5'}:u'",
                                        "--output", str(fields / "o")]))
    assert "heat.file" in line and "small.h5" in line and "/u" in line and "expected 23 x 17" in line
    with h5py.File(fields / "strings.h5", "w") as f:
        f["u"] = np.array([[b"x"] * 17] * 23)
    line = _one_line(run_solver(BASE + ["--set", "heat.initial=file",
                                        "--set", f"heat.file='{fields / 'strings.h5'}:u'", "--output", str(fields / "o")]))
    assert "does not hold numbers" in line and "/u" in line
    np.save(fields / "objects.npy", np.array([{}] * 3, dtype=object))
    line = _one_line(run_solver(BASE + ["--set", "heat.initial=file", "--set", f"heat.file='{fields / 'objects.npy'}'",
                                        "--output", str(fields / "o")]))
    assert "objects.npy" in line and "cannot be read as a NumPy .npy file" in line
    assert not (fields / "o").exists()
