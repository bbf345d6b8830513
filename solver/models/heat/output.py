"""How heat output is shown: the XDMF grid of a checkpoint, its picture and
the panels of its diagnostics history.  Imported with the package, so it
imports h5py and matplotlib only inside its functions."""
from __future__ import annotations

import os

import numpy as np

from ...io.figures import figure, run_name, save_figure
from ...io.xdmf import hdf_item, numbers

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


def planes_through_extreme(u) -> list[int]:
    """Per axis, the index of the plane through the cell farthest from the
    field's mean (from a subsample of ``u``, an array or an HDF5 dataset, of
    about 64 cells per axis): mid-planes can fall on a mode's nodal planes."""
    stride = [max(1, n // 64) for n in u.shape]
    sample = np.asarray(u[tuple(slice(None, None, k) for k in stride)])
    where = np.unravel_index(np.argmax(np.abs(sample - sample.mean())), sample.shape)
    return [int(i) * k for i, k in zip(where, stride)]


def picture(path, out_dir) -> str:
    """One PNG of a checkpoint: the 2-D field, or three slices of a 3-D one
    through its extreme, on one colour scale."""
    import h5py
    os.makedirs(out_dir, exist_ok=True)
    with h5py.File(path, "r") as f:
        step, t = int(f.attrs["step"]), float(f.attrs["time"])
        u = f["heat/u"]
        shape, spacing = u.shape, np.asarray(u.attrs["spacing"])
        centre = lambda axis, i: (i + 0.5) * spacing[axis]           # noqa: E731 - cell centre coordinate
        if len(shape) == 2:
            slices = [("temperature u", u[...], (0, 1))]
        else:
            at = planes_through_extreme(u)
            slices = [(f"plane x{d} = {centre(d, at[d]):.4g} (cell {at[d]})", u[tuple(at[d] if a == d else slice(None)
                                                                                      for a in range(3))], axes)
                      for d, axes in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1)))]
    lo = min(float(s[1].min()) for s in slices)
    hi = max(float(s[1].max()) for s in slices)
    fig = figure(5.2 * len(slices), 4.6)
    for k, (title, field, (a, b)) in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        extent = (0, shape[b] * spacing[b], 0, shape[a] * spacing[a])
        im = ax.imshow(field, origin="lower", extent=extent, vmin=lo, vmax=hi, cmap="inferno", aspect="equal")
        ax.set_xlabel(f"x{b} (array axis {b}, length units)")
        ax.set_ylabel(f"x{a} (array axis {a})")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.85, label="temperature u")
    fig.suptitle(f"{run_name(path)}: heat {'x'.join(map(str, shape))}, step {step}, t = {t:.6g}")
    return save_figure(fig, os.path.join(out_dir, f"field_{step:09d}.png"))


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
