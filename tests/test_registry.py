"""One place per model: every model package exposes the same names, the
registry builds settings from them, and one validator checks HDF5 input."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from solver import models
from solver.config import ConfigError
from solver.io.inputs import Want, check_file

pytestmark = pytest.mark.timeout(60)

NAMES = ("kind", "DEFAULTS", "validate", "PHYSICS", "datasets", "for_restart", "make",
         "xdmf_grid", "picture", "history_panels")


@pytest.mark.parametrize("kind", models.KINDS)
def test_every_model_package_exposes_the_same_names(kind):
    spec = models.get(kind)
    missing = [name for name in NAMES if not hasattr(spec, name)]
    assert not missing, f"solver.models.{kind} lacks {missing}"
    assert spec.kind == kind
    assert set(spec.PHYSICS) <= set(spec.DEFAULTS)


@pytest.mark.parametrize("kind", models.KINDS)
def test_each_section_comes_from_its_model_and_round_trips(kind):
    settings = models.load_settings(f"[problem]\nkind = '{kind}'\n", "<test>")
    assert settings.model is getattr(settings, kind)
    again = models.load_settings(settings.to_toml(), "<stored>")
    assert again == settings


def test_an_unknown_problem_kind_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"problem.kind: must be one of 'heat', 'nbody'"):
        models.load_settings("[problem]\nkind = 'wave'\n", "<test>")


def test_replace_reaches_a_model_section():
    settings = models.load_settings(None)
    import dataclasses
    changed = settings.replace(heat=dataclasses.replace(settings.heat, seed=7))
    assert changed.heat.seed == 7 and settings.heat.seed == 0


# --- one validator for HDF5 input -------------------------------------------------------
def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return str(path)


PARTICLES = {"nbody/position": Want(("n", 3)), "nbody/velocity": Want(("n", 3)), "nbody/mass": Want(("n",)),
             "nbody/id": Want(("n",), kinds="iu", optional=True)}


def test_named_sizes_bind_across_datasets(tmp_path):
    path = _write(tmp_path / "p.h5", nbody__position=np.zeros((5, 3)), nbody__velocity=np.zeros((5, 3)),
                  nbody__mass=np.ones(5))
    assert check_file(path, "nbody.file", PARTICLES, ours=False).sizes == {"n": 5}


@pytest.mark.parametrize("datasets, fragment", [
    ({"nbody__position": np.zeros((5, 3)), "nbody__velocity": np.zeros((4, 3)), "nbody__mass": np.ones(5)},
     "mismatched arrays"),
    ({"nbody__position": np.zeros((5, 3)), "nbody__mass": np.ones(5)}, "lacks the dataset /nbody/velocity"),
    ({"nbody__position": np.zeros((5, 2)), "nbody__velocity": np.zeros((5, 2)), "nbody__mass": np.ones(5)},
     r"has shape \[5, 2\], expected n x 3"),
    ({"nbody__position": np.array([["a", "b", "c"]] * 2, dtype="S1"), "nbody__velocity": np.zeros((2, 3)),
      "nbody__mass": np.ones(2)}, "does not hold numbers"),
    ({"nbody__position": np.zeros((2, 3)), "nbody__velocity": np.zeros((2, 3)), "nbody__mass": np.ones(2),
      "nbody__id": np.array([0.0, 1.0])}, "/nbody/id in .* does not hold integers"),
    ({"nbody__position": np.zeros((0, 3)), "nbody__velocity": np.zeros((0, 3)), "nbody__mass": np.ones(0)},
     "at least 1"),
])
def test_a_bad_particle_file_is_one_clear_error(tmp_path, datasets, fragment):
    path = _write(tmp_path / "bad.h5", **datasets)
    with pytest.raises(ConfigError, match=fragment) as caught:
        check_file(path, "nbody.file", PARTICLES, ours=False)
    assert str(caught.value).startswith("nbody.file: ")


def test_a_checkpoint_is_required_where_one_is_needed(tmp_path):
    path = _write(tmp_path / "field.h5", heat__u=np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="not a solver checkpoint"):
        check_file(path, "heat.file", {"heat/u": Want((4, 4))})
    with pytest.raises(ConfigError, match="does not exist"):
        check_file(str(tmp_path / "none.h5"), "heat.file")


@pytest.mark.parametrize("attr, value, fragment", [
    ("step", -1, "invalid step"), ("time", np.nan, "invalid time"), ("dt", "x", "invalid dt"),
    ("time_basis", np.array([5.0, 0.0]), "invalid time_basis"), ("format_version", 99, "upgrade solver"),
])
def test_damaged_root_attributes_are_named(tmp_path, attr, value, fragment):
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "solver-checkpoint", "format_version": 1, "problem": "heat", "step": 3,
                        "time": 0.1, "dt": 0.01, "config": "", "nranks": 1})
        f.attrs[attr] = value
        f["heat/u"] = np.zeros((4, 4))
    with pytest.raises(ConfigError, match=fragment):
        check_file(path, "--restart", {"heat/u": Want((4, 4), dtype="<f8")})


def test_an_exact_dtype_is_required_for_a_restart(tmp_path):
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "solver-checkpoint", "format_version": 1, "problem": "heat", "step": 3,
                        "time": 0.1, "dt": 0.01, "config": "", "nranks": 1})
        f["heat/u"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ConfigError, match=r"/heat/u in .* is float32, expected float64 \(damaged checkpoint\)"):
        check_file(path, "--restart", {"heat/u": Want((4, 4), dtype="<f8")})


def test_settings_and_model_packages_load_without_mpi_or_hdf5():
    """The config is read before MPI starts: nothing on that path may start it."""
    import subprocess
    import sys
    code = ("import sys, solver.models as m; m.load_settings(); [m.get(k) for k in m.KINDS]; "
            "print(sorted(n for n in ('mpi4py', 'h5py', 'numba', 'matplotlib') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
