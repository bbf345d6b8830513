"""Heat diffusion: everything the rest of the solver asks of this model
(see ``solver.models`` for the names every model package exposes).

Importing it is cheap (no MPI, no HDF5): settings are read before MPI starts.
"""
from __future__ import annotations

from .output import SNAPSHOT_FIELDS, View, history_panels, picture, xdmf_grid  # noqa: F401
from .settings import DEFAULTS, PHYSICS, validate  # noqa: F401

kind = "heat"


def datasets(settings) -> dict:
    """What a checkpoint of this problem holds, checked before a restart reads it."""
    from ...io.inputs import Want
    return {"heat/u": Want(tuple(settings.heat.shape), dtype="<f8")}


def for_restart(settings, info):
    """Settings a checkpoint fixes beyond the config: none for heat."""
    return settings


def make(settings, comm, backend, restart):
    """The model (collective)."""
    from .model import HeatModel
    return HeatModel(settings, comm, backend, restart)
