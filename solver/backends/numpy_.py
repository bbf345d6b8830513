"""Reference backend: NumPy array expressions.  Slow but obviously right;
every other backend is checked against it."""
from __future__ import annotations

import numpy as np

name = "numpy"


def available():
    return True, ""


def sync():
    """Wait until every queued computation has finished (here: nothing is queued)."""


def zeros(shape, dtype=np.float64):
    return np.zeros(shape, dtype)


def to_host(array):
    return np.asarray(array)


def from_host(array):
    return np.array(array, copy=True)


def all_finite(array, box) -> bool:
    """Whether every value of ``array[box]`` is finite: one sum (NaN and
    infinity propagate through it), and an exact look only when it overflows."""
    part = array[box]
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(part)):
            return True
    return bool(np.isfinite(part).all())


def halo_buffer(shape, dtype):
    """A message buffer for a halo region (what MPI sends from and receives into)."""
    return np.empty(shape, dtype)


def pack(array, where, out):
    """``out`` (a contiguous host buffer) = ``array[where]``: a halo region on its way out."""
    np.copyto(out, array[where])


def unpack(buf, array, where):
    """``array[where]`` = ``buf``: a received halo region into its ghost cells."""
    array[where] = buf


def box_stats(array, box) -> tuple[float, float, float]:
    """(sum, min, max) of ``array[box]``, for the diagnostics."""
    part = array[box]
    return float(part.sum()), float(part.min()), float(part.max())


def box_error(array, box, mode, factor, background) -> tuple[float, float]:
    """(sum of squares, largest magnitude) of ``array[box] - (mode * factor + background)``:
    the error against the decaying sine mode (``mode`` is the box's shape)."""
    exact = mode * factor
    exact += background
    np.subtract(array[box], exact, out=exact)
    return float(np.vdot(exact, exact)), float(np.abs(exact, out=exact).max())


_scratch: dict = {}


def _buffers(shape, dtype):
    """Two reusable work arrays per block shape: fresh temporaries of this
    size would be page-faulted in on every step."""
    key = (tuple(shape), np.dtype(dtype).str)
    if key not in _scratch:
        if len(_scratch) > 16:
            _scratch.clear()
        _scratch[key] = (np.empty(shape, dtype), np.empty(shape, dtype))
    return _scratch[key]


def heat_block(padded_shape, fields=0) -> int:
    """Steps per halo exchange: one (array expressions gain nothing from fusing)."""
    return 1


def heat_fused(src, dst, stencil, steps, lo, hi, grow):
    """``steps`` FTCS steps for the box [lo, hi) (padded indices) of ``dst``.

    ``grow[2a + side]``: ``src`` holds valid values ``steps`` cells beyond that
    side of the box (owned cells or a received halo), so intermediate levels
    cover a box that shrinks by one cell per step; otherwise that side is a
    physical wall whose ghost layer is rebuilt from each level's edge cells
    (``stencil.walls``), and whose edge cells of each level but the last are
    added to ``stencil.sums`` over the box's own extent.  ``src`` keeps its
    values except for those wall ghosts."""
    ndim = len(lo)
    if any(h <= l for l, h in zip(lo, hi)):
        return
    cur = src
    for s in range(1, steps + 1):
        e = steps - s
        blo = [lo[a] - (e if grow[2 * a] else 0) for a in range(ndim)]
        bhi = [hi[a] + (e if grow[2 * a + 1] else 0) for a in range(ndim)]
        _walls(cur, blo, bhi, grow, stencil.walls)
        _edge_sums(cur, lo, hi, grow, stencil.sums)
        out = dst if s == steps else np.empty_like(src)
        if stencil.variable:
            heat_update_variable(cur, out, stencil.faces, stencil.source, [x - 1 for x in blo], [x - 1 for x in bhi])
        else:
            heat_update(cur, out, stencil.coeffs, [x - 1 for x in blo], [x - 1 for x in bhi])
        cur = out


def _wall_sides(lo, hi, grow):
    """(side index, axis, ghost index, edge index) of each wall side of the box [lo, hi)."""
    for a in range(len(lo)):
        for side, ghost, edge in ((0, lo[a] - 1, lo[a]), (1, hi[a], hi[a] - 1)):
            if not grow[2 * a + side]:
                yield 2 * a + side, a, ghost, edge


def _walls(u, lo, hi, grow, walls):
    """Ghosts beyond the wall sides of the box [lo, hi): ghost = a * edge + b
    (Dirichlet a = -1, b = 2 value: (ghost + edge) / 2 = value; insulated
    Neumann a = 1, b = 0; see models/heat/operator.py)."""
    for k, a, ghost, edge in _wall_sides(lo, hi, grow):
        at = [slice(l, h) for l, h in zip(lo, hi)]
        at[a] = ghost
        g = tuple(at)
        at[a] = edge
        ca, cb = walls[k]
        u[g] = ca * u[tuple(at)] + cb


def _edge_sums(u, lo, hi, grow, sums):
    """sums[side] += the edge cells of the box [lo, hi) on that wall side."""
    for k, a, _, edge in _wall_sides(lo, hi, grow):
        if k < len(sums) and sums[k] is not None:
            at = [slice(l, h) for l, h in zip(lo, hi)]
            at[a] = edge
            sums[k][tuple(s for b, s in enumerate(at) if b != a)] += u[tuple(at)]


def heat_update(src, dst, coeffs, lo, hi):
    """dst = (sum_d c_d ((src[-1] + src[+1]) - 2 src)) + src on interior cells [lo, hi).

    ``src`` and ``dst`` are padded blocks (one ghost layer per side), ``lo`` and
    ``hi`` interior indices.  Every cell is computed by the same expressions in
    the same order wherever the block boundaries fall, so the result does not
    depend on the decomposition; compiled backends keep this order."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    centre = tuple(slice(l + 1, h + 1) for l, h in zip(lo, hi))
    u = src[centre]
    acc = dst[centre]
    twice, term = _buffers(u.shape, u.dtype)
    np.multiply(u, 2.0, out=twice)
    for d, c in enumerate(coeffs):
        minus = centre[:d] + (slice(lo[d], hi[d]),) + centre[d + 1:]
        plus = centre[:d] + (slice(lo[d] + 2, hi[d] + 2),) + centre[d + 1:]
        out = acc if d == 0 else term
        np.add(src[minus], src[plus], out=out)
        out -= twice
        out *= c
        if d > 0:
            acc += term
    acc += u


def heat_update_variable(src, dst, faces, source, lo, hi):
    """dst = ((sum_d (K_d[i] (u[i-1] - u) + K_d[i+1] (u[i+1] - u))) + s) + u on
    interior cells [lo, hi) (indices as heat_update's), the order of
    HeatStencil's formula, which every backend keeps."""
    if any(h <= l for l, h in zip(lo, hi)):
        return
    centre = tuple(slice(l + 1, h + 1) for l, h in zip(lo, hi))
    u = src[centre]
    acc = dst[centre]
    term, part = _buffers(u.shape, u.dtype)
    for d, k in enumerate(faces):
        minus = centre[:d] + (slice(lo[d], hi[d]),) + centre[d + 1:]
        plus = centre[:d] + (slice(lo[d] + 2, hi[d] + 2),) + centre[d + 1:]
        out = acc if d == 0 else term
        np.subtract(src[minus], u, out=out)
        out *= k[centre]
        np.subtract(src[plus], u, out=part)
        part *= k[plus]
        out += part
        if d > 0:
            acc += term
    acc += source[centre]
    acc += u


# ----------------------------------------------------------------------------
# n-body: softened gravity, block of targets i against a block of sources j
TILE = 256      # sources per tile: sums run over fixed tiles of global ids


def _tiles(j0, nj):
    """Source ranges [a, b) of this block, cut at multiples of TILE in global
    id (j0 is the block's first global id), so that every decomposition that
    hands over whole blocks in id order sums in the same pieces."""
    start = 0
    while start < nj:
        stop = min(nj, (j0 + start) // TILE * TILE + TILE - j0)
        yield start, stop
        start = stop


def _pair_terms(xi, xj, eps2):
    """dx (3 arrays ni x nj) and 1/r^3 with softening; self-pairs (r = 0) give 0."""
    dx = [xj[None, :, c] - xi[:, None, c] for c in range(3)]
    r2 = dx[0] * dx[0]
    r2 += dx[1] * dx[1]
    r2 += dx[2] * dx[2]
    r2 += eps2
    with np.errstate(divide="ignore"):
        inv = 1.0 / (r2 * np.sqrt(r2))
    coincident = 0
    if eps2 == 0:
        zero = r2 == 0
        coincident = int(zero.sum())
        inv[zero] = 0
    return dx, r2, inv, coincident


def nbody_accel(xi, xj, mj, j0, eps2, G, out, i0=None, chunk=256):
    """out[i] += G sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + eps^2)^(3/2).

    Sources are summed tile by tile in global-id order (see _tiles), each
    tile's sum taken fresh along a contiguous axis, so a target's result does
    not depend on how targets are chunked.  Returns the number of coincident
    pairs that are not self-pairs (only counted without softening); ``i0`` is
    the targets' first global id (None: targets and sources are disjoint)."""
    ni = len(xi)
    bad = 0
    for a, b in _tiles(j0, len(xj)):
        for s in range(0, ni, chunk):
            e = min(ni, s + chunk)
            dx, _, inv, coincident = _pair_terms(xi[s:e], xj[a:b], eps2)
            if coincident:
                selves = 0
                if i0 is not None:
                    lo, hi = max(i0 + s, j0 + a), min(i0 + e, j0 + b)
                    selves = max(0, hi - lo)
                bad += coincident - selves
            w = inv * mj[None, a:b]
            w *= G
            for c in range(3):
                out[s:e, c] += (w * dx[c]).sum(axis=1)
    return bad


def nbody_potential(xi, xj, mj, j0, i0, eps2, G, chunk=256):
    """phi[i] = -G sum_{j != i} m_j / sqrt(|x_j - x_i|^2 + eps^2) (self-pairs excluded by id)."""
    ni = len(xi)
    phi = np.zeros(ni, dtype=np.result_type(xi.dtype, np.float64))
    for a, b in _tiles(j0, len(xj)):
        for s in range(0, ni, chunk):
            e = min(ni, s + chunk)
            _, r2, _, _ = _pair_terms(xi[s:e], xj[a:b], eps2)
            with np.errstate(divide="ignore"):
                inv = 1.0 / np.sqrt(r2)
            ids_i = np.arange(i0 + s, i0 + e)[:, None]
            ids_j = np.arange(j0 + a, j0 + b)[None, :]
            inv[ids_i == ids_j] = 0
            phi[s:e] -= G * (inv * mj[None, a:b]).sum(axis=1)
    return phi


def nbody_accel_jerk(xi, vi, ids, xj, vj, mj, j0, eps2, G, acc, jerk, chunk=256):
    """Force and its time derivative (the jerk) from one pass over the sources,
    for fourth-order Hermite: with dx = x_j - x_i, dv = v_j - v_i, r2 = |dx|^2 + eps2,
    acc[i] += G sum_j m_j dx / r2^(3/2) and
    jerk[i] += G sum_j m_j (dv - 3 (dx . dv / r2) dx) / r2^(3/2).

    Targets are any bodies (``ids``: their global ids, int64), sources a
    contiguous block whose first global id is ``j0``, summed tile by tile in
    global-id order as nbody_accel does.  Returns the number of pairs at one
    point that are not self-pairs (counted only without softening)."""
    ni = len(xi)
    bad = 0
    for a, b in _tiles(j0, len(xj)):
        for s in range(0, ni, chunk):
            e = min(ni, s + chunk)
            dx, r2, inv, coincident = _pair_terms(xi[s:e], xj[a:b], eps2)
            if coincident:
                selves = int((ids[s:e, None] == np.arange(j0 + a, j0 + b)[None, :]).sum())
                bad += coincident - selves
            dv = [vj[None, a:b, c] - vi[s:e, None, c] for c in range(3)]
            rv = dx[0] * dv[0]
            rv += dx[1] * dv[1]
            rv += dx[2] * dv[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                rv /= r2                  # 0 / 0 only at r = 0 without softening: zeroed
            if eps2 == 0:
                rv[r2 == 0] = 0
            rv *= 3.0
            w = inv * mj[None, a:b]
            w *= G
            for c in range(3):
                acc[s:e, c] += (w * dx[c]).sum(axis=1)
                jerk[s:e, c] += (w * (dv[c] - rv * dx[c])).sum(axis=1)
    return bad


# ----------------------------------------------------------------------------
# Hermite's predictor and corrector (host arrays on every backend; the state
# of n-body stays on the host): the formulas of solver/models/nbody/hermite.py
def hermite_predict(x, v, a, j, h, xp, vp):
    """xp, vp = x, v a time h (per body) ahead, by Taylor series to the jerk."""
    hc = h[:, None]
    xp[...] = x + hc * (v + (0.5 * hc) * (a + (hc / 3.0) * j))
    vp[...] = v + hc * (a + (0.5 * hc) * j)


def hermite_levels(dt, wanted, max_level):
    """The smallest k >= 0 with dt / 2^k <= wanted, per body; max_level + 1
    where none up to max_level will do or ``wanted`` is not a positive number."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = dt / np.where(wanted > 0, wanted, np.nan)
    mantissa, exponent = np.frexp(np.where(np.isfinite(ratio), ratio, 1.0))
    level = np.maximum(exponent - (mantissa == 0.5), 0)          # ceil(log2(ratio)), exactly
    return np.where(np.isfinite(ratio), np.minimum(level, max_level + 1), max_level + 1).astype(np.int64)


def hermite_derivatives(a0, j0, a1, j1, h):
    """The second and third derivatives of the force at the end of a step of
    length h (per body), from (a, j) at both ends (cubic Hermite interpolation)."""
    hc = h[:, None]
    da = a0 - a1
    a3 = (12.0 * da + (6.0 * hc) * (j0 + j1)) / (hc * hc * hc)
    a2 = (-6.0 * da - hc * (4.0 * j0 + 2.0 * j1)) / (hc * hc)
    return a2 + hc * a3, a3


def aarseth_steps(eta, a, j, a2, a3):
    """Aarseth's criterion sqrt(eta (|a||a2| + |j|^2) / (|j||a3| + |a2|^2)) per
    body; inf where every derivative vanishes (a body alone)."""
    na, nj, n2, n3 = (np.sqrt(np.einsum("ij,ij->i", q, q)) for q in (a, j, a2, a3))
    top = na * n2 + nj * nj
    bottom = nj * n3 + n2 * n2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(eta * np.where(bottom > 0, top / bottom, np.inf))


def hermite_correct(x, v, a, j, level, active, h, a1, j1, tau, eta, dt, max_level):
    """Correct the bodies ``active`` (indices), which took steps h to time
    ``tau`` (an integer in units of dt / 2^max_level) and found there the
    force a1 and jerk j1; then their next level (eta > 0; eta = 0: keep
    it): deeper at once where Aarseth's step asks for it, one level coarser
    where it allows and tau is a multiple of the coarser step.  Returns
    (deepest level asked for, the position in ``active`` of a body that asked
    for more than max_level or -1, the step it asked for)."""
    x0, v0, a0, j0 = x[active], v[active], a[active], j[active]
    hc = h[:, None]
    v1 = v0 + (0.5 * hc) * (a0 + a1) + (hc * hc / 12.0) * (j0 - j1)
    x1 = x0 + (0.5 * hc) * (v0 + v1) + (hc * hc / 12.0) * (a0 - a1)
    x[active], v[active], a[active], j[active] = x1, v1, a1, j1
    if eta == 0 or len(active) == 0:
        return 0, -1, 0.0
    a2, a3 = hermite_derivatives(a0, j0, a1, j1, h)
    wanted = aarseth_steps(eta, a1, j1, a2, a3)
    old = level[active]
    needed = hermite_levels(dt, wanted, max_level)
    coarser = (needed < old) & (tau % np.left_shift(np.int64(2), max_level - old) == 0)
    new = np.where(needed > old, needed, np.where(coarser, old - 1, old))
    worst = int(np.argmax(new))
    deepest = int(new[worst])
    level[active] = np.minimum(new, max_level)
    return (deepest, worst, float(wanted[worst])) if deepest > max_level else (deepest, -1, 0.0)
