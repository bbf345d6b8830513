"""The ``[heat]`` section: its keys, defaults and validation."""
from __future__ import annotations

from dataclasses import dataclass

from ...config import (
    LENGTHS,
    MAX_VALUE,
    SCALES,
    ConfigError,
    choice,
    integer,
    number,
    show,
    string,
)

BOUNDARIES = ("dirichlet", "neumann", "periodic")
INITIAL = ("sine", "gaussian", "hotspot", "random", "file")
DEFAULTS = {
    "shape": [128, 128], "extent": None, "diffusivity": 1.0,
    "boundary": "dirichlet", "boundary_value": 0.0, "initial": "sine",
    "modes": None, "seed": 0, "file": "", "fused_steps": 0,
}
# the problem and its start: a restart must not change them (the analytic
# error and the provenance in later checkpoints depend on them)
PHYSICS = ("shape", "extent", "diffusivity", "boundary", "boundary_value", "initial", "modes", "seed")


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


def _per_axis(key, value, ndim, default, what):
    """A value per axis: a list of ``ndim``, or one value for every axis."""
    if value is None:
        value = [default] * ndim
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * ndim
    if not isinstance(value, list) or len(value) != ndim:
        raise ConfigError(f"{key}: expected {what} (one per axis of heat.shape), got {show(value)}")
    return value


def _check_resolved(modes, shape, boundary):
    """The sine start's mode numbers must be ones the grid resolves (below the Nyquist limit)."""
    for axis, (m, n) in enumerate(zip(modes, shape)):
        top = {"dirichlet": n, "neumann": n - 1, "periodic": n // 2}[boundary]
        if m > top:
            raise ConfigError(f"heat.modes: mode {m} on axis {axis} is beyond what {n} cells resolve "
                              f"(at most {top} with {boundary} walls); use a smaller mode or a finer grid")


def validate(h: dict, explicit: set) -> HeatSettings:
    """Frozen settings from the merged table ``h`` (defaults, file, --set)."""
    shape = h["shape"]
    if (not isinstance(shape, list) or len(shape) not in (2, 3)
            or any(isinstance(n, bool) or not isinstance(n, int) for n in shape)):
        raise ConfigError(f"heat.shape: expected a list of 2 or 3 integers (cells per axis), got {show(shape)}")
    if any(n < 1 for n in shape):
        raise ConfigError(f"heat.shape: every size must be >= 1, got {shape}")
    ndim = len(shape)
    extent = _per_axis("heat.extent", h["extent"], ndim, 1.0, f"a number or a list of {ndim} lengths")
    extent = tuple(number("heat.extent", e, positive=True, magnitude=LENGTHS) for e in extent)
    boundary = choice("heat.boundary", h["boundary"], BOUNDARIES)
    modes = _per_axis("heat.modes", h["modes"], ndim, 1, f"a list of {ndim} integers")
    modes = tuple(integer("heat.modes", m, lo=1 if boundary == "dirichlet" else 0) for m in modes)
    initial = choice("heat.initial", h["initial"], INITIAL)
    if initial == "sine":
        _check_resolved(modes, shape, boundary)
    heat_file = string("heat.file", h["file"])
    if initial == "file" and not heat_file:
        raise ConfigError("heat.file: heat.initial = 'file' needs heat.file, the path of an HDF5 checkpoint to start from")
    return HeatSettings(
        shape=tuple(shape), extent=extent,
        diffusivity=number("heat.diffusivity", h["diffusivity"], positive=True, magnitude=SCALES),
        boundary=boundary,
        boundary_value=number("heat.boundary_value", h["boundary_value"], magnitude=(0.0, MAX_VALUE)),
        initial=initial, modes=modes, seed=integer("heat.seed", h["seed"], lo=0), file=heat_file,
        fused_steps=integer("heat.fused_steps", h["fused_steps"], lo=0),
    )
