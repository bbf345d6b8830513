"""How n-body output is shown: the XDMF grid of a checkpoint (points), its
picture and the panels of its diagnostics history.  Imported with the package, so it
imports h5py and matplotlib only inside its functions."""
from __future__ import annotations

import os

from ...io.figures import figure, run_name, save_figure
from ...io.xdmf import hdf_item

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


def picture(path, out_dir) -> str:
    """An x-y projection of the particles, sized by mass."""
    import h5py
    os.makedirs(out_dir, exist_ok=True)
    with h5py.File(path, "r") as f:
        step, t = int(f.attrs["step"]), float(f.attrs["time"])
        x = f["nbody/position"][...]
        m = f["nbody/mass"][...]
    fig = figure(6, 6)
    ax = fig.add_subplot(1, 1, 1)
    size = 4.0 if len(x) > 100 else 40.0
    ax.scatter(x[:, 0], x[:, 1], s=size * m / m.max() if m.max() > 0 else size, c="k", alpha=0.6, linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlabel("x (length units)")
    ax.set_ylabel("y (length units)")
    ax.set_title(f"{run_name(path)}: {len(x)} bodies projected on x-y\nstep {step}, t = {t:.6g}")
    return save_figure(fig, os.path.join(out_dir, f"particles_{step:09d}.png"))


def history_panels(cols, path) -> list:
    """The energies, and the relative energy error."""
    return [("energy", ["kinetic", "potential", "energy"], False, "energy (simulation units)"),
            ("relative energy error", ["energy_error"], True, "|E - E0| / |E0|")]
