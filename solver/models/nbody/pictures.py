"""Pictures of an n-body run: the bodies projected on x-y, their tracks
through the series, and movie frames with a fading tail.

One view for the whole series: fixed limits that hold every body of every
frame, marker areas that grow with mass between bounds (the lightest body
is still seen), and for many bodies a colour for the local projected
density with some transparency, so a dense core shows its structure
instead of a black blob.  Imports matplotlib only inside its functions."""
from __future__ import annotations

import numpy as np

from ...config import ConfigError
from ...io.figures import Look, figure, marker_sizes, run_name
from ...io.series import read_frame

SHADED = 200             # above this many bodies, colour by density instead of by body
CORE = 80                # percent of the bodies the centre panel holds
TRACKED = 12             # bodies whose tracks are drawn (the first by id), when there are more
MOST_BINS = 64           # density bins across a panel: about sqrt(n)/2, so a bin holds a few bodies
PALETTE = "tab10"


def _read(path):
    """A frame with positions, masses (1 where a snapshot left them out)
    and ids (row numbers where it did)."""
    frame = read_frame(path)
    if "nbody/position" not in frame:
        raise ConfigError(f"plot: {path} holds no positions (output.snapshot_fields leaves them out); "
                          f"plot needs them")
    n = len(frame["nbody/position"])
    frame.setdefault("nbody/mass", np.ones(n))
    frame["nbody/id"] = np.asarray(frame.get("nbody/id", np.arange(n)), dtype=np.int64)
    return frame


def _ids(frame):
    return frame["nbody/id"]


class View:
    """Limits, sizes, colours and tracks of one series of frames."""

    def __init__(self, paths, look=Look(), kind="checkpoints"):
        self.paths, self.kind, self.dpi = list(paths), kind, look.dpi
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        self.times, self.steps, frames = [], [], []
        for path in self.paths:
            f = _read(path)
            xy = f["nbody/position"][:, :2]
            finite = xy[np.all(np.isfinite(xy), axis=1)]
            if len(finite):
                lo, hi = np.minimum(lo, finite.min(axis=0)), np.maximum(hi, finite.max(axis=0))
            self.times.append(f["time"])
            self.steps.append(f["step"])
            frames.append((_ids(f), xy))
        self.n = len(f["nbody/mass"])                          # in the newest frame
        all_ids = np.unique(np.concatenate([ids for ids, _ in frames]))
        self.tracked = all_ids[:self.n if self.n <= 2 * TRACKED else TRACKED]
        # tracks[k, j]: body tracked[j] at frame k (NaN where a frame lacks it)
        self.tracks = np.full((len(frames), len(self.tracked), 2), np.nan)
        for k, (ids, xy) in enumerate(frames):
            where = {int(i): r for r, i in enumerate(ids)}
            for j, body in enumerate(self.tracked):
                if int(body) in where:
                    self.tracks[k, j] = xy[where[int(body)]]
        if not np.all(np.isfinite(lo)):
            lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
        pad = 0.06 * max(float(np.max(hi - lo)), 1e-12)
        self.panels = [("", lo - pad, hi + pad)]
        self.shaded = self.n > SHADED
        self.bins = int(np.clip(round(np.sqrt(self.n) / 2), 8, MOST_BINS))
        if self.shaded:                 # and a second panel: the centre, where most bodies are
            centre = np.median([np.nanmedian(xy, axis=0) for _, xy in frames], axis=0)
            reach = max(float(np.nanpercentile(np.hypot(*(xy - centre).T), CORE)) for _, xy in frames)
            self.panels = [("all bodies", *self.panels[0][1:]),
                           (f"centre ({CORE}% of the bodies)", centre - reach, centre + reach)]
            low = 1.0 / self._bin_area(self.panels[0])
            peak = max(self._density(xy, self.panels[-1]).max(initial=0.0) for _, xy in frames)
            from matplotlib.colors import LogNorm
            self.norm = LogNorm(low, max(2 * low, peak))

    def _bin_area(self, panel):
        return float(np.prod((panel[2] - panel[1]) / self.bins))

    def _density(self, xy, panel):
        """Bodies per unit area of the x-y projection around each body (0
        outside the panel), from a histogram over the panel."""
        _, lo, hi = panel
        cell = np.floor((xy - lo) / (hi - lo) * self.bins).astype(np.int64)
        inside = np.all((cell >= 0) & (cell < self.bins), axis=1)
        counts = np.zeros((self.bins, self.bins))
        np.add.at(counts, (cell[inside, 0], cell[inside, 1]), 1.0)
        density = np.zeros(len(xy))
        density[inside] = counts[cell[inside, 0], cell[inside, 1]]
        return density / self._bin_area(panel)

    def _colours(self, count):
        from matplotlib import colormaps
        palette = colormaps[PALETTE]
        return [palette(j % palette.N) for j in range(count)]

    def new_figure(self, panel=None):
        """A figure for every panel, or for one ``panel`` (title, low, high corners)."""
        if panel is None and self.shaded:
            return figure(11.0, 4.9, self.dpi, layout="compressed")
        _, lo, hi = panel or self.panels[0]
        ratio = min(1.6, max(0.35, float((hi - lo)[1] / (hi - lo)[0])))
        return figure(6.0, 5.6 * ratio + 1.0, self.dpi, layout="compressed")

    def _axes(self, fig, k=0, panel=None):
        title, lo, hi = panel or self.panels[k]
        ax = fig.add_subplot(1, 1 if panel else len(self.panels), k + 1)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_xlabel("x (length units)")
        ax.set_ylabel("y (length units)")
        if title:
            ax.set_title(title)
        return ax

    def _bodies(self, ax, frame, k=0):
        """The bodies of ``frame`` on panel ``k``; the artist that holds their colours."""
        xy, mass, ids = frame["nbody/position"][:, :2], frame["nbody/mass"], _ids(frame)
        sizes = marker_sizes(mass)
        if self.shaded:
            density = self._density(xy, self.panels[k])
            order = np.argsort(density)                       # dense bodies drawn last, on top
            return ax.scatter(xy[order, 0], xy[order, 1], s=sizes[order], c=np.maximum(density[order], self.norm.vmin),
                              cmap="viridis", norm=self.norm, alpha=0.75, linewidths=0)
        return ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=self._colours(len(ids)), edgecolors="k",
                          linewidths=0.5, zorder=3)

    def _tail(self, ax, upto, length):
        """Each tracked body's last ``length`` positions, fading into the past."""
        from matplotlib.collections import LineCollection
        start = max(0, upto - length)
        colours = self._colours(len(self.tracked))
        for j in range(len(self.tracked)):
            points = self.tracks[start:upto + 1, j]
            if len(points) < 2:
                continue
            segments = np.stack([points[:-1], points[1:]], axis=1)
            keep = np.all(np.isfinite(segments), axis=(1, 2))
            fade = np.linspace(0.05, 1.0, len(segments))
            rgba = np.array([(*colours[j][:3], a) for a in fade])
            ax.add_collection(LineCollection(segments[keep], colors=rgba[keep], linewidths=1.4, zorder=2))

    def draw(self, fig, path, index=None, tail=None) -> str:
        """Draw the frame at ``path`` (the series' frame ``index``, with the
        last ``tail`` frames of each tracked body behind it); returns its stem."""
        frame = _read(path)
        axes = []
        for k in range(len(self.panels)):
            ax = self._axes(fig, k)
            if index is not None and tail:
                self._tail(ax, index, tail)
            dots = self._bodies(ax, frame, k)
            axes.append(ax)
        if self.shaded:
            fig.colorbar(dots, ax=axes, shrink=0.85, label="projected density (bodies per unit area)")
        n, step = len(frame["nbody/mass"]), frame["step"]
        fig.suptitle(f"{run_name(path)}: {n} bodies projected on x-y, step {step}, t = {frame['time']:.6g}")
        return f"particles_{step:09d}"

    def track_panel(self):
        """The region every tracked body passes through, padded."""
        seen = self.tracks[np.all(np.isfinite(self.tracks), axis=2)]
        if not len(seen):
            return self.panels[0]
        lo, hi = seen.min(axis=0), seen.max(axis=0)
        pad = 0.06 * max(float(np.max(hi - lo)), 1e-12)
        return "", lo - pad, hi + pad

    def draw_tracks(self, fig=None):
        """Every tracked body's path through the series, from an open
        circle at its first frame to a filled one at its last; returns
        (file stem, figure)."""
        panel = self.track_panel()
        fig = fig or self.new_figure(panel)
        ax = self._axes(fig, panel=panel)
        colours = self._colours(len(self.tracked))
        widths = np.linspace(3.0, 1.0, len(self.tracked)) if len(self.tracked) > 1 else [1.5]   # shared paths show
        for j, body in enumerate(self.tracked):
            xy = self.tracks[:, j]
            seen = np.all(np.isfinite(xy), axis=1)
            if not seen.any():
                continue
            ax.plot(xy[seen, 0], xy[seen, 1], color=colours[j], linewidth=widths[j], label=f"body {body}")
            first, last = xy[seen][0], xy[seen][-1]
            ax.scatter([first[0]], [first[1]], s=30, facecolors="none", edgecolors=[colours[j]], zorder=3)
            ax.scatter([last[0]], [last[1]], s=30, color=[colours[j]], edgecolors="k", linewidths=0.5, zorder=3)
        if len(self.tracked) <= 10:
            ax.legend(loc="best", fontsize="small", framealpha=0.8)
        which = f"{len(self.tracked)} bodies" if len(self.tracked) == self.n else \
            f"the first {len(self.tracked)} of {self.n} bodies"
        fig.suptitle(f"{run_name(self.paths[-1])}: tracks of {which} from {len(self.paths)} {self.kind}, "
                     f"t = {self.times[0]:.6g} to {self.times[-1]:.6g}")
        return "tracks", fig
