"""Every checkpoint restarts, a state that stops being finite ends the run,
input that would overflow is refused up front, and user errors are one line."""
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from conftest import run_solver
from helpers import make_heat

pytestmark = pytest.mark.timeout(240)

SMALL = ["--set", "heat.shape=[32,32]"]


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _one_line(r, code=2):
    assert r.returncode == code, (r.returncode, r.stdout[-800:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("solver:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def _attrs(path):
    with h5py.File(path) as f:
        return {k: f.attrs[k] for k in f.attrs}


def _newest(run):
    d = os.path.join(run, "checkpoints")
    return os.path.join(d, sorted(n for n in os.listdir(d) if n.endswith(".h5"))[-1])


# --- every checkpoint restarts ------------------------------------------------
def test_a_run_ended_by_t_end_restarts_with_a_new_t_end_or_steps(tmp_path):
    run = str(tmp_path / "tt")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.t_end=0.01"]))
    assert _attrs(_newest(run))["time"] == pytest.approx(0.01, rel=1e-12)
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.t_end=0.02"]))
    first = _attrs(_newest(run))
    assert first["time"] == pytest.approx(0.02, rel=1e-12)
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", f"time.steps={first['step'] + 10}"]))
    assert _attrs(_newest(run))["step"] == first["step"] + 10


def test_figure_eight_example_restarts(tmp_path):
    run = str(tmp_path / "f8")
    _ok(run_solver(["run", "configs/nbody_figure8.toml", "--output", run, "--set", "time.t_end=0.5"]))
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.t_end=1.0"]))
    assert _attrs(_newest(run))["time"] == pytest.approx(1.0, rel=1e-12)


def test_time_keeps_running_forward_through_restarts_that_change_dt(tmp_path):
    run = str(tmp_path / "dt")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=100", "--set", "time.dt=1e-4"]))
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=200",
                    "--set", "time.dt=5e-5"]))
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=300",
                    "--set", "time.dt='auto'"]))
    assert _attrs(_newest(run))["time"] == pytest.approx(0.01 + 100 * 5e-5 + 100 * 5e-5, rel=1e-12)


@pytest.mark.parametrize("dt", [1.0, 0.0, float("nan"), -1.0, "string"])
def test_a_restart_checks_the_stored_dt(tmp_path, dt):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    with h5py.File(_newest(run), "r+") as f:
        f.attrs["dt"] = dt
        del f.attrs["attrs_checksum"]         # edited on purpose: the value checks, not the checksum, are tested
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"]))
    assert "dt" in line


@pytest.mark.parametrize("basis", [[np.nan, 0.0], [1.0], "abc", [20.0, 0.0]])
def test_a_restart_checks_the_stored_time_basis(tmp_path, basis):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    with h5py.File(_newest(run), "r+") as f:
        f.attrs["time_basis"] = basis
        del f.attrs["attrs_checksum"]         # edited on purpose: the value checks, not the checksum, are tested
    assert "time_basis" in _one_line(run_solver(["run", "--output", run, "--restart", "latest",
                                                 "--set", "time.steps=20"]))


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_goes_on(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=20", "--set", "output.checkpoint_every=10"]))
    newest = _newest(run)
    with open(newest, "r+b") as fh:
        fh.truncate(100)
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=30"]))
    assert "moved aside" in r.stderr and os.path.exists(newest + ".damaged")
    assert _attrs(_newest(run))["step"] == 30


def test_set_output_dir_on_a_restart_is_a_branch_into_it(tmp_path):
    run, branch = str(tmp_path / "run"), str(tmp_path / "branch")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    _ok(run_solver(["run", "--restart", run, "--set", f"output.dir='{branch}'", "--set", "time.steps=15"]))
    assert _attrs(_newest(branch))["step"] == 15 and _attrs(_newest(run))["step"] == 10


def test_a_diagnostics_file_without_a_header_is_moved_aside(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    open(os.path.join(run, "diagnostics.csv"), "w").close()
    _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20"]))
    with open(os.path.join(run, "diagnostics.csv")) as fh:
        assert fh.readline().startswith("step,time,heat")
    assert os.path.exists(os.path.join(run, "diagnostics.csv.damaged"))


@pytest.mark.parametrize("change", ["heat.modes=[2,1]", "heat.initial='gaussian'"])
def test_a_restart_cannot_change_the_start_the_analytic_error_refers_to(tmp_path, change):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=10"]))
    line = _one_line(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=20",
                                 "--set", change]))
    assert change.split("=")[0] in line


# --- a state that stops being finite --------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_state_that_stops_being_finite_ends_the_run_and_keeps_good_checkpoints(tmp_path, backend):
    from mpi4py import MPI

    from solver.driver import run
    from solver.triggers import Triggers
    model = make_heat(MPI.COMM_SELF, "heat.shape=[16,16]", "time.steps=400", "output.checkpoint_every=10",
                      "output.keep=0", backend=backend)
    real_advance = model.advance

    def advance(max_steps, timers=None):          # a NaN appears after step 25
        real_advance(max_steps, timers)
        if model.step_count >= 25:
            model._u[model._inner][5, 5] = np.nan
    model.advance = advance
    out = str(tmp_path / "run")
    os.makedirs(os.path.join(out, "checkpoints"))
    with pytest.raises(FloatingPointError, match="stopped being finite by step"):
        run(model, model.settings, out, MPI.COMM_SELF, Triggers(), quiet=True)
    steps = sorted(int(n[5:14]) for n in os.listdir(os.path.join(out, "checkpoints")) if n.endswith(".h5"))
    assert steps == [10, 20]
    for step in steps:
        with h5py.File(os.path.join(out, "checkpoints", f"step_{step:09d}.h5")) as f:
            assert np.isfinite(f["heat/u"][...]).all()


def test_coincident_bodies_mid_run_exit_4_with_one_line(tmp_path):
    path = tmp_path / "collide.h5"
    with h5py.File(path, "w") as f:
        f["nbody/position"] = np.array([[-1.0, 0, 0], [1.0, 0, 0]])
        f["nbody/velocity"] = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
        f["nbody/mass"] = np.array([0.0, 0.0])     # no attraction: they meet at the origin at t = 1
    r = run_solver(["run", "--output", str(tmp_path / "run"), "--set", "problem.kind='nbody'",
                    "--set", "nbody.initial='file'", "--set", f"nbody.file='{path}'", "--set", "nbody.softening=0",
                    "--set", "time.dt=0.25", "--set", "time.steps=8", "--set", "output.log_every=1"])
    assert "same position" in _one_line(r, code=4)


def test_an_unresolved_orbit_warns_in_its_lines_and_at_the_end(tmp_path):
    r = _ok(run_solver(["run", "--output", str(tmp_path / "k"), "--set", "problem.kind='nbody'",
                        "--set", "nbody.initial='kepler'", "--set", "nbody.eccentricity=0.999",
                        "--set", "nbody.softening=0", "--set", "time.dt=0.05", "--set", "time.steps=200"]))
    lines = r.stdout.splitlines()
    assert any(line.startswith("step ") and "WARNING: energy error" in line for line in lines)
    assert lines[-1].startswith("warning: energy error") and "nbody.energy_warning" in lines[-1]


# --- input that must overflow, or cannot fit, is refused up front ----------------
@pytest.mark.parametrize("overrides", [
    ["heat.diffusivity=1e-320"], ["heat.diffusivity=1e308"], ["heat.boundary_value=1e308"],
    ["heat.extent=1e-200"], ["heat.extent=1e200"], ["heat.modes=[33,1]"], ["heat.modes=[99999999999999999999,1]"],
    ["heat.boundary='periodic'", "heat.modes=[17,1]"], ["heat.shape=[200000,200000]"],
    ["heat.shape=[36000,36000]"], ["time.dt=1e-320"],
    ["problem.kind='nbody'", "nbody.G=1e308"], ["problem.kind='nbody'", "nbody.softening=1e200"],
    ["problem.kind='nbody'", "nbody.n=10000000000"], ["heat.extent=1e100", "heat.boundary_value=1e300"],
    ["time.t_end=1e300"],
])
def test_input_that_would_overflow_or_not_fit_is_one_line(tmp_path, overrides):
    out = tmp_path / "out"
    args = ["run", "--output", str(out), "--set", "heat.shape=[32,32]"]
    for item in overrides:
        args += ["--set", item]
    line = _one_line(run_solver(args))
    assert any(item.split("=")[0] in line for item in overrides) or "GiB" in line
    assert not out.exists()


def test_a_huge_fused_steps_is_capped_not_allocated(tmp_path):
    _ok(run_solver(["run", "--output", str(tmp_path / "f"), *SMALL, "--set", "heat.fused_steps=1000000",
                    "--set", "time.steps=7"]))


def test_a_start_file_with_a_nan_or_strings_is_refused(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=2"]))
    bad = tmp_path / "nan.h5"
    shutil.copy(_newest(run), bad)
    with h5py.File(bad, "r+") as f:
        f["heat/u"][3, 4] = np.nan
        for key in ("checksum", "checksum_algorithm"):      # an edited file, as one without checksums
            del f["heat/u"].attrs[key]
    line = _one_line(run_solver(["run", "--output", str(tmp_path / "a"), *SMALL, "--set", "heat.initial='file'",
                                 "--set", f"heat.file='{bad}'"]))
    assert "not finite" in line
    words = tmp_path / "words.h5"
    with h5py.File(words, "w") as f:
        f["nbody/position"] = np.zeros((2, 3))
        f["nbody/velocity"] = np.zeros((2, 3))
        f["nbody/mass"] = np.array([b"one", b"two"])
    line = _one_line(run_solver(["run", "--output", str(tmp_path / "b"), "--set", "problem.kind='nbody'",
                                 "--set", "nbody.initial='file'", "--set", f"nbody.file='{words}'"]))
    assert "/nbody/mass" in line


# --- user errors are one line ------------------------------------------------------
def test_an_output_directory_that_cannot_be_created_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    target = str(ro / "run") if mounted else "/sys/solver-test-run"
    try:
        line = _one_line(run_solver(["run", "--output", target, *SMALL, "--set", "time.steps=2"]))
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
    assert "cannot create the run directory" in line


def test_bench_io_with_a_bad_shape_is_one_line():
    _one_line(run_solver(["bench", "io", "--shape", "abc"]))


def test_plot_reads_a_history_whose_last_line_was_cut(tmp_path):
    pytest.importorskip("matplotlib")
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=20"]))
    with open(os.path.join(run, "diagnostics.csv"), "a") as fh:
        fh.write("30,0.0")
    r = _ok(run_solver(["plot", run]))
    assert "history.png" in r.stdout


def test_a_set_with_a_line_break_is_refused():
    line = _one_line(run_solver(["run", "--set", "time.steps=5\nheat.shape = [8, 8]"]))
    assert "one KEY=VALUE per --set" in line


def test_an_output_path_with_a_line_break_still_restarts(tmp_path):
    run = str(tmp_path / "two\nlines")
    _ok(run_solver(["run", "--output", run, *SMALL, "--set", "time.steps=4"]))
    r = _ok(run_solver(["run", "--output", run, "--restart", "latest", "--set", "time.steps=8"]))
    assert "written by 1 rank)" in r.stdout
    assert _attrs(_newest(run))["step"] == 8


def test_xdmf_names_the_precision_of_float32_bodies(tmp_path):
    run = str(tmp_path / "run")
    _ok(run_solver(["run", "--output", run, "--set", "problem.kind='nbody'", "--set", "nbody.n=16",
                    "--set", "nbody.precision='float32'", "--set", "time.steps=2"]))
    text = open(_newest(run)[:-3] + ".xdmf").read()
    assert 'Precision="4" Format="HDF">step_000000002.h5:/nbody/position' in text
    assert 'Precision="8"' not in text.split("<Geometry")[1].split("</Geometry>")[0]


# --- never hang ----------------------------------------------------------------------
def test_a_status_port_in_use_is_one_line_before_anything_is_written(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "run"
        line = _one_line(run_solver(["run", "--output", str(out), *SMALL, "--set", f"output.status_port={port}"]))
    assert "output.status_port" in line and not out.exists()


def test_the_status_endpoint_drops_clients_beyond_its_limit(tmp_path):
    import socket
    import time

    from solver.io.aio import AsyncHelper
    from solver.triggers import Triggers
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    helper = AsyncHelper(str(tmp_path), Triggers(), None, status_port=port)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(AsyncHelper.MAX_CLIENTS)]
    try:
        deadline = time.monotonic() + 30
        while helper._clients < AsyncHelper.MAX_CLIENTS and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(30)
        assert extra.recv(100) == b""                   # closed at once, not held
        extra.close()
    finally:
        for conn in idle:
            conn.close()
        helper.close()


def test_without_thread_multiple_checkpoints_are_written_inline(tmp_path, monkeypatch, capsys):
    from mpi4py import MPI

    from solver.io import writer
    monkeypatch.setattr(writer.MPI, "Query_thread", lambda: MPI.THREAD_SERIALIZED)
    monkeypatch.setattr(writer, "_warned_threads", False)
    w = writer.CheckpointWriter(MPI.COMM_SELF, str(tmp_path), background=True)
    assert not w.background
    assert "MPI_THREAD_MULTIPLE" in capsys.readouterr().err
    w.close()


# --- messages and pictures ---------------------------------------------------------------
def test_a_bad_value_says_whether_it_came_from_set_or_the_file(tmp_path):
    line = _one_line(run_solver(["run", "--set", "heat.shape=[0,4]"]))
    assert line.endswith("(from --set heat.shape=...)")
    config = tmp_path / "bad.toml"
    config.write_text("[heat]\nshape = [0, 4]\n")
    assert _one_line(run_solver(["run", str(config)])).endswith(f"(in {config})")


def test_nbody_n_that_a_start_ignores_is_said(tmp_path):
    r = _ok(run_solver(["run", "--output", str(tmp_path / "f8"), "--set", "problem.kind='nbody'",
                        "--set", "nbody.initial='figure8'", "--set", "nbody.n=10", "--set", "time.steps=2"]))
    assert "warning: nbody.n = 10 is ignored: the 'figure8' start has 3 bodies" in r.stderr
