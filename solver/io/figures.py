"""What every picture of a run shares: a figure, its title, and the
diagnostics history.  What a checkpoint's picture shows is the model's.

Uses matplotlib's object API (no pyplot), so it is safe in a helper thread.
matplotlib is an optional extra: ``pip install .[plot]``.
"""
from __future__ import annotations

import csv
import io
import os
import re

from dataclasses import dataclass

import numpy as np

from ..config import open_regular
from .rotation import run_dir_of
from .safefile import write_atomically


FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class Look:
    """What the user chose about how a run is drawn (``solver plot`` options):
    a colour map, a colour range, the planes of a 3-D field as (axis,
    coordinate) pairs; None or empty: the defaults."""
    cmap: str | None = None
    vmin: float | None = None
    vmax: float | None = None
    slices: tuple = ()
    dpi: int = 100

SEQUENTIAL, DIVERGING = "inferno", "RdBu_r"


def figure(width, height, dpi=100, layout="constrained"):
    """A figure laid out so that labels never overlap ("compressed": also
    without gaps between panels of a fixed aspect ratio)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install .[plot]") from exc
    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _overflow(text, box):
    """How far ``text`` (drawn) reaches past ``box`` along its own direction,
    and the length it may have there (pixels)."""
    ext = text.get_window_extent()
    vertical = abs(text.get_rotation() % 180 - 90) < 1
    lo, hi, a, b = (box.y0, box.y1, ext.y0, ext.y1) if vertical else (box.x0, box.x1, ext.x0, ext.x1)
    if a >= lo - 0.5 and b <= hi + 0.5:
        return None
    align = text.get_verticalalignment() if vertical else text.get_horizontalalignment()
    centre = 0.5 * (a + b)
    room = {"left": hi - a, "bottom": hi - a, "right": b - lo, "top": b - lo}.get(
        align, 2 * min(centre - lo, hi - centre))
    return max(room, 1.0), b - a


def _fit_text(fig) -> bool:
    """Wrap every title and label that reaches past the canvas (a long run
    name), or a panel's title wider than its panel; whether any changed.
    The figure must have been drawn."""
    from matplotlib.text import Text
    ticks = {id(label) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for t in axis.get_major_ticks() + axis.get_minor_ticks() for label in (t.label1, t.label2)}
    from matplotlib.transforms import Bbox
    above = {id(ax.title): ax for ax in fig.axes}       # a panel's title stays over its panel
    changed = False
    for text in fig.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text().strip():
            continue
        box = fig.bbox
        if id(text) in above:
            panel = above[id(text)].get_window_extent()
            box = Bbox.from_extents(max(box.x0, panel.x0 - 6), box.y0, min(box.x1, panel.x1 + 6), box.y1)
        over = _overflow(text, box)
        if over is None:
            continue
        room, length = over
        lines = text.get_text().split("\n")
        width = max(8, int(max(map(len, lines)) * room / length * 0.92))
        text.set_text("\n".join(piece for line in lines for piece in wrap(line, width)))
        changed = True
    return changed


def wrap(line, width) -> list[str]:
    """``line`` in pieces of at most ``width`` characters, broken after a
    space, ``_``, ``-``, ``/`` or ``:`` where it can be (run names have no spaces)."""
    pieces, current = [], ""
    for token in re.split(r"(?<=[\s_/:-])", line):
        if current and len(current) + len(token.rstrip()) > width:
            pieces.append(current)
            current = ""
        while len(token) > width:                       # a token longer than a line: cut it
            pieces.append(token[:width])
            token = token[width:]
        current += token
    pieces.append(current)
    return [p.rstrip() for p in pieces if p.strip()]


def shown_ticklabels(axis, minor=False) -> list:
    """The tick labels ``axis`` draws: in its view and visible (matplotlib
    keeps labels of ticks outside the view, which are not drawn)."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * (hi - lo)
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    return [t.label1 for t in ticks if lo - slack <= t.get_loc() <= hi + slack
            and t.label1.get_visible() and t.label1.get_text()]


def crowded(labels, pad=2.0) -> bool:
    """Whether any two of the tick labels ``labels`` (drawn) touch."""
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: (b.x0, b.y0))
    return any(a.x1 + pad > b.x0 and a.y1 + pad > b.y0 and b.x1 + pad > a.x0 and b.y1 + pad > a.y0
               for a, b in zip(boxes, boxes[1:]))


def _spread_ticks(fig) -> bool:
    """Fewer ticks on any axis (colour bars included) whose tick labels
    touch each other; whether any changed.  The figure must have been drawn."""
    from matplotlib.ticker import MaxNLocator
    changed = False
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = shown_ticklabels(axis)
            if axis.get_scale() == "linear" and crowded(labels):
                fewer = len(labels) // 2 if len(labels) > 4 else len(labels) - 1
                axis.set_major_locator(MaxNLocator(nbins=max(1, fewer), steps=[1, 2, 2.5, 5, 10], min_n_ticks=1))
                changed = True
    return changed


def finish(fig, rounds=6) -> None:
    """What every figure gets before it is saved: no tick labels on top of
    each other, no text cut off at the edges (laid out again after each change)."""
    for _ in range(rounds):
        fig.canvas.draw()
        if not (_spread_ticks(fig) | _fit_text(fig)):
            return


def image_bytes(fig, fmt="png", dpi=None) -> bytes:
    """The finished figure, rendered in memory."""
    finish(fig)
    data = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None} if fmt in ("pdf", "svg") else None
    fig.savefig(data, format=fmt, dpi=dpi or fig.dpi, metadata=metadata)
    return data.getvalue()


def save_figure(fig, path, fmt="png", dpi=None) -> str:
    """``fig`` at ``path``: rendered in memory, written under a new
    temporary name and renamed, so never through a link at ``path`` and
    never seen half-written."""
    write_atomically(path, image_bytes(fig, fmt, dpi), sync=False)
    return path


def colour_scale(lo, hi, cmap=None, vmin=None, vmax=None):
    """(colour map, norm) for values in [lo, hi] (a whole series): a
    diverging map centred on 0 for a field that changes sign, a sequential
    one otherwise; ``vmin``/``vmax`` (the user's) override the range."""
    from matplotlib.colors import Normalize, TwoSlopeNorm
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    scale = max(abs(lo), abs(hi))
    signed = lo < -1e-9 * scale and hi > 1e-9 * scale
    if not signed:
        if hi <= lo:                                  # a uniform field: any small range around it
            lo, hi = lo - (0.5 * abs(lo) or 0.5), hi + (0.5 * abs(hi) or 0.5)
        return cmap or SEQUENTIAL, Normalize(lo, hi)
    if vmin is None and vmax is None:
        return cmap or DIVERGING, Normalize(-scale, scale)
    return cmap or DIVERGING, TwoSlopeNorm(0.0, lo, hi)


def marker_sizes(mass, smallest=None, largest=None):
    """Marker areas (points^2) that grow with mass, on a log scale between
    bounds: every body visible whatever its mass, none hiding the rest."""
    mass = np.asarray(mass, dtype=np.float64)
    n = len(mass)
    smallest = smallest if smallest is not None else (16.0 if n <= 20 else 6.0 if n <= 200 else 1.5)
    largest = largest if largest is not None else (140.0 if n <= 20 else 40.0 if n <= 200 else 10.0)
    positive = mass[mass > 0]
    if len(positive) == 0 or positive.max() <= positive.min() * (1 + 1e-12):
        return np.full(n, np.sqrt(smallest * largest))
    lo, hi = positive.min(), positive.max()
    frac = np.log(np.clip(mass, lo, None) / lo) / np.log(hi / lo)
    return smallest + (largest - smallest) * frac


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


def history_figure(csv_path, panels_of, dpi=100):
    """The diagnostics over time, one panel per entry of ``panels_of(cols)``:
    (title, column names, log scale, y label); it may add derived columns.
    None when the run has no history."""
    if not os.path.exists(csv_path):
        return None
    cols = read_history(csv_path)
    if cols is None:
        return None
    order = np.argsort(cols["step"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    panels = panels_of(cols)
    fig = figure(5 * len(panels), 4.2, dpi)
    for k, (title, keys, log, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key in keys:
            y = cols[key]
            if log:
                keep = y > 0
                ax.semilogy(cols["time"][keep], y[keep], label=key)
            else:
                ax.plot(cols["time"], y, label=key)
        ax.set_xlabel("time t (simulation units)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
    run = os.path.basename(os.path.dirname(os.path.abspath(csv_path)))
    fig.suptitle(f"{run}: diagnostics, steps {int(cols['step'][0])} to {int(cols['step'][-1])}, "
                 f"t = {cols['time'][0]:.6g} to {cols['time'][-1]:.6g}")
    return fig
