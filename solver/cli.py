"""Command line: ``python -m solver [run] [CONFIG] [--set K=V] ...`` and ``info``.

Bad input is one line on stderr from rank 0 and exit status 2 on every rank;
any other failure aborts all ranks with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config import ConfigError

COMMANDS = ("run", "info", "plot", "bench")
EXIT_NUMERICAL = 4        # the state stopped being finite (or became singular); the last good checkpoint stays
EXIT_INTERRUPTED = 130    # a second Ctrl-C (128 + SIGINT), or Ctrl-C during start-up
_state = {"running": False, "output": None}


def _newest_kept() -> str:
    """What a run stopped at once leaves to continue from."""
    from .io.rotation import list_checkpoints
    found = list_checkpoints(os.path.join(_state["output"] or "", "checkpoints"))
    if not found:
        return "no checkpoint had been written"
    return f"the newest complete checkpoint is {found[-1][1]} (continue with --restart latest)"


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
    r.add_argument("--restart", metavar="PATH|latest",
                   help="continue from a checkpoint file, a run directory, or the newest checkpoint of --output")
    r.add_argument("--discard-newer", action="store_true",
                   help="with --restart FILE: continue the run in its own directory from that checkpoint, "
                        "moving newer checkpoints aside (renamed *.discarded, never deleted)")
    sub.add_parser("info", help="report MPI, HDF5 and backends")
    pl = sub.add_parser("plot", help="PNG images of a run: the field and the diagnostics history")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.add_argument("--step", type=int, help="checkpoint step to draw (default: the newest)")
    pl.add_argument("--out", metavar="DIR", help="where the PNGs go (default: RUN_DIR/plots)")
    b = sub.add_parser("bench", help="benchmarks: 'compute' (default: kernels against peers and the "
                                     "bandwidth bound), 'io' (checkpoint cost), 'startup' (mpiexec to first step), "
                                     "'implicit' (time to an accuracy, implicit against explicit)")
    b.add_argument("what", choices=["compute", "io", "startup", "implicit"], nargs="?", default="compute")
    b.add_argument("--backends", help="compute: comma-separated backends (default: every available one)")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is reported")
    b.add_argument("--seconds", type=float, default=1.0, help="compute: about how long each timed run lasts")
    b.add_argument("--quick", action="store_true", help="compute: small problems (a smoke test of the command)")
    b.add_argument("--ranks", type=int, default=8, help="startup: ranks to launch (default 8)")
    b.add_argument("--shape", default="2048,2048", help="io: grid (default 2048,2048)")
    b.add_argument("--steps", type=int, default=200, help="io: steps per run")
    b.add_argument("--every", type=int, default=10, help="io: checkpoint interval")
    b.add_argument("--dir", help="scratch and results directory (default runs/bench)")
    b.add_argument("--backend", default="auto", help="io: compute backend of the stepping (default: auto)")
    b.add_argument("--size", type=int, default=2048, help="implicit: grid cells per axis (default 2048)")
    b.add_argument("--sizes", help="implicit: grids of the multigrid table (default 512,1024,... up to --size)")
    b.add_argument("--search", type=int, default=256, help="implicit: grid on which the largest dt is searched")
    b.add_argument("--explicit-steps", type=int, default=3000, help="implicit: explicit steps timed")
    b.add_argument("--weak-size", type=int, default=512, help="implicit: cells per axis per rank, weak scaling")
    return p


def parse_args(argv):
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    return build_parser().parse_args(argv)


def _read_text(path):
    """A config file's text: a regular file of at most 1 MiB (not a FIFO or a device)."""
    from .config import read_small_text
    try:
        return read_small_text(path, "config file")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (see configs/ for examples)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None


def _read_config(path, comm):
    """Rank 0 reads the file and broadcasts it: every rank parses the same text."""
    from .parallel.mpi import root_decides
    return root_decides(comm, _read_text, path)


def _overrides(args):
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend.name={args.backend}")
    return overrides


def load(args, comm):
    """Settings from the config file named on the command line, or the built-in default."""
    from .models import load_settings
    if args.config:
        name = os.path.splitext(os.path.basename(args.config))[0]
        return load_settings(_read_config(args.config, comm), args.config, _overrides(args), name)
    return load_settings(None, "<default>", _overrides(args), "default")


def shown_path(path) -> str:
    """How a path is printed and stored: relative to the working directory
    when it lies inside it (as a fresh run's default is), absolute otherwise."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else os.path.abspath(path)


def prepare_output_dir(directory, comm):
    if comm.rank == 0:
        os.makedirs(os.path.join(directory, "checkpoints"), exist_ok=True)
    comm.Barrier()


def cmd_run(args, comm) -> int:
    import dataclasses

    from .backends import get_backend
    from .driver import run
    from .io.aio import AsyncHelper
    from .models import get, make_model
    from .parallel.mpi import agree, log, root_decides
    from .restart import plan
    from .triggers import EXIT_STOPPED, Triggers

    settings, out, restart = agree(comm, plan, args, comm, lambda: load(args, comm), _overrides(args))
    output_dir = out.path = shown_path(out.path)
    helper = None
    try:                                 # bad input found from here on leaves no trace of the claim
        backend = agree(comm, get_backend, settings.backend, comm, settings.device, settings.gpu_aware_mpi)
        settings = settings.replace(output=dataclasses.replace(settings.output, dir=output_dir))
        model = agree(comm, make_model, settings, comm, backend, restart)
        agree(comm, model.set_initial)
        settings = model.settings
        if restart is not None and model.step_count >= model.end_step:
            log(f"{restart.path} is at step {model.step_count}, and the run ends at step {model.end_step}: "
                f"nothing to do (extend it with --set time.steps=N)")
            if comm.rank == 0:
                out.release()
            return 0
        triggers = Triggers(settings.time.wall_limit)
        if comm.rank == 0:               # the status port is bound before anything is written
            spec = get(settings.kind)
            helper = agree(comm, AsyncHelper, output_dir, triggers, spec.xdmf_grid, settings.output.status_port,
                           spec.picture if settings.output.snapshots else None)
        else:
            agree(comm, lambda: None)
        root_decides(comm, out.commit)   # the run starts: move aside what it replaces
    except (ConfigError, KeyboardInterrupt):
        if helper is not None:
            helper.close()
        if comm.rank == 0:
            out.release()
        raise
    prepare_output_dir(output_dir, comm)
    _state["output"] = output_dir

    triggers.install()                   # before the first line, so a job that has printed can be signalled
    _state["running"] = True
    log(f"solver {__version__}: {model.describe()}, backend {backend.name}, dt={model.dt:.6g}, "
        f"steps {model.step_count}->{model.end_step}")
    if restart is not None:
        n = restart.attrs["nranks"]
        log(f"restart: from {restart.path} (written by {n} rank{'s' if n != 1 else ''})")
    log(f"output: {output_dir}")

    try:
        summary = run(model, settings, output_dir, comm, triggers, helper,
                      lineage={"run_id": out.run_id, **({"parent": out.parent} if out.parent else {})})
    finally:                             # (run() has made later stop signals harmless: Triggers.finish)
        if helper is not None:
            helper.close()
    model.close()

    t = summary["timers"]
    rate = model.work_per_step * summary["steps"] / summary["loop_seconds"] if summary["loop_seconds"] > 0 else 0.0
    log(f"done: {summary['steps']} steps in {summary['loop_seconds']:.3g} s, {rate:.4g} {model.work_name}/s; "
        + ", ".join(f"{k} {v:.3g} s" for k, v in t.items() if v > 0) + " (max over ranks)")
    log(f"wrote {summary['checkpoint']}")
    for warning in summary["warnings"]:
        log(f"warning: {warning}")
    if summary["stopped"]:
        log(f"stopped at step {model.step_count} of {model.end_step} ({summary['stopped']}); "
            f"continue with: --restart latest --output {output_dir}")
        return EXIT_STOPPED
    return 0


def cmd_plot(args, comm) -> int:
    """Rank 0 draws; bad input is exit 2 on every rank, a failure that is
    not the user's (a full disk, a failing file system) one line and exit 1."""
    from .parallel.mpi import error_line, log, root_decides
    from .plot import plot_run

    def on_root():
        try:
            return 0, plot_run(args.run_dir, step=args.step, out_dir=args.out)
        except OSError as exc:
            return 1, f"plot: {exc}"
    code, result = root_decides(comm, on_root)
    if code:
        error_line(result, comm)
        return 1
    for path in result:
        log(f"wrote {path}", comm)
    return 0


def cmd_info(args, comm) -> int:
    import h5py
    import numpy

    from .backends import status
    from .parallel.mpi import library_version, log
    log(f"solver {__version__}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}")
    log(f"MPI: {library_version()}; {comm.size} rank{'s' if comm.size > 1 else ''}")
    log(f"h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}, MPI support: {h5py.get_config().mpi}")
    from .backends import get_backend
    for name, (ok, why) in status().items():
        log(f"backend {name}: {'available' if ok else 'unavailable (' + why + ')'}")
        for k, device in enumerate(getattr(get_backend(name), "devices", list)() if ok else []):
            log(f"  device {k}: {device}")
    from .models.heat.implicit import describe
    log(f"PETSc (implicit heat schemes): {describe()}")
    log(f"GPUs: {_gpus()}")
    return 0


def _gpus() -> str:
    import shutil
    import subprocess
    if not shutil.which("nvidia-smi"):
        return "none found (no nvidia-smi on PATH)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {exc}"
    return "; ".join(out.splitlines()) or "none found"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:                     # PETSc's options follow '--' (implicit schemes)
        from .models.heat.implicit import set_command_line
        argv, petsc_words = argv[:argv.index("--")], argv[argv.index("--") + 1:]
        set_command_line(petsc_words)
    if "startup" in argv and "bench" in argv:
        args = parse_args(argv)         # a usage error exits 2 here, before MPI starts
        if args.command == "bench" and args.what == "startup":
            # launches mpiexec itself, so must not start MPI here (a singleton cannot)
            from .bench.startup import bench_startup
            return bench_startup(args)
    from .parallel.launch import check_before_mpi, check_world
    try:
        check_before_mpi()
    except ConfigError as exc:           # every task says it: none of them can reach the others
        sys.stderr.write(f"solver: error: {exc}\n")
        return 2
    from .io.writer import WriterError
    from .parallel.mpi import abort, error_line, install_abort_hook, world
    install_abort_hook()
    try:
        check_world(world.size)
        args = parse_args(argv)
        if args.command == "info":
            return cmd_info(args, world)
        if args.command == "plot":
            return cmd_plot(args, world)
        if args.command == "bench":
            from .bench import cmd_bench
            return cmd_bench(args, world)
        return cmd_run(args, world)
    except ConfigError as exc:
        error_line(str(exc))
        return 2
    except FloatingPointError as exc:        # raised on every rank at the same step
        error_line(str(exc))
        return EXIT_NUMERICAL
    except KeyboardInterrupt:
        if _state["running"]:
            message = "interrupted again: stopped at once, without a final checkpoint; " + _newest_kept()
        else:
            message = "interrupted during start-up; no checkpoint was written"
        sys.stderr.write(f"solver: {message}\n")
        abort(EXIT_INTERRUPTED)
    except MemoryError:
        sys.stderr.write(f"solver: rank {world.rank}: error: out of memory; use more ranks or nodes, "
                         f"or a smaller problem\n")
        abort(1)
    except WriterError as exc:
        # every rank raised this at the same step (the message names the rank
        # that failed, so rank 0 says it once); writer threads may be stuck
        # in a collective that will never complete, so abort rather than exit
        error_line(str(exc))
        world.Barrier()
        abort(1)
