"""``bench`` (``bench compute``): each backend through the solver's own time
loop, on 1 and 2 ranks (weak scaling: the same work per rank), beside
Devito, REBOUND and the memory-bandwidth bound, in one run.

Counted work: a heat cell update moves 16 bytes (one read, one write of a
float64, neighbours reused from cache); an n-body step does N^2 pair
interactions (the peers are counted the same way) of 20 flops each (GPU Gems
3, ch. 31); Hermite rows count the pairs its block steps compute, of 60 flops
each (force and jerk), and bench/hermite.py adds its kernel rate and its time
to solution against leapfrog and IAS15.  Rates are medians of repeated runs after a warm-up run that
compiles the kernels; the spread is (max - min) / median.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import ConfigError
from ..io.owned import check_replaceable, write_results
from ..parallel.mpi import log, quiet_barrier, root_decides
from . import hermite, median_spread, peers, scratch_dir, timed_run

BYTES_PER_CELL = 16
FLOPS_PER_PAIR = 20
GOALS = {"heat2d": 1.2, "heat2d-var": 2.0, "nbody": 2.0,   # ours / peer, on one rank
         "nbody-jerk": 0.6}                                # the force-and-jerk kernel against the force kernel
WEAK_GOAL = 0.9                               # heat, 1 -> 2 ranks
WEAK_GOALS = {"nbody-hermite": 0.85}          # 1 -> 2 ranks
HERMITE_ROWS = ("nbody-hermite", "nbody-jerk")  # pairs with jerk: 60 flops each
DEVICE_BACKENDS = ("cuda", "opencl")          # measured on every problem, against their device's copy bandwidth
RESULTS = "compute.json"                      # in --dir; replaces only a file the bench wrote (io.owned)


@dataclass
class Problem:
    name: str                 # heat2d, heat3d, nbody
    label: str
    per_rank: tuple           # grid per rank (heat) or bodies on one rank (nbody)
    backends: tuple = ("numpy", "cpu")     # device backends run every problem
    precision: str = "float64"
    fields: bool = False      # heat with a random D field (0.5 to 2) and a source field (0 to 1)

    def overrides(self, ranks):
        if self.name == "nbody-hermite":         # block steps of 1/64; softening 1/N
            n = round(self.per_rank[0] * math.sqrt(ranks))
            return ["problem.kind=nbody", f"nbody.n={n}", "nbody.initial=plummer", "nbody.integrator=hermite",
                    f"nbody.softening={1.0 / n!r}", "time.dt=0.015625"]
        if self.name.startswith("nbody"):
            n = round(self.per_rank[0] * math.sqrt(ranks))          # N^2 / ranks pairs per rank
            return ["problem.kind=nbody", f"nbody.n={n}", "nbody.initial=plummer", "time.dt=0.001",
                    f"nbody.precision={self.precision}"]
        shape = [self.per_rank[0] * ranks, *self.per_rank[1:]]      # ranks split the first axis
        return ["problem.kind=heat", f"heat.shape={shape}", "heat.initial=random"]

    def inputs(self, comm, directory, ranks) -> list:
        """Overrides naming this problem's D and Q fields, which rank 0 writes
        into ``directory`` (collective)."""
        if not self.fields:
            return []
        shape = (self.per_rank[0] * ranks, *self.per_rank[1:])
        paths = [os.path.join(directory, f"{name}{ranks}.npy") for name in ("D", "Q")]
        if comm.rank == 0 and not all(os.path.exists(p) for p in paths):
            rng = np.random.default_rng(ranks)
            np.save(paths[0], rng.uniform(0.5, 2.0, shape))
            np.save(paths[1], rng.uniform(0.0, 1.0, shape))
        quiet_barrier(comm)
        return [f"heat.diffusivity='{paths[0]}'", f"heat.source='{paths[1]}'"]


def problems(quick: bool):
    if quick:        # a smoke test of the whole command: seconds, not minutes
        return [Problem("heat2d", "heat 2D", (256, 256)), Problem("heat3d", "heat 3D", (32, 32, 32)),
                Problem("heat2d-var", "heat 2D D(x)+Q", (256, 256), ("cpu",), fields=True),
                Problem("nbody", "n-body", (300,)), Problem("nbody-f32", "n-body f32", (300,), (), "float32"),
                Problem("nbody-hermite", "n-body Hermite", (300,), ("cpu",))]
    return [Problem("heat2d", "heat 2D", (4096, 4096)), Problem("heat3d", "heat 3D", (256, 256, 256)),
            Problem("heat2d-var", "heat 2D D(x)+Q", (4096, 4096), ("cpu",), fields=True),
            Problem("nbody", "n-body", (2000,)), Problem("nbody", "n-body", (20000,), ("cpu",)),
            Problem("nbody-f32", "n-body f32", (20000,), (), "float32"),
            Problem("nbody-hermite", "n-body Hermite", (16384,), ("cpu",))]


@dataclass
class Row:
    problem: str
    size: str
    backend: str
    ranks: int
    steps: int
    rate: float                      # work units per second, all ranks
    spread: float
    phases: dict                     # share of the run's wall time
    peer: str = ""
    peer_rate: float = 0.0
    peer_spread: float = 0.0
    weak: float = float("nan")
    notes: list = field(default_factory=list)
    peak: float = 0.0                # the device's peak flop rate in this precision, all ranks (0: unknown)

    @property
    def unit(self) -> str:
        return "pairs/s" if self.problem.startswith("nbody") else "cells/s"

    @property
    def effective(self) -> str:
        if self.problem.startswith("nbody"):
            flops = self.rate * (hermite.FLOPS_PER_PAIR_JERK if self.problem in HERMITE_ROWS else FLOPS_PER_PAIR)
            return f"{flops / 1e9:.1f} GFLOP/s" + (f" ({flops / self.peak:.0%} of peak)" if self.peak else "")
        return f"{self.rate * BYTES_PER_CELL / 1e9:.1f} GB/s"


def _on(comm, ranks):
    """A communicator of the first ``ranks`` ranks (None elsewhere)."""
    from ..parallel.mpi import MPI
    sub = comm.Split(0 if comm.rank < ranks else MPI.UNDEFINED, comm.rank)
    return None if sub == MPI.COMM_NULL else sub


def _measure(comm, problem, backend, ranks, repeats, seconds, scratch):
    """Median rate and phase shares of ``problem`` on ``comm`` (collective)."""
    base = problem.overrides(ranks) + problem.inputs(comm, scratch, ranks) + [f"backend.name={backend}",
                                                                               "output.log_every=1000000000",
                                       "output.checkpoint_every=0", "output.keep=1"]
    directory = os.path.join(scratch, "run")
    # warm-up: compiles (or loads) the kernels and faults the memory in; a
    # second one, a quarter of the target long, sizes the timed runs (the
    # first is slowed by all that) in whole sweeps of the model's steps
    steps = 8
    for target in (0.25 * seconds, seconds):
        wall, summary, model = timed_run(comm, directory, base + [f"time.steps={steps}"])
        model.close()
        quantum = model.block
        per_step = summary["loop_seconds"] / steps
        steps = comm.bcast(max(quantum, int(target / max(per_step, 1e-9)) // quantum * quantum), root=0)
    rates, runs, active = [], [], []
    for _ in range(repeats):
        wall, summary, model = timed_run(comm, directory, base + [f"time.steps={steps}"])
        rates.append(model.work_per_step * steps / summary["loop_seconds"])
        runs.append((wall, summary))
        if hasattr(model, "advance_stats"):            # Hermite: how many bodies a block step moves
            active.append(model.advance_stats()["active_fraction"])
        model.close()
    rate, spread = median_spread(rates)
    wall, summary = runs[min(range(repeats), key=lambda k: abs(rates[k] - rate))]   # the run nearest the median
    t = summary["timers"]
    phases = {"compute": t.get("compute", 0.0),
              "comm": t.get("halo", 0.0) + t.get("exchange", 0.0),
              "io": t.get("output", 0.0),          # the final checkpoint, as the step loop waited for it
              "diagnostics": t.get("diagnostics", 0.0)}
    phases["other"] = max(0.0, wall - sum(phases.values()))
    phases = {k: v / wall for k, v in phases.items()}
    notes = [f"{problem.name} on {ranks} rank(s): mean active fraction {float(np.median(active)):.3g} of the bodies "
             f"per block step"] if active else []
    return rate, spread, phases, steps, notes


def _peer(problem, backend, steps, repeats, comm, scratch):
    """(peer name, rate, spread, note) for the one-rank case, on comm's rank 0."""
    from ..backends import get_backend
    from ..models import load_settings, make_model
    settings = load_settings(None, "<bench>", problem.overrides(1) + problem.inputs(comm, scratch, 1)
                             + [f"backend.name={backend}"])
    model = make_model(settings, comm, get_backend(backend, comm), None)
    model.set_initial()
    try:
        if problem.name.startswith("nbody"):
            why = peers.available("rebound")
            if why:
                return "REBOUND", 0.0, 0.0, why
            x, v, m = model.x.copy(), model.v.copy(), model.m.copy()
            times = peers.rebound_basic(x, v, m, model.nb.G, model.nb.softening, model.dt, steps, repeats)
            rate, spread = median_spread([model.work_per_step * steps / t for t in times])
            return "REBOUND basic", rate, spread, ""
        why = peers.available("devito")
        if why:
            return "Devito", 0.0, 0.0, why
        u0 = model.local_field()
        if problem.fields:
            stencil = model.stencil                   # the cpu backend's arrays are host arrays
            times, devito_u = peers.devito_heat_variable(u0, stencil.faces, stencil.source, model.block, steps,
                                                         repeats)
        else:
            times, devito_u = peers.devito_heat(u0, model.coeffs, steps, repeats)
        rate, spread = median_spread([model.work_per_step * steps / t for t in times])
        # same problem check: away from the walls (which differ) the fields agree to round-off
        while model.step_count < steps:
            model.advance(steps - model.step_count)
        inner = tuple(slice(steps + 1, n - steps - 1) for n in u0.shape)
        ours = model.local_field()[inner]
        if ours.size == 0:
            return "Devito", rate, spread, "grid too small to compare Devito's field with ours away from the walls"
        diff = float(np.abs(ours - devito_u[inner]).max())
        note = "" if diff <= 1e-12 else f"Devito's field differs from ours by {diff:.2g} away from the walls"
        return "Devito", rate, spread, note
    finally:
        model.close()


def bench_compute(comm, args) -> int:
    from ..backends import status
    found = status()
    usable = [name for name, (ok, _) in found.items() if ok]
    if args.backends:
        wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
        for b in wanted:
            if b not in found:
                raise ConfigError(f"bench --backends: unknown backend {b!r}; known: {', '.join(found)}")
            if b not in usable:
                raise ConfigError(f"bench --backends: backend {b!r} is not available here ({found[b][1]}); "
                                  f"available: {', '.join(usable)}")
    else:
        wanted = [b for b in ("numpy", "cpu", "cuda") if b in usable]     # PoCL's opencl: --backends opencl
    if not wanted:
        raise ConfigError("bench --backends: name at least one backend")
    root_decides(comm, check_replaceable, args.dir, [RESULTS], "bench --dir")    # before minutes of measuring
    rank_counts = sorted({1, min(2, comm.size), comm.size})
    log(f"bench: {comm.size} rank(s), backends {', '.join(wanted)}, "
        f"median of {args.repeats} runs of ~{args.seconds:g} s each")
    bandwidth = {}
    devices = [b for b in wanted if b in DEVICE_BACKENDS]
    for ranks in rank_counts:
        sub = _on(comm, ranks)
        if sub is not None:
            bandwidth[ranks] = peers.copy_bandwidth(sub, nbytes=(64 << 20) if args.quick else (1 << 30))
            for name in devices:
                from ..backends import get_backend
                bandwidth[(name, ranks)] = peers.device_copy_bandwidth(sub, get_backend(name, sub),
                                                                       nbytes=(16 << 20) if args.quick else (1 << 28))
            sub.Free()
        quiet_barrier(comm)
    with scratch_dir(comm, args.dir, "compute-") as scratch:
        rows = _measure_all(comm, args, wanted, rank_counts, scratch)
    solutions, results = None, None
    if comm.rank == 0 and "cpu" in wanted:
        rows += _jerk_kernel_rows(args)
        solutions = hermite.time_to_solution(args.quick)
    quiet_barrier(comm)
    if comm.rank == 0:
        text = report(rows, bandwidth, args)
        if solutions:
            text += "\n\n" + hermite.solutions_table(*solutions)
        log(text)
        results = json.dumps({"machine": machine(), "bandwidth": {str(k): v for k, v in bandwidth.items()},
                              "rows": [asdict(r) for r in rows],
                              "time_to_solution": solutions and {"n": solutions[0], "t_end": solutions[1], "rows": [
                                  dict(zip(("method", "setting", "energy_error", "seconds", "how"), r))
                                  for r in solutions[2]]}}, indent=1).encode()
    root_decides(comm, write_results, args.dir, {RESULTS: results}, "bench --dir")
    return 0


def _measure_all(comm, args, wanted, rank_counts, scratch):
    """Every (problem, backend, rank count) row, measured in ``scratch``."""
    from ..backends import get_backend
    repeats, seconds = args.repeats, args.seconds
    rows = []
    for problem in problems(args.quick):
        size = "x".join(map(str, problem.per_rank))
        measured = [b for b in wanted if b in problem.backends or b in DEVICE_BACKENDS]
        if not measured:
            continue
        against_peer = "cpu" if "cpu" in measured else measured[-1]     # the peers are CPU codes
        for backend in measured:
            first = None
            for ranks in rank_counts:
                sub = _on(comm, ranks)
                if sub is not None:
                    rate, spread, phases, steps, notes = _measure(sub, problem, backend, ranks, repeats, seconds,
                                                                  scratch)
                    row = Row(problem.name, size, backend, ranks, steps, rate, spread, phases, notes=notes)
                    peak = getattr(get_backend(backend), "peak_flops", None)
                    if peak is not None and problem.name.startswith("nbody"):
                        row.peak = ranks * peak(problem.precision)
                    if (sub.rank == 0 and ranks == 1 and backend == against_peer and problem.precision == "float64"
                            and problem.name != "nbody-hermite"):          # REBOUND's peer row is leapfrog
                        row.peer, row.peer_rate, row.peer_spread, note = _peer(problem, backend, steps, repeats, sub,
                                                                               scratch)
                        row.notes += [note] if note else []
                    sub.Free()
                    if comm.rank == 0:
                        first = first or row
                        if ranks > 1:
                            row.weak = row.rate / ranks / first.rate
                        rows.append(row)
                        log(f"  {problem.label:8} {size:>14} {backend:6} {ranks} rank(s): {rate:.3g} {row.unit} "
                            f"(spread {spread:.0%})" + (f"; {row.peer} {row.peer_rate:.3g}" if row.peer_rate else ""))
                quiet_barrier(comm)
    return rows


def _jerk_kernel_rows(args):
    """The cpu backend's force-and-jerk kernel (Hermite) against its force
    kernel (leapfrog), all pairs of 4096 bodies (512 quick), one rank."""
    from ..backends import get_backend
    n = 512 if args.quick else 4096
    (rate, spread), (force, force_spread) = hermite.kernel_rates(get_backend("cpu"), n, args.repeats)
    phases = {"compute": 1.0, "comm": 0.0, "io": 0.0, "diagnostics": 0.0, "other": 0.0}
    return [Row("nbody-jerk", str(n), "cpu", 1, args.repeats, rate, spread, phases, peer="leapfrog force kernel",
                peer_rate=force, peer_spread=force_spread)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def report(rows, bandwidth, args) -> str:
    """The results as a Markdown table, with the goals checked underneath."""
    from .. import __version__
    date = datetime.date.today().isoformat()
    out = [f"solver {__version__} bench, {date}, {machine()}",
           "copy bandwidth (16 B per element copied): " + ", ".join(
               (f"{k[0]} device copy, " if isinstance(k, tuple) else "") +
               f"{k if isinstance(k, int) else k[1]} rank{'s' if (k if isinstance(k, int) else k[1]) > 1 else ''} "
               f"{v / 1e9:.1f} GB/s" for k, v in bandwidth.items()), "",
           "| problem | size per rank | backend | ranks | rate (median) | spread | effective | "
           "of copy bound | peer (1 rank) | ours / peer | weak scaling | compute / comm / I/O / diagnostics / other |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = ""
        key = (r.backend, r.ranks) if r.backend in DEVICE_BACKENDS else r.ranks     # a device: its own copy
        if not r.problem.startswith("nbody") and key in bandwidth:
            bound = f"{r.rate * BYTES_PER_CELL / bandwidth[key]:.0%}"
        peer = f"{r.peer} {r.peer_rate:.3g}" if r.peer_rate else (r.peer or "")
        ratio = f"{r.rate / r.peer_rate:.2f}x" if r.peer_rate else ""
        weak = "" if math.isnan(r.weak) else f"{r.weak:.0%}"
        split = " / ".join(f"{100 * r.phases[k]:.0f}%" for k in ("compute", "comm", "io", "diagnostics", "other"))
        out.append(f"| {r.problem} | {r.size} | {r.backend} | {r.ranks} | {r.rate:.3g} {r.unit} | {r.spread:.0%} | "
                   f"{r.effective} | {bound} | {peer} | {ratio} | {weak} | {split} |")
    out += ["", "Goals (ours / peer on one rank; weak scaling 1 -> 2 ranks):"]
    for r in rows:
        goal = GOALS.get(r.problem)
        if goal and r.peer_rate:
            ratio = r.rate / r.peer_rate
            out.append(f"- {r.problem} {r.size} {r.backend}: {ratio:.2f}x {r.peer} "
                       f"({'met' if ratio >= goal else 'SHORT of'} the {goal}x goal)")
        weak_goal = WEAK_GOALS.get(r.problem)
        if weak_goal and not math.isnan(r.weak) and r.ranks == 2:
            out.append(f"- {r.problem} {r.size} {r.backend}: weak scaling {r.weak:.0%} "
                       f"({'met' if r.weak >= weak_goal else 'SHORT of'} the {weak_goal:.0%} goal)")
        if r.problem.startswith("heat") and not math.isnan(r.weak) and r.ranks == 2:
            out.append(f"- {r.problem} {r.size} {r.backend}: weak scaling {r.weak:.0%} "
                       f"({'met' if r.weak >= WEAK_GOAL else 'SHORT of'} the {WEAK_GOAL:.0%} goal)")
        out += [f"- note: {n}" for n in r.notes]
    out.append(f"\nCommand: mpiexec -n {max(k for k in bandwidth if isinstance(k, int))} python -m solver bench"
               + (" --quick" if args.quick else "") + f" (repeats {args.repeats}, ~{args.seconds:g} s per run)")
    return "\n".join(out)
