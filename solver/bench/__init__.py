"""Benchmarks: ``bench`` (alias ``bench compute``) measures the kernels in
the solver's own step loop against peer codes and the memory-bandwidth
bound; ``bench io`` what checkpointing costs; ``bench startup`` the time from
``mpiexec`` to the first step."""
from __future__ import annotations

import os
import shutil
import statistics
import time


def median_spread(values) -> tuple[float, float]:
    """(median, (max - min) / median): the figure and how far repeats strayed."""
    med = statistics.median(values)
    return med, (max(values) - min(values)) / med if med else 0.0


def timed_run(comm, directory, overrides, prepare=None):
    """Build the model ``overrides`` describe, run it through the solver's
    own time loop into ``directory`` (emptied), and return (wall seconds of
    the run, the run's summary, the model).  ``prepare(model)`` runs before
    the clock starts.  Collective over ``comm``."""
    from ..backends import get_backend
    from ..cli import make_model
    from ..config import load_settings
    from ..driver import run
    from ..triggers import Triggers
    settings = load_settings(None, "<bench>", list(overrides))
    if comm.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(os.path.join(directory, "checkpoints"))
    comm.Barrier()
    model = make_model(settings, comm, get_backend(settings.backend), None)
    model.set_initial()
    if prepare is not None:
        prepare(model)
    comm.Barrier()
    t0 = time.perf_counter()
    summary = run(model, settings, directory, comm, Triggers(), None, quiet=True)
    comm.Barrier()
    return time.perf_counter() - t0, summary, model


def cmd_bench(args, comm) -> int:
    from ..config import ConfigError
    if args.repeats < 1 or (args.what == "compute" and args.seconds <= 0):
        raise ConfigError("bench: --repeats must be at least 1 and --seconds positive")
    if args.what not in ("compute", "io"):
        raise ConfigError(f"bench {args.what}: run it without mpiexec, as python -m solver bench {args.what}")
    if args.what == "io":
        from .io import bench_io
        shape = tuple(int(n) for n in str(args.shape).split(","))
        bench_io(comm, shape, args.steps, args.every, args.dir or "runs/bench-io",
                 repeats=args.repeats, backend=args.backend)
        return 0
    from .compute import bench_compute
    args.dir = args.dir or "runs/bench"
    return bench_compute(comm, args)
