"""Fourth-order Hermite with individual block time steps (Makino and
Aarseth 1992), the integrator of the direct-summation codes NBODY6++GPU,
phiGPU and HiGPUs.

Each body keeps its own time and step; steps are time.dt / 2^k, and a body
changes level only where its time is a multiple of the new step, so all
bodies meet again at every multiple of time.dt: one ``step`` of the run is
one such block of the hierarchy, and checkpoints and diagnostics see every
body at the same time.  A block step (the bodies whose time comes next)
predicts every body to that time, computes the force and jerk on the active
bodies from all bodies in one pass, and corrects the active ones:

    v1 = v0 + (a0 + a1) h/2 + (j0 - j1) h^2/12
    x1 = x0 + (v0 + v1) h/2 + (a0 - a1) h^2/12

Their next step follows Aarseth's criterion,
h = sqrt(eta (|a||a2| + |j|^2) / (|j||a3| + |a2|^2)), with the second and
third derivatives a2, a3 from the Hermite interpolation of (a, j) over the
step just taken.  Times are kept as integers, in units of time.dt / 2^52,
so they are exact.

Across ranks (``nbody.decomposition``): ``allgather`` gathers the active
bodies (O(active) data per block step), every rank sums the forces of its
own bodies on all of them, and a reduce-scatter hands each rank the sums for
its own; ``ring`` passes the predicted bodies round the ring (O(n) per block
step).  Either way the answer depends on the rank count only by round-off.
"""
from __future__ import annotations

import math

import numpy as np

from ...backends.numpy_ import aarseth_steps, hermite_derivatives, hermite_levels
from ...config import ConfigError
from ...io.blocks import Dataset, read_blocks
from ...parallel.mpi import MPI, all_ranks
from ..clock import check_dt, fit_end, timed
from .model import NBodyModel

MAX_LEVEL = 52                    # steps down to time.dt / 2^52; a body that needs less stops the run
TICKS = 1 << MAX_LEVEL            # a block (time.dt) in integer time units
START_TRIALS = 12                 # trial steps that size the first steps (see _start_levels)


def levels_for(dt, wanted):
    return hermite_levels(dt, wanted, MAX_LEVEL)


class HermiteModel(NBodyModel):
    GLOBAL_ARRAYS = 40            # doubles per body a rank may hold at once (state, predictions, gathered targets)

    def __init__(self, settings, comm, backend, restart=None, initial=None):
        super().__init__(settings, comm, backend, restart, initial)
        c = self.blocks.count
        self.j = np.zeros((c, 3))
        self.level = np.zeros(c, np.int64)
        self._xp, self._vp = np.zeros((3, c)), np.zeros((3, c))    # predictions, stored by coordinate
        self.stats = {"block_steps": 0, "active": 0, "pairs": 0}     # since this model started (or its start)
        self.block_steps0 = 0            # block steps of the history before this run (from a restart)
        self._line = {"block_steps": 0, "active": 0, "deepest": 0}          # since the previous diagnostics line
        self._flags = np.zeros(2)        # this rank's body that needs a step below the smallest (id + 1), its step
        self._first_step = 0

    # --- start -------------------------------------------------------------
    def _resolve_time(self):
        """(dt, end step); "auto": a power of two near 1/8 of the dynamical time
        (the largest step any body may take), or the restart's dt."""
        t = self.settings.time
        if t.dt != "auto" or self.restart is not None:
            return super()._resolve_time()
        tdyn = t.safety * self._dynamical_time() / 8.0
        dt = check_dt(2.0 ** math.floor(math.log2(tdyn)) if tdyn > 0 and math.isfinite(tdyn) else tdyn,
                      "from time.dt = 'auto'")
        dt, end = fit_end(t, dt, None, self.settings.output.snapshot_dt)
        return check_dt(dt, "fitted to time.t_end"), end

    def set_initial(self):
        """The leapfrog model's start (positions, checks, dt, energy), then
        each body's force, jerk and step: from the checkpoint when it holds
        them (an exact restart), else computed."""
        super().set_initial()
        held = self.restart is not None and all(
            f"nbody/{name}" in self.restart.shapes for name in ("acceleration", "jerk", "dt", "time"))
        if held:
            self._read_hierarchy()
        else:
            self.a, self.j = self._forces(np.arange(self.blocks.count), self.x, self.v)
            self._raise_if_coincident(self._agree_flags(), agreed=True)
            self.level[:] = self._start_levels() if self.nb.adaptive else 0
        self._line["deepest"] = self._deepest()
        self.stats = dict.fromkeys(self.stats, 0)          # what the run does from here
        self._first_step = self.step_count

    def _read_hierarchy(self):
        s, c = self.blocks.start, self.blocks.count
        where = (slice(s, s + c),)
        path = self.restart.path
        a, j, step, t = read_blocks(path, self.comm, [("nbody/acceleration", where), ("nbody/jerk", where),
                                                      ("nbody/dt", where), ("nbody/time", where)])
        ok = all(np.isfinite(q).all() for q in (a, j, step)) and bool((step > 0).all())
        if not all_ranks(self.comm, ok):
            raise ConfigError(f"--restart: {path} holds Hermite forces, jerks or steps that are not finite and "
                              f"positive (damaged checkpoint)")
        if not all_ranks(self.comm, bool((t == float(self.restart.attrs["time"])).all())):
            raise ConfigError(f"--restart: the bodies' times in {path} differ from its time (damaged checkpoint)")
        self.a[...], self.j[...] = a, j
        # the same dt: the same levels, bit for bit; a new dt: the largest of its steps within the stored one
        self.level[:] = np.minimum(levels_for(self.dt, step), MAX_LEVEL) if self.nb.adaptive else 0
        self.block_steps0 = int(self.restart.attrs.get("block_steps", 0))

    def _start_levels(self):
        """First steps from Aarseth's criterion, whose second and third
        derivatives come from a trial step: every body is predicted over the
        trial and the force there interpolated.  The first trial is time.dt;
        while some body asks for a step more than twice shorter than the
        trial, the trial becomes that step.  (The simpler start, eta |a| / |j|,
        fails where the force or the jerk vanishes: bodies at rest, or at a
        point of symmetry.)"""
        dt, eta = self.dt, self.nb.eta
        everyone = np.arange(self.blocks.count)
        trial = 0
        levels = np.zeros(self.blocks.count, np.int64)
        for _ in range(START_TRIALS):
            if trial > MAX_LEVEL:
                break
            h = np.full(self.blocks.count, dt / 2.0 ** trial)
            xp, vp = self._predict(h)
            a1, j1 = self._forces(everyone, xp, vp)
            a2, a3 = hermite_derivatives(self.a, self.j, a1, j1, h)
            a2 -= h[:, None] * a3                     # back to the start of the trial
            levels = levels_for(dt, aarseth_steps(eta, self.a, self.j, a2, a3))
            deepest = self._max_over_ranks(int(levels.max(initial=0)))
            if deepest <= trial + 1:
                break
            trial = deepest
        self._coincident = 0                # trial positions are not the start's
        if self._max_over_ranks(int(levels.max(initial=0))) > MAX_LEVEL:
            raise ConfigError(f"nbody: a body of the start needs a time step below time.dt / 2^{MAX_LEVEL} "
                              f"(time.dt = {dt:g}): two bodies almost at one point; set nbody.softening > 0 "
                              f"or separate them")
        return levels

    def _max_over_ranks(self, value):
        return self.comm.allreduce(value, op=MPI.MAX) if self.comm.size > 1 else value

    def _predict(self, h):
        """Every body of this rank predicted a time h (per body) ahead: views
        (n, 3) of arrays stored by coordinate, which the kernels read as they are."""
        xp, vp = self._xp.T, self._vp.T
        self.backend.hermite_predict(self.x, self.v, self.a, self.j, h, xp, vp)
        return xp, vp

    # --- forces --------------------------------------------------------------
    def _forces(self, targets, xp, vp, counts=None):
        """(acceleration, jerk) on this rank's bodies ``targets`` (local
        indices) from every body, whose predicted positions and velocities
        on each rank are ``xp``, ``vp``.  Collective; ``counts``: every rank's
        number of targets, when known."""
        k = len(targets)
        ids = self.ids[targets]
        n, eps2, G = self.nb.n, self.eps2, self.nb.G
        acc, jerk = np.zeros((k, 3)), np.zeros((k, 3))
        kernel = self.backend.nbody_accel_jerk
        if self.comm.size == 1:
            self._coincident += kernel(xp[targets], vp[targets], ids, xp, vp, self.m, 0, eps2, G, acc, jerk)
            self.stats["pairs"] += k * n
            return acc, jerk
        if counts is None:
            with timed(self._timers, "exchange"):
                counts = np.array(self.comm.allgather(k), np.int64)
        self.stats["pairs"] += int(counts.sum()) * n
        if self.nb.decomposition == "ring":
            packed = np.concatenate([xp, vp, self.m[:, None]], axis=1)
            xi, vi = xp[targets], vp[targets]

            def visit(block, j0):
                self._coincident += kernel(xi, vi, ids, block[:, :3], block[:, 3:6], block[:, 6], j0, eps2, G,
                                           acc, jerk)
            self.blocks.ring(packed, visit)
            return acc, jerk
        # allgather: every rank's targets, the partial sums of this rank's sources, reduced onto their owners
        mine = np.empty((k, 7))
        mine[:, :3], mine[:, 3:6], mine[:, 6] = xp[targets], vp[targets], ids
        total = int(counts.sum())
        every = np.empty((total, 7))
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        with timed(self._timers, "exchange"):
            self.comm.Allgatherv(mine, [every, counts * 7, displs * 7, MPI.DOUBLE])
        part_a, part_j = np.zeros((total, 3)), np.zeros((total, 3))
        s = self.blocks.start
        self._coincident += kernel(np.ascontiguousarray(every[:, :3]), np.ascontiguousarray(every[:, 3:6]),
                                   every[:, 6].astype(np.int64), xp, vp, self.m, s, eps2, G, part_a, part_j)
        partial = np.concatenate([part_a, part_j], axis=1)
        summed = np.empty((k, 6))
        with timed(self._timers, "exchange"):
            self.comm.Reduce_scatter(partial, summed, counts * 6, op=MPI.SUM)
        acc[...], jerk[...] = summed[:, :3], summed[:, 3:]
        return acc, jerk

    # --- the block of steps ----------------------------------------------------
    def advance(self, max_steps, timers=None):
        """One block: every block step from the bodies' common time to the next multiple of time.dt."""
        self._timers = timers
        with timed(timers, "compute"):
            self._block()
        self._timers = None
        self.clock.tick()

    def _agree_flags(self, nxt=None):
        """Every rank's [next time, bodies due then, stop flags] (collective)."""
        mine = np.zeros(5)
        if nxt is None or len(nxt) == 0:
            mine[0] = 2 * TICKS + 1                          # nothing due in this block
        else:
            mine[0] = nxt.min()
            mine[1] = np.count_nonzero(nxt == mine[0])
        mine[2:4] = self._flags
        mine[4] = self._coincident
        if self.comm.size == 1:
            return mine[None, :]
        every = np.empty((self.comm.size, 5))
        with timed(self._timers, "exchange"):
            self.comm.Allgather(mine, every)
        return every

    def _block(self):
        dt = self.dt
        unit = dt / TICKS
        eta = self.nb.eta if self.nb.adaptive else 0.0
        saved = (self.x.copy(), self.v.copy(), self.a.copy(), self.j.copy(), self.level.copy())
        fused = getattr(self.backend, "hermite_block", None)
        if fused is not None and self.comm.size == 1:
            self._fused_block(fused, eta, saved)
            return
        t = np.zeros(self.blocks.count, np.int64)
        while True:
            nxt = t + np.left_shift(np.int64(1), MAX_LEVEL - self.level)
            every = self._agree_flags(nxt)
            self._stop_if_flagged(every, saved)
            tau = int(every[:, 0].min())
            if tau > TICKS:
                break
            counts = np.where(every[:, 0] == tau, every[:, 1], 0).astype(np.int64)
            active = np.flatnonzero(nxt == tau) if counts[self.comm.rank] else np.zeros(0, np.int64)
            h = (tau - t) * unit
            xp, vp = self._predict(h)
            a1, j1 = self._forces(active, xp, vp, counts)
            deepest, worst, asked = self.backend.hermite_correct(self.x, self.v, self.a, self.j, self.level, active,
                                                                 h[active], a1, j1, tau, eta, dt, MAX_LEVEL)
            if worst >= 0:
                self._flags[:] = self.ids[active[worst]] + 1, asked
            t[active] = tau
            k = int(counts.sum())
            self.stats["block_steps"] += 1
            self.stats["active"] += k
            line = self._line
            line["block_steps"] += 1
            line["active"] += k
            line["deepest"] = max(line["deepest"], deepest)

    def _fused_block(self, fused, eta, saved):
        """The block in one call of the backend (one rank)."""
        stats = np.zeros(3)
        worst, asked, bad = fused(self.x, self.v, self.a, self.j, self.level, self.m, self.ids, self.eps2, self.nb.G,
                                  eta, self.dt, MAX_LEVEL, stats)
        if worst >= 0:
            self._flags[:] = self.ids[worst] + 1, asked
        self._coincident += bad
        steps, active = int(stats[0]), int(stats[1])
        self.stats["block_steps"] += steps
        self.stats["active"] += active
        self.stats["pairs"] += active * self.nb.n
        line = self._line
        line["block_steps"] += steps
        line["active"] += active
        line["deepest"] = max(line["deepest"], int(stats[2]))
        self._stop_if_flagged(self._agree_flags(), saved)

    def _stop_if_flagged(self, every, saved):
        """Back to the block's start (the last good state) and stop, on every
        rank alike, if any rank's bodies collided or need too short a step."""
        if every[:, 2].any() or every[:, 4].any():
            self.x, self.v, self.a, self.j, self.level = saved
            self._raise_if_coincident(every)
            self._raise_underflow(every)

    def _raise_if_coincident(self, every, agreed=False):
        """Two bodies at one point with zero softening (counted by the force
        passes, and agreed in ``every``): stop on every rank."""
        if every[:, 4].any():
            message = ("nbody: particles at the same position with zero softening (the force is infinite); "
                       "set nbody.softening > 0 or separate them")
            if agreed:
                raise ConfigError(message)
            raise FloatingPointError(message + f" (in the block from step {self.step_count}; the run is stopped "
                                               f"and its newest checkpoint is the last good state)")

    def _raise_underflow(self, every):
        row = every[np.flatnonzero(every[:, 2])[0]]
        body, wanted = int(row[2]) - 1, row[3]
        asked = f"{wanted:.3g}" if math.isfinite(wanted) else "not a number"
        raise FloatingPointError(
            f"nbody: body {body} needs a time step below time.dt / 2^{MAX_LEVEL} = {self.dt / TICKS:.3g} "
            f"(Aarseth's step: {asked}) in the block from t = {self.time:.6g}: a collision or a close encounter "
            f"the integrator cannot resolve (at step {self.step_count}); the run is stopped and its newest "
            f"checkpoint is the last good state; set nbody.softening > 0")

    def _deepest(self):
        return int(self.level.max(initial=0))

    # --- diagnostics and output -----------------------------------------------
    def diagnostics(self) -> dict:
        d = super().diagnostics()
        line = self._line
        deepest = max(line["deepest"], self._deepest())
        deepest = self._max_over_ranks(deepest)
        d["block_steps"] = self.block_steps0 + self.stats["block_steps"]
        d["active_fraction"] = line["active"] / (line["block_steps"] * self.nb.n) if line["block_steps"] else 1.0
        d["min_step"] = self.dt / 2.0 ** deepest
        self._line = {"block_steps": 0, "active": 0, "deepest": 0}
        return d

    def warnings(self, diag) -> list:
        limit, error = self.nb.energy_warning, diag.get("energy_error", 0.0)
        if limit and error > limit:
            return [f"energy error {error:.3g} exceeds nbody.energy_warning = {limit:g}: "
                    f"the orbits are not resolved; reduce nbody.eta (or time.dt) or raise nbody.softening"]
        return []

    def checkpoint_attrs(self) -> dict:
        return {**super().checkpoint_attrs(), "block_steps": self.block_steps0 + self.stats["block_steps"]}

    def checkpoint_datasets(self) -> list:
        n, s, c = self.nb.n, self.blocks.start, self.blocks.count
        where = (slice(s, s + c),)
        return super().checkpoint_datasets() + [
            Dataset("nbody/acceleration", (n, 3), self.a.copy(), where),
            Dataset("nbody/jerk", (n, 3), self.j.copy(), where),
            Dataset("nbody/time", (n,), np.full(c, self.time), where),
            Dataset("nbody/dt", (n,), self.dt / 2.0 ** self.level, where)]

    def advance_stats(self) -> dict:
        """Block steps, mean active fraction and pair interactions since this model started."""
        s = self.stats
        return {"block_steps": s["block_steps"], "pairs": s["pairs"],
                "active_fraction": s["active"] / (s["block_steps"] * self.nb.n) if s["block_steps"] else 0.0}

    @property
    def work_per_step(self) -> int:
        """Pair interactions per step, on average over the steps taken so far."""
        steps = self.step_count - self._first_step
        return self.stats["pairs"] // steps if steps > 0 else self.nb.n * self.nb.n

    def describe(self) -> str:
        mode = f"block steps, eta={self.nb.eta:g}" if self.nb.adaptive else "one fixed step"
        return super().describe().replace(") on ", f"; Hermite, {mode}) on ", 1)
