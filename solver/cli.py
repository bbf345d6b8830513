"""Command line: ``python -m solver [run] [CONFIG] [--set K=V] ...`` and ``info``.

Bad input is one line on stderr from rank 0 and exit status 2 on every rank;
any other failure aborts all ranks with status 1.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

from . import __version__
from .config import ConfigError, load_settings

COMMANDS = ("run", "info")
DEFAULT_NP_HINT = "mpiexec -n 8 python -m solver"


class _Parser(argparse.ArgumentParser):
    def error(self, message):                      # one line, exit 2, no usage dump
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="solver", description="SPMD heat-diffusion and n-body solver on MPI.")
    p.add_argument("--version", action="version", version=f"solver {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    r = sub.add_parser("run", help="run a simulation (the default command)")
    r.add_argument("config", nargs="?", help="TOML config file (default: the built-in heat problem)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, value in TOML syntax, e.g. --set heat.shape=[64,64]")
    r.add_argument("--output", metavar="DIR", help="output directory (default: [output] dir, else runs/NAME-TIMESTAMP)")
    r.add_argument("--backend", metavar="NAME", help="compute backend: auto, numpy, cpu, cuda, opencl")
    sub.add_parser("info", help="report MPI, HDF5 and backends")
    return p


def parse_args(argv):
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    return build_parser().parse_args(argv)


def _read_config(path, comm):
    """Rank 0 reads the file and broadcasts it: every rank parses the same text."""
    text, problem = None, None
    if comm.rank == 0:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            problem = f"config file {path} not found (see configs/ for examples)"
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"config file {path} cannot be read: {exc}"
    text, problem = comm.bcast((text, problem), root=0)
    if problem:
        raise ConfigError(problem)
    return text


def load(args, comm):
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend.name={args.backend}")
    if args.config:
        name = os.path.splitext(os.path.basename(args.config))[0]
        return load_settings(_read_config(args.config, comm), args.config, overrides, name)
    return load_settings(None, "<default>", overrides, "default")


def resolve_output_dir(settings, args, comm) -> str:
    """Where this run writes; never a directory that already holds a run."""
    from .io.checkpoint import list_checkpoints
    stamp = comm.bcast(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), root=0)
    directory = args.output or settings.output.dir or os.path.join("runs", f"{settings.name}-{stamp}")
    problem = None
    if comm.rank == 0:
        if os.path.exists(directory) and not os.path.isdir(directory):
            problem = f"--output: {directory} exists and is not a directory"
        elif list_checkpoints(os.path.join(directory, "checkpoints")):
            problem = (f"--output: {directory} already holds checkpoints of another run; "
                       f"choose a new output directory (nothing was changed)")
    problem = comm.bcast(problem, root=0)
    if problem:
        raise ConfigError(problem)
    return directory


def prepare_output_dir(directory, comm):
    if comm.rank == 0:
        os.makedirs(os.path.join(directory, "checkpoints"), exist_ok=True)
    comm.Barrier()


def cmd_run(args, comm) -> int:
    from .backends import get_backend
    from .driver import run
    from .models.heat import HeatModel
    from .parallel.mpi import agree, log

    settings = agree(comm, load, args, comm)
    if settings.kind != "heat":
        raise ConfigError(f"problem.kind: {settings.kind!r} is not available in this version; use 'heat'")
    backend = agree(comm, get_backend, settings.backend)
    output_dir = agree(comm, resolve_output_dir, settings, args, comm)
    settings = settings.replace(output=_replace(settings.output, dir=output_dir))
    model = agree(comm, HeatModel, settings, comm, backend)
    agree(comm, model.set_initial)
    prepare_output_dir(output_dir, comm)

    shape = "x".join(map(str, settings.heat.shape))
    log(f"solver {__version__}: heat {shape} ({settings.heat.boundary}, {settings.heat.initial}) on "
        f"{comm.size} rank{'s' if comm.size > 1 else ''} as {'x'.join(map(str, model.decomp.dims))}, "
        f"backend {backend.name}, dt={model.dt:.6g}, steps {model.step_count}->{model.end_step}")
    log(f"output: {output_dir}")
    summary = run(model, settings, output_dir, comm)
    model.close()

    t = summary["timers"]
    rate = model.cells * summary["steps"] / summary["loop_seconds"] if summary["loop_seconds"] > 0 else 0.0
    log(f"done: {summary['steps']} steps in {summary['loop_seconds']:.3g} s, {rate:.4g} cell updates/s; "
        + ", ".join(f"{k} {v:.3g} s" for k, v in t.items()) + " (max over ranks)")
    log(f"wrote {summary['checkpoint']}")
    return 0


def _replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


def cmd_info(args, comm) -> int:
    import h5py
    import numpy

    from .backends import status
    from .parallel.mpi import library_version, log
    log(f"solver {__version__}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}")
    log(f"MPI: {library_version()}; {comm.size} rank{'s' if comm.size > 1 else ''}")
    log(f"h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}, MPI support: {h5py.get_config().mpi}")
    for name, (ok, why) in status().items():
        log(f"backend {name}: {'available' if ok else 'unavailable (' + why + ')'}")
    return 0


def main(argv=None) -> int:
    from .parallel.mpi import error_line, install_abort_hook, world
    install_abort_hook()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.command == "info":
            return cmd_info(args, world)
        return cmd_run(args, world)
    except ConfigError as exc:
        error_line(str(exc))
        return 2
