"""The Python API: one run as an object, for scripts, notebooks and the command line.

    import solver
    sim = solver.Simulation.from_toml("configs/heat2d.toml", set={"heat.shape": [128, 128]})
    sim.run(steps=100)                  # or sim.run(t_end=0.05), or sim.run() to the config's end
    u = sim.field(gather=True)          # the global field on rank 0 (None elsewhere)
    sim.diagnostics()                   # {"step": ..., "time": ..., "heat": ..., ...}
    sim.checkpoint()                    # a restart point now

A Simulation is collective: under ``mpiexec`` every rank of ``comm`` (default
MPI.COMM_WORLD) makes it and calls each method in the same order.  Bad input
raises ``ConfigError`` (a ``ValueError``) on every rank, a state that stops
being finite ``FloatingPointError``, a failed checkpoint write
``WriterError``; nothing here calls ``sys.exit`` or installs signal handlers
unless asked (``handle_signals``, as the command line does).  MPI starts on
the first Simulation, not on ``import solver``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types

from . import __version__
from .config import ConfigError


def _toml_text(tables: dict) -> str:
    """TOML text of a dict of tables ({"heat": {"shape": [64, 64]}, ...})."""
    from .config import dump_toml
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError("Simulation(config): expected a dict of tables, e.g. {'heat': {'shape': [64, 64]}}")
    try:
        return dump_toml({section: {k: _plain(v) for k, v in table.items()} for section, table in tables.items()})
    except TypeError as exc:
        raise ConfigError(f"Simulation(config): {exc}") from None


def _plain(value):
    """NumPy numbers and arrays as the Python values TOML takes."""
    return value.tolist() if hasattr(value, "tolist") else value


def _overrides(changes) -> list[str]:
    """``set={"heat.shape": [64, 64]}`` as ``--set`` items (``heat.shape=[64, 64]``)."""
    from .config import toml_value
    items = []
    for key, value in (changes or {}).items():
        try:
            items.append(f"{key}={toml_value(_plain(value))}")
        except TypeError as exc:
            raise ConfigError(f"set={{{key!r}: ...}}: {exc}") from None
    return items


def _read_config_file(path, comm) -> str:
    """Rank 0 reads the file and broadcasts it: every rank parses the same text."""
    from .config import read_small_text
    from .parallel.mpi import root_decides

    def read():
        try:
            return read_small_text(path, "config file")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found (see configs/ for examples)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    return root_decides(comm, read)


def _run_name(text, source) -> str:
    """The NAME of a default run directory runs/NAME-TIMESTAMP: the config file's stem."""
    if text is None:
        return "default"
    return "simulation" if source.startswith("<") else os.path.splitext(os.path.basename(source))[0]


def shown_path(path) -> str:
    """How a path is printed and stored: relative to the working directory
    when it lies inside it (as a fresh run's default is), absolute otherwise."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else os.path.abspath(path)


def _same_on_every_rank(comm, settings):
    """ConfigError on every rank if the ranks resolved different settings
    (say ``set=`` computed per rank): they would step to different ends and
    wait on each other for good.  Names the first line that differs."""
    if comm.size == 1:
        return
    texts = comm.allgather(settings.to_toml())
    for rank, text in enumerate(texts):
        if text != texts[0]:
            section, line = "", ""
            for a, b in zip(texts[0].splitlines(), text.splitlines()):
                if a != b:
                    line = f"{section}{b.strip()}"
                    break
                if a.startswith("["):
                    section = a.strip("[] ") + "."
            raise ConfigError(f"Simulation: rank {rank} has other settings than rank 0 (rank {rank}: {line}); "
                              f"every rank must pass the same config, set= and options")


class Simulation:
    """A heat or n-body run: settings, its model on a backend, its run directory.

    ``config``: a dict of TOML tables, e.g. ``{"problem": {"kind": "nbody"},
    "nbody": {"initial": "figure8"}}`` (None: the built-in default heat
    problem); ``set``: overrides, ``{"SECTION.KEY": value}`` (or ``--set``
    strings, ``["SECTION.KEY=VALUE", ...]``); ``comm``: the
    ranks that run it (default MPI.COMM_WORLD); ``output``: the run
    directory (default ``[output] dir``, else ``runs/NAME-TIMESTAMP``);
    ``backend``: "auto", "numpy", "cpu", "cuda", "opencl"; ``restart``: a
    checkpoint file, a run directory or "latest" (of ``output``), with
    ``discard_newer`` as ``--discard-newer``; ``name``: NAME of the default
    run directory (default: the config file's stem).  ``quiet``: print
    nothing (rank 0 prints progress lines otherwise).  ``handle_signals``:
    take SIGUSR1, SIGTERM, SIGINT, ... as checkpoint and stop requests while
    ``run`` runs, as the command line does (a library leaves them alone).

    Making it (collective) reads and checks everything and claims the run
    directory (creates it, or locks the run's own on a restart); nothing is
    written into it before the first ``run`` or ``checkpoint``, and
    ``close`` gives back a claim that was never used.
    """

    def __init__(self, config: dict | None = None, *, set: dict | None = None, comm=None, output=None,
                 backend=None, restart=None, discard_newer=False, name=None, quiet=False, handle_signals=False,
                 _text=None, _source=None):
        from .parallel.mpi import world
        self.comm = comm = comm if comm is not None else world
        self.quiet, self.handle_signals = quiet, handle_signals
        overrides = _overrides(set) if isinstance(set, dict) else list(set or [])
        if backend:
            overrides.append(f"backend.name={backend}")
        if config is not None:
            _text, _source = _toml_text(config), _source or "<dict>"
        source = _source or "<default>"
        self._setup(_text, source, overrides, name or _run_name(_text, source), output, restart, discard_newer)

    @classmethod
    def from_toml(cls, path, *, set: dict | None = None, comm=None, **options) -> Simulation:
        """A Simulation from a TOML config file (read by rank 0, shared with every rank)."""
        from .parallel.mpi import world
        comm = comm if comm is not None else world
        path = os.fspath(path)
        return cls(set=set, comm=comm, _text=_read_config_file(path, comm), _source=path, **options)

    # --- setting up (collective) -----------------------------------------------
    def _setup(self, text, source, overrides, name, output, restart, discard_newer):
        from .backends import get_backend
        from .models import load_settings, make_model
        from .parallel.mpi import agree
        from .restart import plan

        comm = self.comm
        args = types.SimpleNamespace(config=text is not None, output=os.fspath(output) if output else None,
                                     restart=os.fspath(restart) if restart else None, discard_newer=discard_newer)
        settings, out, info = agree(comm, plan, args, comm,
                                    lambda: load_settings(text, source, overrides, name), overrides)
        out.path = shown_path(out.path)
        self._out, self.restart_info = out, info
        self._helper, self._started, self._closed, self._broken = None, False, False, None
        self._last_checkpoint = (None, None)         # (step, path) of the newest checkpoint written
        try:                             # bad input found from here on leaves no trace of the claim
            self.backend = agree(comm, get_backend, settings.backend, comm, settings.device,
                                 settings.gpu_aware_mpi)
            settings = settings.replace(output=dataclasses.replace(settings.output, dir=out.path))
            _same_on_every_rank(comm, settings)
            self.model = agree(comm, make_model, settings, comm, self.backend, info)
            agree(comm, self.model.set_initial)
        except BaseException:
            self._release()
            raise
        self.settings = self.model.settings
        self._end = self.model.end_step              # the config's end (run() moves the model's)
        self._said = False                           # whether the opening lines were printed

    def _release(self):
        if self.comm.rank == 0:
            self._out.release()

    def _start(self):
        """Before the first write: the request-file watcher (and status port)
        on rank 0, then what the run replaces is moved aside (collective)."""
        from .io.aio import AsyncHelper
        from .models import get
        from .parallel.mpi import agree, root_decides
        from .triggers import Triggers
        if self._closed:
            raise RuntimeError("this Simulation is closed")
        if self._broken:
            newest = f" ({self._last_checkpoint[1]})" if self._last_checkpoint[1] else ""
            raise RuntimeError(f"this Simulation stopped with {self._broken}, and its state may be incomplete; "
                               f"continue from its newest checkpoint{newest}: "
                               f"Simulation(restart='latest', output={self.output_dir!r})")
        if self._started:
            return
        settings = self.settings
        try:
            if self.comm.rank == 0:      # the status port is bound before anything is written
                spec = get(settings.kind)
                self._helper = agree(self.comm, AsyncHelper, self.output_dir, Triggers(), spec.xdmf_grid,
                                     settings.output.status_port,
                                     spec.picture if settings.output.snapshots else None)
            else:
                agree(self.comm, lambda: None)
            root_decides(self.comm, self._out.commit)
        except (ConfigError, KeyboardInterrupt):
            if self._helper is not None:
                self._helper.close()
                self._helper = None
            self._release()
            raise
        if self.comm.rank == 0:
            os.makedirs(os.path.join(self.output_dir, "checkpoints"), exist_ok=True)
        self.comm.Barrier()
        self._started = True

    # --- what a run is at ------------------------------------------------------
    @property
    def kind(self) -> str:
        """"heat" or "nbody"."""
        return self.settings.kind

    @property
    def step(self) -> int:
        return self.model.step_count

    @property
    def time(self) -> float:
        return self.model.time

    @property
    def dt(self) -> float:
        return self.model.dt

    @property
    def end_step(self) -> int:
        """Where ``run()`` with no argument stops: the config's ``time.steps`` or ``time.t_end``."""
        return self._end

    @property
    def output_dir(self) -> str:
        return self._out.path

    @property
    def last_checkpoint(self) -> str | None:
        """The newest checkpoint this Simulation wrote (a path), or None."""
        return self._last_checkpoint[1]

    # --- running (collective) --------------------------------------------------
    def run(self, steps: int | None = None, t_end: float | None = None) -> dict:
        """(Collective.) Advance ``steps`` more steps, or up to simulated time ``t_end``
        (which must lie a whole number of steps of dt ahead: the step lands
        on it exactly), or with neither to the config's end.  Diagnostics go
        to ``diagnostics.csv`` and the progress lines; checkpoints follow
        ``[output] checkpoint_every``, and the state reached is always
        checkpointed (a restart point after every call).  Returns a summary:
        ``steps``, ``loop_seconds``, ``final`` (the diagnostics at the end),
        ``checkpoint`` (its path), ``stopped`` (why it stopped early: a STOP
        file, a wall-clock limit, a signal; else None), ``timers``, ``warnings``."""
        return self._advance_to(self._agreed_target(steps, t_end))

    def _agreed_target(self, steps, t_end) -> int:
        """The step to run to, the same on every rank (collective): an
        argument refused on one rank, or ranks asking for different ends,
        raise on every rank rather than leave the others waiting."""
        try:
            target, problem = self._target(steps, t_end), None
        except (ValueError, TypeError) as exc:
            target, problem = None, str(exc)
        if self.comm.size == 1:
            found = [(target, problem)]
        else:
            found = self.comm.allgather((target, problem))
        problems = [p for _, p in found if p is not None]
        if problems:
            raise ConfigError(problems[0])
        ends = [t for t, _ in found]
        if len(set(ends)) > 1:
            raise ConfigError(f"run(): the ranks asked for different end steps ({', '.join(map(str, ends))} on "
                              f"ranks 0..{len(ends) - 1}); every rank calls run() with the same arguments")
        return target

    def _target(self, steps, t_end) -> int:
        if steps is not None and t_end is not None:
            raise ValueError("run(): give steps or t_end, not both")
        now = self.step
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
                raise ValueError(f"run(steps={steps!r}): expected a whole number >= 0")
            return now + int(steps)
        if t_end is None:
            return max(now, self._end)
        if not math.isfinite(float(t_end)):
            raise ValueError(f"run(t_end={t_end!r}): expected a finite time")
        span = (float(t_end) - self.time) / self.dt
        whole = round(span)
        if span < -1e-9 or abs(span - whole) > 1e-9 * max(1.0, abs(span)):
            raise ValueError(f"run(t_end={t_end!r}): the simulation is at t = {self.time:.12g} with dt = "
                             f"{self.dt:.12g}, so t_end is {span:.6g} steps away, not a whole number >= 0; "
                             f"to end at a chosen time, set it in the config (set={{'time.t_end': {t_end!r}}}: "
                             f"dt is fitted to it) and call run(), or choose a dt that divides the span")
        return now + whole

    def _advance_to(self, target) -> dict:
        from .driver import run
        from .parallel.mpi import log
        from .triggers import Triggers
        self._start()
        model, comm = self.model, self.comm
        triggers = Triggers(self.settings.time.wall_limit)
        if self.handle_signals:
            triggers.install()           # before the first line, so a job that has printed can be signalled
        if self._helper is not None:
            self._helper.triggers = triggers
        if not (self.quiet or self._said):
            self._said = True
            log(f"solver {__version__}: {model.describe()}, backend {self.backend.name}, dt={model.dt:.6g}, "
                f"steps {model.step_count}->{target}", comm)
            if self.restart_info is not None:
                n = self.restart_info.attrs["nranks"]
                log(f"restart: from {self.restart_info.path} (written by {n} rank{'s' if n != 1 else ''})", comm)
            log(f"output: {self.output_dir}", comm)
        model.end_step = target
        lineage = {"run_id": self._out.run_id, **({"parent": self._out.parent} if self._out.parent else {})}
        try:
            summary = run(model, self.settings, self.output_dir, comm, triggers, self._helper, quiet=self.quiet,
                          lineage=lineage)
        except BaseException as exc:     # the state may be half a step on, or not finite
            self._broken = f"{type(exc).__name__} at step {model.step_count}"
            raise
        self._last_checkpoint = (model.step_count, summary["checkpoint"])
        if not self.quiet and summary["steps"]:
            t = summary["timers"]
            seconds = summary["loop_seconds"]
            rate = model.work_per_step * summary["steps"] / seconds if seconds > 0 else 0.0
            log(f"done: {summary['steps']} steps in {seconds:.3g} s, {rate:.4g} {model.work_name}/s; "
                + ", ".join(f"{k} {v:.3g} s" for k, v in t.items() if v > 0) + " (max over ranks)", comm)
        if not self.quiet:
            log(f"wrote {summary['checkpoint']}", comm)
            for warning in summary["warnings"]:
                log(f"warning: {warning}", comm)
        return summary

    def checkpoint(self) -> str:
        """(Collective.) Write a checkpoint of the state now (unless the newest one this
        Simulation wrote is of this very step) and return its path.  Any
        rank count can restart it: ``Simulation(restart=PATH, ...)``."""
        step, path = self._last_checkpoint
        if step == self.step and path is not None:
            return path
        quiet, self.quiet = self.quiet, True
        try:
            return self._advance_to(self.step)["checkpoint"]
        finally:
            self.quiet = quiet

    # --- the state (collective where it says so) ---------------------------------
    def diagnostics(self) -> dict:
        """The global diagnostics now (collective): step, time, and the
        model's quantities (heat: total heat, min, max, errors against the
        exact solution where there is one; n-body: energies, momenta)."""
        return {k: int(v) if k == "step" else float(v) for k, v in self.model.diagnostics().items()}

    def field(self, gather: bool = False, root: int = 0):
        """Heat: this rank's block of u as a NumPy array (array-axis order, no
        ghost cells; its place in the global grid is ``block()``); with
        ``gather=True`` (collective) the global field on rank ``root`` and
        None on every other rank."""
        if self.kind != "heat":
            raise TypeError(f"field(): a {self.kind} simulation has no field; use bodies()")
        local = self.model.local_field()
        if not gather:
            return local
        import numpy as np
        parts = self.comm.gather((self.model.decomp.global_slices, local), root=root)
        if self.comm.rank != root:
            return None
        whole = np.empty(tuple(self.model.heat.shape), dtype=local.dtype)
        for where, block in parts:
            whole[where] = block
        return whole

    def block(self) -> tuple:
        """Heat: the slices of the global grid this rank's ``field()`` covers."""
        if self.kind != "heat":
            raise TypeError(f"block(): a {self.kind} simulation has no grid; use bodies()")
        return tuple(self.model.decomp.global_slices)

    def coordinates(self) -> tuple:
        """Heat: the cell-centre coordinates along each axis of the global grid."""
        import numpy as np
        if self.kind != "heat":
            raise TypeError(f"coordinates(): a {self.kind} simulation has no grid; use bodies()")
        return tuple((np.arange(n) + 0.5) * h for n, h in zip(self.model.heat.shape, self.model.heat.spacing))

    def bodies(self, gather: bool = False, root: int = 0) -> dict | None:
        """N-body: this rank's bodies as {"id", "position" (k, 3), "velocity"
        (k, 3), "mass" (k,)}, NumPy copies; with ``gather=True`` (collective)
        every body, in id order, on rank ``root`` and None elsewhere."""
        import numpy as np
        if self.kind != "nbody":
            raise TypeError(f"bodies(): a {self.kind} simulation has no bodies; use field()")
        m = self.model
        mine = {"id": m.ids.copy(), "position": m.x.copy(), "velocity": m.v.copy(), "mass": m.m.copy()}
        if not gather:
            return mine
        parts = self.comm.gather(mine, root=root)
        if self.comm.rank != root:
            return None
        merged = {k: np.concatenate([p[k] for p in parts]) for k in mine}
        order = np.argsort(merged["id"], kind="stable")
        return {k: v[order] for k, v in merged.items()}

    # --- the end -----------------------------------------------------------------
    def close(self, free: bool = True):
        """Stop the helper thread and free the model's MPI resources
        (collective).  A Simulation that never wrote gives back its run
        directory (removes what claiming it created).  ``free=False`` leaves
        the model alone: after a failure, when the job is about to end."""
        if self._closed:
            return
        self._closed = True
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        if not self._started:
            self._release()
        if self.comm.rank == 0:
            self._out.unlock()
        if free:
            self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<Simulation {self.model.describe()}, step {self.step}, t={self.time:.6g}, "
                f"output {self.output_dir}>")
