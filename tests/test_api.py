"""The Python API on one rank, in-process as in a notebook: runs, state,
exceptions instead of exits, and a checkpoint restarted through the API."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import solver
from conftest import REPO, clean_env

pytestmark = pytest.mark.timeout(120)

HEAT = os.path.join(REPO, "configs", "heat2d.toml")
SMALL = {"heat.shape": [16, 12], "time.steps": 20}


def heat(tmp_path, name="run", **set_):
    return solver.Simulation.from_toml(HEAT, set={**SMALL, **set_}, output=tmp_path / name, backend="numpy",
                                       quiet=True)


def test_import_solver_starts_nothing_heavy():
    """`import solver` loads neither MPI nor NumPy, HDF5 or Numba (the start-up
    of a notebook or of `python -m solver --help`); MPI starts with the first Simulation."""
    code = ("import sys, solver; heavy = [m for m in ('mpi4py', 'numpy', 'h5py', 'numba') if m in sys.modules]; "
            "print(heavy); solver.Simulation; print('mpi4py' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "False"]


def test_run_field_and_diagnostics(tmp_path):
    with heat(tmp_path) as sim:
        assert (sim.kind, sim.step, sim.time, sim.end_step) == ("heat", 0, 0.0, 20)
        u0 = sim.field()
        summary = sim.run(steps=5)
        assert summary["steps"] == 5 and summary["stopped"] is None
        assert sim.step == 5 and sim.time == pytest.approx(5 * sim.dt, rel=1e-15)
        u = sim.field()
        assert u.shape == (16, 12) and isinstance(u, np.ndarray)
        assert u.max() < u0.max()                         # the sine start decays
        assert np.array_equal(sim.field(gather=True), u)  # one rank: the block is the whole field
        assert sim.block() == (slice(0, 16), slice(0, 12))
        diag = sim.diagnostics()
        assert diag["step"] == 5 and diag["max"] == pytest.approx(u.max())
        assert {"time", "heat", "min", "err_l2"} <= set(diag)
        sim.run()                                          # to the config's end
        assert sim.step == 20
        x, y = sim.coordinates()
        assert x[0] == pytest.approx(0.5 / 16) and len(y) == 12
    with h5py.File(tmp_path / "run" / "checkpoints" / "step_000000020.h5") as f:
        assert f.attrs["step"] == 20 and f["heat/u"].shape == (16, 12)


def test_a_dict_config_and_bodies(tmp_path):
    config = {"problem": {"kind": "nbody"}, "nbody": {"initial": "figure8", "softening": 0.0},
              "time": {"steps": 10, "dt": 1e-3}}
    with solver.Simulation(config, output=tmp_path / "fig8", backend="numpy", quiet=True) as sim:
        start = sim.bodies()
        sim.run()
        b = sim.bodies(gather=True)
        assert list(b["id"]) == [0, 1, 2] and b["position"].shape == (3, 3) and b["mass"].shape == (3,)
        assert not np.array_equal(b["position"], start["position"])
        assert sim.diagnostics()["energy_error"] < 1e-6
        with pytest.raises(TypeError, match="bodies"):
            sim.field()


@pytest.mark.parametrize("kwargs, match", [
    (dict(set={"heat.shape": [0, 4]}), "heat.shape"),
    (dict(set={"heat.shpe": [8, 8]}), "shape"),                  # did you mean
    (dict(set={"time.dt": 1.0}), "stability limit"),
    (dict(backend="nosuch"), "nosuch"),
])
def test_bad_input_raises_config_error_and_leaves_nothing(tmp_path, kwargs, match):
    with pytest.raises(solver.ConfigError, match=match):
        solver.Simulation.from_toml(HEAT, output=tmp_path / "out", quiet=True, **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_config_file_and_dict_raise(tmp_path):
    with pytest.raises(solver.ConfigError, match="not found"):
        solver.Simulation.from_toml(tmp_path / "missing.toml", output=tmp_path / "out")
    with pytest.raises(solver.ConfigError, match="dict of tables"):
        solver.Simulation({"heat": 3}, output=tmp_path / "out")
    with pytest.raises(ValueError):                     # ConfigError is a ValueError
        solver.Simulation({"problem": {"kind": "plasma"}}, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_numerical_failure_is_an_exception_not_an_exit(tmp_path):
    """Bodies that meet without softening raise FloatingPointError (the command
    line's exit status 4); the process goes on, the last good state is kept."""
    path = tmp_path / "collide.h5"
    with h5py.File(path, "w") as f:                 # no attraction: they meet at the origin at step 2
        f["nbody/position"] = np.array([[-1.0, 0, 0], [1.0, 0, 0]])
        f["nbody/velocity"] = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
        f["nbody/mass"] = np.array([0.0, 0.0])
    config = {"problem": {"kind": "nbody"}, "nbody": {"initial": "file", "file": str(path), "softening": 0.0},
              "time": {"dt": 0.5, "steps": 10}, "output": {"checkpoint_every": 1, "keep": 0}}
    sim = solver.Simulation(config, output=tmp_path / "run", backend="numpy", quiet=True)
    with pytest.raises(FloatingPointError, match="same position"):
        sim.run()
    with pytest.raises(RuntimeError, match="restart='latest'"):     # not carried on from a bad state
        sim.run(steps=1)
    sim.close(free=False)
    again = solver.Simulation(restart="latest", output=tmp_path / "run", backend="numpy", quiet=True)
    assert again.step == 1
    again.close()
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step_000000001.h5", "step_000000001.xdmf"]


def test_run_t_end_lands_exactly(tmp_path):
    with heat(tmp_path, **{"time.dt": 5e-4}) as sim:
        sim.run(t_end=0.01)
        assert sim.step == 20 and sim.time == pytest.approx(0.01, rel=1e-12)
        sim.run(t_end=0.0125)
        assert sim.step == 25 and sim.time == pytest.approx(0.0125, rel=1e-12)
        with pytest.raises(ValueError, match="whole number"):
            sim.run(t_end=0.01301)                      # not a whole number of steps ahead
        with pytest.raises(ValueError, match="whole number"):
            sim.run(t_end=0.005)                        # behind
        with pytest.raises(ValueError):
            sim.run(steps=-1)
        assert sim.step == 25


def test_config_t_end_fits_dt_and_run_lands_on_it(tmp_path):
    sim = solver.Simulation.from_toml(HEAT, set={"heat.shape": [16, 12], "time.t_end": 0.0137},
                                      output=tmp_path / "run", backend="numpy", quiet=True)
    with sim:
        sim.run()
        assert sim.time == pytest.approx(0.0137, rel=1e-12) and sim.step == sim.end_step


def test_checkpoint_then_restart_through_the_api(tmp_path):
    sim = heat(tmp_path, "a", **{"heat.initial": "random"})
    assert sim.checkpoint().endswith("step_000000000.h5")          # before any step: step 0
    sim.run(steps=7)
    path = sim.checkpoint()                                        # run() has just written this step
    assert path == sim.last_checkpoint and path.endswith("step_000000007.h5")
    sim.run(steps=6)
    straight = sim.field()
    sim.close()
    branch = solver.Simulation(restart=path, output=tmp_path / "b", backend="numpy", quiet=True)
    assert (branch.step, branch.time) == (7, pytest.approx(7 * branch.dt, rel=1e-15))
    branch.run(steps=6)
    assert np.array_equal(branch.field(), straight)                # bit for bit
    with h5py.File(branch.last_checkpoint) as f:
        assert f.attrs["parent"] == os.path.abspath(path)
    branch.close()
    again = solver.Simulation(restart="latest", output=tmp_path / "a", backend="numpy", quiet=True)
    assert again.step == 13                                        # the run's own newest
    again.close()


def test_a_simulation_that_never_wrote_gives_its_directory_back(tmp_path):
    sim = heat(tmp_path, "unused")
    assert (tmp_path / "unused").is_dir()
    sim.close()
    assert not (tmp_path / "unused").exists()


def test_progress_lines_unless_quiet(tmp_path, capsys):
    with solver.Simulation.from_toml(HEAT, set=SMALL, output=tmp_path / "loud", backend="numpy") as sim:
        sim.run(steps=4)
    out = capsys.readouterr().out
    assert "heat 16x12" in out and "step 4/4" in out and "wrote" in out
    with heat(tmp_path, "quiet") as sim:
        sim.run(steps=4)
    assert capsys.readouterr().out == ""


def test_public_names():
    assert {"Simulation", "ConfigError", "WriterError"} <= set(dir(solver)) and solver.__version__
    with pytest.raises(AttributeError):
        solver.no_such_name


@pytest.mark.parametrize("raised, join_fails", [(KeyboardInterrupt, False), (KeyboardInterrupt, True),
                                                (FloatingPointError, True)])
def test_an_exception_in_run_waits_for_the_write_in_flight_and_is_the_one_raised(tmp_path, monkeypatch,
                                                                               raised, join_fails):
    """run() does not return (or raise) while the background writer still
    writes: a restart made at once in the same directory cannot race with
    it; an exception while waiting does not replace the one raised."""
    import threading

    from solver.io import writer
    if not writer.threads_allowed():
        pytest.skip("no MPI_THREAD_MULTIPLE here: writes are not in the background")
    monkeypatch.setenv("SOLVER_TEST_SLOW_SNAPSHOT", "2")         # the step-0 snapshot is in flight a while
    if join_fails:
        real = writer.CheckpointWriter.join

        def join(self):
            real(self)
            raise RuntimeError("the wait itself failed")
        monkeypatch.setattr(writer.CheckpointWriter, "join", join)
    sim = heat(tmp_path, **{"output.snapshot_every": 1})

    def advance(*args):
        raise raised("injected into the step loop")
    sim.model.advance = advance
    with pytest.raises(raised, match="injected"):
        sim.run()
    assert not [t for t in threading.enumerate() if t.name == "checkpoint-writer" and t.is_alive()]
    assert os.listdir(tmp_path / "run" / "snapshots") == ["snap_000000000.h5"]
    sim.close(free=False)
