"""XDMF sidecars, so ParaView and VisIt open checkpoints directly.

Each ``step_N.h5`` gets ``step_N.xdmf`` beside it, and the run directory a
temporal collection ``run.xdmf``: over the run's snapshots when it has any
(``SnapshotCollection``, kept across restarts, also by a restart that
writes no more), else over all checkpoints present.  Everything is
read back from the HDF5 files themselves, so the sidecars can be regenerated
at any time (``python -m solver plot`` does not need them).  What a grid
holds is the model's to say: ``grid(f, href, indent)`` returns the XML of
one ``<Grid>`` for the open checkpoint ``f``, whose data lives at ``href``.
"""
from __future__ import annotations

import os

from .rotation import list_checkpoints
from .safefile import write_atomically

_HEAD = '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n<Xdmf Version="2.0">\n <Domain>\n'
_TAIL = " </Domain>\n</Xdmf>\n"


def numbers(values) -> str:
    """Numbers for an XML DataItem, written so they read back exactly."""
    return " ".join(repr(float(v)) for v in values)


def hdf_item(dset, href, indent, number_type="Float") -> str:
    """A DataItem pointing at the dataset ``dset`` of the file at ``href``."""
    return (f'{" " * indent}<DataItem Dimensions="{" ".join(map(str, dset.shape))}" NumberType="{number_type}" '
            f'Precision="{dset.dtype.itemsize}" Format="HDF">{href}:{dset.name}</DataItem>\n')


def _grid_of(path, href, indent, grid) -> str:
    import h5py
    with h5py.File(path, "r") as f:
        return grid(f, href, indent)


def write_sidecar(h5path, grid) -> str:
    """``step_N.xdmf`` beside ``step_N.h5``."""
    xdmf = h5path[:-3] + ".xdmf"
    write_atomically(xdmf, _HEAD + _grid_of(h5path, os.path.basename(h5path), 2, grid) + _TAIL)
    return xdmf


def _collection(grids) -> str:
    return (_HEAD + '  <Grid Name="run" GridType="Collection" CollectionType="Temporal">\n' + "".join(grids)
            + "  </Grid>\n" + _TAIL)


def write_time_series(output_dir, grid) -> str | None:
    """``run.xdmf``: a temporal collection over every checkpoint in the run
    (nothing, for ``grid`` None: a run with snapshots lists those instead)."""
    if grid is None:
        return None
    grids = []
    for _, path in list_checkpoints(os.path.join(output_dir, "checkpoints")):
        try:
            grids.append(_grid_of(path, "checkpoints/" + os.path.basename(path), 3, grid))
        except (OSError, KeyError):
            continue                     # pruned or replaced while we looked
    path = os.path.join(output_dir, "run.xdmf")
    write_atomically(path, _collection(grids))
    return path


class SnapshotCollection:
    """``run.xdmf`` as one temporal collection over a run's snapshots: one
    grid per snapshot file, in step order, each step (and so each time)
    once.  A restart in the run's own directory starts from the snapshots
    already there (``begin``) and appends; a branch, in a directory of its
    own, starts its own.  Rank 0 only; every rewrite is atomic."""

    def __init__(self, output_dir, grid, subdir="snapshots"):
        self.path = os.path.join(output_dir, "run.xdmf")
        self.grid, self.subdir = grid, subdir
        self._grids = {}                 # step -> the XML of its grid

    def _read(self, h5path):
        """(step, grid XML) of a snapshot; the grid is None when the model
        cannot show it (n-body without positions)."""
        import h5py
        with h5py.File(h5path, "r") as f:
            step = int(f.attrs["step"])
            try:
                return step, self.grid(f, f"{self.subdir}/{os.path.basename(h5path)}", 3)
            except KeyError:
                return step, None

    def begin(self, paths):
        """The collection over the snapshots at ``paths`` (the run's so far)."""
        self._grids = {}
        for h5path in paths:
            try:
                step, xml = self._read(h5path)
            except (OSError, KeyError, ValueError, TypeError):
                continue                 # unreadable, or attributes not ours: not listed (the file stays)
            self._grids[step] = xml
        if paths:
            self._write()

    def add(self, h5path):
        step, xml = self._read(h5path)
        self._grids[step] = xml
        self._write()

    def _write(self):
        write_atomically(self.path, _collection([self._grids[k] for k in sorted(self._grids) if self._grids[k]]))
