"""Checkpoints in parallel HDF5: one file per output step, the global arrays
in a layout that does not depend on the rank count (see docs/design.md).

Every rank writes its own block of each global dataset in one collective
call; files are written under a temporary name and renamed into place only
when complete, so a file named ``step_*.h5`` is always a whole one.
"""
from __future__ import annotations

import datetime
import os
import re

import h5py
import numpy as np

from .. import __version__
from ..config import ConfigError

FORMAT = "solver-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{9})\.h5$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}.h5"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := _NAME.match(name))]
    return sorted(found)


def _open(path, mode, comm):
    if comm.size > 1 or h5py.get_config().mpi:
        return h5py.File(path, mode, driver="mpio", comm=comm)
    return h5py.File(path, mode)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(directory, step, comm, attrs: dict, datasets: list, keep: int = 0) -> str:
    """Write one checkpoint collectively and return its path.

    ``datasets``: (name, global_shape, local_array, global_slices, attrs) per
    dataset; every rank passes the same names and shapes in the same order."""
    final = os.path.join(directory, checkpoint_name(step))
    partial = os.path.join(directory, "." + checkpoint_name(step) + ".part")
    created = comm.bcast(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), root=0)
    with _open(partial, "w", comm) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["solver_version"] = __version__
        f.attrs["nranks"] = comm.size
        f.attrs["created"] = created
        f.attrs["step"] = step
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, shape, local, where, dattrs in datasets:
            dset = f.create_dataset(name, shape=shape, dtype=local.dtype)
            for key, value in dattrs.items():
                dset.attrs[key] = value
            with dset.collective:
                dset[where] = local
    comm.Barrier()                       # every rank has closed (and flushed) the file
    if comm.rank == 0:
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, final)
        _fsync_dir(directory)
        if keep > 0:
            for _, old in list_checkpoints(directory)[:-keep]:
                os.remove(old)
    comm.Barrier()
    return final


def read_heat_field(path, comm, shape, where) -> np.ndarray:
    """This rank's block ``where`` of ``/heat/u`` from a checkpoint file;
    ConfigError when the file is missing, not ours, or of another shape."""
    if not os.path.isfile(path):
        raise ConfigError(f"heat.file: {path} does not exist")
    try:
        with _open(path, "r", comm) as f:
            if "heat/u" not in f:
                raise ConfigError(f"heat.file: {path} has no /heat/u dataset (not a heat checkpoint)")
            dset = f["heat/u"]
            if tuple(dset.shape) != tuple(shape):
                raise ConfigError(f"heat.file: /heat/u in {path} has shape {list(dset.shape)}, but heat.shape is {list(shape)}")
            with dset.collective:
                return np.asarray(dset[where], dtype=np.float64)
    except OSError as exc:
        raise ConfigError(f"heat.file: cannot read {path} as HDF5 ({exc})") from None
