"""``python -m solver plot RUN_DIR``: pictures of a run and movies of its
series.

The series is the run's snapshots and checkpoints (``io.series``).  Every picture of
one run shares one colour range (its min and max over the series, or the
user's --vmin/--vmax) and, for bodies, one view.  Images are rendered in
memory and written into the output directory (default RUN_DIR/plots) by
``io.owned``: a file there is replaced only if this command wrote it,
never a user's file, and never written through a link."""
from __future__ import annotations

import math
import os

from .config import ConfigError
from .io.figures import FORMATS, Look, history_figure, image_bytes
from .io.inputs import check_file
from .io.owned import check_replaceable, write_results
from .io.series import frames, problem_of
from .models import get

AXIS_NAMES = {"x0": 0, "x1": 1, "x2": 2, "0": 0, "1": 1, "2": 2}
MOST_DPI = 1200
MIN_TRACK_FRAMES = 3          # two frames make a straight line, not a track


def _parse_slice(text) -> tuple[int, float]:
    axis, sep, coord = text.partition("=")
    value = None
    if sep:
        try:
            value = float(coord)
        except ValueError:
            pass
    if axis.strip().lower() not in AXIS_NAMES or value is None or not math.isfinite(value):
        raise ConfigError(f"plot: --slice {text!r} is not AXIS=COORD; give e.g. --slice x2=0.5 "
                          f"(axis x0, x1 or x2, a coordinate in length units)")
    return AXIS_NAMES[axis.strip().lower()], value


def look_of(args) -> Look:
    """The drawing options of ``plot``, checked; ConfigError on the first bad one."""
    for name in ("vmin", "vmax"):
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"plot: --{name} {value} is not a finite number")
    if args.vmin is not None and args.vmax is not None and not args.vmin < args.vmax:
        raise ConfigError(f"plot: --vmin {args.vmin:g} must be below --vmax {args.vmax:g}")
    if args.dpi is not None and not 10 <= args.dpi <= MOST_DPI:
        raise ConfigError(f"plot: --dpi {args.dpi} is out of range; give 10 to {MOST_DPI}")
    if args.cmap is not None:
        try:
            from matplotlib import colormaps
        except ImportError:
            raise ConfigError("plot: plotting needs matplotlib: pip install .[plot]") from None
        if args.cmap not in colormaps:
            import difflib
            near = difflib.get_close_matches(args.cmap, list(colormaps), n=1)
            raise ConfigError(f"plot: --cmap {args.cmap!r} is not a matplotlib colour map"
                              + (f"; did you mean {near[0]!r}?" if near else " (e.g. viridis, inferno, RdBu_r)"))
    return Look(cmap=args.cmap, vmin=args.vmin, vmax=args.vmax, dpi=args.dpi or 100,
                slices=tuple(_parse_slice(s) for s in args.slice or ()))


def _series(run_dir):
    """(what the frames are, [(step, path)...], model package) of the run."""
    if not os.path.isdir(run_dir):
        raise ConfigError(f"plot: {run_dir} is not a directory (give a run's output directory)")
    kind, series = frames(run_dir)
    if not series:
        raise ConfigError(f"plot: no snapshots or checkpoints in {run_dir} (give a run's output directory)")
    for step, path in series[-1:]:                    # a checkpoint is checked as a restart would check it
        if os.path.dirname(path).endswith("checkpoints"):
            check_file(path, "plot")
    return kind, series, get(problem_of(series[-1][1]))


def _chosen(run_dir, series, step, every) -> list[str]:
    if every and step is not None:
        raise ConfigError("plot: give --step or --all, not both")
    if every:
        return [path for _, path in series]
    if step is None:
        return [series[-1][1]]
    found = dict(series)
    if step not in found:
        have = sorted(found)
        shown = ", ".join(map(str, have if len(have) <= 12 else have[:5] + ["..."] + have[-5:]))
        raise ConfigError(f"plot: no snapshot or checkpoint of step {step} in {run_dir}; have {shown}")
    return [found[step]]


def plot_run(run_dir, step=None, out_dir=None, every=False, fmt="png", look=Look()) -> list[str]:
    """Images of the run: the chosen frames (the newest, ``step``, or
    ``every`` one), the bodies' tracks when there is a series, and the
    diagnostics history; returns the paths written."""
    if fmt not in FORMATS:
        raise ConfigError(f"plot: --format {fmt!r} is not one of {', '.join(FORMATS)}")
    kind, series, spec = _series(run_dir)
    chosen = _chosen(run_dir, series, step, every)
    paths = [path for _, path in series]
    try:
        view = spec.View(paths, look, kind)
        files = {}
        for path in chosen:
            fig = view.new_figure()
            stem = view.draw(fig, path)
            files[f"{stem}.{fmt}"] = image_bytes(fig, fmt, look.dpi)
        if hasattr(view, "draw_tracks") and len(paths) >= MIN_TRACK_FRAMES:
            stem, fig = view.draw_tracks()
            files[f"{stem}.{fmt}"] = image_bytes(fig, fmt, look.dpi)
        history = history_figure(os.path.join(run_dir, "diagnostics.csv"),
                                 lambda cols: spec.history_panels(cols, paths[-1]), look.dpi)
        if history is not None:
            files[f"history.{fmt}"] = image_bytes(history, fmt, look.dpi)
    except ImportError as exc:
        raise ConfigError(f"plot: {exc}") from None
    return write_results(out_dir or os.path.join(run_dir, "plots"), files, "plot --out")


def movie_run(run_dir, movie, look=Look()) -> list[str]:
    """A movie of the run's series at ``movie`` (.mp4 or .gif)."""
    from .io.movie import encoder, render_movie, sample
    encoder(movie)                                   # a name or an encoder that cannot work: said first
    directory, name = os.path.split(os.path.abspath(movie))
    if os.path.isdir(directory):
        check_replaceable(directory, [name], "--movie")
    kind, series, spec = _series(run_dir)
    if len(series) < 2:
        raise ConfigError(f"plot: --movie needs a series, and {run_dir} has one frame "
                          f"(write snapshots: output.snapshot_every or output.snapshot_dt)")
    paths = [path for _, path in series]
    indices = sample(len(paths))
    tail = max(3, min(60, len(indices) // 4)) * max(1, len(paths) // len(indices))   # in frames of the series
    try:
        view = spec.View(paths, look, kind)
        fig = view.new_figure()
        data = render_movie(fig, lambda k: view.draw(fig, paths[k], index=k, tail=tail), indices, movie)
    except ImportError as exc:
        raise ConfigError(f"plot: {exc}") from None
    return write_results(directory, {name: data}, "--movie")
