"""The ``[heat]`` section: its keys, defaults and validation.

The equation is du/dt = div(D grad u) + Q.  ``diffusivity`` (D) and
``source`` (Q) are numbers or cell fields (a path: ``"FILE.npy"``,
``"FILE.h5:DATASET"``, ``"FILE.h5"``; read by ``io/fields.py``).  Walls are
given per face: ``boundary`` is one kind for every face or ``[low, high]``
pairs per axis; ``boundary_value`` and ``boundary_transfer`` are one number
or pairs of the same form.  A value that would be ignored (a flux on a
periodic face, a transfer coefficient without a Robin face) is refused.
"""
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

BOUNDARIES = ("dirichlet", "neumann", "robin", "periodic")
INITIAL = ("sine", "gaussian", "hotspot", "random", "file")
DEFAULTS = {
    "shape": [128, 128], "extent": None, "diffusivity": 1.0, "source": 0.0,
    "boundary": "dirichlet", "boundary_value": 0.0, "boundary_transfer": 0.0, "initial": "sine",
    "modes": None, "seed": 0, "file": "", "fused_steps": 0,
}
# the problem and its start: a restart must not change them (the analytic
# error and the provenance in later checkpoints depend on them); the fields
# behind a path are checked by their digest in the checkpoint
PHYSICS = ("shape", "extent", "diffusivity", "source", "boundary", "boundary_value", "boundary_transfer",
           "initial", "modes", "seed")
SIDES = ("low", "high")


@dataclass(frozen=True)
class HeatSettings:
    shape: tuple[int, ...]
    extent: tuple[float, ...]
    diffusivity: float | str         # a number, or the path of a cell field
    source: float | str              # likewise; heat added per unit volume and time
    boundary: str | tuple            # one kind, or ((low, high), ...) per axis, as written
    boundary_value: float | tuple    # wall temperature, flux into the domain, or ambient value
    boundary_transfer: float | tuple  # the Robin coefficient h
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

    @property
    def faces(self) -> tuple[tuple[str, str], ...]:
        """The kind of every face: ((low, high), ...) per axis."""
        return _pairs(self.boundary, self.ndim)

    @property
    def face_values(self) -> tuple[tuple[float, float], ...]:
        """Per face: the wall temperature, the flux into the domain or the ambient value (periodic: 0)."""
        return _scalar_on_walls(self.boundary_value, self.faces)

    @property
    def face_transfer(self) -> tuple[tuple[float, float], ...]:
        """Per face: the Robin coefficient h (0 where the face is not robin)."""
        if isinstance(self.boundary_transfer, tuple):
            return self.boundary_transfer
        return tuple(tuple(self.boundary_transfer if k == "robin" else 0.0 for k in pair) for pair in self.faces)

    @property
    def periods(self) -> tuple[bool, ...]:
        """Whether each axis is periodic."""
        return tuple(lo == "periodic" for lo, _ in self.faces)

    def axis_kind(self, axis) -> str:
        """The kind of both faces of ``axis``, or "mixed" where they differ."""
        lo, hi = self.faces[axis]
        return lo if lo == hi else "mixed"

    @property
    def constant(self) -> bool:
        """D is one number and there is no source: the constant-coefficient scheme."""
        return not isinstance(self.diffusivity, str) and not isinstance(self.source, str) and self.source == 0


def _pairs(value, ndim):
    return value if isinstance(value, tuple) else tuple((value, value) for _ in range(ndim))


def _scalar_on_walls(value, faces):
    """Per-face values: pairs as given; one number applies to every face but a periodic one."""
    if isinstance(value, tuple):
        return value
    return tuple(tuple(0.0 if k == "periodic" else value for k in pair) for pair in faces)


def _per_axis(key, value, ndim, default, what):
    """A value per axis: a list of ``ndim``, or one value for every axis."""
    if value is None:
        value = [default] * ndim
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * ndim
    if not isinstance(value, list) or len(value) != ndim:
        raise ConfigError(f"{key}: expected {what} (one per axis of heat.shape), got {show(value)}")
    return value


def _face_form(key, value, ndim, one, what):
    """One value for every face (checked by ``one``), or ``ndim`` pairs [low, high]."""
    if not isinstance(value, list):
        return one(key, value)
    if len(value) != ndim or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise ConfigError(f"{key}: expected {what} or a list of {ndim} [low, high] pairs (one per axis), "
                          f"got {show(value)}")
    return tuple((one(key, lo), one(key, hi)) for lo, hi in value)


FIELD_SUFFIXES = (".npy", ".h5", ".hdf5", ".hdf", ".he5", ".nc", ".nc4")


def _field_or_number(key, value, **limits):
    """A number, or the spec of a cell field: 'FILE.npy', 'FILE.h5:DATASET'
    or an HDF5 file by its suffix (io/fields.py reads it)."""
    if isinstance(value, str):
        path = value if value.endswith(".npy") or ":" not in value else value.rsplit(":", 1)[0]
        if not path.strip() or not (":" in value or path.lower().endswith(FIELD_SUFFIXES)):
            raise ConfigError(f"{key}: expected a number or a cell field ('FILE.npy', 'FILE.h5:DATASET', "
                              f"'FILE.h5'), got {show(value)}")
        return value
    return number(key, value, **limits)


def _check_faces(faces, values, transfer):
    """Periodic only as a pair; every value used by its face, none ignored."""
    for axis, ((k_lo, k_hi), vals, hs) in enumerate(zip(faces, values, transfer)):
        if (k_lo == "periodic") != (k_hi == "periodic"):
            raise ConfigError(f"heat.boundary: periodic applies to both faces of an axis; axis {axis} has "
                              f"[{k_lo!r}, {k_hi!r}]")
        for side, kind, v, h in zip(SIDES, (k_lo, k_hi), vals, hs):
            where = f"the {side} face of axis {axis}"
            if kind == "periodic" and v != 0:
                raise ConfigError(f"heat.boundary_value: {where} is periodic and takes no value (write 0), got {v:g}")
            if kind == "robin":
                if h <= 0:
                    raise ConfigError(f"heat.boundary_transfer: {where} is robin and needs a transfer "
                                      f"coefficient h > 0, got {h:g}")
            elif h != 0:
                raise ConfigError(f"heat.boundary_transfer: {where} is {kind}, not robin: its coefficient is "
                                  f"not used (write 0), got {h:g}")


def _check_resolved(modes, shape, kinds):
    """The sine start's mode numbers must be ones the grid resolves (below the Nyquist limit)."""
    for axis, (m, n, kind) in enumerate(zip(modes, shape, kinds)):
        top = {"neumann": n - 1, "periodic": n // 2}.get(kind, n)
        if m > top:
            walls = f"{kind} walls" if kind != "mixed" else "these walls"
            raise ConfigError(f"heat.modes: mode {m} on axis {axis} is beyond what {n} cells resolve "
                              f"(at most {top} with {walls}); use a smaller mode or a finer grid")


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
    boundary = _face_form("heat.boundary", h["boundary"], ndim, lambda k, v: choice(k, v, BOUNDARIES),
                          "one kind for every face")
    value = _face_form("heat.boundary_value", h["boundary_value"], ndim,
                       lambda k, v: number(k, v, magnitude=(0.0, MAX_VALUE)), "a number")
    transfer = _face_form("heat.boundary_transfer", h["boundary_transfer"], ndim,
                          lambda k, v: number(k, v, nonneg=True, magnitude=SCALES), "a number")
    faces = _pairs(boundary, ndim)
    kinds_used = sum(faces, ())
    if not isinstance(transfer, tuple):
        if transfer != 0 and "robin" not in kinds_used:
            raise ConfigError(f"heat.boundary_transfer: {transfer:g} is set, but no face is robin; "
                              f"remove it or make a face robin")
        if transfer == 0 and "robin" in kinds_used:
            raise ConfigError("heat.boundary_transfer: a robin face needs a transfer coefficient h > 0; "
                              "set heat.boundary_transfer")
    if not isinstance(value, tuple) and value != 0 and all(k == "periodic" for k in kinds_used):
        raise ConfigError(f"heat.boundary_value: {value:g} is set, but every face is periodic and takes no value")
    per_face = transfer if isinstance(transfer, tuple) else tuple(
        tuple(transfer if k == "robin" else 0.0 for k in pair) for pair in faces)
    _check_faces(faces, _scalar_on_walls(value, faces), per_face)
    kinds = tuple(lo if lo == hi else "mixed" for lo, hi in faces)
    modes = _per_axis("heat.modes", h["modes"], ndim, 1, f"a list of {ndim} integers")
    modes = tuple(integer("heat.modes", m, lo=1 if kind == "dirichlet" else 0) for m, kind in zip(modes, kinds))
    initial = choice("heat.initial", h["initial"], INITIAL)
    if initial == "sine":
        _check_resolved(modes, shape, kinds)
    heat_file = string("heat.file", h["file"])
    if heat_file and initial != "file":
        raise ConfigError(f"heat.file: {heat_file!r} is set, but heat.initial is {initial!r}, which does not read it; "
                          f"set heat.initial = 'file' or remove heat.file")
    if initial == "file" and not heat_file:
        raise ConfigError("heat.file: heat.initial = 'file' needs heat.file: one of our checkpoints, "
                          "'FILE.h5:DATASET', 'FILE.h5' (its only dataset of heat.shape) or 'FILE.npy'")
    return HeatSettings(
        shape=tuple(shape), extent=extent,
        diffusivity=_field_or_number("heat.diffusivity", h["diffusivity"], positive=True, magnitude=SCALES),
        source=_field_or_number("heat.source", h["source"], magnitude=(0.0, MAX_VALUE)),
        boundary=boundary, boundary_value=value, boundary_transfer=transfer,
        initial=initial, modes=modes, seed=integer("heat.seed", h["seed"], lo=0), file=heat_file,
        fused_steps=integer("heat.fused_steps", h["fused_steps"], lo=0),
    )
