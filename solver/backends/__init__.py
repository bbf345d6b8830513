"""Compute backends.  Each exposes the same small set of names:

    name              the backend's name in ``[backend] name``
    available()       (bool, why-not) without side effects
    zeros(shape)      an array in the backend's memory
    to_host(array)    a NumPy array of the same values
    sync()            wait for every queued kernel (device backends return before they finish)
    from_host(array)  the backend's array of those values
    all_finite(array, box)
                      whether every value in a box of an array is finite (one flag back)
    box_stats(array, box), box_error(array, box, mode, factor, background)
                      the heat diagnostics' sums, a few numbers back
    halo_buffer(shape, dtype)
                      a message buffer for a halo region (host memory, page-locked
                      where that helps, or device memory for a CUDA-aware MPI)
    pack(array, where, out), unpack(buf, array, where)
                      a halo region to and from such a buffer
    bind(comm, device)
                      optional, collective: pick this rank's device (device backends)
    heat_block(padded_shape, fields=0)
                      how many FTCS steps the backend likes to take per halo exchange
                      (``fields``: coefficient fields each step also reads)
    heat_fused(src, dst, stencil, steps, lo, hi, grow)
                      that many FTCS steps for the box [lo, hi) of padded blocks
                      (``stencil``: a HeatStencil whose arrays are the backend's)
    nbody_accel(xi, xj, mj, j0, eps2, G, out, i0)
    nbody_potential(xi, xj, mj, j0, i0, eps2, G)
                      softened gravity of a block of sources on a block of targets
    nbody_accel_jerk(xi, vi, ids, xj, vj, mj, j0, eps2, G, acc, jerk)
                      force and jerk in one pass (Hermite), on any targets
    hermite_predict(x, v, a, j, h, xp, vp), hermite_correct(x, v, a, j, level, active, h, a1, j1, tau, eta, dt,
                      max_level)  Hermite's predictor and corrector with the next block level
    hermite_block(...)
                      optional: a whole block of block steps on one rank in one call

Models and the halo exchange call these, never NumPy or a GPU library
directly on a backend array: a device backend keeps its arrays on the device.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..config import ConfigError


@dataclass
class HeatStencil:
    """The explicit heat step as every backend applies it (the model builds
    it from ``models/heat/operator.py``).  Constant coefficients: ``coeffs``
    c_d = dt D / h_d^2 and the update ((sum_d c_d ((u[-1] + u[+1]) - 2 u)) + u).
    Variable: ``faces`` (per axis, an array of the padded block's shape
    whose cell i holds the coefficient of its low face, dt / h^2 times the
    harmonic mean of D) and ``source`` (dt Q per cell, with the Neumann wall
    fluxes), and the update
        t_d = (K_d[i] (u[i-1] - u) + K_d[i+1] (u[i+1] - u)),
        ((((t_0 + t_1) + t_2) + s) + u).
    ``walls[2a + side]`` = (a, b): a wall's ghost is a * edge + b.
    ``sums[2a + side]``: None, or an array (the padded block without axis a)
    to which the edge cells of every state a sweep steps from are added: the
    model turns them into the heat that crossed the wall."""
    coeffs: tuple | None = None
    faces: tuple | None = None
    source: object = None
    walls: tuple = ()
    sums: tuple = ()

    @property
    def variable(self) -> bool:
        return self.faces is not None

# in order of preference for "auto"
_MODULES = {"cuda": "cuda", "opencl": "opencl", "cpu": "cpu", "numpy": "numpy_"}
_PREFERENCE = ("cuda", "cpu", "numpy")


def _load(name):
    try:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(__name__):
            return None          # not written yet in this version
        raise


def status() -> dict[str, tuple[bool, str]]:
    """name -> (available, reason) for every known backend."""
    out = {}
    for name in _MODULES:
        mod = _load(name)
        out[name] = (False, "not part of this version") if mod is None else mod.available()
    return out


def get_backend(name: str, comm=None, device: int = -1, gpu_aware_mpi: bool = False):
    """The backend module for ``name`` ("auto": the best one available).
    With ``comm`` (collective), the ranks first agree on what is available
    (one backend for all, or the same ConfigError on every rank, before any
    other collective), then a device backend picks this rank's device
    (``bind``): ``device``, or -1 for the rank's index on its node;
    ``gpu_aware_mpi``: hand device buffers straight to MPI."""
    mod = _find(name) if comm is None else agreed(name, comm)
    if gpu_aware_mpi and not hasattr(mod, "use_gpu_aware_mpi"):
        raise ConfigError(f"backend.gpu_aware_mpi: the {mod.name} backend has no device buffers to hand to MPI; "
                          f"it applies to the cuda backend")
    if gpu_aware_mpi:
        _check_cuda_aware_mpi()
    if comm is not None and hasattr(mod, "bind"):
        mod.bind(comm, device)
        if gpu_aware_mpi:
            mod.use_gpu_aware_mpi()
    return mod


def _check_cuda_aware_mpi():
    """Where the MPI library says whether it is CUDA-aware, believe it."""
    from mpi4py import MPI
    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None and not query():
        raise ConfigError(f"backend.gpu_aware_mpi: this MPI library is not CUDA-aware "
                          f"(MPI.Query_cuda_support() is false: {MPI.Get_library_version().splitlines()[0][:60]}); "
                          f"set backend.gpu_aware_mpi = false, or use an MPI built with CUDA support")


def agreed(name: str, comm):
    """``_find(name)`` with every rank of ``comm`` agreeing (collective, one
    allgather): "auto" is the first backend available on every rank; a
    backend named but missing on some rank is the lowest such rank's
    ConfigError on all of them."""
    candidates = list(_PREFERENCE) if name == "auto" else [name]
    mine = {}
    for candidate in candidates:
        mod = _load(candidate) if candidate in _MODULES else None
        try:
            mine[candidate] = (False, "not part of this version") if mod is None else mod.available()
        except Exception as exc:          # noqa: BLE001 - a crash is one rank's "no", not a hang
            mine[candidate] = (False, f"{type(exc).__name__}: {exc}")
    everyone = comm.allgather(mine) if comm.size > 1 else [mine]
    if name == "auto":
        for candidate in candidates:
            if all(ranks[candidate][0] for ranks in everyone):
                return _load(candidate)
        raise ConfigError("backend.name: no backend is available on every rank")
    if name in _MODULES and all(ranks[name][0] for ranks in everyone):
        return _load(name)
    for rank, ranks in enumerate(everyone):
        if name in _MODULES and not ranks[name][0]:
            some = comm.size > 1 and any(r[name][0] for r in everyone)
            where = f"on rank {rank}" if some else "here"
            usable = [n for n, (a, _) in status().items() if a]
            raise ConfigError(f"backend.name: backend {name!r} is not available {where} ({ranks[name][1]}); "
                              f"available: {', '.join(usable)}")
    return _find(name)          # an unknown name: _find says so


def _find(name: str):
    if name == "auto":
        for candidate in _PREFERENCE:
            mod = _load(candidate)
            if mod is not None and mod.available()[0]:
                return mod
        raise ConfigError("backend.name: no backend is available")
    if name not in _MODULES:
        raise ConfigError(f"backend.name: unknown backend {name!r}; allowed: auto, {', '.join(_MODULES)}")
    mod = _load(name)
    ok, why = (False, "not part of this version") if mod is None else mod.available()
    if not ok:
        usable = [n for n, (a, _) in status().items() if a]
        raise ConfigError(f"backend.name: backend {name!r} is not available here ({why}); available: {', '.join(usable)}")
    return mod
