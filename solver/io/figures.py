"""What every picture of a run shares: a figure, its title, and the
diagnostics history.  What a checkpoint's picture shows is the model's.

Uses matplotlib's object API (no pyplot), so it is safe in a helper thread.
matplotlib is an optional extra: ``pip install .[plot]``.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from ..config import open_regular
from .rotation import run_dir_of
from .safefile import write_atomically


def figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install .[plot]") from exc
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")   # labels never overlap
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path) -> str:
    """``fig`` as a PNG at ``path``: rendered in memory, written under a new
    temporary name and renamed, so never through a link at ``path`` and
    never seen half-written."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    write_atomically(path, png.getvalue(), sync=False)
    return path


def run_name(path) -> str:
    """The run directory's name, for titles (``RUN/checkpoints/step_N.h5``)."""
    return os.path.basename(run_dir_of(path))


def read_history(csv_path) -> dict | None:
    """Columns of diagnostics.csv as arrays; rows that do not parse (a line
    cut short when a job was killed) are skipped.  None when there are none."""
    with io.TextIOWrapper(open_regular(csv_path, "diagnostics file"), encoding="utf-8", errors="replace") as fh:
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


def render_history(csv_path, out_dir, panels_of) -> str | None:
    """The diagnostics over time, one panel per entry of ``panels_of(cols)``:
    (title, column names, log scale, y label); it may add derived columns."""
    if not os.path.exists(csv_path):
        return None
    cols = read_history(csv_path)
    if cols is None:
        return None
    order = np.argsort(cols["step"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    panels = panels_of(cols)
    fig = figure(5 * len(panels), 4.2)
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
    os.makedirs(out_dir, exist_ok=True)
    return save_figure(fig, os.path.join(out_dir, "history.png"))
