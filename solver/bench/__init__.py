"""Benchmarks: ``bench`` (alias ``bench compute``) measures the kernels in
the solver's own step loop against peer codes and the memory-bandwidth
bound; ``bench io`` what checkpointing costs; ``bench startup`` the time from
``mpiexec`` to the first step; ``bench sass`` the CUDA n-body kernels'
instructions per pair, from their machine code; ``bench implicit`` the
implicit heat schemes' time to a stated accuracy against the explicit
scheme's."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager


def median_spread(values) -> tuple[float, float]:
    """(median, (max - min) / median): the figure and how far repeats strayed."""
    med = statistics.median(values)
    return med, (max(values) - min(values)) / med if med else 0.0


@contextmanager
def scratch_dir(comm, parent, prefix):
    """A new directory under ``parent`` for a benchmark's runs, removed
    afterwards with whatever the benchmark put there, and ``parent`` too if
    the benchmark created it: never anything the benchmark did not create."""
    from ..config import ConfigError
    from ..parallel.mpi import root_decides

    def create():
        made = not os.path.exists(parent)
        try:
            os.makedirs(parent, exist_ok=True)
            return tempfile.mkdtemp(prefix=prefix, dir=parent), made
        except OSError as exc:
            raise ConfigError(f"bench --dir: cannot create a scratch directory in {parent}: "
                              f"{exc.strerror or exc}") from None
    path, made_parent = root_decides(comm, create)
    try:
        yield path
        comm.Barrier()
    finally:
        if comm.rank == 0:
            shutil.rmtree(path, ignore_errors=True)
            if made_parent:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass                 # results were written there: keep it


def timed_run(comm, directory, overrides, prepare=None):
    """Build the model ``overrides`` describe, run it through the solver's
    own time loop into ``directory`` (emptied), and return (wall seconds of
    the run, the run's summary, the model).  ``prepare(model)`` runs before
    the clock starts.  ``directory`` lies inside a ``scratch_dir``.
    Collective over ``comm``."""
    from ..backends import get_backend
    from ..models import load_settings, make_model
    from ..driver import run
    from ..triggers import Triggers
    settings = load_settings(None, "<bench>", list(overrides))
    if comm.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(os.path.join(directory, "checkpoints"))
    comm.Barrier()
    model = make_model(settings, comm, get_backend(settings.backend, comm, settings.device, settings.gpu_aware_mpi), None)
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
    if args.what == "sass":
        from .sass import bench_sass
        return bench_sass(args, comm)
    if args.what not in ("compute", "io", "implicit"):
        raise ConfigError(f"bench {args.what}: run it without mpiexec, as python -m solver bench {args.what}")
    if args.what == "io":
        from .io import bench_io
        try:
            shape = tuple(int(n) for n in str(args.shape).split(","))
        except ValueError:
            raise ConfigError(f"bench io --shape: expected 2 or 3 comma-separated integers, e.g. 2048,2048; "
                              f"got {args.shape!r}") from None
        if len(shape) not in (2, 3) or min(shape) < 1 or args.steps < 1 or args.every < 1:
            raise ConfigError("bench io: --shape needs 2 or 3 positive sizes, --steps and --every positive integers")
        with scratch_dir(comm, args.dir or "runs", "bench-io-") as scratch:
            bench_io(comm, shape, args.steps, args.every, scratch, repeats=args.repeats, backend=args.backend)
        return 0
    if args.what == "implicit":
        from .implicit import bench_implicit
        return bench_implicit(comm, args)
    from .compute import bench_compute
    args.dir = args.dir or "runs/bench"
    return bench_compute(comm, args)
