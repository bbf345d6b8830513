"""Where a run lives and where it restarts from.

A run directory holds ``checkpoints/``, ``diagnostics.csv`` and XDMF files.
``--restart latest`` takes the newest complete checkpoint of the output
directory; ``--restart PATH`` a checkpoint file or a run directory.  The
checkpoint must describe the same problem as the config (shape and physics);
anything else is one clear error before anything is allocated or written.
"""
from __future__ import annotations

import datetime
import os

from .config import ConfigError, load_settings
from .io.checkpoint import inspect_checkpoint, list_checkpoints
from .parallel.mpi import root_decides

# keys that define the problem: a restart must not change them
PHYSICS = {
    "heat": ("shape", "extent", "diffusivity", "boundary", "boundary_value"),
    "nbody": ("n", "softening", "G", "precision"),
}


def run_dir_of(checkpoint_path: str) -> str:
    """The run directory of ``RUN/checkpoints/step_N.h5``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))


def newest_checkpoint(directory: str, what: str) -> str:
    ckpt_dir = os.path.join(directory, "checkpoints")
    found = list_checkpoints(ckpt_dir) or list_checkpoints(directory)
    if not found:
        raise ConfigError(f"{what}: no complete checkpoint (checkpoints/step_*.h5) in {directory}")
    return found[-1][1]


def resolve_restart_path(spec: str, output_dir: str | None) -> str:
    if spec == "latest":
        if not output_dir:
            raise ConfigError("--restart latest: name the run with --output DIR (or [output] dir in the config)")
        if not os.path.isdir(output_dir):
            raise ConfigError(f"--restart latest: output directory {output_dir} does not exist")
        return newest_checkpoint(output_dir, "--restart latest")
    if os.path.isdir(spec):
        return newest_checkpoint(spec, f"--restart {spec}")
    return spec


def settings_from_checkpoint(info, overrides):
    """The run's own config, stored in the checkpoint, with --set overrides."""
    name = os.path.basename(run_dir_of(info.path))
    try:
        return load_settings(str(info.attrs["config"]), f"config stored in {info.path}", overrides, name)
    except ConfigError as exc:
        if str(exc).startswith("--set"):
            raise
        raise ConfigError(f"--restart: the config stored in {info.path} is not valid ({exc})") from None


def check_compatible(settings, info):
    """The checkpoint must hold the config's problem with the same physics."""
    problem = info.attrs["problem"]
    if problem != settings.kind:
        raise ConfigError(f"--restart: {info.path} holds a {problem!r} run but problem.kind is {settings.kind!r}")
    try:
        stored = load_settings(str(info.attrs["config"]), "stored config")
    except ConfigError as exc:
        raise ConfigError(f"--restart: the config stored in {info.path} is not valid ({exc})") from None
    mine, theirs = getattr(settings, problem), getattr(stored, problem)
    for key in PHYSICS[problem]:
        a, b = getattr(mine, key), getattr(theirs, key)
        if a != b:
            raise ConfigError(f"--restart: {problem}.{key} is {_show(a)} in the config but {_show(b)} in {info.path}; "
                              f"a restart cannot change it")
    if problem == "heat":
        found = info.shapes.get("heat/u")
        if found != tuple(settings.heat.shape):
            raise ConfigError(f"--restart: /heat/u in {info.path} has shape {list(found) if found else 'none'}, "
                              f"expected {list(settings.heat.shape)} (damaged checkpoint)")
        if info.dtypes.get("heat/u") != "<f8":
            raise ConfigError(f"--restart: /heat/u in {info.path} is not float64 (damaged checkpoint)")
    if problem == "nbody":
        n, dtype = settings.nbody.n, "<f8" if settings.nbody.precision == "float64" else "<f4"
        for name, shape in (("position", (n, 3)), ("velocity", (n, 3)), ("mass", (n,))):
            if info.shapes.get(f"nbody/{name}") != shape or info.dtypes.get(f"nbody/{name}") != dtype:
                raise ConfigError(f"--restart: /nbody/{name} in {info.path} is not {dtype} of shape {list(shape)} "
                                  f"(damaged checkpoint)")
    step = info.attrs["step"]
    if not isinstance(step, int) or step < 0:
        raise ConfigError(f"--restart: {info.path} has an invalid step attribute {step!r}")


def _particle_count(settings, info):
    """An n-body start that fixes n (figure8, kepler, a file) fixes it on restart too."""
    if settings.kind != "nbody":
        return settings
    from .models.nbody import resolve_settings
    n = None
    if settings.nbody.initial == "file" and info.shapes.get("nbody/mass"):
        n = info.shapes["nbody/mass"][0]
    return resolve_settings(settings, n)


def _show(v):
    return list(v) if isinstance(v, tuple) else repr(v)


def _fresh_dir(settings, requested) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = requested or settings.output.dir or os.path.join("runs", f"{settings.name}-{stamp}")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"--output: {directory} exists and is not a directory")
    if list_checkpoints(os.path.join(directory, "checkpoints")):
        raise ConfigError(f"--output: {directory} already holds checkpoints of another run; continue it with "
                          f"--restart latest, or choose a new output directory (nothing was changed)")
    return directory


def new_output_dir(settings, requested, comm) -> str:
    """A fresh run's directory (rank 0 decides): never one that already holds a run."""
    return root_decides(comm, _fresh_dir, settings, requested)


def plan(args, comm, load_config, overrides):
    """(settings, output_dir, checkpoint info or None) for ``run`` arguments.

    ``load_config()`` returns settings from the config file or the built-in
    default; on a restart without a config file, the checkpoint's own config
    is used, with ``overrides`` (``--set``) applied."""
    if not args.restart:
        settings = load_config()
        return settings, new_output_dir(settings, args.output, comm), None
    settings = load_config() if args.config else None
    hint_dir = args.output or (settings.output.dir if settings else None)
    path = root_decides(comm, resolve_restart_path, args.restart, hint_dir)
    info = inspect_checkpoint(path, comm)
    if settings is None:
        settings = settings_from_checkpoint(info, overrides)
    settings = _particle_count(settings, info)
    check_compatible(settings, info)
    output_dir = args.output or (settings.output.dir if args.config else "") or run_dir_of(path)
    return settings, output_dir, info
