"""XDMF sidecars, so ParaView and VisIt open checkpoints directly.

Each ``step_N.h5`` gets ``step_N.xdmf`` beside it, and the run directory a
temporal collection ``run.xdmf`` over all checkpoints present.  Everything is
read back from the HDF5 files themselves, so the sidecars can be regenerated
at any time (``python -m solver plot`` does not need them).
"""
from __future__ import annotations

import os

import h5py

from .checkpoint import list_checkpoints

_HEAD = '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n<Xdmf Version="2.0">\n <Domain>\n'
_TAIL = " </Domain>\n</Xdmf>\n"


def _numbers(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def _heat_grid(f, href, indent) -> str:
    u = f["heat/u"]
    shape = u.shape
    ndim = len(shape)
    spacing = u.attrs["spacing"]
    # cell-centred data on a mesh of shape+1 nodes; the first node at 0.
    # XDMF lists dimensions, origin and spacing slowest axis first, which is
    # our array-axis order.
    topo, geo = ("2DCoRectMesh", "ORIGIN_DXDY") if ndim == 2 else ("3DCoRectMesh", "ORIGIN_DXDYDZ")
    origin = [float(o) - 0.5 * float(h) for o, h in zip(u.attrs["origin"], spacing)]
    p = " " * indent
    return (
        f'{p}<Grid Name="heat" GridType="Uniform">\n'
        f'{p} <Time Value="{float(f.attrs["time"])!r}"/>\n'
        f'{p} <Topology TopologyType="{topo}" Dimensions="{" ".join(str(n + 1) for n in shape)}"/>\n'
        f'{p} <Geometry GeometryType="{geo}">\n'
        f'{p}  <DataItem Dimensions="{ndim}" NumberType="Float" Precision="8" Format="XML">{_numbers(origin)}</DataItem>\n'
        f'{p}  <DataItem Dimensions="{ndim}" NumberType="Float" Precision="8" Format="XML">{_numbers(spacing)}</DataItem>\n'
        f'{p} </Geometry>\n'
        f'{p} <Attribute Name="u" AttributeType="Scalar" Center="Cell">\n'
        f'{p}  <DataItem Dimensions="{" ".join(map(str, shape))}" NumberType="Float" Precision="{u.dtype.itemsize}" '
        f'Format="HDF">{href}:/heat/u</DataItem>\n'
        f'{p} </Attribute>\n'
        f'{p}</Grid>\n')


def _nbody_grid(f, href, indent) -> str:
    n = f["nbody/position"].shape[0]
    p = " " * indent
    fields = "".join(
        f'{p} <Attribute Name="{name}" AttributeType="{kind}" Center="Node">\n'
        f'{p}  <DataItem Dimensions="{dims}" NumberType="{num}" Precision="{size}" '
        f'Format="HDF">{href}:/nbody/{name}</DataItem>\n'
        f'{p} </Attribute>\n'
        for name, kind, dims, num in (("velocity", "Vector", f"{n} 3", "Float"), ("mass", "Scalar", f"{n}", "Float"),
                                      ("id", "Scalar", f"{n}", "Int")) if f"nbody/{name}" in f
        for size in [f[f"nbody/{name}"].dtype.itemsize])
    return (
        f'{p}<Grid Name="particles" GridType="Uniform">\n'
        f'{p} <Time Value="{float(f.attrs["time"])!r}"/>\n'
        f'{p} <Topology TopologyType="Polyvertex" NumberOfElements="{n}" NodesPerElement="1"/>\n'
        f'{p} <Geometry GeometryType="XYZ">\n'
        f'{p}  <DataItem Dimensions="{n} 3" NumberType="Float" Precision="{f["nbody/position"].dtype.itemsize}" '
        f'Format="HDF">{href}:/nbody/position</DataItem>\n'
        f'{p} </Geometry>\n{fields}'
        f'{p}</Grid>\n')


def _grid(path, href, indent) -> str:
    with h5py.File(path, "r") as f:
        problem = f.attrs["problem"]
        problem = problem.decode() if isinstance(problem, bytes) else str(problem)
        return (_heat_grid if problem == "heat" else _nbody_grid)(f, href, indent)


def _write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".part")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_sidecar(h5path) -> str:
    """``step_N.xdmf`` beside ``step_N.h5``."""
    xdmf = h5path[:-3] + ".xdmf"
    _write_atomic(xdmf, _HEAD + _grid(h5path, os.path.basename(h5path), 2) + _TAIL)
    return xdmf


def write_time_series(output_dir) -> str:
    """``run.xdmf``: a temporal collection over every checkpoint in the run."""
    grids = []
    for _, path in list_checkpoints(os.path.join(output_dir, "checkpoints")):
        try:
            grids.append(_grid(path, "checkpoints/" + os.path.basename(path), 3))
        except (OSError, KeyError):
            continue                     # pruned or replaced while we looked
    body = '  <Grid Name="run" GridType="Collection" CollectionType="Temporal">\n' + "".join(grids) + "  </Grid>\n"
    path = os.path.join(output_dir, "run.xdmf")
    _write_atomic(path, _HEAD + body + _TAIL)
    return path
