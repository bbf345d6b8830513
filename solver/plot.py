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
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")   # labels never overlap
    FigureCanvasAgg(fig)
    return fig


def _run_name(path) -> str:
    """The run directory's name, for titles (``RUN/checkpoints/step_N.h5``)."""
    from .restart import run_dir_of
    return os.path.basename(run_dir_of(path))


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
    ax.set_xlabel("x (length units)")
    ax.set_ylabel("y (length units)")
    ax.set_title(f"{_run_name(path)}: {len(x)} bodies projected on x-y\nstep {step}, t = {t:.6g}")
    out = os.path.join(out_dir, f"particles_{step:09d}.png")
    fig.savefig(out)
    return out


def _planes_through_extreme(u) -> list[int]:
    """Per axis, the index of the plane through the cell farthest from the
    field's mean (from a subsample of ``u``, an array or an HDF5 dataset, of
    about 64 cells per axis): mid-planes can fall on a mode's nodal planes."""
    stride = [max(1, n // 64) for n in u.shape]
    sample = np.asarray(u[tuple(slice(None, None, k) for k in stride)])
    where = np.unravel_index(np.argmax(np.abs(sample - sample.mean())), sample.shape)
    return [int(i) * k for i, k in zip(where, stride)]


def render_checkpoint(path, out_dir) -> str:
    """One PNG of a checkpoint: a 2D heat field, three slices of a 3D one
    through its extreme, or the particles' x-y projection."""
    os.makedirs(out_dir, exist_ok=True)
    with h5py.File(path, "r") as f:
        if "nbody" in f:
            return render_particles(path, out_dir)
        step, t = int(f.attrs["step"]), float(f.attrs["time"])
        u = f["heat/u"]
        shape, spacing = u.shape, np.asarray(u.attrs["spacing"])
        centre = lambda axis, i: (i + 0.5) * spacing[axis]           # noqa: E731 - cell centre coordinate
        if len(shape) == 2:
            slices = [("temperature u", u[...], (0, 1))]
        else:
            at = _planes_through_extreme(u)
            slices = [(f"plane x{d} = {centre(d, at[d]):.4g} (cell {at[d]})", u[tuple(at[d] if a == d else slice(None)
                                                                                      for a in range(3))], axes)
                      for d, axes in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1)))]
    lo = min(float(s[1].min()) for s in slices)
    hi = max(float(s[1].max()) for s in slices)
    fig = _figure(5.2 * len(slices), 4.6)
    for k, (title, field, (a, b)) in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        extent = (0, shape[b] * spacing[b], 0, shape[a] * spacing[a])
        im = ax.imshow(field, origin="lower", extent=extent, vmin=lo, vmax=hi, cmap="inferno", aspect="equal")
        ax.set_xlabel(f"x{b} (array axis {b}, length units)")
        ax.set_ylabel(f"x{a} (array axis {a})")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.85, label="temperature u")
    fig.suptitle(f"{_run_name(path)}: heat {'x'.join(map(str, shape))}, step {step}, t = {t:.6g}")
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


def render_history(csv_path, out_dir, volume=1.0) -> str | None:
    """The diagnostics over time: total heat (or its change, when that is
    round-off against max|u| x ``volume``), min/max and the analytic error;
    or the energies."""
    if not os.path.exists(csv_path):
        return None
    cols = read_history(csv_path)
    if cols is None:
        return None
    order = np.argsort(cols["step"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    if "energy" in cols:
        panels = [("energy", ["kinetic", "potential", "energy"], False, "energy (simulation units)"),
                  ("relative energy error", ["energy_error"], True, "|E - E0| / |E0|")]
    else:
        heat = cols["heat"]
        scale = max(np.max(np.abs(cols["min"])), np.max(np.abs(cols["max"]))) * volume or 1.0
        if np.ptp(heat) <= 1e-10 * scale:         # conserved: show the round-off as what it is
            cols["heat change"] = (heat - heat[0]) / scale
            panels = [("total heat: conserved (changes are round-off)", ["heat change"], False,
                       "change of total heat / (max|u| x volume)")]
        else:
            panels = [("total heat", ["heat"], False, "total heat (integral of u)")]
        panels.append(("range of the field", ["min", "max"], False, "temperature u"))
    if "err_l2" in cols:
        panels.append(("error against the analytic solution", ["err_l2", "err_max"], True, "error"))
    fig = _figure(5 * len(panels), 4.2)
    for k, (title, keys, log, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key in keys:
            y = cols[key]
            if log:
                keep = y > 0
                ax.semilogy(cols["time"][keep], y[keep], label=key)
            else:
                ax.plot(cols["time"], y, label=key)
        ax.set_xlabel("time t")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
    run = os.path.basename(os.path.dirname(os.path.abspath(csv_path)))
    fig.suptitle(f"{run}: diagnostics, steps {int(cols['step'][0])} to {int(cols['step'][-1])}, "
                 f"t = {cols['time'][0]:.6g} to {cols['time'][-1]:.6g}")
    out = os.path.join(out_dir, "history.png")
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out)
    return out


def _volume(path) -> float:
    """The heat domain's volume (1 for n-body), from a checkpoint."""
    with h5py.File(path, "r") as f:
        if "heat/u" not in f:
            return 1.0
        return float(np.prod(np.asarray(f["heat/u"].attrs["spacing"]) * np.asarray(f["heat/u"].shape)))


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
        history = render_history(os.path.join(run_dir, "diagnostics.csv"), out_dir, _volume(found[step]))
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    return written + ([history] if history else [])
