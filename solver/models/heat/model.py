"""Heat diffusion du/dt = div(D grad u) + Q on a Cartesian grid: explicit
FTCS, second order in space, first order in time (dt ~ h^2 keeps it second
order overall), with a Dirichlet, Neumann, Robin or periodic condition per
face.  The operator (face coefficients, sources, wall terms) is built once
by ``operator.py``; D and Q are numbers or cell fields read per rank by
``io/fields.py``."""
from __future__ import annotations

import json
import math

import numpy as np

from ...config import MAX_VALUE, SCALES, ConfigError
from ...io import fields
from ...io.blocks import Dataset, read_blocks
from ...parallel.cart import decompose
from ...parallel.halo import HaloExchange
from ...parallel.mpi import MPI, all_ranks, check_memory
from ..clock import Clock, Clocked, check_dt, fit_end, timed
from . import initial as ic
from . import operator


def stability_limit(heat, largest=None) -> float:
    """Largest stable FTCS time step: dt <= 1 / (2 D sum_d 1/h_d^2), with the
    largest D of the domain (``largest``, for a field)."""
    D = heat.diffusivity if largest is None else largest
    return 1.0 / (2.0 * D * sum(1.0 / h ** 2 for h in heat.spacing))


def resolve_time(settings, restart=None, largest=None):
    """(dt, end step) for heat; ConfigError for an unstable or unusable dt.
    A restart keeps the checkpoint's dt unless the config sets one explicitly,
    and that stored dt is checked like any other input.  ``largest``: the
    largest value of a D field."""
    heat, t = settings.heat, settings.time
    if t.implicit:                       # stable at any step: dt is the user's, fitted to t_end
        dt, end = fit_end(t, t.dt, restart)
        return check_dt(dt, "fitted to time.t_end"), end
    try:
        limit = stability_limit(heat, largest)
    except (ZeroDivisionError, OverflowError):
        limit = float("nan")
    check_dt(limit, "allowed by the stability limit of this grid and diffusivity")
    if t.dt == "auto" and restart is not None and last_scheme(restart) != "explicit":
        dt = check_dt(t.safety * limit, "from time.dt = 'auto'")     # the stored dt was an implicit scheme's
    elif t.dt == "auto" and restart is not None:
        dt = check_dt(float(restart.attrs["dt"]), f"stored in {restart.path}")
        if dt > limit * (1 + 1e-12):
            raise ConfigError(f"--restart: {restart.path} stores dt = {dt:g}, above the stability limit {limit:.6g} "
                              f"of this grid and diffusivity (damaged checkpoint?); set time.dt explicitly")
    elif t.dt == "auto":
        dt = check_dt(t.safety * limit, "from time.dt = 'auto'")
    else:
        dt = t.dt
        if dt > limit * (1 + 1e-12):
            raise ConfigError(
                f"time.dt: {dt:g} is above the stability limit {limit:.6g} of the explicit "
                f"scheme for this grid and diffusivity; use time.dt <= {limit:.6g} or time.dt = 'auto'")
    dt, end = fit_end(t, dt, restart, settings.output.snapshot_dt)
    return check_dt(dt, "fitted to time.t_end"), end


def scheme_history(restart) -> list:
    """[[first step, scheme], ...] of the run so far: which scheme took each
    step (checkpoints before implicit schemes existed: all explicit)."""
    if restart is None:
        return []
    try:
        return [[int(s), str(k)] for s, k in json.loads(str(restart.attrs.get("time_schemes", "[]")))]
    except (ValueError, TypeError):
        return []


def last_scheme(restart) -> str:
    history = scheme_history(restart)
    return history[-1][1] if history else "explicit"


def read_field(spec, comm, shape, where, what="heat.file") -> np.ndarray:
    """This rank's block ``where`` of a field (one of our checkpoints, any
    HDF5 dataset or a .npy file; see io/fields.py), as float64."""
    return fields.read(spec, comm, shape, where, what)


def split_boxes(local_shape, width, inner):
    """(interior box, border boxes) of a block padded by ``width``, in padded
    indices.  ``inner[a][side]``: that side faces a neighbour, so cells within
    ``width`` of it wait for the halo; the interior box (None when the block
    is too thin for one) can be advanced ``width`` steps without it.  The
    border boxes are disjoint and cover the rest."""
    lo = [width + (width if inner[a][0] else 0) for a in range(len(local_shape))]
    hi = [width + n - (width if inner[a][1] else 0) for a, n in enumerate(local_shape)]
    block_lo, block_hi = [width] * len(local_shape), [width + n for n in local_shape]
    # A border box reaches ``width`` cells into its neighbouring owned cells;
    # it must not reach past a wall (whose ghosts only sit at the block edge).
    room = [hi[a] - lo[a] - (width if inner[a][0] != inner[a][1] else 0) for a in range(len(local_shape))]
    if any(r < 0 for r in room) or any(h <= l for l, h in zip(lo, hi)):
        return None, [(tuple(block_lo), tuple(block_hi))]
    boxes = []
    for d in range(len(local_shape)):
        for a, b in ((block_lo[d], lo[d]), (hi[d], block_hi[d])):
            if b > a:
                box_lo = lo[:d] + [a] + block_lo[d + 1:]
                box_hi = hi[:d] + [b] + block_hi[d + 1:]
                boxes.append((tuple(box_lo), tuple(box_hi)))
    return (tuple(lo), tuple(hi)), boxes


INTERIOR_PIECES = 4      # interior sweeps per exchange, with MPI progress driven between them
PIECE_ROWS = 64          # the thinnest piece worth its recomputed edges
PIECE_COST = 50          # and at least this many times the rows each cut recomputes (steps - 1): about 2%


OVERLAP_LIMIT = 0.02     # the most recomputation (share of a sweep) worth paying for overlap


def _sweep_work(boxes, width) -> int:
    """Cell updates of sweeping ``boxes`` ``width`` steps: level s of a box
    covers it grown by width - s cells on its growing sides."""
    total = 0
    for (lo, hi), grow in boxes:
        for s in range(1, width + 1):
            e = width - s
            total += math.prod(h - l + e * (grow[2 * a] + grow[2 * a + 1]) for a, (l, h) in enumerate(zip(lo, hi)))
    return total


def _pieces(box, width):
    """``box`` ((lo, hi), grow) cut along axis 0 into up to INTERIOR_PIECES
    boxes, each at least PIECE_ROWS, PIECE_COST x (width - 1) and ``width``
    cells thick (a piece's reach must not cross its neighbour to a wall).
    The cuts lie among owned cells, so each piece grows across them: a cut
    recomputes width x (width - 1) rows of levels, the price of letting
    messages move between pieces, kept to about 2% of a piece's work (a
    3-D block of 256 planes and 8 steps is not cut: its halo waits cost
    less than its cuts would)."""
    (lo, hi), grow = box
    n = min(INTERIOR_PIECES, (hi[0] - lo[0]) // max(PIECE_ROWS, PIECE_COST * (width - 1), width, 1))
    if n <= 1:
        return [box]
    cuts = [lo[0] + (hi[0] - lo[0]) * k // n for k in range(n + 1)]
    pieces = []
    for k in range(n):
        piece_lo, piece_hi = (cuts[k],) + tuple(lo[1:]), (cuts[k + 1],) + tuple(hi[1:])
        piece_grow = (grow[0] if k == 0 else True, grow[1] if k == n - 1 else True) + tuple(grow[2:])
        pieces.append(((piece_lo, piece_hi), piece_grow))
    return pieces


class HeatModel(Clocked):
    """One rank's block of the temperature field, padded with ``block`` ghost
    layers: one per step taken between halo exchanges."""
    kind = "heat"
    work_name = "cell updates"
    ARRAYS = 8               # padded blocks a rank may hold at once: state, next, spare, scratch, start-up and
                             # diagnostics temporaries (the memory check's estimate)
    finite_keys = ("heat", "min", "max")    # diagnostics that must stay finite

    def __init__(self, settings, comm, backend, restart=None):
        self.settings, self.heat, self.backend = settings, settings.heat, backend
        self.restart = restart
        self.clock = Clock()
        h = self.heat
        self.scheme = settings.time.scheme
        if settings.time.implicit:           # before anything is allocated: a missing petsc4py is one line
            from . import implicit
            implicit.petsc(self.scheme)
        if not isinstance(h.diffusivity, str):
            self.clock.dt, self.end_step = resolve_time(settings, restart)
        self.decomp = decompose(comm, h.shape, h.periods)
        self.comm = self.decomp.comm
        n = self.decomp.local_shape
        self.block = self._steps_per_exchange()
        g = self.block                       # ghost layers: one per step taken between exchanges
        padded = tuple(k + 2 * g for k in n)
        arrays = self.ARRAYS + (0 if h.constant else h.ndim + 3)   # face coefficients, source, D and Q
        check_memory(self.comm, arrays * 8 * math.prod(padded),
                     f"heat {'x'.join(map(str, h.shape))} on {self.comm.size} "
                     f"rank{'s' if self.comm.size > 1 else ''}")
        D, Q = self._read_fields()
        if isinstance(h.diffusivity, str):
            largest = self.comm.allreduce(float(D.max()), op=MPI.MAX)
            self.clock.dt, self.end_step = resolve_time(settings, restart, largest)
        self.explicit = operator.explicit(h, self.decomp, g, self.dt, D, Q)
        self.implicit = None
        if settings.time.implicit:
            from .implicit import ImplicitStepper
            self.implicit = ImplicitStepper(h, self.decomp, self.scheme, D, Q, settings.petsc_options)
        del D, Q
        self.coeffs = self.explicit.stencil.coeffs     # the constant scheme's c_d (None for variable D or Q)
        self.stencil = self._upload(self.explicit.stencil)       # what the backend applies, in its memory
        self.explicit.stencil = None                             # (the host copies are not needed again)
        self._u = backend.zeros(padded)
        self._next = backend.zeros(padded)
        self.halo = HaloExchange(self.decomp, np.float64, backend, width=g)
        inner = [[not self.decomp.at_wall(a, side) for side in (0, 1)] for a in range(len(n))]
        self._interior, self._border = self._layout(n, g, inner)
        self._inner = tuple(slice(g, k + g) for k in n)
        self._mode = None        # the sine start's shape (in the backend's memory), for the error diagnostic
        self._lent = None        # the state buffer a checkpoint writer is reading
        self._spare = None
        self._summed = 0         # steps whose wall edges the stencil's sums hold
        self._heat_in = 0.0      # this rank's share of the heat added since step 0 (sources, walls)
        self._heat_start = None  # the total heat at step 0 of the run's history
        self.schemes = scheme_history(restart)
        if not self.schemes or self.schemes[-1][1] != self.scheme:
            self.schemes.append([self.clock.step if restart is None else int(restart.attrs["step"]), self.scheme])

    def _read_fields(self):
        """This block's cells of the D and Q fields (None for numbers), checked
        on every rank; a restart checks them against the checkpoint's digests."""
        h, d = self.heat, self.decomp
        out, self._digests = [], {}
        for key, spec, positive, largest in (("diffusivity", h.diffusivity, True, SCALES[1]),
                                             ("source", h.source, False, MAX_VALUE)):
            if not isinstance(spec, str):
                out.append(None)
                continue
            what = f"heat.{key}"
            local = read_field(spec, self.comm, h.shape, d.global_slices, what)
            fields.check_values(self.comm, local, what, spec, positive=positive, largest=largest)
            if positive and not all_ranks(self.comm, bool((local >= SCALES[0]).all())):
                raise ConfigError(f"{what}: {fields.describe(spec)} holds values below {SCALES[0]:g}, where the "
                                  f"arithmetic of the solver would underflow; rescale the problem's units")
            self._digests[key] = {"file": spec, "digest": fields.digest(self.comm, local, d.offset, h.shape)}
            out.append(local)
        if self.restart is not None and self._digests:
            stored = json.loads(str(self.restart.attrs.get("heat_fields", "{}")) or "{}")
            for key, now in self._digests.items():
                if stored.get(key, {}).get("digest") != now["digest"]:
                    raise ConfigError(f"--restart: heat.{key}: {fields.describe(now['file'])} is not the field "
                                      f"{self.restart.path} was computed with (its values have changed); a restart "
                                      f"cannot change it")
        return out

    def _upload(self, stencil):
        """The stencil with its arrays in the backend's memory, and the wall sums."""
        from ...backends import HeatStencil
        up = self.backend.from_host
        sums = [None] * (2 * self.heat.ndim)
        for wall in self.explicit.walls:
            if wall.edge_enters:
                sums[wall.index] = self._zero_sums(wall.axis)
        return HeatStencil(coeffs=stencil.coeffs, walls=stencil.walls, sums=tuple(sums),
                           faces=None if stencil.faces is None else tuple(up(k) for k in stencil.faces),
                           source=None if stencil.source is None else up(stencil.source))

    def _zero_sums(self, axis):
        g = self.block
        return self.backend.zeros(tuple(k + 2 * g for a, k in enumerate(self.decomp.local_shape) if a != axis))

    # --- state -------------------------------------------------------------
    def set_initial(self):
        """The starting state: the restart checkpoint's, or the initial condition."""
        if self.restart is not None:
            local = read_blocks(self.restart.path, self.comm, [("heat/u", self.decomp.global_slices)])[0]
            self.clock.resume(self.restart)
            source = f"--restart: {self.restart.path}"
        elif self.heat.initial == "file":
            local = read_field(self.heat.file, self.comm, self.heat.shape, self.decomp.global_slices)
            source = f"heat.file: {fields.describe(self.heat.file)}"
        else:
            local = ic.heat_initial(self.heat, self.decomp.offset, self.decomp.local_shape)
            source = f"heat.initial: the {self.heat.initial!r} start"
        with np.errstate(invalid="ignore"):
            usable = bool(np.isfinite(local).all() and (np.abs(local) <= MAX_VALUE).all())
        if not all_ranks(self.comm, usable):
            hint = "; continue from an earlier checkpoint with --restart FILE --discard-newer" if self.restart else ""
            raise ConfigError(f"{source} holds values that are not finite or exceed {MAX_VALUE:g} in magnitude{hint}")
        self.set_local(local)
        with np.errstate(all="ignore"):                 # the diagnostics' total heat, summed the same way
            heat = self.comm.allreduce(self.backend.box_stats(self._u, self._inner)[0], op=MPI.SUM)
            heat *= math.prod(self.heat.spacing)
        if not math.isfinite(heat):
            raise ConfigError(f"the total heat of the start overflows ({heat}): heat.extent and the field values "
                              f"together exceed double precision; rescale the problem's units")
        balance = self.restart.attrs.get("heat_balance") if self.restart is not None else None
        if balance is not None and len(balance) == 2:     # the run's history goes on: its start and heat added
            self._heat_start = float(balance[0])
            self._heat_in = float(balance[1]) if self.comm.rank == 0 else 0.0
        else:
            self._heat_start = heat

    def set_local(self, local: np.ndarray):
        host = np.zeros(tuple(k + 2 * self.block for k in self.decomp.local_shape))
        host[self._inner] = local
        self._u = self.backend.from_host(host)
        if self.implicit is not None:
            self.implicit.load(local)

    def local_field(self) -> np.ndarray:
        """This rank's cells (no ghosts) as a NumPy array."""
        return np.ascontiguousarray(self.backend.to_host(self._u)[self._inner])

    # --- time stepping -----------------------------------------------------
    def _steps_per_exchange(self) -> int:
        """Steps taken per halo exchange (and ghost layers kept): the backend's
        choice for the largest block, or heat.fused_steps; never more than the
        thinnest block that sends to a neighbour, whose halo it fills."""
        d = self.decomp
        largest = tuple(-(-n // p) + 2 for n, p in zip(d.global_shape, d.dims))
        # more steps than the grid is wide buy nothing but ghost layers
        if self.settings.time.implicit:
            return 1                         # one solve per step; one ghost layer for the diagnostics
        fields = 0 if self.heat.constant else self.heat.ndim + 1
        block = min(self.heat.fused_steps, min(d.global_shape)) or self.backend.heat_block(largest, fields)
        for n, p, periodic in zip(d.global_shape, d.dims, d.periods):
            if p > 1 or periodic:
                block = min(block, n // p)
        return max(1, block)

    def _layout(self, n, g, inner):
        """(interior pieces or None, border boxes), each with its grow flags.
        The interior is swept while the halo travels, in pieces along axis 0
        with MPI progress between them; but boxes grow into each other at
        the intermediate levels, so where that recomputation would cost more
        than OVERLAP_LIMIT of the sweep (deep halos on 3-D blocks: measured
        on 2 ranks of 256^3, 8 steps, overlap ran 3% slower than none) the
        block is swept whole once the halo is in.  Results are the same bits
        either way."""
        whole = tuple((g,) * len(n)), tuple(g + k for k in n)
        talks = any(any(sides) for sides in inner)
        interior, border = split_boxes(n, g, inner)
        if not talks or interior is None:
            return (None if interior is None else [(interior, self._grow(interior))],
                    [(box, self._grow(box)) for box in border])
        pieces = _pieces((interior, self._grow(interior)), g)
        boxes = pieces + [(box, self._grow(box)) for box in border]
        if _sweep_work(boxes, g) > (1 + OVERLAP_LIMIT) * _sweep_work([(whole, self._grow(whole))], g):
            return None, [(whole, self._grow(whole))]
        return pieces, boxes[len(pieces):]

    def _grow(self, box):
        """Per side of a box: True unless the box touches a physical wall there."""
        g, n = self.block, self.decomp.local_shape
        return tuple(not (at == edge and self.decomp.at_wall(a, side))
                     for a in range(len(n))
                     for side, at, edge in ((0, box[0][a], g), (1, box[1][a], g + n[a])))

    def _advance_implicit(self, timers):
        """One implicit step through PETSc; the state is copied into the
        model's buffer (not one a checkpoint writer is reading).  A solve that
        fails leaves the state at the last good step (SolveFailed)."""
        from .implicit import SolveFailed
        with timed(timers, "solve"):
            try:
                gained = self.implicit.step(self.dt)
            except SolveFailed as exc:
                raise SolveFailed(f"step {self.step_count + 1} (t = {self.time + self.dt:.6g}): {exc}; stopped with "
                                  f"a checkpoint of the last good state (step {self.step_count}); use a smaller "
                                  f"time.dt or other solver options ([solver] petsc_options, PETSC_OPTIONS or "
                                  f"after --)") from None
        with timed(timers, "compute"):
            out = self._next
            host = self.backend.to_host(out)
            host[self._inner] = self.implicit.state()
            if host is not out:
                out = self.backend.from_host(host)
            if self._u is self._lent:         # a writer holds it: the spare takes its place
                if self._spare is None:
                    self._spare = self.backend.zeros(out.shape)
                self._u, self._next, self._spare = out, self._spare, self._u
                self._lent = None
            else:
                self._u, self._next = out, self._u
            self._heat_in += gained * math.prod(self.heat.spacing)
        self.clock.tick(1)

    def advance(self, max_steps, timers=None):
        """Up to ``self.block`` steps (at most ``max_steps``) per halo exchange."""
        if self.implicit is not None:
            return self._advance_implicit(timers)
        steps = max(1, min(max_steps, self.block))
        u, out = self._u, self._next

        def sweep(box):
            (lo, hi), grow = box
            self.backend.heat_fused(u, out, self.stencil, steps, lo, hi, grow)

        with timed(timers, "halo"):
            self.halo.begin(u)
        if self._interior:
            with timed(timers, "compute"):
                for piece in self._interior:
                    sweep(piece)
                    self.halo.progress()
        with timed(timers, "halo"):
            self.halo.finish(u)
        with timed(timers, "compute"):
            for box in self._border:
                sweep(box)
        if u is self._lent:                  # a writer holds u: step into the spare buffer next
            if self._spare is None:
                self._spare = self.backend.zeros(u.shape)
            self._u, self._next, self._spare = out, self._spare, u
            self._lent = None
        else:
            self._u, self._next = out, u
        self._summed += steps
        self.clock.tick(steps)

    # --- output --------------------------------------------------------------
    def state_ok(self) -> bool:
        """Whether this rank's cells are all finite (not collective)."""
        return self.backend.all_finite(self._u, self._inner)

    def warnings(self, diag) -> list:
        return []

    def checkpoint_attrs(self) -> dict:
        """Root attributes (collective): with the heat balance so far, so that a
        restart goes on with it, and the digests of the D and Q fields, which a
        restart must not change."""
        attrs = {"problem": "heat", "time": self.time, "dt": self.dt, "time_basis": np.array(self.clock.basis, float),
                 "config": self.settings.to_toml(),
                 "heat_balance": np.array([self._heat_start, self._global_heat_in()])}
        attrs["time_schemes"] = json.dumps(self.schemes)
        if self._digests:
            attrs["heat_fields"] = json.dumps(self._digests, sort_keys=True)
        return attrs

    # --- the heat balance ---------------------------------------------------
    def _fold(self):
        """Add the heat that sources and walls brought in since the last fold
        to this rank's share (from the wall sums, which start again at zero)."""
        if not self._summed:
            return
        ex, n, g = self.explicit, self.decomp.local_shape, self.block
        sums = {w.index: self.backend.to_host(self.stencil.sums[w.index]) for w in ex.walls if w.edge_enters}
        with np.errstate(all="ignore"):
            walls = operator.wall_heat(ex.walls, sums, self._summed, n, g)
            self._heat_in += (walls + self._summed * ex.source_per_step) * math.prod(self.heat.spacing)
        self.stencil.sums = tuple(None if s is None else self._zero_sums(k // 2) for k, s in enumerate(self.stencil.sums))
        self._summed = 0

    def _global_heat_in(self) -> float:
        self._fold()
        return self.comm.allreduce(self._heat_in, op=MPI.SUM)

    def checkpoint_datasets(self) -> list:
        h = self.heat.spacing
        attrs = {"origin": np.array([0.5 * x for x in h]), "spacing": np.array(h), "centering": "cell"}
        host = self.backend.to_host(self._u)        # a device backend: one copy to the host
        if host is self._u:
            # Lend the state buffer itself: the writer reads its interior while
            # stepping goes on, and step() leaves it alone until the next lend
            # (the writer finishes a write before it takes another).
            self._lent = self._u
        return [Dataset("heat/u", self.heat.shape, host, self.decomp.global_slices, attrs, memory=self._inner)]

    # --- diagnostics (collective) -------------------------------------------
    def diagnostics(self) -> dict:
        """Global quantities, computed by collectives on every rank; the
        backend reduces its cells to a few numbers first."""
        cell_volume = math.prod(self.heat.spacing)
        total, lo, hi = self.backend.box_stats(self._u, self._inner)
        self._fold()
        sums = np.array([total, 0.0, self._heat_in])
        err_max = 0.0
        analytic = ic.analytic(self.heat)
        if analytic:
            if self._mode is None:
                self._mode = self.backend.from_host(ic.eigenmode(self.heat, self.decomp.offset,
                                                                 self.decomp.local_shape))
            sums[1], err_max = self.backend.box_error(self._u, self._inner, self._mode,
                                                      math.exp(-ic.decay_rate(self.heat) * self.time),
                                                      ic.background(self.heat))
        ext = np.array([-lo, hi, err_max])
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, ext, op=MPI.MAX)
        ncells = math.prod(self.heat.shape)
        d = {"step": self.step_count, "time": self.time, "heat": sums[0] * cell_volume,
             "min": -ext[0], "max": ext[1]}
        if analytic:
            d["err_l2"] = math.sqrt(sums[1] / ncells)
            d["err_max"] = ext[2]
        # heat added by the sources and through the walls since step 0, and
        # what the change of total heat differs from it by (round-off)
        d["heat_in"] = sums[2]
        d["balance"] = (d["heat"] - self._heat_start) - sums[2]
        if self.implicit is not None:        # Krylov iterations per step since the last line, the latest residual
            d["iterations"], d["residual"] = self.implicit.take_counts()
        return d

    @property
    def work_per_step(self) -> int:
        return math.prod(self.heat.shape)

    def describe(self) -> str:
        h = self.heat
        walls = h.boundary if isinstance(h.boundary, str) else "/".join("-".join(pair) for pair in h.faces)
        scheme = f", {self.scheme} through PETSc" if self.implicit is not None else ""
        return (f"heat {'x'.join(map(str, h.shape))} ({walls}, {h.initial}{scheme}) on {self.comm.size} "
                f"rank{'s' if self.comm.size > 1 else ''} as {'x'.join(map(str, self.decomp.dims))}")

    def close(self):
        self.halo.free()
        if self.implicit is not None:
            self.implicit.destroy()
            self.implicit = None
