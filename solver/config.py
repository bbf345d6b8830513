"""Configuration: TOML text + ``--set`` overrides -> validated, frozen settings.

Every rank parses the same text, so every rank reaches the same verdict and a
bad config stops all of them together (see ``solver.parallel.mpi.agree``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """Bad input from the user: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------
# the schema: section -> key -> (checker, default); MISSING means "no default"
MISSING = object()
BOUNDARIES = ("dirichlet", "neumann", "periodic")
HEAT_INITIAL = ("sine", "gaussian", "hotspot", "random", "file")
NBODY_INITIAL = ("plummer", "figure8", "kepler", "uniform", "file")
BACKENDS = ("auto", "numpy", "cpu", "cuda", "opencl")


INT_MAX = 2 ** 63 - 1


def _int(key, v, lo=None, hi=INT_MAX):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: expected an integer, got {_show(v)}")
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: must be >= {lo}, got {v}")
    if v > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {v}")
    return v


def _float(key, v, positive=False, nonneg=False, magnitude=None):
    """A finite number; ``magnitude`` = (smallest, largest) absolute value
    allowed for a nonzero one, where arithmetic on it would under- or overflow."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {_show(v)}")
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


def _choice(key, v, allowed):
    if not isinstance(v, str) or v not in allowed:
        hint = difflib.get_close_matches(str(v), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, allowed))}, got {_show(v)}{extra}")
    return v


def _bool(key, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {_show(v)}")
    return v


def _str(key, v):
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected a string, got {_show(v)}")
    return v


def _show(v):
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


SCHEMA: dict[str, dict[str, Any]] = {
    "problem": {"kind": "heat"},
    "heat": {
        "shape": [128, 128], "extent": None, "diffusivity": 1.0,
        "boundary": "dirichlet", "boundary_value": 0.0, "initial": "sine",
        "modes": None, "seed": 0, "file": "", "fused_steps": 0,
    },
    "nbody": {
        "n": 1000, "initial": "plummer", "softening": 0.01, "seed": 0,
        "precision": "float64", "G": 1.0, "file": "", "eccentricity": 0.5,
        "decomposition": "allgather", "energy_warning": 1e-3,
    },
    "time": {"steps": 100, "dt": "auto", "t_end": None, "safety": 0.9, "wall_limit": 0.0},
    "output": {
        "dir": "", "checkpoint_every": 0, "keep": 3, "background": True,
        "log_every": 0, "status_port": 0, "snapshots": False,
    },
    "backend": {"name": "auto"},
}


# Magnitudes beyond which squares, reciprocals or stencil sums of a value
# under- or overflow double precision: refused up front, not met mid-run.
LENGTHS = (1e-100, 1e100)      # extents and softening: their squares and inverse squares stay normal
SCALES = (1e-200, 1e200)       # diffusivity, G, dt
MAX_VALUE = 1e300              # field values: a stencil sums a few of them


def _check_resolved(modes, shape, boundary):
    """The sine start's mode numbers must be ones the grid resolves (below the Nyquist limit)."""
    for axis, (m, n) in enumerate(zip(modes, shape)):
        top = {"dirichlet": n, "neumann": n - 1, "periodic": n // 2}[boundary]
        if m > top:
            raise ConfigError(f"heat.modes: mode {m} on axis {axis} is beyond what {n} cells resolve "
                              f"(at most {top} with {boundary} walls); use a smaller mode or a finer grid")


# ----------------------------------------------------------------------------
# frozen settings
@dataclass(frozen=True)
class HeatSettings:
    shape: tuple[int, ...]
    extent: tuple[float, ...]
    diffusivity: float
    boundary: str
    boundary_value: float
    initial: str
    modes: tuple[int, ...]
    seed: int
    file: str
    fused_steps: int         # steps per halo exchange; 0: the backend's choice

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(L / n for L, n in zip(self.extent, self.shape))


@dataclass(frozen=True)
class NBodySettings:
    n: int
    initial: str
    softening: float
    seed: int
    precision: str
    G: float
    file: str
    eccentricity: float      # of the 'kepler' start
    decomposition: str       # 'allgather' (bitwise on any rank count) or 'ring'
    energy_warning: float    # relative energy error above which the run warns; 0: never


@dataclass(frozen=True)
class TimeSettings:
    steps: int
    dt: float | str          # a number, or "auto" until the model resolves it
    t_end: float | None
    safety: float
    wall_limit: float        # seconds of wall time after which to checkpoint and stop; 0: none


@dataclass(frozen=True)
class OutputSettings:
    dir: str
    checkpoint_every: int
    keep: int
    background: bool
    log_every: int
    status_port: int         # JSON status on http://127.0.0.1:PORT/ from rank 0; 0: off
    snapshots: bool          # PNG of every checkpoint, rendered off the step loop


@dataclass(frozen=True)
class Settings:
    kind: str
    heat: HeatSettings
    nbody: NBodySettings
    time: TimeSettings
    output: OutputSettings
    backend: str
    name: str = "default"     # run name: the config file's stem

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fully resolved config as nested tables (what a TOML file would hold)."""
        d = {
            "problem": {"kind": self.kind},
            "heat": dataclasses.asdict(self.heat),
            "nbody": dataclasses.asdict(self.nbody),
            "time": dataclasses.asdict(self.time),
            "output": dataclasses.asdict(self.output),
            "backend": {"name": self.backend},
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


def _check_known(raw: dict, source: str):
    for section, table in raw.items():
        if section not in SCHEMA:
            hint = difflib.get_close_matches(section, SCHEMA, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else ""
            raise ConfigError(f"{source}: unknown section [{section}]{extra}; allowed: {', '.join(SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {_show(table)}")
        for key in table:
            if key not in SCHEMA[section]:
                names = list(SCHEMA[section])
                hint = difflib.get_close_matches(key, names, n=1)
                extra = f" (did you mean {section}.{hint[0]}?)" if hint else ""
                raise ConfigError(f"{source}: unknown key {section}.{key}{extra}; allowed in [{section}]: {', '.join(names)}")


# The problem `python -m solver` runs with no config: a 2D plate whose
# sine start decays to about a quarter in 5000 steps (seconds on a laptop).
DEFAULT_PROBLEM = {
    "heat": {"shape": [256, 256]},
    "time": {"steps": 5000},
    "output": {"checkpoint_every": 2500},
}


def load_settings(text: str | None, source: str = "<default>", overrides=(), name: str = "default") -> Settings:
    """Parse TOML ``text`` (None: the built-in default problem), apply ``--set``
    overrides and validate everything into frozen settings."""
    if text is None:
        raw = {s: dict(t) for s, t in DEFAULT_PROBLEM.items()}
        explicit = {s: set() for s in SCHEMA}      # the built-in values give way to t_end
    else:
        raw = parse_toml(text, source)
        _check_known(raw, source)
        explicit = {s: set(raw.get(s, {})) for s in SCHEMA}
    from_set = set()
    for item in overrides:
        section, key, value = parse_override(item)
        _check_known({section: {key: value}}, f"--set {item}")
        raw.setdefault(section, {})[key] = value
        explicit[section].add(key)
        from_set.add((section, key))
        # time.steps and time.t_end are two ways to say where a run ends:
        # one given with --set replaces the other from the file
        other = {"steps": "t_end", "t_end": "steps"}.get(key) if section == "time" else None
        if other and ("time", other) not in from_set:
            raw.get("time", {}).pop(other, None)
            explicit["time"].discard(other)
    merged = {s: {**defaults, **raw.get(s, {})} for s, defaults in SCHEMA.items()}
    try:
        return _validate(merged, explicit, name)
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


def _validate(c: dict, explicit: dict, name: str) -> Settings:
    kind = _choice("problem.kind", c["problem"]["kind"], ("heat", "nbody"))

    h = c["heat"]
    shape = h["shape"]
    if (not isinstance(shape, list) or len(shape) not in (2, 3)
            or any(isinstance(n, bool) or not isinstance(n, int) for n in shape)):
        raise ConfigError(f"heat.shape: expected a list of 2 or 3 integers (cells per axis), got {_show(shape)}")
    if any(n < 1 for n in shape):
        raise ConfigError(f"heat.shape: every size must be >= 1, got {shape}")
    ndim = len(shape)
    extent = h["extent"]
    if extent is None:
        extent = [1.0] * ndim
    elif isinstance(extent, (int, float)) and not isinstance(extent, bool):
        extent = [extent] * ndim
    if not isinstance(extent, list) or len(extent) != ndim:
        raise ConfigError(f"heat.extent: expected a number or a list of {ndim} lengths (one per axis of heat.shape), got {_show(extent)}")
    extent = tuple(_float("heat.extent", e, positive=True, magnitude=LENGTHS) for e in extent)
    boundary = _choice("heat.boundary", h["boundary"], BOUNDARIES)
    modes = h["modes"]
    if modes is None:
        modes = [1] * ndim
    elif isinstance(modes, int) and not isinstance(modes, bool):
        modes = [modes] * ndim
    if not isinstance(modes, list) or len(modes) != ndim:
        raise ConfigError(f"heat.modes: expected a list of {ndim} integers (one per axis of heat.shape), got {_show(modes)}")
    lo = 1 if boundary == "dirichlet" else 0
    modes = tuple(_int("heat.modes", m, lo=lo) for m in modes)
    initial = _choice("heat.initial", h["initial"], HEAT_INITIAL)
    if initial == "sine":
        _check_resolved(modes, shape, boundary)
    heat_file = _str("heat.file", h["file"])
    if initial == "file" and not heat_file:
        raise ConfigError("heat.file: heat.initial = 'file' needs heat.file, the path of an HDF5 checkpoint to start from")
    heat = HeatSettings(
        shape=tuple(shape), extent=extent,
        diffusivity=_float("heat.diffusivity", h["diffusivity"], positive=True, magnitude=SCALES),
        boundary=boundary,
        boundary_value=_float("heat.boundary_value", h["boundary_value"], magnitude=(0.0, MAX_VALUE)),
        initial=initial, modes=modes, seed=_int("heat.seed", h["seed"], lo=0), file=heat_file,
        fused_steps=_int("heat.fused_steps", h["fused_steps"], lo=0),
    )

    b = c["nbody"]
    nbody = NBodySettings(
        n=_int("nbody.n", b["n"], lo=1),
        initial=_choice("nbody.initial", b["initial"], NBODY_INITIAL),
        softening=_float("nbody.softening", b["softening"], nonneg=True, magnitude=LENGTHS),
        seed=_int("nbody.seed", b["seed"], lo=0),
        precision=_choice("nbody.precision", b["precision"], ("float64", "float32")),
        G=_float("nbody.G", b["G"], positive=True, magnitude=SCALES),
        file=_str("nbody.file", b["file"]),
        eccentricity=_float("nbody.eccentricity", b["eccentricity"], nonneg=True),
        decomposition=_choice("nbody.decomposition", b["decomposition"], ("allgather", "ring")),
        energy_warning=_float("nbody.energy_warning", b["energy_warning"], nonneg=True),
    )
    if nbody.eccentricity >= 1:
        raise ConfigError(f"nbody.eccentricity: a bound orbit needs 0 <= e < 1, got {nbody.eccentricity}")
    if nbody.initial == "file" and not nbody.file:
        raise ConfigError("nbody.file: nbody.initial = 'file' needs nbody.file, the path of an HDF5 file "
                          "with /nbody/position, /nbody/velocity and /nbody/mass")

    t = c["time"]
    dt = t["dt"]
    if dt != "auto":
        if isinstance(dt, str):
            raise ConfigError(f"time.dt: expected a positive number or 'auto', got {_show(dt)}")
        dt = _float("time.dt", dt, positive=True, magnitude=SCALES)
    t_end = t["t_end"]
    if t_end is not None:
        t_end = _float("time.t_end", t_end, positive=True)
        if "steps" in explicit["time"]:
            raise ConfigError("time.t_end: set either time.steps or time.t_end, not both "
                              "(a --set of one replaces the other from the file)")
    safety = _float("time.safety", t["safety"], positive=True)
    if safety > 1:
        raise ConfigError(f"time.safety: the fraction of the stability limit must be in (0, 1], got {safety}")
    time = TimeSettings(steps=_int("time.steps", t["steps"], lo=0), dt=dt, t_end=t_end, safety=safety,
                        wall_limit=_float("time.wall_limit", t["wall_limit"], nonneg=True))

    o = c["output"]
    output = OutputSettings(
        dir=_str("output.dir", o["dir"]),
        checkpoint_every=_int("output.checkpoint_every", o["checkpoint_every"], lo=0),
        keep=_int("output.keep", o["keep"], lo=0),
        background=_bool("output.background", o["background"]),
        log_every=_int("output.log_every", o["log_every"], lo=0),
        status_port=_int("output.status_port", o["status_port"], lo=0),
        snapshots=_bool("output.snapshots", o["snapshots"]),
    )
    if output.status_port > 65535:
        raise ConfigError(f"output.status_port: must be a TCP port (1-65535) or 0 for off, got {output.status_port}")
    backend = _choice("backend.name", c["backend"]["name"], BACKENDS)
    return Settings(kind=kind, heat=heat, nbody=nbody, time=time, output=output, backend=backend, name=name)


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
