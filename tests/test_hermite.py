"""Fourth-order Hermite with block time steps (nbody.integrator = "hermite"):
its kernels against direct sums, its order, its steps, and problems with
close encounters against REBOUND's IAS15."""
import math
import os
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from conftest import run_solver
from solver.backends import get_backend, status
from solver.backends import numpy_ as ref
from solver.models import load_settings
from solver.models.nbody import make
from solver.models.nbody.hermite import MAX_LEVEL
from solver.models.nbody.initial import FIGURE8_PERIOD, figure8, plummer_binary, pythagorean

pytestmark = pytest.mark.timeout(300)
SELF = MPI.COMM_SELF
BACKENDS = [b for b in ("cpu", "opencl") if status()[b][0]]
needs_cpu = pytest.mark.skipif(not status()["cpu"][0], reason="no numba")


def hermite(*overrides, backend="numpy", comm=SELF):
    settings = load_settings("[problem]\nkind = 'nbody'\n", "<test>", ["nbody.integrator=hermite", *overrides])
    model = make(settings, comm, get_backend(backend), None)
    model.set_initial()
    return model


def run(model, every=None):
    """To the end; the largest relative energy error seen every ``every`` steps."""
    worst = 0.0
    while model.step_count < model.end_step:
        model.step()
        if every and model.step_count % every == 0:
            worst = max(worst, model.diagnostics()["energy_error"])
    return worst


def _direct(x, v, m, targets, eps2, G):
    acc, jerk = np.zeros((len(targets), 3)), np.zeros((len(targets), 3))
    for q, i in enumerate(targets):
        for j in range(len(x)):
            if i != j:
                d, w = x[j] - x[i], v[j] - v[i]
                r2 = d @ d + eps2
                acc[q] += G * m[j] * d / r2 ** 1.5
                jerk[q] += G * m[j] * (w - 3 * (d @ w) / r2 * d) / r2 ** 1.5
    return acc, jerk


@pytest.mark.parametrize("eps2", [0.01, 0.0])
def test_force_and_jerk_match_a_direct_double_loop(eps2):
    rng = np.random.default_rng(3)
    x, v, m = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), rng.uniform(0.5, 1.5, 40)
    targets = np.array([0, 7, 8, 39, 21])
    acc, jerk = np.zeros((5, 3)), np.zeros((5, 3))
    assert ref.nbody_accel_jerk(x[targets], v[targets], targets, x, v, m, 0, eps2, 1.3, acc, jerk) == 0
    expect_a, expect_j = _direct(x, v, m, targets, eps2, 1.3)
    assert np.allclose(acc, expect_a, rtol=1e-13, atol=0) and np.allclose(jerk, expect_j, rtol=1e-12, atol=1e-14)


def test_jerk_is_the_time_derivative_of_the_force():
    """(a(x + v d) - a(x - v d)) / 2d, every body moving: the jerk to O(d^2)."""
    rng = np.random.default_rng(4)
    x, v, m = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), rng.uniform(0.5, 1.5, 30)
    ids = np.arange(30)
    acc, jerk = np.zeros((30, 3)), np.zeros((30, 3))
    ref.nbody_accel_jerk(x, v, ids, x, v, m, 0, 0.01, 1.0, acc, jerk)
    d = 1e-5
    ahead, behind = np.zeros((30, 3)), np.zeros((30, 3))
    ref.nbody_accel(x + d * v, x + d * v, m, 0, 0.01, 1.0, ahead, i0=0)
    ref.nbody_accel(x - d * v, x - d * v, m, 0, 0.01, 1.0, behind, i0=0)
    assert np.abs((ahead - behind) / (2 * d) - jerk).max() < 1e-6 * np.abs(jerk).max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_force_and_jerk_on_every_backend_agree_with_the_reference(backend):
    """Sources from id 100 (tiles cut at global multiples of 256), any targets."""
    mod = get_backend(backend)
    rng = np.random.default_rng(5)
    x, v, m = rng.normal(size=(700, 3)), rng.normal(size=(700, 3)), rng.uniform(0.1, 1.0, 700)
    targets = np.sort(rng.choice(700, 90, replace=False))
    out = {}
    for name, kernels in (("ours", mod), ("ref", ref)):
        acc, jerk = np.zeros((90, 3)), np.zeros((90, 3))
        assert kernels.nbody_accel_jerk(x[targets], v[targets], targets + 100, x, v, m, 100, 1e-4, 1.0, acc,
                                        jerk) == 0
        out[name] = acc, jerk
    for ours, theirs in zip(out["ours"], out["ref"]):
        assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()
    # without softening: pairs at one point are left out and counted, self-pairs are not
    y = np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0]])
    acc, jerk = np.zeros((3, 3)), np.zeros((3, 3))
    assert mod.nbody_accel_jerk(y, np.zeros((3, 3)), np.arange(3), y, np.zeros((3, 3)), np.ones(3), 0, 0.0, 1.0,
                                acc, jerk) == 2
    assert np.isfinite(acc).all() and np.isfinite(jerk).all()


@pytest.mark.skipif(not status()["opencl"][0], reason="no OpenCL device")
def test_float32_force_and_jerk_on_the_device_agree_within_1e_5():
    """The kernel builds in float32 too (nvcc compiles both); the integrator
    itself needs float64 (nbody.precision = 'float32' is refused with Hermite)."""
    opencl = get_backend("opencl")
    rng = np.random.default_rng(6)
    x, v, m = rng.normal(size=(600, 3)), rng.normal(size=(600, 3)), rng.uniform(0.1, 1.0, 600)
    ids = np.arange(600)
    out = []
    for dtype, kernels in ((np.float32, opencl), (np.float64, ref)):
        acc, jerk = np.zeros((600, 3), dtype), np.zeros((600, 3), dtype)
        xs, vs, ms = x.astype(dtype), v.astype(dtype), m.astype(dtype)
        kernels.nbody_accel_jerk(xs, vs, ids, xs, vs, ms, 0, 1e-2, 1.0, acc, jerk)
        out.append((acc, jerk))
    for ours, theirs in zip(*out):
        assert ours.dtype == np.float32 and np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_fixed_steps_are_fourth_order_on_a_kepler_orbit():
    """Every body at time.dt (nbody.adaptive = false), e = 0.5, one period:
    halving the step lowers the largest energy error along the orbit 16x
    (measured 15.4); the error left after a whole period falls faster
    (about 32x: the corrector's leading error cancels over a closed orbit)."""
    worst, end = [], []
    for k in (512, 1024):
        model = hermite("nbody.initial=kepler", "nbody.softening=0.0", "nbody.adaptive=false",
                        f"time.dt={2 * math.pi / k!r}", f"time.t_end={2 * math.pi!r}")
        worst.append(run(model, every=1))
        end.append(model.diagnostics()["energy_error"])
    assert 12 < worst[0] / worst[1] < 20, worst
    assert 24 < end[0] / end[1] < 40, end


def test_adaptive_steps_scale_as_the_square_root_of_eta():
    """Softened Plummer spheres (no close encounters), eta = 0.04, 0.02, 0.01.
    Every halving of eta makes each body take sqrt(2) more steps.  The energy
    error falls as the step to the fourth or fifth power (see the Kepler
    test), so as eta^2 to eta^2.5, 16 to 32 times over a factor 4 in eta
    (measured 24 to 49 over four seeds: steps are powers of two, so a
    single halving of eta moves some bodies a level and not others, and its
    ratio scatters from 2 to 16)."""
    steps, drops = [], []
    for seed in range(4):
        errors, counts = [], []
        for eta in (0.04, 0.02, 0.01):
            model = hermite("nbody.n=256", f"nbody.seed={seed}", "nbody.softening=0.1", "time.dt=0.0625",
                            "time.t_end=1", f"nbody.eta={eta}")
            errors.append(run(model, every=1))
            counts.append(model.stats["active"])
        steps += [counts[1] / counts[0], counts[2] / counts[1]]
        drops.append(errors[0] / errors[2])
    assert all(1.3 < r < 1.5 for r in steps), steps
    assert all(12 < r < 100 for r in drops), drops
    assert 16 < math.exp(np.mean(np.log(drops))) < 64, drops


def _two_body_energy(x, v, m, i, k):
    d, w = x[i] - x[k], v[i] - v[k]
    mu = m[i] * m[k] / (m[i] + m[k])
    return 0.5 * mu * (w @ w) - m[i] * m[k] / np.linalg.norm(d)


@needs_cpu
def test_pythagorean_three_body_agrees_with_ias15():
    """Burrau's problem to t = 70 without softening: masses 4 and 5 end as a
    binary and mass 3 escapes, in the direction REBOUND's IAS15 finds
    (within 5 degrees), with a relative energy error below 1e-6."""
    rebound = pytest.importorskip("rebound")
    model = hermite("nbody.initial=pythagorean", "nbody.softening=0.0", "nbody.eta=1e-4", "time.dt=0.0625",
                    "time.t_end=70", backend="cpu")
    x0, v0, m = pythagorean()
    assert np.array_equal(model.x, x0) and np.array_equal(model.m, m)
    worst = run(model, every=16)
    x, v = model.x, model.v
    assert max(worst, model.diagnostics()["energy_error"]) < 1e-6
    assert _two_body_energy(x, v, m, 1, 2) < 0                        # the binary
    centre = (m[1] * x[1] + m[2] * x[2]) / (m[1] + m[2])
    drift = (m[1] * v[1] + m[2] * v[2]) / (m[1] + m[2])
    mu = m[0] * (m[1] + m[2]) / m.sum()
    assert 0.5 * mu * np.sum((v[0] - drift) ** 2) - m[0] * (m[1] + m[2]) / np.linalg.norm(x[0] - centre) > 0
    sim = rebound.Simulation()
    sim.G, sim.integrator = 1.0, "ias15"
    for k in range(3):
        sim.add(m=m[k], x=x0[k, 0], y=x0[k, 1], z=x0[k, 2])
    sim.integrate(70.0, exact_finish_time=1)
    theirs = np.array([sim.particles[0].vx, sim.particles[0].vy, sim.particles[0].vz])
    angle = math.degrees(math.acos(np.clip(theirs @ v[0] / np.linalg.norm(theirs) / np.linalg.norm(v[0]), -1, 1)))
    assert angle < 5, angle


@needs_cpu
@pytest.mark.slow
def test_plummer_1024_keeps_its_energy_over_ten_time_units():
    """N = 1024, softening 1/N, eta = 0.02, to t = 10: below 1e-5 (measured 5e-8)."""
    model = hermite("nbody.n=1024", "nbody.seed=1", f"nbody.softening={1 / 1024!r}", "time.dt=0.0625",
                    "time.t_end=10", backend="cpu")
    assert run(model, every=16) < 1e-5


def test_figure_eight_and_kepler_stay_as_they_are():
    model = hermite("nbody.initial=figure8", "nbody.softening=0.0", f"time.t_end={FIGURE8_PERIOD}",
                    "time.dt=0.0625", "nbody.eta=0.001")
    assert run(model, every=1) < 1e-8
    assert abs(model.time - FIGURE8_PERIOD) < 1e-12 and np.abs(model.x - figure8()[0]).max() < 1e-7
    model = hermite("nbody.initial=kepler", "nbody.softening=0.0", "nbody.eta=0.0005", "time.dt=0.0625",
                    f"time.t_end={2 * math.pi!r}")
    assert run(model, every=1) < 1e-8
    assert np.abs(model.x - [[-0.25, 0, 0], [0.25, 0, 0]]).max() < 1e-7      # back at pericentre after a period


def test_plummer_binary_start():
    """Bodies 0 and 1 are a binary of binding energy 10 kT (kT = 1 / (6 n)),
    semi-major axis 3 / (10 n) and the asked eccentricity; all masses 1/n."""
    n = 500
    x, v, m = plummer_binary(n, 2, 0.5)
    assert np.allclose(m, 1 / n) and abs(m.sum() - 1) < 1e-12
    assert np.abs(m @ x).max() < 1e-15 and np.abs(m @ v).max() < 1e-15
    energy = _two_body_energy(x, v, m, 0, 1)
    assert energy == pytest.approx(-10 / (6 * n), rel=1e-9)
    a = m[0] * m[1] / (2 * -energy)
    assert a == pytest.approx(3 / (10 * n), rel=1e-9)
    assert np.linalg.norm(x[0] - x[1]) == pytest.approx(a * 1.5, rel=1e-9)            # apocentre


def test_every_body_meets_at_each_step_and_diagnostics_say_how():
    model = hermite("nbody.initial=plummer_binary", "nbody.n=64", "nbody.softening=1e-5", "time.dt=0.0625",
                    "time.steps=2")
    start = model.diagnostics()
    assert start["block_steps"] == 0 and start["min_step"] < model.dt / 2 ** 6        # the binary's step
    model.step()
    d = model.diagnostics()
    assert d["block_steps"] >= 2 ** 6 and 0 < d["active_fraction"] < 0.5
    assert d["time"] == model.dt and d["energy_error"] < 1e-4


@needs_cpu
def test_one_call_per_block_equals_the_block_steps_one_by_one():
    """The cpu backend's fused block (one rank) against its own kernels
    called block step by block step (the path of several ranks): bitwise."""
    args = ("nbody.initial=plummer_binary", "nbody.n=200", "time.dt=0.0625", "time.steps=3", "nbody.softening=0.0")
    fused = hermite(*args, backend="cpu")
    stepwise = hermite(*args, backend="cpu")
    stepwise.backend = SimpleNamespace(**{k: getattr(stepwise.backend, k) for k in dir(stepwise.backend)
                                          if k != "hermite_block" and not k.startswith("__")})
    run(fused)
    run(stepwise)
    assert np.array_equal(fused.x, stepwise.x) and np.array_equal(fused.level, stepwise.level)
    assert fused.stats == stepwise.stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_trajectories_on_every_backend_follow_the_reference(backend):
    args = ("nbody.n=300", "nbody.seed=4", "time.dt=0.03125", "time.steps=8")
    a, b = hermite(*args, backend=backend), hermite(*args)
    run(a)
    run(b)
    assert np.abs(a.x - b.x).max() <= 1e-10 * np.abs(b.x).max()


# --- from the command line ---------------------------------------------------------
PLUMMER = ["run", "configs/nbody_plummer.toml", "--set", "nbody.n=200", "--set", "nbody.integrator='hermite'",
           "--set", "time.dt=0.03125", "--set", "output.checkpoint_every=0", "--set", "output.log_every=1000"]


def _ckpt(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"step_{step:09d}.h5")


@pytest.mark.parametrize("ranks", [None, 2])
def test_restart_is_bitwise_on_the_same_rank_count(tmp_path, ranks):
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_solver(PLUMMER + ["--set", "time.steps=12", "--output", straight], np=ranks).returncode == 0
    assert run_solver(PLUMMER + ["--set", "time.steps=5", "--output", split], np=ranks).returncode == 0
    r = run_solver(PLUMMER + ["--set", "time.steps=12", "--output", split, "--restart", "latest"], np=ranks)
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(straight, 12), "r") as fa, h5py.File(_ckpt(split, 12), "r") as fb:
        for name in ("position", "velocity", "acceleration", "jerk", "dt", "time"):
            assert np.array_equal(fa[f"nbody/{name}"][...], fb[f"nbody/{name}"][...]), name
        assert fa.attrs["block_steps"] == fb.attrs["block_steps"] > 12
        assert np.all(fa["nbody/time"][...] == fa.attrs["time"])
        steps = fa["nbody/dt"][...]
        assert np.all(fa.attrs["dt"] / steps == 2.0 ** np.round(np.log2(fa.attrs["dt"] / steps)))   # powers of two


def test_diagnostics_file_has_the_block_step_columns(tmp_path):
    out = str(tmp_path / "run")
    r = run_solver(PLUMMER + ["--set", "time.steps=4", "--set", "output.log_every=2", "--output", out])
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "diagnostics.csv")) as fh:
        header = fh.readline().strip().split(",")
    assert {"energy_error", "block_steps", "active_fraction", "min_step"} <= set(header)
    assert "Hermite" in r.stdout


def test_a_collision_without_softening_stops_with_exit_4(tmp_path):
    """Two bodies falling onto each other from rest (they meet at t = pi/4):
    the steps shrink until one needs less than time.dt / 2^52; the run stops
    with one line and exit 4, and its checkpoints end before the collision."""
    start = str(tmp_path / "pair.h5")
    with h5py.File(start, "w") as f:
        f["nbody/position"] = [[-0.5, 0, 0], [0.5, 0, 0]]
        f["nbody/velocity"] = np.zeros((2, 3))
        f["nbody/mass"] = [1.0, 1.0]
    out = str(tmp_path / "run")
    r = run_solver(["run", "--set", "problem.kind='nbody'", "--set", "nbody.initial='file'", "--set",
                    f"nbody.file='{start}'", "--set", "nbody.integrator='hermite'", "--set", "nbody.softening=0.0",
                    "--set", "time.dt=0.0625", "--set", "time.steps=32", "--set", "output.checkpoint_every=4",
                    "--output", out])
    assert r.returncode == 4, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"time.dt / 2^{MAX_LEVEL}" in lines[0] and "softening" in lines[0], r.stderr
    kept = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert kept[-1] == "step_000000012.xdmf" and "step_000000012.h5" in kept       # t = 0.75 < pi/4
    with h5py.File(_ckpt(out, 12), "r") as f:
        assert np.isfinite(f["nbody/position"][...]).all()


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "nbody.precision='float32'"], "nbody.precision = 'float64'"),
    (["--set", "nbody.eta=0"], "nbody.eta"),
    (["--set", "nbody.eta=2"], "nbody.eta"),
    (["--set", "nbody.integrator='rk4'"], "nbody.integrator"),
])
def test_bad_hermite_settings_are_one_line_and_exit_2(tmp_path, extra, fragment):
    out = tmp_path / "out"
    r = run_solver(PLUMMER + ["--set", "time.steps=2", *extra, "--output", str(out)], timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    ours = [line for line in r.stderr.splitlines() if line.startswith("solver: error:")]
    assert len(ours) == 1 and fragment in ours[0], r.stderr
    assert not out.exists()


@needs_cpu
def test_bench_reports_hermite_rows_and_time_to_solution(tmp_path):
    import json
    r = run_solver(["bench", "--quick", "--backends", "cpu", "--repeats", "1", "--seconds", "0.05", "--dir",
                    str(tmp_path)], timeout=280)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "compute.json").read_text())
    rows = {row["problem"]: row for row in results["rows"]}
    assert rows["nbody-hermite"]["rate"] > 0 and "mean active fraction" in " ".join(rows["nbody-hermite"]["notes"])
    assert rows["nbody-jerk"]["rate"] > 0 and rows["nbody-jerk"]["peer_rate"] > 0
    methods = [row["method"] for row in results["time_to_solution"]["rows"]]
    assert methods[:2] == ["Hermite block steps", "leapfrog, one step"] and len(methods) == 3
    assert "Time to solution" in r.stdout and "| nbody-jerk |" in r.stdout


def test_restart_on_another_rank_count_agrees_to_round_off(tmp_path):
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_solver(PLUMMER + ["--set", "time.steps=8", "--output", straight], np=2).returncode == 0
    assert run_solver(PLUMMER + ["--set", "time.steps=4", "--output", split], np=2).returncode == 0
    r = run_solver(PLUMMER + ["--set", "time.steps=8", "--output", split, "--restart", "latest"], np=3)
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(straight, 8), "r") as fa, h5py.File(_ckpt(split, 8), "r") as fb:
        x, y = fa["nbody/position"][...], fb["nbody/position"][...]
        assert np.abs(x - y).max() <= 1e-12 * np.abs(x).max()
        assert np.array_equal(fa["nbody/dt"][...], fb["nbody/dt"][...])


def test_restart_may_change_the_integrator(tmp_path):
    """A leapfrog checkpoint continues with Hermite (steps start afresh) and back."""
    out = str(tmp_path / "run")
    leapfrog = [a if a != "nbody.integrator='hermite'" else "nbody.integrator='leapfrog'" for a in PLUMMER]
    assert run_solver(leapfrog + ["--set", "time.steps=2", "--output", out]).returncode == 0
    r = run_solver(PLUMMER + ["--set", "time.steps=4", "--output", out, "--restart", "latest"])
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(out, 4), "r") as f:
        assert f["nbody/jerk"].shape == (200, 3) and f.attrs["time"] == 4 * 0.03125
    r = run_solver(leapfrog + ["--set", "time.steps=6", "--output", out, "--restart", "latest"])
    assert r.returncode == 0, r.stderr
    with h5py.File(_ckpt(out, 6), "r") as f:
        assert "nbody/jerk" not in f and f.attrs["time"] == 6 * 0.03125
