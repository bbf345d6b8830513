"""How n-body output is shown: the XDMF grid of a checkpoint (points), its
picture and the panels of its diagnostics history.  Imported with the package, so it
imports h5py and matplotlib only inside its functions."""
from __future__ import annotations

import os

from ...io.figures import Look, save_figure
from ...io.xdmf import hdf_item
from .pictures import View

# what output.snapshot_fields may name: field -> its dataset in checkpoints and snapshots
SNAPSHOT_FIELDS = {"positions": "nbody/position", "velocities": "nbody/velocity", "masses": "nbody/mass",
                   "ids": "nbody/id"}


def xdmf_grid(f, href, indent) -> str:
    x = f["nbody/position"]
    n = x.shape[0]
    p = " " * indent
    fields = "".join(
        f'{p} <Attribute Name="{name}" AttributeType="{kind}" Center="Node">\n'
        + hdf_item(f[f"nbody/{name}"], href, indent + 2, number) +
        f'{p} </Attribute>\n'
        for name, kind, number in (("velocity", "Vector", "Float"), ("mass", "Scalar", "Float"),
                                   ("id", "Scalar", "Int")) if f"nbody/{name}" in f)
    return (
        f'{p}<Grid Name="particles" GridType="Uniform">\n'
        f'{p} <Time Value="{float(f.attrs["time"])!r}"/>\n'
        f'{p} <Topology TopologyType="Polyvertex" NumberOfElements="{n}" NodesPerElement="1"/>\n'
        f'{p} <Geometry GeometryType="XYZ">\n'
        + hdf_item(x, href, indent + 2) +
        f'{p} </Geometry>\n{fields}'
        f'{p}</Grid>\n')


def picture(path, out_dir, look=Look(), fmt="png") -> str:
    """One image of a checkpoint or snapshot: the bodies projected on x-y
    (drawn by ``pictures``)."""
    view = View([path], look)
    fig = view.new_figure()
    stem = view.draw(fig, path)
    os.makedirs(out_dir, exist_ok=True)
    return save_figure(fig, os.path.join(out_dir, f"{stem}.{fmt}"), fmt)


def history_panels(cols, path) -> list:
    """The energies, and the relative energy error."""
    return [("energy", ["kinetic", "potential", "energy"], False, "energy (simulation units)"),
            ("relative energy error", ["energy_error"], True, "|E - E0| / |E0|")]
