"""PNG images of a run: the field of a checkpoint and the diagnostics history.

Uses matplotlib's object API (no pyplot), so it is safe in a helper thread.
matplotlib is an optional extra: ``pip install .[plot]``.
"""
from __future__ import annotations

import csv
import os

import h5py
import numpy as np

from .config import ConfigError
from .io.checkpoint import list_checkpoints


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install .[plot]") from exc
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def render_particles(path, out_dir) -> str:
    """An x-y projection of the particles of an n-body checkpoint."""
    os.makedirs(out_dir, exist_ok=True)
    with h5py.File(path, "r") as f:
        step, t = int(f.attrs["step"]), float(f.attrs["time"])
        x = f["nbody/position"][...]
        m = f["nbody/mass"][...]
    fig = _figure(6, 6)
    ax = fig.add_subplot(1, 1, 1)
    size = 4.0 if len(x) > 100 else 40.0
    ax.scatter(x[:, 0], x[:, 1], s=size * m / m.max() if m.max() > 0 else size, c="k", alpha=0.6, linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{len(x)} bodies, step {step}, t = {t:.6g}")
    out = os.path.join(out_dir, f"particles_{step:09d}.png")
    fig.savefig(out)
    return out


def render_checkpoint(path, out_dir) -> str:
    """One PNG of a checkpoint: a 2D heat field, mid-plane slices of a 3D one,
    or the particles' x-y projection."""
    os.makedirs(out_dir, exist_ok=True)
    with h5py.File(path, "r") as f:
        if "nbody" in f:
            return render_particles(path, out_dir)
        step, t = int(f.attrs["step"]), float(f.attrs["time"])
        u = f["heat/u"]
        shape, spacing = u.shape, np.asarray(u.attrs["spacing"])
        if len(shape) == 2:
            slices = [("", u[...], (0, 1))]
        else:
            mid = [n // 2 for n in shape]
            slices = [(f"axis 0 = {mid[0]}", u[mid[0], :, :], (1, 2)),
                      (f"axis 1 = {mid[1]}", u[:, mid[1], :], (0, 2)),
                      (f"axis 2 = {mid[2]}", u[:, :, mid[2]], (0, 1))]
    lo = min(float(s[1].min()) for s in slices)
    hi = max(float(s[1].max()) for s in slices)
    fig = _figure(5.5 * len(slices), 4.8)
    for k, (title, field, (a, b)) in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        extent = (0, shape[b] * spacing[b], 0, shape[a] * spacing[a])
        im = ax.imshow(field, origin="lower", extent=extent, vmin=lo, vmax=hi, cmap="inferno", aspect="equal")
        ax.set_xlabel(f"axis {b}")
        ax.set_ylabel(f"axis {a}")
        ax.set_title(title or "u")
        fig.colorbar(im, ax=ax, shrink=0.85, label="u")
    fig.suptitle(f"heat, step {step}, t = {t:.6g}")
    out = os.path.join(out_dir, f"field_{step:09d}.png")
    fig.savefig(out)
    return out


def read_history(csv_path) -> dict | None:
    """Columns of diagnostics.csv as arrays; rows that do not parse (a line
    cut short when a job was killed) are skipped.  None when there are none."""
    with open(csv_path, encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = []
        for row in reader:
            try:
                if header and len(row) == len(header):
                    rows.append([float(v) for v in row])
            except ValueError:
                continue
    if not header or not rows:
        return None
    return dict(zip(header, np.array(rows).T))


def render_history(csv_path, out_dir) -> str | None:
    """The diagnostics over time: total heat, min/max and the analytic error."""
    if not os.path.exists(csv_path):
        return None
    cols = read_history(csv_path)
    if cols is None:
        return None
    order = np.argsort(cols["step"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    if "energy" in cols:
        panels = [("energy", ["kinetic", "potential", "energy"], False),
                  ("relative energy error", ["energy_error"], True)]
    else:
        panels = [("total heat", ["heat"], False), ("range", ["min", "max"], False)]
    if "err_l2" in cols:
        panels.append(("error vs analytic", ["err_l2", "err_max"], True))
    fig = _figure(5 * len(panels), 4)
    for k, (title, keys, log) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key in keys:
            y = cols[key]
            if log:
                keep = y > 0
                ax.semilogy(cols["time"][keep], y[keep], label=key)
            else:
                ax.plot(cols["time"], y, label=key)
        ax.set_xlabel("time")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    out = os.path.join(out_dir, "history.png")
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out)
    return out


def plot_run(run_dir, step=None, out_dir=None) -> list[str]:
    found = dict(list_checkpoints(os.path.join(run_dir, "checkpoints")))
    if not found:
        raise ConfigError(f"plot: no checkpoints in {run_dir}/checkpoints")
    if step is None:
        step = max(found)
    if step not in found:
        raise ConfigError(f"plot: no checkpoint of step {step} in {run_dir}; have {sorted(found)}")
    out_dir = out_dir or os.path.join(run_dir, "plots")
    try:
        written = [render_checkpoint(found[step], out_dir)]
        history = render_history(os.path.join(run_dir, "diagnostics.csv"), out_dir)
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    return written + ([history] if history else [])
