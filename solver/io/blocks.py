"""Each rank's block of a global HDF5 dataset, read and written collectively.

A rank writes or reads its own block of each global dataset in one
collective call, through the low-level API, so that a rank with an empty
block still takes part (h5py's high-level slicing hangs there).  Whole
files are written either as raw bytes through MPI-IO into datasets that
rank 0 has laid out (``layout`` then ``write_raw``: the GIL is free for the
transfer), or, without MPI-IO, gathered through rank 0 (``write_gathered``).
Without MPI-IO (h5py built without MPI, or ``SOLVER_IO_GATHER=1`` for file
systems where MPI-IO misbehaves) reads are scattered from rank 0 alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..parallel.mpi import MPI, quiet_barrier


def parallel_io(comm) -> bool:
    """Whether files go through MPI-IO (else: gathered through rank 0)."""
    if os.environ.get("SOLVER_IO_GATHER", "") not in ("", "0"):
        return False
    return bool(h5py.get_config().mpi)


@dataclass
class Dataset:
    """One global dataset: its name, global shape, this rank's block and
    where it goes.  With ``memory``, the block is ``local[memory]`` (written
    straight from a padded array, without a copy)."""
    name: str
    shape: tuple
    local: np.ndarray
    where: tuple
    attrs: dict = field(default_factory=dict)
    memory: tuple | None = None

    @property
    def block(self) -> np.ndarray:
        return self.local if self.memory is None else self.local[self.memory]


def _selections(dset, where, shape, memory=None, memory_shape=None):
    """(memory space, file space) selecting ``where`` in the file and the
    block in memory: the whole array, or ``memory`` slices of an array of
    ``memory_shape`` (so a padded block is written without a copy).  An
    empty block selects nothing."""
    fspace = dset.id.get_space()
    if 0 in shape:
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,))
        mspace.select_none()
        return mspace, fspace
    start = tuple(s.start for s in where) + (0,) * (len(dset.shape) - len(where))
    count = tuple(shape)
    fspace.select_hyperslab(start, count)
    if memory is None:
        mspace = h5py.h5s.create_simple(count)
    else:
        mspace = h5py.h5s.create_simple(tuple(memory_shape))
        mspace.select_hyperslab(tuple(s.start for s in memory), count)
    return mspace, fspace


def _xfer(collective):
    plist = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    if collective:
        plist.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return plist


def write_block(dset, where, local, collective=True, memory=None):
    """Write this rank's block at ``where`` (every rank must call): ``local``,
    or its part ``memory`` (slices) when given."""
    local = np.ascontiguousarray(local, dtype=dset.dtype)
    if 0 in dset.shape:
        return                           # nothing stored: every rank skips alike
    shape = local.shape if memory is None else tuple(s.stop - s.start for s in memory)
    mspace, fspace = _selections(dset, where, shape, memory, local.shape)
    data = local if local.size else np.zeros(1, dset.dtype)
    dset.id.write(mspace, fspace, data, dxpl=_xfer(collective))


def read_block(dset, where, collective=True) -> np.ndarray:
    """Read block ``where`` of ``dset`` (every rank must call)."""
    shape = tuple(s.stop - s.start for s in where) + tuple(dset.shape[len(where):])
    out = np.empty(shape, dset.dtype)
    if 0 in dset.shape:
        return out
    mspace, fspace = _selections(dset, where, shape)
    dset.id.read(mspace, fspace, out if out.size else np.zeros(1, dset.dtype), dxpl=_xfer(collective))
    return out


def _create(f, ds, dcpl=None):
    dset = f.create_dataset(ds.name, shape=ds.shape, dtype=ds.local.dtype, dcpl=dcpl)
    for key, value in ds.attrs.items():
        dset.attrs[key] = value
    return dset


def layout(path, attrs, datasets) -> np.ndarray:
    """Rank 0: the whole file but its raw data (root ``attrs``, and contiguous
    datasets allocated at creation, never filled), through serial HDF5.
    Returns each dataset's byte offset in the file (-1 for an empty one)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    offsets = np.full(len(datasets), -1, dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
        for k, ds in enumerate(datasets):
            offset = _create(f, ds, dcpl).id.get_offset()
            offsets[k] = -1 if offset is None else offset
    return offsets


def write_raw(path, comm, offsets, datasets, opened=None):
    """Every rank writes its blocks straight into the datasets' bytes with
    collective MPI-IO on the writer's communicator: mpi4py releases the GIL
    for the whole transfer, and no HDF5 call waits on other ranks (h5py holds
    the GIL in collective file creation and closing), so the step loop runs on.
    Every call here is collective: on a failure the file is left open (its
    close is collective too) and the caller must end the job.  ``opened()``
    runs once the file is open (tests inject failures there)."""
    from mpi4py.util.dtlib import from_numpy_dtype
    fh = MPI.File.Open(comm, path, MPI.MODE_WRONLY)
    if opened is not None:
        opened()
    for ds, offset in zip(datasets, offsets):
        if offset < 0:
            continue                 # nothing stored: every rank skips alike
        local = np.ascontiguousarray(ds.local)
        block = tuple(s.stop - s.start for s in ds.where) + tuple(ds.shape[len(ds.where):])
        etype = from_numpy_dtype(local.dtype)
        types = []
        if 0 in block:               # an empty block still takes part in the collective
            fh.Set_view(int(offset), etype, etype)
            buffer = [local, 0, etype]
        else:
            starts = [s.start for s in ds.where] + [0] * (len(ds.shape) - len(ds.where))
            inner = [0] * local.ndim if ds.memory is None else \
                [s.start for s in ds.memory] + [0] * (local.ndim - len(ds.memory))
            types = [etype.Create_subarray(list(ds.shape), list(block), starts).Commit(),
                     etype.Create_subarray(list(local.shape), list(block), inner).Commit()]
            fh.Set_view(int(offset), etype, types[0])
            buffer = [local, 1, types[1]]
        quiet_barrier(comm)          # arrive together: the blocking write then waits for no one
        fh.Write_all(buffer)
        for t in types + [etype]:
            t.Free()
    fh.Sync()                            # every rank's bytes on stable storage before the rename
    fh.Close()


def write_gathered(path, comm, attrs, datasets, opened=None):
    """Rank 0 writes the file (root ``attrs`` and the datasets), receiving
    one rank's blocks at a time."""
    if comm.rank != 0:
        for ds in datasets:
            comm.send((ds.where, np.ascontiguousarray(ds.block)), dest=0, tag=77)
        return
    with h5py.File(path, "w") as f:
        if opened is not None:
            opened()
        f.attrs.update(attrs)
        for ds in datasets:
            dset = _create(f, ds)
            write_block(dset, ds.where, ds.block, collective=False)
            for source in range(1, comm.size):
                where, local = comm.recv(source=source, tag=77)
                write_block(dset, where, local, collective=False)


def read_blocks(path, comm, requests) -> list[np.ndarray]:
    """This rank's blocks: ``requests`` is [(dataset name, where)], the same
    names on every rank.  Check the file with ``io.inputs`` first."""
    if parallel_io(comm):
        with h5py.File(path, "r", driver="mpio", comm=comm) as f:
            return [read_block(f[name], where) for name, where in requests]
    wheres = comm.gather([where for _, where in requests], root=0)
    if comm.rank == 0:
        with h5py.File(path, "r") as f:
            for source in range(comm.size - 1, -1, -1):
                blocks = [read_block(f[name], where, collective=False)
                          for (name, _), where in zip(requests, wheres[source])]
                if source:
                    comm.send(blocks, dest=source, tag=78)
            return blocks
    return comm.recv(source=0, tag=78)
