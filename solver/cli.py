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
    pl = sub.add_parser("plot", help="pictures of a run (the field or the bodies, tracks, the diagnostics "
                                     "history) or a movie of its snapshots")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.add_argument("--step", type=int, help="the snapshot or checkpoint step to draw (default: the newest)")
    pl.add_argument("--all", action="store_true",
                    help="draw every frame of the series (snapshots, and checkpoints off their steps)")
    pl.add_argument("--out", metavar="DIR", help="where the images go (default: RUN_DIR/plots)")
    pl.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="image format (default png)")
    pl.add_argument("--dpi", type=int, help="resolution of PNGs and movies (default 100)")
    pl.add_argument("--cmap", metavar="NAME", help="matplotlib colour map (default: inferno, or RdBu_r centred "
                                                  "on 0 for a field that changes sign)")
    pl.add_argument("--vmin", type=float, help="colour range low end (default: the series' minimum)")
    pl.add_argument("--vmax", type=float, help="colour range high end (default: the series' maximum)")
    pl.add_argument("--slice", action="append", metavar="AXIS=COORD",
                    help="3-D: draw the plane AXIS=COORD (x0, x1 or x2, in length units); repeat for more "
                         "(default: one plane per axis through the centre of the domain)")
    pl.add_argument("--movie", metavar="OUT.mp4|OUT.gif",
                    help="write a movie of the series instead (ffmpeg when on PATH, else Pillow for .gif)")
    b = sub.add_parser("bench", help="benchmarks: 'compute' (default: kernels against peers and the "
                                     "bandwidth bound), 'io' (checkpoint cost), 'startup' (mpiexec to first step), "
                                     "'sass' (CUDA n-body instructions per pair, from the machine code), "
                                     "'implicit' (time to an accuracy, implicit against explicit)")
    b.add_argument("what", choices=["compute", "io", "startup", "sass", "implicit"], nargs="?", default="compute")
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


def cmd_run(args, comm) -> int:
    """A thin layer over the Python API: a Simulation run to its end."""
    from .api import Simulation
    from .parallel.mpi import log
    from .triggers import EXIT_STOPPED

    options = dict(set=list(args.overrides), comm=comm, output=args.output, backend=args.backend,
                   restart=args.restart, discard_newer=args.discard_newer, handle_signals=True)
    sim = Simulation.from_toml(args.config, **options) if args.config else Simulation(**options)
    if sim.restart_info is not None and sim.step >= sim.end_step:
        log(f"{sim.restart_info.path} is at step {sim.step}, and the run ends at step {sim.end_step}: "
            f"nothing to do (extend it with --set time.steps=N)")
        sim.close()
        return 0
    _state["output"] = sim.output_dir
    _state["running"] = True
    try:
        summary = sim.run()
    except BaseException:                # (run() has made later stop signals harmless: Triggers.finish)
        sim.close(free=False)
        raise
    sim.close()
    if summary["stopped"]:
        log(f"stopped at step {sim.step} of {sim.end_step} ({summary['stopped']}); "
            f"continue with: --restart latest --output {sim.output_dir}")
        return EXIT_STOPPED
    return 0


def cmd_plot(args, comm) -> int:
    """Rank 0 draws; bad input is exit 2 on every rank, a failure that is
    not the user's (a full disk, a failing file system) one line and exit 1."""
    from .parallel.mpi import error_line, log, root_decides
    from .plot import look_of, movie_run, plot_run

    def on_root():
        look = look_of(args)
        if args.movie and (args.step is not None or args.all or args.out or args.format != "png"):
            raise ConfigError("plot: --movie draws the whole series into one file; leave out --step, --all, "
                              "--out and --format")
        try:
            if args.movie:
                return 0, movie_run(args.run_dir, args.movie, look)
            return 0, plot_run(args.run_dir, step=args.step, out_dir=args.out, every=args.all,
                               fmt=args.format, look=look)
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
