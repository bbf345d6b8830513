"""Configuration: TOML text + ``--set`` overrides -> validated, frozen settings.

This module knows the sections every run has (``problem``, ``time``,
``output``, ``backend``) and the checkers that every section uses; each
model declares its own section (defaults and validation) in its package,
and ``solver.models.load_settings`` puts the two together.

Every rank parses the same text, so every rank reaches the same verdict and a
bad config stops all of them together (see ``solver.parallel.mpi.agree``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import stat
import tomllib
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """Bad input from the user: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------
# the checkers every section uses; each raises ConfigError naming the key
INT_MAX = 2 ** 63 - 1


def integer(key, v, lo=None, hi=INT_MAX):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: expected an integer, got {show(v)}")
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: must be >= {lo}, got {v}")
    if v > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {v}")
    return v


def number(key, v, positive=False, nonneg=False, magnitude=None):
    """A finite number; ``magnitude`` = (smallest, largest) absolute value
    allowed for a nonzero one, where arithmetic on it would under- or overflow."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {show(v)}")
    try:
        v = float(v)
    except OverflowError:
        raise ConfigError(f"{key}: {v} is too large for a floating-point number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be a finite number, got {v}")
    if positive and v <= 0:
        raise ConfigError(f"{key}: must be > 0, got {v}")
    if nonneg and v < 0:
        raise ConfigError(f"{key}: must be >= 0, got {v}")
    if magnitude is not None and v != 0 and not magnitude[0] <= abs(v) <= magnitude[1]:
        raise ConfigError(f"{key}: {v:g} is outside [{magnitude[0]:g}, {magnitude[1]:g}] in magnitude, where the "
                          f"arithmetic of the solver would under- or overflow; rescale the problem's units")
    return v


def choice(key, v, allowed):
    if not isinstance(v, str) or v not in allowed:
        hint = difflib.get_close_matches(str(v), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, allowed))}, got {show(v)}{extra}")
    return v


def boolean(key, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {show(v)}")
    return v


def string(key, v):
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected a string, got {show(v)}")
    return v


def show(v):
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


BACKENDS = ("auto", "numpy", "cpu", "cuda", "opencl")
SCHEMES = ("explicit", "backward_euler", "crank_nicolson", "bdf2")   # the implicit ones go through PETSc

# the sections of every run: section -> key -> default
COMMON: dict[str, dict[str, Any]] = {
    "problem": {"kind": "heat"},
    "time": {"steps": 100, "dt": "auto", "t_end": None, "safety": 0.9, "wall_limit": 0.0, "scheme": "explicit"},
    "output": {
        "dir": "", "checkpoint_every": 0, "keep": 3, "background": True,
        "log_every": 0, "status_port": 0, "snapshots": False,
        "snapshot_every": 0, "snapshot_dt": 0.0, "snapshot_fields": "all", "snapshot_precision": "float64",
        "snapshot_bodies": "all",
    },
    "backend": {"name": "auto", "device": -1, "gpu_aware_mpi": False},
    "solver": {"petsc_options": ""},
}


# Magnitudes beyond which squares, reciprocals or stencil sums of a value
# under- or overflow double precision: refused up front, not met mid-run.
LENGTHS = (1e-100, 1e100)      # extents and softening: their squares and inverse squares stay normal
SCALES = (1e-200, 1e200)       # diffusivity, G, dt
MAX_VALUE = 1e300              # field values: a stencil sums a few of them


# ----------------------------------------------------------------------------
# frozen settings
@dataclass(frozen=True)
class TimeSettings:
    steps: int
    dt: float | str          # a number, or "auto" until the model resolves it
    t_end: float | None
    safety: float
    wall_limit: float        # seconds of wall time after which to checkpoint and stop; 0: none
    scheme: str = "explicit"  # explicit (FTCS), or an implicit scheme solved through PETSc

    @property
    def implicit(self) -> bool:
        return self.scheme != "explicit"


@dataclass(frozen=True)
class OutputSettings:
    dir: str
    checkpoint_every: int
    keep: int
    background: bool
    log_every: int
    status_port: int         # JSON status on http://127.0.0.1:PORT/ from rank 0; 0: off
    snapshots: bool          # PNG of every checkpoint, rendered off the step loop
    # snapshot files (io.snapshots): a cadence in steps or in simulated time (0: none), the
    # model's fields they hold, their floating-point precision, and for n-body the first K bodies
    snapshot_every: int = 0
    snapshot_dt: float = 0.0
    snapshot_fields: tuple = ()          # names from the model's SNAPSHOT_FIELDS
    snapshot_precision: str = "float64"
    snapshot_bodies: int | str = "all"

    @property
    def snapshots_on(self) -> bool:
        return bool(self.snapshot_every or self.snapshot_dt)


@dataclass(frozen=True)
class Settings:
    """A run's settings.  Each model's section is an attribute of its own
    name (``settings.heat``), from ``models``; ``settings.model`` is the
    section of the model being run."""
    kind: str
    models: dict             # section name -> that model's frozen settings, in registry order
    time: TimeSettings
    output: OutputSettings
    backend: str
    name: str = "default"     # run name: the config file's stem
    device: int = -1          # backend.device: the device index on each node; -1: by the rank on the node
    gpu_aware_mpi: bool = False   # backend.gpu_aware_mpi: halo messages straight from device memory
    petsc_options: str = ""   # solver.petsc_options: PETSc options database entries for implicit schemes

    def __getattr__(self, key):
        models = self.__dict__.get("models") or {}
        if key in models:
            return models[key]
        raise AttributeError(f"settings have no section or field {key!r}")

    @property
    def model(self):
        return self.models[self.kind]

    def replace(self, **changes) -> Settings:
        models = dict(self.models)
        for key in [k for k in changes if k in models]:
            models[key] = changes.pop(key)
        return dataclasses.replace(self, models=models, **changes)

    def to_dict(self) -> dict:
        """The fully resolved config as nested tables (what a TOML file would hold)."""
        d = {
            "problem": {"kind": self.kind},
            **{section: dataclasses.asdict(value) for section, value in self.models.items()},
            "time": dataclasses.asdict(self.time),
            "output": dataclasses.asdict(self.output),
            "backend": {"name": self.backend, "device": self.device, "gpu_aware_mpi": self.gpu_aware_mpi},
            "solver": {"petsc_options": self.petsc_options},
        }
        if self.time.t_end is not None:
            del d["time"]["steps"]         # the end is t_end; steps is derived from it
        for table in d.values():
            for k, v in list(table.items()):
                if v is None:
                    del table[k]
                elif isinstance(v, tuple):
                    table[k] = list(v)
        return d

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


# ----------------------------------------------------------------------------
# reading a file the user names
MAX_TEXT_BYTES = 1 << 20       # a config, or another small text file a user names, is at most 1 MiB

_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(mode, path, what):
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "of an unknown kind")
        raise ConfigError(f"{what} {path} is {kind}, not a regular file; name a regular file")


def open_regular(path, what):
    """``path`` opened for binary reading, if it is a regular file: checked
    before the open, and again on the open descriptor, which is opened
    non-blocking so that a FIFO put there in between cannot hang the open.
    A device or a FIFO is a ConfigError naming ``what``; OSError (a missing
    file too) is the caller's to word."""
    _check_regular(os.stat(path).st_mode, path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(os.fstat(fd).st_mode, path, what)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_small_text(path, what, limit=MAX_TEXT_BYTES) -> str:
    """The text of a small UTF-8 file the user names (``open_regular``), read
    no further than ``limit`` bytes: a larger one is a ConfigError."""
    with open_regular(path, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit / 2 ** 20:g} MiB, the most it may hold; "
                          f"check that it is the right file")
    return data.decode("utf-8")


# ----------------------------------------------------------------------------
# parsing
def parse_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: malformed TOML: {exc}") from None


def parse_override(item: str) -> tuple[str, str, Any]:
    """``heat.shape=[64,64]`` -> ("heat", "shape", [64, 64]); the value is TOML,
    and a bare word that is not valid TOML is taken as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set heat.shape=[64,64]")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item}: KEY must be SECTION.NAME, e.g. time.steps")
    try:
        parsed = tomllib.loads(f"v = {text}")
        value = parsed["v"]
    except tomllib.TOMLDecodeError:
        stripped = text.strip()
        if stripped and all(c.isalnum() or c in "_-./" for c in stripped):
            value = stripped
        else:
            raise ConfigError(f"--set {item}: value is not valid TOML (quote strings, e.g. KEY='text')") from None
    else:
        if len(parsed) != 1:
            raise ConfigError(f"--set {item!r}: one KEY=VALUE per --set (the value holds a line break and another key)")
    return parts[0], parts[1], value


def _check_known(raw: dict, source: str, schema: dict):
    for section, table in raw.items():
        if section not in schema:
            hint = difflib.get_close_matches(section, schema, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else ""
            raise ConfigError(f"{source}: unknown section [{section}]{extra}; allowed: {', '.join(schema)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {show(table)}")
        for key in table:
            if key not in schema[section]:
                names = list(schema[section])
                hint = difflib.get_close_matches(key, names, n=1)
                extra = f" (did you mean {section}.{hint[0]}?)" if hint else ""
                raise ConfigError(f"{source}: unknown key {section}.{key}{extra}; allowed in [{section}]: {', '.join(names)}")


_EITHER = {("time", "steps"): "t_end", ("time", "t_end"): "steps",
           ("output", "snapshot_every"): "snapshot_dt", ("output", "snapshot_dt"): "snapshot_every"}


def load(text: str | None, source: str, overrides, name: str, models: dict, default: dict) -> Settings:
    """Parse TOML ``text`` (None: the tables of ``default``), apply ``--set``
    overrides and validate everything into frozen settings.  ``models``:
    section name -> the model's declarations (``DEFAULTS``, ``validate``)."""
    schema = {"problem": COMMON["problem"], **{k: m.DEFAULTS for k, m in models.items()},
              **{k: v for k, v in COMMON.items() if k != "problem"}}
    if text is None:
        raw = {s: dict(t) for s, t in default.items()}
        explicit = {s: set() for s in schema}      # the built-in values give way to t_end
    else:
        raw = parse_toml(text, source)
        _check_known(raw, source, schema)
        explicit = {s: set(raw.get(s, {})) for s in schema}
    from_set = set()
    for item in overrides:
        section, key, value = parse_override(item)
        _check_known({section: {key: value}}, f"--set {item}", schema)
        raw.setdefault(section, {})[key] = value
        explicit[section].add(key)
        from_set.add((section, key))
        # time.steps and time.t_end are two ways to say where a run ends, and
        # output.snapshot_every and snapshot_dt two cadences of snapshots:
        # one given with --set replaces the other from the file
        other = _EITHER.get((section, key))
        if other and (section, other) not in from_set:
            raw.get(section, {}).pop(other, None)
            explicit[section].discard(other)
    merged = {s: {**defaults, **raw.get(s, {})} for s, defaults in schema.items()}
    try:
        kind = choice("problem.kind", merged["problem"]["kind"], tuple(models))
        sections = {k: m.validate(merged[k], explicit[k]) for k, m in models.items()}
        return _validate(merged, explicit, name, kind, sections, getattr(models[kind], "SNAPSHOT_FIELDS", {}))
    except ConfigError as exc:
        raise ConfigError(_say_where(str(exc), from_set, explicit, source if text is not None else None)) from None


def _say_where(message, from_set, explicit, source):
    """Name where the offending key came from: a --set, the file, or the defaults."""
    key = message.split(":", 1)[0]
    section, _, name = key.partition(".")
    if (section, name) in from_set:
        return f"{message} (from --set {key}=...)"
    if source and name in explicit.get(section, ()):
        return f"{message} (in {source})"
    return message


def _validate(c: dict, explicit: dict, name: str, kind: str, sections: dict, fields=()) -> Settings:
    """The common sections, and the whole."""
    t = c["time"]
    dt = t["dt"]
    if dt != "auto":
        if isinstance(dt, str):
            raise ConfigError(f"time.dt: expected a positive number or 'auto', got {show(dt)}")
        dt = number("time.dt", dt, positive=True, magnitude=SCALES)
    t_end = t["t_end"]
    if t_end is not None:
        t_end = number("time.t_end", t_end, positive=True)
        if "steps" in explicit["time"]:
            raise ConfigError("time.t_end: set either time.steps or time.t_end, not both "
                              "(a --set of one replaces the other from the file)")
    scheme = choice("time.scheme", t["scheme"], SCHEMES)
    if scheme != "explicit" and dt == "auto":
        raise ConfigError(f"time.dt: 'auto' is the explicit scheme's stability limit, and {scheme} is stable at "
                          f"any step: its dt is chosen for accuracy; set time.dt to a number (with time.t_end, "
                          f"dt is fitted to land on it)")
    if scheme != "explicit" and kind != "heat":
        raise ConfigError(f"time.scheme: {scheme!r} is an implicit scheme of the heat equation; a {kind} run "
                          f"steps with its own integrator (use 'explicit')")
    safety = number("time.safety", t["safety"], positive=True)
    if safety > 1:
        raise ConfigError(f"time.safety: the fraction of the stability limit must be in (0, 1], got {safety}")
    time = TimeSettings(steps=integer("time.steps", t["steps"], lo=0), dt=dt, t_end=t_end, safety=safety,
                        wall_limit=number("time.wall_limit", t["wall_limit"], nonneg=True), scheme=scheme)

    o = c["output"]
    output = OutputSettings(
        dir=string("output.dir", o["dir"]),
        checkpoint_every=integer("output.checkpoint_every", o["checkpoint_every"], lo=0),
        keep=integer("output.keep", o["keep"], lo=0),
        background=boolean("output.background", o["background"]),
        log_every=integer("output.log_every", o["log_every"], lo=0),
        status_port=integer("output.status_port", o["status_port"], lo=0),
        snapshots=boolean("output.snapshots", o["snapshots"]),
        **_snapshot_keys(o, time, kind, fields),
    )
    if output.status_port > 65535:
        raise ConfigError(f"output.status_port: must be a TCP port (1-65535) or 0 for off, got {output.status_port}")
    backend = choice("backend.name", c["backend"]["name"], BACKENDS)
    device = integer("backend.device", c["backend"]["device"], lo=-1)
    gpu_aware = boolean("backend.gpu_aware_mpi", c["backend"]["gpu_aware_mpi"])
    petsc_options = string("solver.petsc_options", c["solver"]["petsc_options"])
    if petsc_options.strip() and not petsc_options.split()[0].startswith("-"):
        raise ConfigError(f"solver.petsc_options: expected PETSc options such as '-ksp_type cg -pc_type mg', "
                          f"got {show(petsc_options)}")
    return Settings(kind=kind, models=sections, time=time, output=output, backend=backend, name=name,
                    device=device, gpu_aware_mpi=gpu_aware, petsc_options=petsc_options)


def _snapshot_keys(o: dict, time: TimeSettings, kind: str, fields) -> dict:
    """The snapshot keys of [output]: one cadence at most, fields of the
    model (``fields``: its names), and a snapshot_dt that time.t_end is a
    whole multiple of (the steps land on both exactly)."""
    every = integer("output.snapshot_every", o["snapshot_every"], lo=0)
    every_dt = number("output.snapshot_dt", o["snapshot_dt"], nonneg=True, magnitude=SCALES)
    if every and every_dt:
        raise ConfigError("output.snapshot_dt: set either output.snapshot_every (steps) or output.snapshot_dt "
                          "(simulated time), not both")
    if every_dt and time.t_end is not None:
        ratio = time.t_end / every_dt
        if abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio) or round(ratio) < 1:
            raise ConfigError(f"output.snapshot_dt: time.t_end = {time.t_end:g} is not a whole multiple of "
                              f"{every_dt:g} (the steps land on both); choose a snapshot_dt that divides t_end")
    names = tuple(fields)
    chosen = o["snapshot_fields"]
    if chosen == "all":
        chosen = list(names)
    if not isinstance(chosen, list) or not all(isinstance(v, str) for v in chosen):
        raise ConfigError(f"output.snapshot_fields: expected \"all\" or a list of field names "
                          f"({', '.join(names)}), got {show(chosen)}")
    for v in chosen:
        choice("output.snapshot_fields", v, names)
    if not chosen and (every or every_dt):
        raise ConfigError(f"output.snapshot_fields: name at least one field ({', '.join(names)}) or \"all\"")
    bodies = o["snapshot_bodies"]
    if bodies != "all":
        if isinstance(bodies, str):
            raise ConfigError(f"output.snapshot_bodies: expected \"all\" or a number of bodies, got {show(bodies)}")
        bodies = integer("output.snapshot_bodies", bodies, lo=1)
        if kind != "nbody":
            raise ConfigError("output.snapshot_bodies: applies to n-body runs only; remove it")
    return {"snapshot_every": every, "snapshot_dt": every_dt,
            "snapshot_fields": tuple(v for v in names if v in chosen),
            "snapshot_precision": choice("output.snapshot_precision", o["snapshot_precision"],
                                         ("float64", "float32")),
            "snapshot_bodies": bodies}


# ----------------------------------------------------------------------------
# a small TOML writer for the resolved config stored in every output file
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_toml_char(c) for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


toml_value = _toml_value      # a value as TOML text (the Python API turns set={...} into --set items)


def _toml_char(c: str) -> str:
    """One character of a TOML basic string: quotes, backslashes and control characters escaped."""
    if c in '"\\':
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c


def dump_toml(tables: dict) -> str:
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines)
