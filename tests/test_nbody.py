"""N-body on one rank against known orbits, conservation laws and the
independent code REBOUND."""
import math

import numpy as np
import pytest
from mpi4py import MPI

from helpers import make_nbody
from solver.backends import numpy_ as ref
from solver.models.nbody.initial import FIGURE8_PERIOD, figure8

pytestmark = pytest.mark.timeout(300)
SELF = MPI.COMM_SELF


def _advance(model, steps, every=None):
    """Step ``steps`` times; the relative energy errors seen every ``every`` steps."""
    errors = []
    for k in range(steps):
        model.step()
        if every and (k + 1) % every == 0:
            errors.append(model.diagnostics()["energy_error"])
    return errors


def test_force_kernel_matches_a_direct_double_loop():
    rng = np.random.default_rng(3)
    x, m = rng.normal(size=(40, 3)), rng.uniform(0.5, 1.5, 40)
    eps2, G = 0.01, 1.3
    a = np.zeros_like(x)
    ref.nbody_accel(x, x, m, 0, eps2, G, a, i0=0)
    phi = ref.nbody_potential(x, x, m, 0, 0, eps2, G)
    for i in range(40):
        expect, pot = np.zeros(3), 0.0
        for j in range(40):
            if i != j:
                d = x[j] - x[i]
                r2 = d @ d + eps2
                expect += G * m[j] * d / r2 ** 1.5
                pot -= G * m[j] / math.sqrt(r2)
        assert np.allclose(a[i], expect, rtol=1e-13, atol=0)
        assert math.isclose(phi[i], pot, rel_tol=1e-13)


def test_figure_eight_returns_after_one_period():
    """Leapfrog's energy error scales as dt^2: about 6e-9 at dt = 1e-4, so
    1e-5 keeps it below 1e-10 over the whole orbit."""
    model = make_nbody(SELF, "nbody.initial=figure8", "nbody.softening=0.0", f"time.t_end={FIGURE8_PERIOD}",
                       "time.dt=1e-5")
    errors = _advance(model, model.end_step, every=5000)
    x0, _, _ = figure8()
    assert abs(model.time - FIGURE8_PERIOD) < 1e-12
    assert np.abs(model.x - x0).max() < 1e-6
    assert max(errors) < 1e-10


def _kepler_orbit(dt, periods=1.0):
    model = make_nbody(SELF, "nbody.initial=kepler", "nbody.eccentricity=0.5", "nbody.softening=0.0",
                       f"time.dt={dt!r}", f"time.t_end={2 * math.pi * periods!r}")
    times, seps, worst = [], [], 0.0
    for _ in range(model.end_step):
        model.step()
        times.append(model.time)
        seps.append(np.linalg.norm(model.x[1] - model.x[0]))
        worst = max(worst, model.diagnostics()["energy_error"]) if len(times) % 20 == 0 else worst
    return model, np.array(times), np.array(seps), worst


def test_kepler_period_and_semi_major_axis():
    model, t, r, _ = _kepler_orbit(2 * math.pi / 20000, periods=1.6)
    # pericentre: the minimum of the separation, refined by a parabola through three samples
    k = int(np.argmin(np.where(t > 0.5 * 2 * math.pi, r, np.inf)))
    y0, y1, y2 = r[k - 1], r[k], r[k + 1]
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    period = t[k] + shift * (t[1] - t[0])
    assert abs(period - 2 * math.pi) / (2 * math.pi) < 1e-6
    # semi-major axis from the orbital energy of the relative orbit
    d, w = model.x[1] - model.x[0], model.v[1] - model.v[0]
    energy = 0.5 * (w @ w) - 1.0 / np.linalg.norm(d)
    assert abs(-1.0 / (2 * energy) - 1.0) < 1e-6


def test_leapfrog_energy_error_is_second_order():
    dt = 2 * math.pi / 2000
    _, _, _, coarse = _kepler_orbit(dt)
    _, _, _, fine = _kepler_orbit(dt / 2)
    assert 3.5 < coarse / fine < 4.5, (coarse, fine)


def test_plummer_conserves_energy_and_momentum():
    model = make_nbody(SELF, "nbody.n=1000", "nbody.seed=1", "nbody.softening=0.01", "time.dt=0.002",
                       "time.steps=1000")
    start = model.diagnostics()
    assert abs(start["energy"] + 0.25) < 0.02            # standard units: E = -1/4
    assert abs(start["virial"] - 0.5) < 0.05              # in virial equilibrium
    assert start["momentum"] < 1e-15 and start["com_offset"] < 1e-15
    _advance(model, model.end_step)
    end = model.diagnostics()
    assert end["energy_error"] < 1e-5
    assert end["momentum"] < 1e-13
    assert abs(end["angular_momentum"] - start["angular_momentum"]) < 1e-12


def test_seeded_starts_are_reproducible():
    a = make_nbody(SELF, "nbody.n=50", "nbody.seed=7")
    b = make_nbody(SELF, "nbody.n=50", "nbody.seed=7")
    c = make_nbody(SELF, "nbody.n=50", "nbody.seed=8")
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


def test_float32_runs_and_stays_close_to_float64():
    a = make_nbody(SELF, "nbody.n=200", "nbody.precision=float32", "time.dt=0.002", "time.steps=50")
    b = make_nbody(SELF, "nbody.n=200", "nbody.precision=float64", "time.dt=0.002", "time.steps=50")
    _advance(a, 50)
    _advance(b, 50)
    assert a.x.dtype == np.float32
    assert np.abs(a.x - b.x).max() < 1e-4


def test_agrees_with_rebound():
    """REBOUND's IAS15 (adaptive, 15th order, machine precision) on the same
    bodies and softening.  The tolerance is our own leapfrog error, estimated
    by Richardson extrapolation from runs at dt and dt/2 (error ~ dt^2): the
    difference must stay within three times that estimate."""
    rebound = pytest.importorskip("rebound")
    t_end, dt = 0.5, 2e-3
    runs = {}
    for step in (dt, dt / 2):
        model = make_nbody(SELF, "nbody.n=64", "nbody.seed=5", "nbody.softening=0.05", f"time.dt={step!r}",
                           f"time.t_end={t_end!r}")
        x0, v0, m = model.x.copy(), model.v.copy(), model.m.copy()
        _advance(model, model.end_step)
        runs[step] = model.x.copy()
    sim = rebound.Simulation()
    sim.G = 1.0
    sim.softening = 0.05
    sim.integrator = "ias15"
    for k in range(len(m)):
        sim.add(m=m[k], x=x0[k, 0], y=x0[k, 1], z=x0[k, 2], vx=v0[k, 0], vy=v0[k, 1], vz=v0[k, 2])
    sim.integrate(t_end, exact_finish_time=1)
    peer = np.array([[p.x, p.y, p.z] for p in sim.particles])
    estimate = np.abs(runs[dt] - runs[dt / 2]).max() * 4 / 3
    difference = np.abs(runs[dt / 2] - peer).max()
    assert estimate < 1e-3                      # the comparison is meaningful
    assert difference < 3 * estimate / 4 + 1e-12, (difference, estimate)
