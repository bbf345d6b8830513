"""Initial conditions for heat, computed from global coordinates and global
indices only, so every decomposition produces the same field bit for bit."""
from __future__ import annotations

import math

import numpy as np

from ...config import ConfigError


def cell_centres(heat, offset, local_shape):
    """Open-mesh coordinates (cell centres) of a block, one 1-D array per axis."""
    return [(np.arange(o, o + n) + 0.5) * h for o, n, h in zip(offset, local_shape, heat.spacing)]


def eigen_wavenumbers(heat):
    """Wavenumber per axis of the Laplacian eigenmode used by the 'sine' start."""
    return [(2.0 if heat.axis_kind(a) == "periodic" else 1.0) * math.pi * m / L
            for a, (m, L) in enumerate(zip(heat.modes, heat.extent))]


def eigenmode(heat, offset, local_shape):
    """Product over axes of the 1-D eigenfunction that satisfies the boundary
    condition exactly: sin(k x) for Dirichlet (zero at the walls), cos(k x)
    for Neumann (zero slope at the walls), sin(k x) with k = 2 pi m / L for
    periodic.  The FTCS scheme keeps this shape, so the analytic solution
    exp(-D |k|^2 t) * mode is a sharp test of the discretisation (see
    ``analytic``).  Axes with other walls take sin(k x) as a start shape."""
    field = np.ones(local_shape)
    for d, (x, k) in enumerate(zip(cell_centres(heat, offset, local_shape), eigen_wavenumbers(heat))):
        fn = np.cos if heat.axis_kind(d) == "neumann" else np.sin
        shape = [1] * len(local_shape)
        shape[d] = -1
        field = field * fn(k * x).reshape(shape)
    return field


def analytic(heat) -> bool:
    """Whether the sine start has the analytic solution the run reports its
    error against: one number D, no source, and each axis's two faces
    Dirichlet (all at one value), insulated Neumann or periodic."""
    if heat.initial != "sine" or not heat.constant:
        return False
    walls = [(kind, v) for pair, values in zip(heat.faces, heat.face_values) for kind, v in zip(pair, values)]
    if any(heat.axis_kind(a) not in ("dirichlet", "neumann", "periodic") for a in range(heat.ndim)):
        return False
    if any(kind == "neumann" and v != 0 for kind, v in walls):
        return False
    return len({v for kind, v in walls if kind == "dirichlet"}) <= 1


def decay_rate(heat) -> float:
    return heat.diffusivity * sum(k * k for k in eigen_wavenumbers(heat))


def background(heat) -> float:
    """The value the sine start sits on: the Dirichlet walls' value where they all share one, else 0."""
    values = {v for pair, vals in zip(heat.faces, heat.face_values) for k, v in zip(pair, vals) if k == "dirichlet"}
    return values.pop() if len(values) == 1 else 0.0


def _squared_distance_to_centre(heat, offset, local_shape):
    r2 = np.zeros(local_shape)
    for d, x in enumerate(cell_centres(heat, offset, local_shape)):
        shape = [1] * len(local_shape)
        shape[d] = -1
        r2 = r2 + ((x - heat.extent[d] / 2) ** 2).reshape(shape)
    return r2


def _hash_uniform(seed: int, index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers from a global cell index (splitmix64): the same
    cell gets the same number on any decomposition."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def heat_initial(heat, offset, local_shape) -> np.ndarray:
    """This block's part of the initial field (without ghost layers)."""
    base = background(heat)
    if heat.initial == "sine":
        return base + eigenmode(heat, offset, local_shape)
    width = 0.1 * min(heat.extent)
    if heat.initial == "gaussian":
        return base + np.exp(-_squared_distance_to_centre(heat, offset, local_shape) / (2 * width ** 2))
    if heat.initial == "hotspot":
        return base + (_squared_distance_to_centre(heat, offset, local_shape) <= width ** 2).astype(np.float64)
    if heat.initial == "random":
        index = np.zeros(local_shape, np.int64)
        for d, (o, n) in enumerate(zip(offset, local_shape)):
            shape = [1] * len(local_shape)
            shape[d] = -1
            index = index * heat.shape[d] + np.arange(o, o + n).reshape(shape)
        return base + _hash_uniform(heat.seed, index)
    raise ConfigError(f"heat.initial: {heat.initial!r} is not computed here")
