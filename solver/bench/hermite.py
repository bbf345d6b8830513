"""What ``bench`` measures of the Hermite integrator beyond its rows in the
step loop: the force-and-jerk kernel against the leapfrog force kernel, and
the time to a solution of given energy error, against our own leapfrog and
REBOUND's IAS15, on one rank.

Time to solution: a Plummer sphere with a hard binary (the ``plummer_binary``
start, no softening) to t = 1, relative energy error at most 1e-6.  Hermite
runs the whole span at eta = 0.02, 0.01, ... until one meets the target.
Leapfrog (the largest step 2^-k that meets it) and IAS15 (the loosest
epsilon that does) are far too slow for the whole span: they run a short
span of many binary orbits, and their time is scaled to t = 1 (the cost of
a fixed step, or of a step set by the binary's orbit, is the same in every
stretch of time; leapfrog's error, which oscillates, is the largest seen
in the span; IAS15's, which grows, is scaled with the time)."""
from __future__ import annotations

import math
import time

import numpy as np

FLOPS_PER_PAIR_JERK = 60        # force and jerk (NBODY6++GPU and phiGPU count 60)
TARGET = 1e-6


def kernel_rates(backend, n=4096, repeats=5):
    """Pairs per second of ``nbody_accel_jerk`` and of ``nbody_accel`` on n
    bodies (all pairs, one rank), the two calls alternating: the best of
    ``repeats`` each after a warm-up call that compiles (a call takes tens
    of milliseconds, so a busy machine shows in every median; the best is
    the kernel's).  Returns ((jerk rate, spread), (force rate, spread))."""
    from . import median_spread
    rng = np.random.default_rng(0)
    x, v, m = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), np.full(n, 1.0 / n)
    ids = np.arange(n)
    acc, jerk = np.zeros((n, 3)), np.zeros((n, 3))

    def force():
        backend.nbody_accel(x, x, m, 0, 1e-4, 1.0, acc, i0=0)

    def force_and_jerk():
        backend.nbody_accel_jerk(x, v, ids, x, v, m, 0, 1e-4, 1.0, acc, jerk)
    calls = (force_and_jerk, force)
    times = ([], [])
    for call in calls:
        call()
    for _ in range(repeats):
        for call, spent in zip(calls, times):
            t0 = time.perf_counter()
            call()
            backend.sync()
            spent.append(time.perf_counter() - t0)
    rates = [[n * n / t for t in spent] for spent in times]
    return tuple((max(r), median_spread(r)[1]) for r in rates)


def _model(overrides, backend):
    from ..backends import get_backend
    from ..models import load_settings, make_model
    from ..parallel.mpi import MPI
    settings = load_settings(None, "<bench>", list(overrides) + [f"backend.name={backend}"])
    model = make_model(settings, MPI.COMM_SELF, get_backend(backend, MPI.COMM_SELF), None)
    model.set_initial()
    return model


def _evolve(model, checks=64):
    """(seconds of stepping, largest relative energy error at ``checks`` points of the run)."""
    every = max(1, model.end_step // checks)
    seconds, worst = 0.0, 0.0
    while model.step_count < model.end_step:
        t0 = time.perf_counter()
        for _ in range(min(every, model.end_step - model.step_count)):
            model.step()
        seconds += time.perf_counter() - t0
        worst = max(worst, model.diagnostics()["energy_error"])
    return seconds, worst


def time_to_solution(quick=False, backend="cpu"):
    """Rows (method, setting, energy error, seconds to t_end, how) for the
    problem in the module docstring; quick: 64 bodies to t = 0.05."""
    from . import peers
    n, t_end, span = (64, 0.05, 0.01) if quick else (1024, 1.0, 0.01)
    start = ["problem.kind=nbody", "nbody.initial=plummer_binary", f"nbody.n={n}", "nbody.seed=1",
             "nbody.softening=0.0"]
    rows = []
    for eta in (0.02, 0.01, 0.005, 0.0025, 0.00125):
        model = _model(start + ["nbody.integrator=hermite", f"nbody.eta={eta}", "time.dt=0.0625",
                                f"time.t_end={t_end!r}"], backend)
        seconds, error = _evolve(model)
        if error <= TARGET or eta == 0.00125:
            stats = model.advance_stats()
            rows.append(("Hermite block steps", f"eta = {eta:g}", error, seconds,
                         f"whole span; {stats['block_steps']} block steps, mean active fraction "
                         f"{stats['active_fraction']:.2g}"))
            break
    x, v, m = _start_bodies(start, backend)
    for k in range(10, 26):
        dt = 2.0 ** -k
        model = _model(start + ["nbody.integrator=leapfrog", f"time.dt={dt!r}", f"time.t_end={span!r}"], backend)
        seconds, error = _evolve(model, checks=200)
        if error <= TARGET or k == 25:
            rows.append(("leapfrog, one step", f"dt = 2^-{k}", error, seconds * t_end / span,
                         f"{span:g} of the span, {model.end_step} steps, scaled to t = {t_end:g}"))
            break
    why = peers.available("rebound")
    if why:
        rows.append(("REBOUND IAS15", "", math.nan, math.nan, why))
        return n, t_end, rows
    ias_span = span / 5
    for epsilon in (1e-2, 1e-4, 1e-6, 1e-9):
        seconds, error, steps = peers.rebound_ias15(x, v, m, 1.0, 0.0, ias_span, epsilon)
        if error * t_end / ias_span <= TARGET or epsilon == 1e-9:
            rows.append(("REBOUND IAS15", f"epsilon = {epsilon:g}", error * t_end / ias_span,
                         seconds * t_end / ias_span,
                         f"{ias_span:g} of the span, {steps} steps; time and error scaled to t = {t_end:g}"))
            break
    return n, t_end, rows


def _start_bodies(start, backend):
    model = _model(start + ["time.steps=1"], backend)
    return model.x.copy(), model.v.copy(), model.m.copy()


def solutions_table(n, t_end, rows) -> str:
    """Markdown: each method's time to t_end, and how much sooner Hermite is."""
    hermite = rows[0][3]
    out = [f"Time to solution: Plummer sphere with a hard binary, N = {n}, no softening, to t = {t_end:g}, "
           f"relative energy error <= {TARGET:g}, one rank:", "",
           "| method | setting | energy error | seconds to t | Hermite sooner | how |", "|---|---|---|---|---|---|"]
    for method, setting, error, seconds, how in rows:
        sooner = f"{seconds / hermite:.3g}x" if hermite > 0 and math.isfinite(seconds) else ""
        out.append(f"| {method} | {setting} | {error:.2g} | {seconds:.3g} | {sooner} | {how} |")
    if rows[0][2] > TARGET:
        out.append(f"- note: Hermite did not reach the target (error {rows[0][2]:.2g})")
    for method, _, error, seconds, _ in rows[1:]:
        if math.isfinite(seconds):
            out.append(f"- Hermite against {method}: {seconds / hermite:.3g}x sooner "
                       f"({'met' if seconds >= 10 * hermite else 'SHORT of'} the 10x goal)"
                       + ("" if error <= TARGET else f"; {method} did not reach the target either"))
    return "\n".join(out)
