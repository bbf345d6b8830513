"""The yardsticks ``bench`` measures us against, each on the same problem in
the same process: Devito (generated C) for the heat stencil, REBOUND's
``basic`` direct summation for n-body, and a large array copy for the
memory bandwidth.  Devito and REBOUND come with ``pip install .[bench]``."""
from __future__ import annotations

import os
import time

import numpy as np


def copy_bandwidth(comm, nbytes=1 << 30, repeats=5) -> float:
    """Bytes per second moved by every rank of ``comm`` copying its own
    ``nbytes`` array at the same time (read + write: 2 * nbytes per copy,
    write-allocate traffic not counted), best of ``repeats``.  Collective."""
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        np.copyto(dst, src)
        comm.Barrier()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * nbytes * comm.size / best


def device_copy_bandwidth(comm, backend, nbytes=1 << 28, repeats=5) -> float:
    """The same measure for a device backend: every rank copies a device
    array to another on its own device (``backend.device_copy``), at the same time."""
    best = float("inf")
    for _ in range(repeats):
        comm.Barrier()
        seconds = backend.device_copy(nbytes)
        best = min(best, comm.allreduce(seconds, op=max_op()))
    return 2.0 * nbytes * comm.size / best


def max_op():
    from ..parallel.mpi import MPI
    return MPI.MAX


def available(module) -> str:
    """'' when ``module`` imports, else why not."""
    try:
        __import__(module)
        return ""
    except Exception as exc:                     # ImportError, or a broken install
        return f"{module} is not installed ({type(exc).__name__}); pip install .[bench]"


def devito_heat(u0: np.ndarray, coeffs, steps: int, repeats: int):
    """Devito's FTCS on the same grid, start and coefficients, in float64 on
    one thread.  Its walls are fixed zero ghost values instead of our
    mirrored ones (same work per cell).  Returns (seconds per run, final
    field)."""
    os.environ.setdefault("DEVITO_LOGGING", "ERROR")
    from devito import Eq, Grid, Operator, TimeFunction, configuration
    configuration["language"] = "C"              # no OpenMP: one thread, like one rank
    configuration["log-level"] = "ERROR"
    grid = Grid(shape=u0.shape, extent=tuple(float(n - 1) for n in u0.shape), dtype=np.float64)
    u = TimeFunction(name="u", grid=grid, space_order=2)
    # unit spacing: h^2 u.d2 = u[-1] - 2u + u[+1], so each term is ours
    update = u + sum(c * getattr(u, f"d{d.name}2") for c, d in zip(coeffs, grid.dimensions))
    op = Operator(Eq(u.forward, update))
    times = []
    for _ in range(repeats + 1):                 # the first call compiles
        u.data[:] = 0.0
        u.data[0] = u0
        t0 = time.perf_counter()
        op.apply(time_M=steps - 1)
        times.append(time.perf_counter() - t0)
    return times[1:], np.array(u.data[steps % 2])


def devito_heat_variable(u0: np.ndarray, faces, source, width: int, steps: int, repeats: int):
    """Devito's FTCS with the variable-coefficient operator on the same grid,
    start and data, float64, one thread: D and Q enter as Devito Functions
    holding the same face coefficients (dt / h^2 x the harmonic mean of D,
    one Function per axis, read at a cell and at its upper neighbour) and
    dt Q, the numbers our kernels read; ``faces`` and ``source`` are our
    padded host arrays (``width`` ghost layers).  Walls are Devito's fixed
    zero ghosts, as in devito_heat.  Returns (seconds per run, final field)."""
    os.environ.setdefault("DEVITO_LOGGING", "ERROR")
    from devito import Eq, Function, Grid, Operator, TimeFunction, configuration
    configuration["language"] = "C"
    configuration["log-level"] = "ERROR"
    grid = Grid(shape=u0.shape, extent=tuple(float(n - 1) for n in u0.shape), dtype=np.float64)
    u = TimeFunction(name="u", grid=grid, space_order=2)
    ks = [Function(name=f"k{d}", grid=grid, space_order=2) for d in range(u0.ndim)]
    q = Function(name="q", grid=grid, space_order=0)
    for k, host in zip(ks, faces):
        halo = k.halo[0][0]
        padded = np.zeros(tuple(n + 2 * max(halo, width) for n in u0.shape))
        at = max(halo, width) - width
        padded[tuple(slice(at, at + n) for n in host.shape)] = host
        k.data_with_halo[:] = padded[tuple(slice(max(halo, width) - halo, max(halo, width) + n + halo)
                                           for n in u0.shape)]
    q.data[:] = source[tuple(slice(width, width + n) for n in u0.shape)]
    t, dims = grid.stepping_dim, grid.dimensions
    here = tuple(dims)
    update = 0
    for d, (k, dim) in enumerate(zip(ks, dims)):
        below = here[:d] + (dim - 1,) + here[d + 1:]
        above = here[:d] + (dim + 1,) + here[d + 1:]
        update += k[here] * (u[(t,) + below] - u[(t,) + here]) + k[above] * (u[(t,) + above] - u[(t,) + here])
    op = Operator(Eq(u[(t + 1,) + here], u[(t,) + here] + update + q[here]))
    times = []
    for _ in range(repeats + 1):                 # the first call compiles
        u.data[:] = 0.0
        u.data[0] = u0
        t0 = time.perf_counter()
        op.apply(time_M=steps - 1)
        times.append(time.perf_counter() - t0)
    return times[1:], np.array(u.data[steps % 2])


def rebound_basic(x, v, m, G, softening, dt, steps: int, repeats: int):
    """REBOUND's ``basic`` gravity (all N^2 ordered pairs, one thread) with its
    leapfrog, on the same bodies.  Returns seconds per run of ``steps``."""
    import rebound
    times = []
    for _ in range(repeats + 1):                 # the first run warms caches
        sim = rebound.Simulation()
        sim.G, sim.softening, sim.dt = G, softening, dt
        sim.gravity, sim.integrator = "basic", "leapfrog"
        for (px, py, pz), (qx, qy, qz), mass in zip(x, v, m):
            sim.add(m=float(mass), x=float(px), y=float(py), z=float(pz), vx=float(qx), vy=float(qy), vz=float(qz))
        t0 = time.perf_counter()
        sim.steps(steps)
        times.append(time.perf_counter() - t0)
    return times[1:]


def rebound_ias15(x, v, m, G, softening, t_end, epsilon=1e-9):
    """REBOUND's IAS15 (adaptive, 15th order; ``epsilon`` its precision
    parameter, 1e-9 by default) on the same bodies, all N^2 pairs on one
    thread, to ``t_end``.  Returns (seconds, relative energy error, steps)."""
    import rebound
    sim = rebound.Simulation()
    sim.G, sim.softening = G, softening
    sim.gravity, sim.integrator = "basic", "ias15"
    sim.integrator.epsilon = epsilon
    for (px, py, pz), (qx, qy, qz), mass in zip(x, v, m):
        sim.add(m=float(mass), x=float(px), y=float(py), z=float(pz), vx=float(qx), vy=float(qy), vz=float(qz))
    e0 = sim.energy()
    t0 = time.perf_counter()
    sim.integrate(t_end, exact_finish_time=1)
    seconds = time.perf_counter() - t0
    return seconds, abs((sim.energy() - e0) / e0), sim.steps_done
