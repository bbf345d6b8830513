"""The spatial operator of du/dt = div(D grad u) + Q on the cell-centred
grid, in one place: the face coefficients (harmonic means of D), the
sources, and what every kind of wall adds.  The explicit scheme builds its
stencil from here (``explicit``); an implicit one would assemble the same
face coefficients and wall terms into a matrix (``scale = 1``).

Finite volumes: the face between cells i-1 and i along axis d passes the
flux -K (u_i - u_(i-1)) / h_d with K the harmonic mean 2 D_(i-1) D_i /
(D_(i-1) + D_i) (exact for layered materials).  A wall face adds
W (g - u_edge) + R to du/dt of its edge cell, written as an effective
diffusivity of the face, W = De / h^2:

    dirichlet   De = 2 D_edge, g = the wall temperature (half a cell to the wall), R = 0
    neumann     De = 0, R = q / h with q the heat flux into the domain
    robin       -D du/dn = h_t (u_wall - u_ambient): the half cell 2 D / h and h_t in series,
                De = h h_t 2 D / (2 D + h h_t), g = u_ambient, R = 0

Every number an explicit step reads is computed here once, on the host,
from global data (a cell's D and Q, its faces' neighbours through the halo
exchange), so every backend and every decomposition reads the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...backends import HeatStencil
from ...backends import numpy_ as host
from ...parallel.halo import HaloExchange


def harmonic_mean(a, b):
    """2 a b / (a + b), without overflow for large a and b; always with the
    lower cell as ``a``, so both ranks sharing a face compute the same bits."""
    return 2.0 * (a * (b / (a + b)))


def face_coefficients(D, spacing, scale=1.0) -> tuple:
    """Per axis d, an array of D's shape whose cell i holds scale / h_d^2
    times the harmonic mean of D over its low face (0 for the first cell)."""
    out = []
    for d, h in enumerate(spacing):
        k = np.zeros_like(D)
        lower = tuple(slice(0, -1) if a == d else slice(None) for a in range(D.ndim))
        upper = tuple(slice(1, None) if a == d else slice(None) for a in range(D.ndim))
        with np.errstate(invalid="ignore"):
            k[upper] = harmonic_mean(D[lower], D[upper]) * (scale / h ** 2)
        out.append(k)
    return tuple(out)


def wall_diffusivity(kind, D_edge, h, transfer):
    """De of a wall face (see the module's docstring), from its edge cells' D."""
    if kind == "dirichlet":
        return 2.0 * D_edge
    if kind == "robin":
        return (h * transfer) * ((2.0 * D_edge) / (2.0 * D_edge + h * transfer))
    return 0.0 * D_edge


def ghost_rule(kind, value, transfer, D, h) -> tuple[float, float]:
    """(a, b) of the constant-coefficient scheme: ghost = a * edge + b makes
    c (ghost - edge), c = dt D / h^2, the wall's term: Dirichlet (-1, 2 value)
    (ghost and edge average to the wall value), Neumann (1, q h / D), Robin
    (1 - r, r u_ambient) with r = De / D."""
    if kind == "dirichlet":
        return -1.0, 2.0 * value
    if kind == "neumann":
        return 1.0, value * h / D
    r = wall_diffusivity(kind, D, h, transfer) / D
    return 1.0 - r, r * value


@dataclass
class Wall:
    """One wall side of a rank's block: its ghost rule and, per cell of the
    face, the coefficient of (ghost - edge) in one step."""
    index: int                 # 2 axis + side
    axis: int
    kind: str
    a: float
    b: float
    coef: np.ndarray           # over the face's owned cells
    edge_enters: bool          # whether the step's wall term depends on the edge cell


@dataclass
class Explicit:
    """One rank's explicit operator: the stencil (host arrays), its walls, and
    the per-step source summed over the owned cells (for the heat balance)."""
    stencil: HeatStencil
    walls: list = field(default_factory=list)
    source_per_step: float = 0.0


def _face_slab(shape, axis, index):
    return tuple(index if a == axis else slice(None) for a in range(len(shape)))


def _owned_face(local_shape, width, axis):
    """The owned cells of a face array (the padded block without ``axis``)."""
    return tuple(slice(width, width + n) for a, n in enumerate(local_shape) if a != axis)


def _padded(decomp, width, local, fill_walls):
    """``local`` padded by ``width``: the neighbours' cells through the halo
    exchange (periodic axes wrap), and beyond a wall copies of the edge
    cells (``fill_walls``) or zeros."""
    n = decomp.local_shape
    out = np.zeros(tuple(k + 2 * width for k in n))
    out[tuple(slice(width, width + k) for k in n)] = local
    halo = HaloExchange(decomp, np.float64, host, width=width)
    try:
        halo.begin(out)
        halo.finish(out)
    finally:
        halo.free()
    if fill_walls:
        for a, k in enumerate(n):
            for side, ghosts, edge in ((0, slice(0, width), width), (1, slice(width + k, k + 2 * width), width + k - 1)):
                if decomp.at_wall(a, side):
                    at = [slice(None)] * len(n)
                    at[a] = ghosts
                    src = [slice(None)] * len(n)
                    src[a] = slice(edge, edge + 1)
                    out[tuple(at)] = out[tuple(src)]
    return out


def _faces_and_sources(heat, decomp, g, scale, diffusivity, source):
    """(K, S, ghost rules) of the block padded by ``g``: per axis the low-face
    coefficients times ``scale`` (wall faces: De / h^2), ``scale`` Q with the
    Neumann fluxes of the edge cells, and per wall side (0, wall value)."""
    n, faces, values, transfer = decomp.local_shape, heat.faces, heat.face_values, heat.face_transfer
    padded = tuple(k + 2 * g for k in n)
    D = _padded(decomp, g, np.full(n, float(heat.diffusivity)) if diffusivity is None else diffusivity, True)
    Q = _padded(decomp, g, np.full(n, float(heat.source)) if source is None else source, False)
    K = face_coefficients(D, heat.spacing, scale)
    S = Q * scale
    rules = [(1.0, 0.0)] * (2 * len(n))
    for a, side in ((a, side) for a in range(len(n)) for side in (0, 1) if decomp.at_wall(a, side)):
        kind, value, h = faces[a][side], values[a][side], heat.spacing[a]
        face = g if side == 0 else g + n[a]                 # the wall face: the low face of cell `face`
        edge = g if side == 0 else g + n[a] - 1
        K[a][_face_slab(padded, a, face)] = (wall_diffusivity(kind, D[_face_slab(padded, a, edge)], h,
                                                              transfer[a][side]) * (scale / h ** 2))
        if kind == "neumann":
            S[_face_slab(padded, a, edge)] += value * (scale / h)
        rules[2 * a + side] = (0.0, 0.0 if kind == "neumann" else value)
    return K, S, rules


def implicit_terms(heat, decomp, diffusivity=None, source=None):
    """du/dt = A u + f on this rank's block, for a matrix assembly: ``K`` per
    axis (the block padded by one cell) holds each cell's low-face
    coefficient, so row i of A has K[i] towards cell i-1, K[i+1] towards
    i+1 and minus their sum on the diagonal (a wall face's K enters the
    diagonal only); ``f`` (the owned cells) is Q, the Neumann fluxes and
    K_wall times each wall's value.  One explicit step is u + dt (A u + f),
    the same terms the explicit stencil applies."""
    n = decomp.local_shape
    K, S, rules = _faces_and_sources(heat, decomp, 1, 1.0, diffusivity, source)
    owned = tuple(slice(1, 1 + k) for k in n)
    f = np.array(S[owned])
    for a, side in ((a, side) for a in range(len(n)) for side in (0, 1) if decomp.at_wall(a, side)):
        value = rules[2 * a + side][1]
        if value:
            face = 1 if side == 0 else 1 + n[a]
            edge = 0 if side == 0 else n[a] - 1
            f[_face_slab(n, a, edge)] += K[a][_face_slab(K[a].shape, a, face)][_owned_face(n, 1, a)] * value
    return K, f


def explicit(heat, decomp, width, dt, diffusivity=None, source=None) -> Explicit:
    """The explicit step of this rank's block (padded by ``width``).
    ``diffusivity``/``source``: this block's cells of the D and Q fields,
    or None where the settings give a number."""
    n, g, spacing = decomp.local_shape, width, heat.spacing
    padded = tuple(k + 2 * g for k in n)
    faces, values, transfer = heat.faces, heat.face_values, heat.face_transfer
    sides = [(a, side) for a in range(len(n)) for side in (0, 1) if decomp.at_wall(a, side)]
    walls = []
    if heat.constant:
        D = heat.diffusivity
        coeffs = tuple(D * dt / h ** 2 for h in spacing)
        rules = [(1.0, 0.0)] * (2 * len(n))
        for a, side in sides:
            rules[2 * a + side] = ghost_rule(faces[a][side], values[a][side], transfer[a][side], D, spacing[a])
            ca, cb = rules[2 * a + side]
            coef = np.full(tuple(k for b, k in enumerate(n) if b != a), coeffs[a])
            walls.append(Wall(2 * a + side, a, faces[a][side], ca, cb, coef, ca != 1.0))
        return Explicit(HeatStencil(coeffs=coeffs, walls=tuple(rules)), walls, 0.0)

    K, S, rules = _faces_and_sources(heat, decomp, g, dt, diffusivity, source)
    for a, side in sides:
        face = g if side == 0 else g + n[a]
        coef = np.array(K[a][_face_slab(padded, a, face)][_owned_face(n, g, a)])
        ca, cb = rules[2 * a + side]
        walls.append(Wall(2 * a + side, a, faces[a][side], ca, cb, coef, faces[a][side] != "neumann"))
    owned = tuple(slice(g, g + k) for k in n)
    with np.errstate(all="ignore"):
        per_step = float(np.sum(S[owned]))
    return Explicit(HeatStencil(faces=K, source=S, walls=tuple(rules)), walls, per_step)


def wall_heat(walls, sums, steps, local_shape, width) -> float:
    """The heat (per unit cell volume) that crossed this block's walls in
    ``steps`` steps, from each wall's sums of its edge cells: one step adds
    coef ((a edge + b) - edge) to an edge cell."""
    total = 0.0
    for wall in walls:
        if wall.edge_enters:
            E = sums[wall.index][_owned_face(local_shape, width, wall.axis)]
            total += float(np.sum(wall.coef * ((wall.a - 1.0) * E + steps * wall.b)))
        else:
            total += float(np.sum(wall.coef * (steps * wall.b)))
    return total
