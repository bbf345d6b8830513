"""How heat output is shown: the XDMF grid of a checkpoint, its picture
(drawn by ``pictures``) and the panels of its diagnostics history.  Imported with the package, so it
imports h5py and matplotlib only inside its functions."""
from __future__ import annotations

import os

import numpy as np

from ...io.figures import Look, save_figure
from ...io.xdmf import hdf_item, numbers
from .pictures import View

# what output.snapshot_fields may name: field -> its dataset in checkpoints and snapshots
SNAPSHOT_FIELDS = {"u": "heat/u"}


def xdmf_grid(f, href, indent) -> str:
    """Cell-centred data on a mesh of shape + 1 nodes, the first node at 0.
    XDMF lists dimensions, origin and spacing slowest axis first, which is
    our array-axis order."""
    u = f["heat/u"]
    shape, ndim, spacing = u.shape, len(u.shape), u.attrs["spacing"]
    topo, geo = ("2DCoRectMesh", "ORIGIN_DXDY") if ndim == 2 else ("3DCoRectMesh", "ORIGIN_DXDYDZ")
    origin = [float(o) - 0.5 * float(h) for o, h in zip(u.attrs["origin"], spacing)]
    p = " " * indent
    return (
        f'{p}<Grid Name="heat" GridType="Uniform">\n'
        f'{p} <Time Value="{float(f.attrs["time"])!r}"/>\n'
        f'{p} <Topology TopologyType="{topo}" Dimensions="{" ".join(str(n + 1) for n in shape)}"/>\n'
        f'{p} <Geometry GeometryType="{geo}">\n'
        f'{p}  <DataItem Dimensions="{ndim}" NumberType="Float" Precision="8" Format="XML">{numbers(origin)}</DataItem>\n'
        f'{p}  <DataItem Dimensions="{ndim}" NumberType="Float" Precision="8" Format="XML">{numbers(spacing)}</DataItem>\n'
        f'{p} </Geometry>\n'
        f'{p} <Attribute Name="u" AttributeType="Scalar" Center="Cell">\n'
        + hdf_item(u, href, indent + 2) +
        f'{p} </Attribute>\n'
        f'{p}</Grid>\n')


def picture(path, out_dir, look=Look(), fmt="png") -> str:
    """One image of a checkpoint or snapshot on its own colour scale (a
    series shares one: ``pictures.View``): the 2-D field, or three planes
    through the centre of a 3-D one."""
    view = View([path], look)
    fig = view.new_figure()
    stem = view.draw(fig, path)
    os.makedirs(out_dir, exist_ok=True)
    return save_figure(fig, os.path.join(out_dir, f"{stem}.{fmt}"), fmt)


def _volume(path) -> float:
    """The domain's volume, from a checkpoint."""
    import h5py
    with h5py.File(path, "r") as f:
        u = f["heat/u"]
        return float(np.prod(np.asarray(u.attrs["spacing"]) * np.asarray(u.shape)))


def history_panels(cols, path) -> list:
    """Total heat (or its change, when that is round-off against max|u| x
    volume), the field's range, the analytic error, and the heat balance
    (what the change of total heat differs from the heat the sources and
    walls added: round-off)."""
    heat = cols["heat"]
    scale = max(np.max(np.abs(cols["min"])), np.max(np.abs(cols["max"]))) * _volume(path) or 1.0
    if np.ptp(heat) <= 1e-10 * scale:         # conserved: show the round-off as what it is
        cols["heat change"] = (heat - heat[0]) / scale
        panels = [("total heat: conserved (changes are round-off)", ["heat change"], False,
                   "change of total heat / (max|u| x volume)")]
    else:
        panels = [("total heat", ["heat"], False, "total heat (integral of u)")]
    panels.append(("range of the field", ["min", "max"], False, "temperature u"))
    if "err_l2" in cols:
        panels.append(("error against the analytic solution", ["err_l2", "err_max"], True, "error"))
    if "balance" in cols:
        panels.append(("heat balance (round-off)", ["balance"], False, "change of total heat - heat added"))
    return panels
