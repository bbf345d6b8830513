"""Gravitational n-body by direct summation of softened gravity,
a_i = G sum_j m_j r_ij / (|r_ij|^2 + eps^2)^(3/2), integrated with
kick-drift-kick leapfrog.  Each rank owns a fixed, contiguous range of
particle ids (any n, any rank count, possibly none) and sees the others'
positions through an Allgather or a systolic ring (parallel/ring.py).
"""
from __future__ import annotations

import math

import numpy as np

from ...config import ConfigError
from .integrators import INTEGRATORS
from ...io.blocks import Dataset, read_blocks
from ...parallel.mpi import MPI, all_ranks, check_memory
from ...parallel.ring import Blocks
from ..clock import Clock, Clocked, check_dt, fit_end, timed
from . import initial as ic


class NBodyModel(Clocked):
    kind = "nbody"
    work_name = "pair interactions"
    finite_keys = ("energy", "momentum")     # diagnostics that must stay finite
    GLOBAL_ARRAYS = 24       # doubles per body every rank may hold at once (start-up, allgather, temporaries)

    def __init__(self, settings, comm, backend, restart=None, initial=None):
        """``initial``: (position, velocity, mass) of all particles, when read
        from a file by the caller; else generated from the settings."""
        self.settings, self.nb, self.backend = settings, settings.nbody, backend
        self.comm, self.restart = comm, restart
        self.dtype = np.dtype(self.nb.precision)
        check_memory(comm, self.GLOBAL_ARRAYS * 8 * self.nb.n, f"nbody n={self.nb.n}")
        self.blocks = Blocks(comm, self.nb.n)
        self.eps2 = self.nb.softening ** 2
        self.clock = Clock()
        self._integrate = INTEGRATORS["leapfrog"]
        self._initial = initial
        self._coincident = 0
        self._timers = None
        self.energy0 = None
        s, c = self.blocks.start, self.blocks.count
        self.ids = np.arange(s, s + c, dtype=np.int64)
        self.x = np.zeros((c, 3), self.dtype)
        self.v = np.zeros((c, 3), self.dtype)
        self.m = np.zeros(c, self.dtype)
        self.end_step = None

    # --- state -------------------------------------------------------------
    def set_initial(self):
        """Positions, velocities and masses; then the first forces, and dt."""
        s, c = self.blocks.start, self.blocks.count
        if self.restart is not None:
            where = (slice(s, s + c),)
            x, v, m = read_blocks(self.restart.path, self.comm, [("nbody/position", where),
                                                                 ("nbody/velocity", where), ("nbody/mass", where)])
            self.energy0 = self.restart.attrs.get("energy0")
            source = f"--restart: {self.restart.path}"
        else:
            pos, vel, mass = self._initial if self._initial is not None else ic.generate(self.nb)
            x, v, m = pos[s:s + c], vel[s:s + c], mass[s:s + c]
            source = f"nbody.file: {self.nb.file}" if self._initial is not None else f"the {self.nb.initial!r} start"
        with np.errstate(over="ignore", invalid="ignore"):
            self.x[...], self.v[...], self.m[...] = x, v, m
        # every rank reaches the same verdict, so all raise together (no rank left in a collective)
        if not all_ranks(self.comm, all(np.isfinite(a).all() for a in (self.x, self.v, self.m))):
            hint = "; continue from an earlier checkpoint with --restart FILE --discard-newer" if self.restart else ""
            raise ConfigError(f"{source} holds positions, velocities or masses that are not finite "
                              f"(in {self.nb.precision}){hint}")
        if not all_ranks(self.comm, not (self.m < 0).any()):
            raise ConfigError(f"{source} holds negative masses; masses must be >= 0")
        if self.energy0 is not None and not math.isfinite(float(self.energy0)):
            raise ConfigError(f"{source} stores a reference energy that is not finite (damaged checkpoint)")
        self.m_all = self.blocks.allgather(self.m)
        with np.errstate(over="ignore", invalid="ignore"):
            self.a = self._accel(self.x)
        self._check_coincident(agreed=True)
        if not all_ranks(self.comm, bool(np.isfinite(self.a).all())):
            raise ConfigError(f"nbody: the forces of {source.split(': ', 1)[-1]} overflow {self.nb.precision} "
                              f"(nbody.G = {self.nb.G:g}, nbody.softening = {self.nb.softening:g}); "
                              f"rescale the units")
        self.clock.dt, self.end_step = self._resolve_time()
        if self.restart is not None:
            self.clock.resume(self.restart)
        if self.energy0 is None:
            with np.errstate(over="ignore", invalid="ignore"):
                self.energy0 = self.diagnostics()["energy"]
            if not math.isfinite(self.energy0):
                raise ConfigError(f"nbody: the energy of {source.split(': ', 1)[-1]} overflows "
                                  f"(nbody.G = {self.nb.G:g}); rescale the units")

    def _resolve_time(self):
        """(dt, end step); "auto": 1% of the dynamical time, or the restart's dt."""
        t = self.settings.time
        if t.dt != "auto":
            dt = t.dt
        elif self.restart is not None:
            dt = check_dt(float(self.restart.attrs["dt"]), f"stored in {self.restart.path}")
        else:
            dt = check_dt(t.safety * 0.01 * self._dynamical_time(), "from time.dt = 'auto'")
        dt, end = fit_end(t, dt, self.restart, self.settings.output.snapshot_dt)
        return check_dt(dt, "fitted to time.t_end"), end

    def _dynamical_time(self) -> float:
        """sqrt(R^3 / (G M)) with R the median distance from the centre of mass."""
        x = self.blocks.allgather(self.x.astype(np.float64))
        m = self.m_all.astype(np.float64)
        total = m.sum()
        if total <= 0:
            raise ConfigError("nbody: the total mass is zero")
        centre = (m @ x) / total
        radius = float(np.median(np.linalg.norm(x - centre, axis=1)))
        if radius == 0:
            raise ConfigError("nbody: all particles sit at one point; set time.dt explicitly")
        try:
            return math.sqrt(radius ** 3 / (self.nb.G * total))
        except (OverflowError, ZeroDivisionError):
            return float("nan")          # refused by check_dt

    # --- forces ------------------------------------------------------------
    def _each_source_block(self, x, visit):
        """Call ``visit(positions, masses, first_id)`` for the sources: once with
        every body (allgather, or a single rank), or block by block round the ring."""
        if self.nb.decomposition == "allgather" or self.comm.size == 1:
            with timed(self._timers, "exchange"):
                xs = self.blocks.allgather(x) if self.comm.size > 1 else x
            visit(xs, self.m_all, 0)
        else:
            packed = np.concatenate([x, self.m[:, None]], axis=1)
            self.blocks.ring(packed, lambda block, j0: visit(block[:, :3], block[:, 3], j0))

    def _accel(self, x):
        a = np.zeros_like(x)

        def visit(xs, ms, j0):
            self._coincident += self.backend.nbody_accel(x, xs, ms, j0, self.eps2, self.nb.G, a,
                                                         i0=self.blocks.start)
        self._each_source_block(x, visit)
        return a

    def _check_coincident(self, agreed=False):
        """Two particles at one point with zero softening: stop, on every rank."""
        flag = np.array([self._coincident], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.SUM)
        if flag[0]:
            message = (f"nbody: {flag[0] // 2} pair(s) of particles at the same position with zero softening "
                       f"(the force is infinite); set nbody.softening > 0 or separate them")
            if agreed:
                raise ConfigError(message)
            raise FloatingPointError(message + f" (at step {self.step_count})")

    def check_state(self):
        """Collective: FloatingPointError on every rank once two bodies have met
        with zero softening.  The driver calls it before every checkpoint (the
        diagnostics call it too), so no checkpoint holds a state after a
        collision and a restart from the newest one meets it again."""
        self._check_coincident()

    def advance(self, max_steps, timers=None):
        """One step (direct summation has no reason to take several at once)."""
        self._timers = timers
        with timed(timers, "compute"):
            self.a = self._integrate(self.x, self.v, self.a, self.dt, self._accel)
        self._timers = None
        self.clock.tick()

    # --- diagnostics (collective) ------------------------------------------
    def diagnostics(self) -> dict:
        self._check_coincident()
        x, v, m = (arr.astype(np.float64) for arr in (self.x, self.v, self.m))
        phi = np.zeros(len(x))

        def visit(xs, ms, j0):
            phi[:] += self.backend.nbody_potential(self.x, xs, ms, j0, self.blocks.start, self.eps2, self.nb.G)
        self._each_source_block(self.x, visit)
        sums = np.zeros(12)
        sums[0] = 0.5 * np.sum(m * np.einsum("ij,ij->i", v, v))
        sums[1] = 0.5 * np.sum(m * phi)
        sums[2:5] = m @ v
        sums[5:8] = np.sum(m[:, None] * np.cross(x, v), axis=0)
        sums[8:11] = m @ x
        sums[11] = m.sum()
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        kinetic, potential = sums[0], sums[1]
        energy = kinetic + potential
        d = {"step": self.step_count, "time": self.time, "kinetic": kinetic, "potential": potential,
             "energy": energy}
        if self.energy0 is not None:
            d["energy_error"] = abs((energy - self.energy0) / self.energy0) if self.energy0 else abs(energy)
        d["virial"] = kinetic / abs(potential) if potential else float("nan")
        d["momentum"] = float(np.linalg.norm(sums[2:5]))
        d["angular_momentum"] = float(np.linalg.norm(sums[5:8]))
        d["com_offset"] = float(np.linalg.norm(sums[8:11] / sums[11])) if sums[11] else 0.0
        return d

    # --- output ------------------------------------------------------------
    def state_ok(self) -> bool:
        """Whether this rank's positions and velocities are all finite (not collective)."""
        return bool(np.isfinite(self.x).all() and np.isfinite(self.v).all())

    def warnings(self, diag) -> list:
        """What a scientist should know about this diagnostics line."""
        limit, error = self.nb.energy_warning, diag.get("energy_error", 0.0)
        if limit and error > limit:
            return [f"energy error {error:.3g} exceeds nbody.energy_warning = {limit:g}: "
                    f"the orbits are not resolved; reduce time.dt or raise nbody.softening"]
        return []

    def checkpoint_attrs(self) -> dict:
        return {"problem": "nbody", "time": self.time, "dt": self.dt, "time_basis": np.array(self.clock.basis, float),
                "config": self.settings.to_toml(), "energy0": float(self.energy0)}

    def checkpoint_datasets(self) -> list:
        n, s, c = self.nb.n, self.blocks.start, self.blocks.count
        where = (slice(s, s + c),)
        return [Dataset("nbody/position", (n, 3), self.x.copy(), where),
                Dataset("nbody/velocity", (n, 3), self.v.copy(), where),
                Dataset("nbody/mass", (n,), self.m.copy(), where),
                Dataset("nbody/id", (n,), self.ids, where)]

    @property
    def work_per_step(self) -> int:
        return self.nb.n * self.nb.n

    def describe(self) -> str:
        nb = self.nb
        return (f"nbody n={nb.n} ({nb.initial}, eps={nb.softening:g}, {nb.precision}, {nb.decomposition}) on "
                f"{self.comm.size} rank{'s' if self.comm.size > 1 else ''}")

    def close(self):
        pass
