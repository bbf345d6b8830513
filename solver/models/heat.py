"""Heat diffusion du/dt = D laplace(u) on a Cartesian grid: explicit FTCS,
second order in space, first order in time (dt ~ h^2 keeps it second order
overall), with Dirichlet, Neumann or periodic walls."""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigError
from ..io.checkpoint import Dataset
from ..parallel.cart import decompose
from ..parallel.halo import HaloExchange
from . import initial as ic
from .clock import Clock, Clocked, fit_end, timed


def stability_limit(heat) -> float:
    """Largest stable FTCS time step: dt <= 1 / (2 D sum_d 1/h_d^2)."""
    return 1.0 / (2.0 * heat.diffusivity * sum(1.0 / h ** 2 for h in heat.spacing))


def resolve_time(settings, restart=None):
    """(dt, end step) for heat; ConfigError for an unstable dt.  A restart
    keeps the checkpoint's dt unless the config sets one explicitly."""
    heat, t = settings.heat, settings.time
    limit = stability_limit(heat)
    if t.dt == "auto":
        dt = float(restart.attrs["dt"]) if restart else t.safety * limit
    else:
        dt = t.dt
        if dt > limit * (1 + 1e-12):
            raise ConfigError(
                f"time.dt: {dt:g} is above the stability limit {limit:.6g} of the explicit "
                f"scheme for this grid and diffusivity; use time.dt <= {limit:.6g} or time.dt = 'auto'")
    return fit_end(t, dt, restart)


def interior_box(local_shape):
    """Cells whose neighbours are all inside the block: computable before the halo arrives."""
    return tuple(1 for _ in local_shape), tuple(n - 1 for n in local_shape)


def border_boxes(local_shape):
    """Disjoint boxes covering the cells next to a block face (the rest)."""
    boxes = []
    ndim = len(local_shape)
    for d in range(ndim):
        n = local_shape[d]
        for lo_d, hi_d in ((0, 1), (n - 1, n)) if n > 1 else ((0, 1),):
            lo = [1 if e < d else 0 for e in range(ndim)]
            hi = [local_shape[e] - 1 if e < d else local_shape[e] for e in range(ndim)]
            lo[d], hi[d] = lo_d, hi_d
            if all(h > l for l, h in zip(lo, hi)):
                boxes.append((tuple(lo), tuple(hi)))
    return boxes


class HeatModel(Clocked):
    """One rank's block of the temperature field, padded with one ghost layer."""
    kind = "heat"
    work_name = "cell updates"

    def __init__(self, settings, comm, backend, restart=None):
        self.settings, self.heat, self.backend = settings, settings.heat, backend
        self.restart = restart
        self.clock = Clock()
        self.clock.dt, self.end_step = resolve_time(settings, restart)
        self.decomp = decompose(comm, self.heat.shape, self.heat.boundary == "periodic")
        self.comm = self.decomp.comm
        n = self.decomp.local_shape
        self.coeffs = tuple(self.heat.diffusivity * self.dt / h ** 2 for h in self.heat.spacing)
        padded = tuple(k + 2 for k in n)
        self._u = backend.zeros(padded)
        self._next = backend.zeros(padded)
        self.halo = HaloExchange(self.decomp, np.float64)
        self._interior = interior_box(n)
        self._border = border_boxes(n)
        self._inner = tuple(slice(1, k + 1) for k in n)
        self._walls = self._wall_slices()
        self._mode = None        # the sine start's shape, kept for the error diagnostic
        self._lent = None        # the state buffer a checkpoint writer is reading
        self._spare = None

    # --- state -------------------------------------------------------------
    def set_initial(self):
        """The starting state: the restart checkpoint's, or the initial condition."""
        if self.restart is not None:
            from ..io.checkpoint import read_blocks
            local = read_blocks(self.restart.path, self.comm, [("heat/u", self.decomp.global_slices)])[0]
            self.clock.resume(self.restart)
        elif self.heat.initial == "file":
            from ..io.checkpoint import read_heat_field
            local = read_heat_field(self.heat.file, self.comm, self.heat.shape, self.decomp.global_slices)
        else:
            local = ic.heat_initial(self.heat, self.decomp.offset, self.decomp.local_shape)
        self.set_local(local)

    def set_local(self, local: np.ndarray):
        host = np.zeros(tuple(k + 2 for k in self.decomp.local_shape))
        host[self._inner] = local
        self._u = self.backend.from_host(host)

    def local_field(self) -> np.ndarray:
        """This rank's cells (no ghosts) as a NumPy array."""
        return np.ascontiguousarray(self.backend.to_host(self._u)[self._inner])

    # --- time stepping -----------------------------------------------------
    def _wall_slices(self):
        """(ghost layer, edge layer) of the padded block at each physical wall."""
        if self.heat.boundary == "periodic":
            return []
        n = self.decomp.local_shape
        walls = []
        for d in range(self.decomp.ndim):
            for side, ghost, edge in ((0, 0, 1), (1, n[d] + 1, n[d])):
                if self.decomp.at_wall(d, side):
                    walls.append(tuple(tuple(slice(i, i + 1) if e == d else slice(1, k + 1)
                                             for e, k in enumerate(n)) for i in (ghost, edge)))
        return walls

    def _apply_walls(self, u):
        """Ghost values at physical walls: mirror about the wall face."""
        for g, s in self._walls:
            if self.heat.boundary == "dirichlet":   # (ghost + edge) / 2 = boundary value at the face
                u[g] = 2.0 * self.heat.boundary_value - u[s]
            else:                                   # neumann: zero flux through the face
                u[g] = u[s]

    def step(self, timers=None):
        u, out = self._u, self._next
        with timed(timers, "halo"):
            self.halo.begin(u)
        with timed(timers, "compute"):
            self.backend.heat_update(u, out, self.coeffs, *self._interior)
        with timed(timers, "halo"):
            self.halo.finish(u)
            self._apply_walls(u)
        with timed(timers, "compute"):
            for lo, hi in self._border:
                self.backend.heat_update(u, out, self.coeffs, lo, hi)
        if u is self._lent:                  # a writer holds u: step into the spare buffer next
            if self._spare is None:
                self._spare = self.backend.zeros(u.shape)
            self._u, self._next, self._spare = out, self._spare, u
            self._lent = None
        else:
            self._u, self._next = out, u
        self.clock.tick()

    # --- output --------------------------------------------------------------
    def checkpoint_attrs(self) -> dict:
        return {"problem": "heat", "time": self.time, "dt": self.dt, "config": self.settings.to_toml()}

    def checkpoint_datasets(self) -> list:
        h = self.heat.spacing
        attrs = {"origin": np.array([0.5 * x for x in h]), "spacing": np.array(h), "centering": "cell"}
        host = self.backend.to_host(self._u)
        if host is self._u:
            # Lend the state buffer itself: the writer reads its interior while
            # stepping goes on, and step() leaves it alone until the next lend
            # (the writer finishes a write before it takes another).
            self._lent = self._u
        else:
            host = host.copy()
        return [Dataset("heat/u", self.heat.shape, host, self.decomp.global_slices, attrs, memory=self._inner)]

    # --- diagnostics (collective) -------------------------------------------
    def diagnostics(self) -> dict:
        """Global quantities, computed by collectives on every rank."""
        from ..parallel.mpi import MPI
        u = self.local_field()
        cell_volume = math.prod(self.heat.spacing)
        sums = np.array([u.sum(), 0.0, 0.0])
        err_max = 0.0
        if self.heat.initial == "sine":
            if self._mode is None:
                self._mode = ic.eigenmode(self.heat, self.decomp.offset, self.decomp.local_shape)
            exact = self._mode * math.exp(-ic.decay_rate(self.heat) * self.time)
            exact += ic.background(self.heat)
            np.subtract(u, exact, out=exact)
            sums[1] = np.vdot(exact, exact)
            err_max = np.abs(exact, out=exact).max()
        ext = np.array([-u.min(), u.max(), err_max])
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, ext, op=MPI.MAX)
        ncells = math.prod(self.heat.shape)
        d = {"step": self.step_count, "time": self.time, "heat": sums[0] * cell_volume,
             "min": -ext[0], "max": ext[1]}
        if self.heat.initial == "sine":
            d["err_l2"] = math.sqrt(sums[1] / ncells)
            d["err_max"] = ext[2]
        return d

    @property
    def work_per_step(self) -> int:
        return math.prod(self.heat.shape)

    def describe(self) -> str:
        h = self.heat
        return (f"heat {'x'.join(map(str, h.shape))} ({h.boundary}, {h.initial}) on {self.comm.size} "
                f"rank{'s' if self.comm.size > 1 else ''} as {'x'.join(map(str, self.decomp.dims))}")

    def close(self):
        self.halo.free()
