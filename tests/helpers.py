"""Building and running heat models in-process, for the numerical tests."""
from __future__ import annotations

import numpy as np

from solver.backends import get_backend
from solver.models import load_settings
from solver.models.heat.model import HeatModel


def heat_settings(*overrides):
    return load_settings(None, "<test>", list(overrides))


def make_heat(comm, *overrides, backend="numpy"):
    settings = heat_settings(*overrides)
    model = HeatModel(settings, comm, get_backend(backend))
    model.set_initial()
    return model


def run_to_end(model):
    while model.step_count < model.end_step:
        model.advance(model.end_step - model.step_count)
    return model


def gather_field(model, root=0):
    """The global field on ``root`` of the model's communicator (None elsewhere)."""
    parts = model.comm.gather((model.decomp.global_slices, model.local_field()), root=root)
    if model.comm.rank != root:
        return None
    field = np.full(model.heat.shape, np.nan)
    for where, block in parts:
        field[where] = block
    return field


def on_each_rank_count(world, solve):
    """{k: solve(sub)} on rank 0 of ``world``, for sub-communicators ``sub``
    of its first k = 1..world.size ranks (``solve`` is collective over
    ``sub``; what it returns on sub's rank 0 is kept)."""
    from mpi4py import MPI
    results = {}
    for k in range(1, world.size + 1):
        sub = world.Split(0 if world.rank < k else MPI.UNDEFINED, world.rank)
        if sub != MPI.COMM_NULL:
            value = solve(sub)
            if sub.rank == 0:
                results[k] = value
            sub.Free()
        world.Barrier()
    return results


def make_nbody(comm, *overrides, backend="numpy"):
    from solver.models.nbody import resolve_settings
    from solver.models.nbody.model import NBodyModel
    settings = resolve_settings(load_settings("[problem]\nkind = 'nbody'\n", "<test>", list(overrides)))
    model = NBodyModel(settings, comm, get_backend(backend))
    model.set_initial()
    return model


def gather_particles(model, root=0):
    """Global (position, velocity) on ``root`` of the model's communicator."""
    x = model.blocks.allgather(model.x)
    v = model.blocks.allgather(model.v)
    return (x, v) if model.comm.rank == root else (None, None)


def disk_filling_write(real, room=1000):
    """``io.blocks.write_raw`` on a disk that fills ``room`` bytes into the
    raw data (RLIMIT_FSIZE for the call): a short write that Open MPI's OMPIO
    reports nowhere, for the tests of what finds it."""
    import resource

    def write(path, comm, offsets, datasets, opened=None):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(offsets.max()) + room, hard))
        try:
            return real(path, comm, offsets, datasets, opened)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return write
