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
    datasets allocated at creation, never filled), through serial HDF5, with
    the disk space of the raw data reserved (``reserve_space``).
    Returns each dataset's byte offset in the file (-1 for an empty one)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    offsets = np.full(len(datasets), -1, dtype=np.int64)
    reserve = []
    f = h5py.File(path, "w")
    try:
        f.attrs.update(attrs)
        for k, ds in enumerate(datasets):
            dset = _create(f, ds, dcpl)
            offset = dset.id.get_offset()
            offsets[k] = -1 if offset is None else offset
            if offset is not None:
                reserve.append((offset, dset.id.get_storage_size()))
    finally:
        _close(f)
    reserve_space(path, reserve)
    return offsets


_UNCLOSED = []       # files whose close failed: HDF5 crashes if their handle is released again


def _close(f):
    """Close ``f``; if HDF5 cannot (it extends the file to its full size on
    closing, which a full disk or a file size limit refuses), keep the
    handle for good: h5py would release it again when it is freed, and HDF5
    crashes on a file whose close failed half way."""
    try:
        f.close()
    except Exception:
        _UNCLOSED.append(f)
        raise


def _fallocate():
    """Linux fallocate(2) through ctypes (None elsewhere): unlike
    ``os.posix_fallocate`` it never falls back to writing the range."""
    import ctypes
    try:
        call = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    call.restype = ctypes.c_int
    return call


def reserve_space(path, ranges):
    """Allocate the file's ``ranges`` [(offset, length)] on disk now, so that a
    full disk or quota fails here, before any collective write, rather than
    as a short write.  Where the file system cannot (no fallocate), nothing
    is reserved: the read-back in ``write_raw`` still finds a short write."""
    call = _fallocate()
    if call is None or not ranges:
        return
    import ctypes
    import errno
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        for offset, length in ranges:
            if length and call(fd, 0, offset, length) != 0:
                code = ctypes.get_errno()
                if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return
                raise OSError(code, f"{os.strerror(code)} (reserving {length} bytes)")
    finally:
        os.close(fd)


def _block_of(ds):
    """(global starts, block shape) of this rank's block of ``ds``."""
    block = tuple(s.stop - s.start for s in ds.where) + tuple(ds.shape[len(ds.where):])
    starts = [s.start for s in ds.where] + [0] * (len(ds.shape) - len(ds.where))
    return starts, block


def write_raw(path, comm, offsets, datasets, opened=None) -> list[str]:
    """Every rank writes its blocks straight into the datasets' bytes with
    collective MPI-IO on the writer's communicator: mpi4py releases the GIL
    for the whole transfer, and no HDF5 call waits on other ranks (h5py holds
    the GIL in collective file creation and closing), so the step loop runs on.
    Every call here is collective: on a failure the file is left open (its
    close is collective too) and the caller must end the job.  ``opened()``
    runs once the file is open (tests inject failures there).

    A full disk need not raise here: MPI-IO may report a short write only in
    the status, or not at all (Open MPI's OMPIO drops the error of a short
    ``pwritev``).  So each rank compares the count in the status, then reads
    its blocks back and compares them with what it wrote.  Returns what went
    wrong on this rank (empty when the file holds this rank's data); the
    caller agrees on it with the other ranks."""
    from mpi4py.util.dtlib import from_numpy_dtype
    fh = MPI.File.Open(comm, path, MPI.MODE_WRONLY)
    if opened is not None:
        opened()
    problems = []
    for ds, offset in zip(datasets, offsets):
        if offset < 0:
            continue                 # nothing stored: every rank skips alike
        local = np.ascontiguousarray(ds.local)
        starts, block = _block_of(ds)
        etype = from_numpy_dtype(local.dtype)
        types = []
        if 0 in block:               # an empty block still takes part in the collective
            fh.Set_view(int(offset), etype, etype)
            buffer = [local, 0, etype]
        else:
            inner = [0] * local.ndim if ds.memory is None else \
                [s.start for s in ds.memory] + [0] * (local.ndim - len(ds.memory))
            types = [etype.Create_subarray(list(ds.shape), list(block), starts).Commit(),
                     etype.Create_subarray(list(local.shape), list(block), inner).Commit()]
            fh.Set_view(int(offset), etype, types[0])
            buffer = [local, 1, types[1]]
        quiet_barrier(comm)          # arrive together: the blocking write then waits for no one
        status = MPI.Status()
        fh.Write_all(buffer, status)
        written, expected = status.Get_elements(etype), (0 if 0 in block else int(np.prod(block)))
        if written != expected:
            problems.append(f"/{ds.name}: MPI-IO wrote {written} of {expected} values")
        for t in types + [etype]:
            t.Free()
    fh.Sync()                            # every rank's bytes on stable storage before the rename
    fh.Close()
    return problems or _read_back(path, offsets, datasets)


READ_BACK_BYTES = 8 << 20           # the most a rank reads back at once


def _read_back(path, offsets, datasets) -> list[str]:
    """This rank's blocks as the file holds them, compared bit for bit with
    what was written (independent reads: no rank waits on another).  A range
    the file system never stored reads as zeros (a hole) or not at all."""
    from mpi4py.util.dtlib import from_numpy_dtype
    problems = []
    try:
        fh = MPI.File.Open(MPI.COMM_SELF, path, MPI.MODE_RDONLY)
        try:
            for ds, offset in zip(datasets, offsets):
                starts, block = _block_of(ds)
                if offset < 0 or 0 in block:
                    continue
                etype = from_numpy_dtype(ds.block.dtype)
                try:
                    problem = _compare_rows(fh, int(offset), etype, ds, starts, block)
                finally:
                    etype.Free()
                if problem:
                    problems.append(problem)
        finally:
            fh.Close()
    except MPI.Exception as exc:         # not collective: the ranks agree on it afterwards
        problems.append(f"the file cannot be read back ({exc})")
    return problems


def _compare_rows(fh, offset, etype, ds, starts, block):
    """The first rows of this rank's block of ``ds`` that the file does not
    hold as written (None when it holds them all), a few MiB at a time."""
    mine = ds.block
    unsigned = np.dtype(f"u{mine.dtype.itemsize}")
    step = max(1, READ_BACK_BYTES // max(1, mine.nbytes // block[0]))
    for r0 in range(0, block[0], step):
        part = [min(step, block[0] - r0)] + list(block[1:])
        ftype = etype.Create_subarray(list(ds.shape), part, [starts[0] + r0] + starts[1:]).Commit()
        try:
            fh.Set_view(offset, etype, ftype)
            back = np.empty(part, mine.dtype)
            status = MPI.Status()
            fh.Read([back, etype], status)
        finally:
            ftype.Free()
        if status.Get_elements(etype) != back.size or \
                not np.array_equal(back.view(unsigned), mine[r0:r0 + part[0]].view(unsigned)):
            return f"/{ds.name}: rows {starts[0] + r0} to {starts[0] + r0 + part[0] - 1} are not in the file as written"
    return None


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
