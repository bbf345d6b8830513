"""``bench implicit``: time to a stated accuracy, implicit against explicit.

The case: an N^2 unit square (default 2048^2), D = 1, Dirichlet walls, the
sine start, to t_end = 0.05, with a target relative L2 error of 1e-4 against
the analytic solution.  The implicit run (Crank-Nicolson through PETSc) uses
the largest dt that meets the target, found by bisection on a coarse grid (whose spatial
error adds to the time error, so the dt it finds is safe on the fine grid)
and then actually run on the full grid; more steps are taken if it misses.
The explicit time is its step count at dt = "auto" times its seconds per
step, measured over a few thousand steps of the same grid on the same ranks
with the cpu backend (a full explicit run would take hours).  Also: the
Krylov iterations of one step at rtol 1e-8 from 512^2 up (hypre's BoomerAMG
and geometric multigrid on the DMDA hierarchy), and weak scaling of the
implicit step from 1 to 2 ranks.  Collective over ``comm``.
"""
from __future__ import annotations

import json
import math
import os
import time

from ..config import ConfigError
from ..io.owned import check_replaceable, write_results
from ..parallel.mpi import MPI, log, quiet_barrier, root_decides
from . import scratch_dir, timed_run
from .compute import machine

RESULTS = "implicit.json"
T_END, TARGET, GOAL = 0.05, 1e-4, 50.0
SCHEME = "crank_nicolson"


def _case(n, *extra):
    return ["problem.kind=heat", f"heat.shape=[{n}, {n}]", "heat.initial=sine", "heat.boundary=dirichlet",
            f"time.t_end={T_END!r}", "output.checkpoint_every=0", "output.keep=1", *extra]


def _relative(diag, n):
    """The relative L2 error: err_l2 over the RMS of the exact solution
    (sin(pi x) sin(pi y) e^(-2 pi^2 t) has RMS e^(-2 pi^2 t) / 2)."""
    return diag["err_l2"] / (0.5 * math.exp(-2 * math.pi ** 2 * diag["time"]))


def _implicit_run(comm, scratch, n, steps, backend="cpu"):
    """(seconds, summary, relative error) of the implicit run in ``steps``
    steps; the seconds include building the model (the matrix assembly)."""
    dt = T_END / steps
    comm.Barrier()
    t0 = time.perf_counter()
    _, summary, model = timed_run(comm, os.path.join(scratch, "implicit"), _case(
        n, f"time.scheme={SCHEME}", f"time.dt={dt!r}", f"backend.name={backend}",
        f"output.log_every={steps}"))
    seconds = time.perf_counter() - t0
    model.close()
    return seconds, summary, _relative(summary["final"], n)


def _fewest_steps(comm, scratch, n_search):
    """The fewest steps (largest dt) that meet the target on the coarse grid."""
    lam = 2 * math.pi ** 2
    # Crank-Nicolson's error over lambda t: lambda t (lambda dt)^2 / 12
    guess = max(1, int(T_END * lam / math.sqrt(12 * TARGET / (lam * T_END))))
    steps, failed = max(1, int(guess * 0.8)), 0
    while True:
        _, _, err = _implicit_run(comm, scratch, n_search, steps, backend="numpy")
        if err <= TARGET:
            break
        failed, steps = steps, _more(steps, n_search)
    while steps - failed > 1:                       # the fewest steps between: bisection
        middle = (steps + failed) // 2
        _, _, err = _implicit_run(comm, scratch, n_search, middle, backend="numpy")
        failed, steps = (failed, middle) if err <= TARGET else (middle, steps)
    return steps


def _more(steps, n):
    """10% more steps, unless the grid's own (spatial) error is above the target."""
    if steps > 4 * guess_limit():
        raise ConfigError(f"bench implicit: {n}^2 does not reach a relative error of {TARGET:g} at any dt (its "
                          f"spatial error is larger); use --size and --search of at least 128")
    return int(math.ceil(steps * 1.1))


def guess_limit():
    lam = 2 * math.pi ** 2
    return T_END * lam / math.sqrt(12 * TARGET / (lam * T_END))


def _explicit_seconds_per_step(comm, scratch, n, steps):
    """Seconds per explicit step over ``steps`` steps, after a short run
    that compiles the kernels."""
    case = [o for o in _case(n) if not o.startswith("time.t_end")]
    model = timed_run(comm, os.path.join(scratch, "explicit"), case + ["time.steps=20", "backend.name=cpu"])[2]
    model.close()
    seconds, summary, model = timed_run(comm, os.path.join(scratch, "explicit"), case + [
        f"time.steps={steps}", "backend.name=cpu", f"output.log_every={steps}"])
    steps_per_run = summary["steps"]
    model.close()
    return summary["loop_seconds"] / steps_per_run


def _iterations(comm, n, pc, rtol=1e-8):
    """Krylov iterations of one Crank-Nicolson step (dt = 1e-3) at ``rtol``."""
    from ..backends import get_backend
    from ..models import load_settings, make_model
    options = f"-ksp_rtol {rtol!r} " + ("-pc_type hypre" if pc == "hypre" else "-pc_type mg")
    settings = load_settings(None, "<bench>", _case(n, f"time.scheme={SCHEME}", "time.dt=0.001",
                                                    f"solver.petsc_options='{options}'", "backend.name=numpy"))
    model = make_model(settings, comm, get_backend("numpy", comm), None)
    try:
        model.set_initial()
        comm.Barrier()
        t0 = time.perf_counter()
        model.advance(1)
        seconds = time.perf_counter() - t0
        its = model.implicit.ksp.getIterationNumber()
    finally:
        model.close()
    return its, seconds


def _step_seconds(comm, n_per_rank, ranks, steps=5):
    """Seconds per implicit step (after the first, which sets up) with n x n per rank."""
    from ..backends import get_backend
    from ..models import load_settings, make_model
    shape = [n_per_rank * ranks, n_per_rank]
    settings = load_settings(None, "<bench>", ["problem.kind=heat", f"heat.shape={shape}", f"time.scheme={SCHEME}",
                                               "time.dt=0.001", f"time.steps={steps + 1}", "backend.name=numpy"])
    model = make_model(settings, comm, get_backend("numpy", comm), None)
    try:
        model.set_initial()
        model.advance(1)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            model.advance(1)
        comm.Barrier()
        return (time.perf_counter() - t0) / steps
    finally:
        model.close()


def _on(comm, ranks):
    sub = comm.Split(0 if comm.rank < ranks else MPI.UNDEFINED, comm.rank)
    return None if sub == MPI.COMM_NULL else sub


def bench_implicit(comm, args) -> int:
    from ..models.heat.implicit import petsc
    petsc(SCHEME)                                   # one line if petsc4py is missing; PETSc on every rank
    n = args.size
    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [
            s for s in (512, 1024, 2048, 4096) if s <= n] or [n]
    except ValueError:
        raise ConfigError(f"bench implicit --sizes: expected comma-separated integers, got {args.sizes!r}") from None
    if n < 16 or min(sizes) < 16:
        raise ConfigError("bench implicit: --size and --sizes need at least 16 cells per axis")
    args.dir = args.dir or "runs/bench"
    root_decides(comm, check_replaceable, args.dir, [RESULTS], "bench --dir")
    log(f"bench implicit: {n}^2, D = 1, Dirichlet, sine start, t_end = {T_END}, target relative L2 error "
        f"{TARGET:g}; {comm.size} rank(s); {machine()}")
    out = {"machine": machine(), "ranks": comm.size, "size": n, "t_end": T_END, "target": TARGET}
    with scratch_dir(comm, args.dir, "implicit-") as scratch:
        steps = _fewest_steps(comm, scratch, min(n, args.search))
        while True:
            seconds, summary, err = _implicit_run(comm, scratch, n, steps)
            if err <= TARGET:
                break
            steps = _more(steps, n) if steps > 4 * guess_limit() else steps + 1
        final = summary["final"]
        timers = summary["timers"]
        limit = 1.0 / (2.0 * 2 * n * n)
        explicit_steps = math.ceil(T_END / (0.9 * limit) - 1e-9)
        per_step = _explicit_seconds_per_step(comm, scratch, n, args.explicit_steps)
        explicit_seconds = explicit_steps * per_step
        out["time_to_solution"] = {
            "scheme": SCHEME, "dt": T_END / steps, "steps": steps, "iterations_per_step": final["iterations"],
            "error": err, "seconds": seconds, "loop_seconds": summary["loop_seconds"],
            "petsc_fraction": timers.get("solve", 0.0) / summary["loop_seconds"],
            "explicit_steps": explicit_steps, "explicit_seconds_per_step": per_step,
            "explicit_measured_steps": args.explicit_steps, "explicit_seconds": explicit_seconds,
            "speedup": explicit_seconds / seconds}
    quiet_barrier(comm)
    log(report(out))                                # each part as soon as it is measured
    out["multigrid"] = []
    for size in sizes:
        for pc in ("hypre", "mg"):
            its, secs = _iterations(comm, size, pc)
            out["multigrid"].append({"size": size, "pc": pc, "iterations": its, "seconds": secs})
            log(f"  {size}^2 {pc}: {its} iterations, {secs:.3g} s (set-up included)")
    log(report(out, "multigrid"))
    if comm.size >= 2:
        per_rank = args.weak_size
        one = None
        sub = _on(comm, 1)
        if sub is not None:
            one = _step_seconds(sub, per_rank, 1)
            sub.Free()
        one = comm.bcast(one, root=0)
        sub = _on(comm, 2)
        two = _step_seconds(sub, per_rank, 2) if sub is not None else None
        if sub is not None:
            sub.Free()
        two = comm.bcast(two, root=0)
        out["weak"] = {"per_rank": per_rank, "one": one, "two": two, "efficiency": one / two}
        log(report(out, "weak"))
    root_decides(comm, write_results, args.dir, {RESULTS: json.dumps(out, indent=1).encode()
                                                 if comm.rank == 0 else None}, "bench --dir")
    return 0


def report(out, part="time") -> str:
    """The markdown of one part of the results: "time", "multigrid" or "weak"."""
    if part == "multigrid":
        return _multigrid_table(out)
    if part == "weak":
        w = out["weak"]
        return (f"Weak scaling of the implicit step, {w['per_rank']}^2 per rank: 1 rank {w['one']:.3g} s, "
                f"2 ranks {w['two']:.3g} s: {w['efficiency']:.0%} (goal 80%)")
    t = out["time_to_solution"]
    n = out["size"]
    return "\n".join([
        f"Time to t_end = {out['t_end']} at a relative L2 error of {out['target']:g}, {n}^2, "
        f"{out['ranks']} rank(s):",
        "| method | dt | steps | iterations/step | error reached | seconds | time in PETSc |",
        "|---|---|---|---|---|---|---|",
        f"| {t['scheme']} (PETSc) | {t['dt']:.4g} | {t['steps']} | {t['iterations_per_step']:.1f} | "
        f"{t['error']:.3g} | {t['seconds']:.3g} | {t['petsc_fraction']:.0%} |",
        f"| explicit, dt = auto (cpu) | {out['t_end'] / t['explicit_steps']:.4g} | {t['explicit_steps']} | - | "
        f"- | {t['explicit_seconds']:.4g} (from {t['explicit_seconds_per_step'] * 1e3:.3g} ms/step over "
        f"{t['explicit_measured_steps']} steps) | - |",
        f"Speed-up: {t['speedup']:.1f}x ({'met' if t['speedup'] >= GOAL else 'SHORT of'} the {GOAL:g}x goal)"])


def _multigrid_table(out) -> str:
    lines = [
        "Krylov iterations of one Crank-Nicolson step (dt = 1e-3) at rtol 1e-8:",
        "| grid | hypre BoomerAMG | seconds | PCMG (DMDA, Q0, Galerkin) | seconds |",
        "|---|---|---|---|---|"]
    by = {(r["size"], r["pc"]): r for r in out["multigrid"]}
    for size in sorted({r["size"] for r in out["multigrid"]}):
        h, m = by[(size, "hypre")], by[(size, "mg")]
        lines.append(f"| {size}^2 | {h['iterations']} | {h['seconds']:.3g} | {m['iterations']} | {m['seconds']:.3g} |")
    return "\n".join(lines)
