"""Gravitational n-body: everything the rest of the solver asks of this
model (see ``solver.models`` for the names every model package exposes).

Importing it is cheap (no MPI, no HDF5): settings are read before MPI starts.
"""
from __future__ import annotations

import dataclasses
import sys

from .initial import fixed_count
from .output import SNAPSHOT_FIELDS, View, history_panels, picture, xdmf_grid  # noqa: F401
from .settings import DEFAULTS, PHYSICS, validate  # noqa: F401

kind = "nbody"


def resolve_settings(settings, n_from_file=None):
    """Settings with n fixed by the start (figure8: 3, kepler: 2, file: its length)."""
    n = n_from_file or fixed_count(settings.nbody)
    if n and n != settings.nbody.n:
        settings = settings.replace(nbody=dataclasses.replace(settings.nbody, n=n))
    return settings


def datasets(settings) -> dict:
    """What a checkpoint of this problem holds, checked before a restart reads it."""
    from ...io.inputs import Want
    n, dtype = settings.nbody.n, "<f8" if settings.nbody.precision == "float64" else "<f4"
    want = {"nbody/position": Want((n, 3), dtype=dtype), "nbody/velocity": Want((n, 3), dtype=dtype),
            "nbody/mass": Want((n,), dtype=dtype), "nbody/id": Want((n,), kinds="iu", optional=True)}
    if settings.nbody.integrator == "hermite":
        # each body's force, jerk, time and step: an exact restart (without them, steps start afresh)
        want.update({f"nbody/{name}": Want(shape, dtype="<f8", optional=True) for name, shape in
                     (("acceleration", (n, 3)), ("jerk", (n, 3)), ("time", (n,)), ("dt", (n,)))})
    return want


def for_restart(settings, info):
    """A start that fixes n (figure8, kepler, a file) fixes it on restart too."""
    n = info.shapes["nbody/mass"][0] if settings.nbody.initial == "file" and info.shapes.get("nbody/mass") else None
    return resolve_settings(settings, n)


def make(settings, comm, backend, restart):
    """The model (collective); a fresh file start reads its particles here."""
    from .initial import read_particles
    from .hermite import HermiteModel
    from .model import NBodyModel
    fixed, asked = fixed_count(settings.nbody), settings.nbody.n
    if restart is None and fixed and asked not in (fixed, DEFAULTS["n"]) and comm.rank == 0:
        sys.stderr.write(f"solver: warning: nbody.n = {asked} is ignored: the {settings.nbody.initial!r} start "
                         f"has {fixed} bodies\n")
    initial = None
    if restart is None and settings.nbody.initial == "file":
        initial = read_particles(settings.nbody.file, comm)
        settings = resolve_settings(settings, len(initial[2]))
    else:
        settings = resolve_settings(settings)
    model = HermiteModel if settings.nbody.integrator == "hermite" else NBodyModel
    return model(settings, comm, backend, restart, initial)
