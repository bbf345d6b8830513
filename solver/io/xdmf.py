"""XDMF sidecars, so ParaView and VisIt open checkpoints directly.

Each ``step_N.h5`` gets ``step_N.xdmf`` beside it, and the run directory a
temporal collection ``run.xdmf`` over all checkpoints present.  Everything is
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


def write_time_series(output_dir, grid) -> str:
    """``run.xdmf``: a temporal collection over every checkpoint in the run."""
    grids = []
    for _, path in list_checkpoints(os.path.join(output_dir, "checkpoints")):
        try:
            grids.append(_grid_of(path, "checkpoints/" + os.path.basename(path), 3, grid))
        except (OSError, KeyError):
            continue                     # pruned or replaced while we looked
    body = '  <Grid Name="run" GridType="Collection" CollectionType="Temporal">\n' + "".join(grids) + "  </Grid>\n"
    path = os.path.join(output_dir, "run.xdmf")
    write_atomically(path, _HEAD + body + _TAIL)
    return path
