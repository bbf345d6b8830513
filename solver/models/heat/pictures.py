"""Pictures of a heat run: the 2-D field, or planes through a 3-D one, on
one colour scale for the whole series (its min and max over every frame,
or the user's), so frames of a movie or of ``plot --all`` compare.

Imports h5py and matplotlib only inside its functions."""
from __future__ import annotations

import numpy as np

from ...config import ConfigError
from ...io.figures import Look, colour_scale, figure, run_name
from ...io.series import field_range, unreadable

AXES = "x0 x1 x2".split()


class Grid:
    """Shape, origin (centre of cell 0) and spacing of a frame's field."""

    def __init__(self, path):
        import h5py
        try:
            with h5py.File(path, "r") as f:
                u = f["heat/u"]
                self.shape = tuple(int(n) for n in u.shape)
                self.origin = np.asarray(u.attrs["origin"], dtype=np.float64)
                self.spacing = np.asarray(u.attrs["spacing"], dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise unreadable(path, exc) from None

    def low(self, axis) -> float:
        return float(self.origin[axis] - 0.5 * self.spacing[axis])

    def high(self, axis) -> float:
        return self.low(axis) + self.shape[axis] * float(self.spacing[axis])

    def centre(self, axis, index) -> float:
        return float(self.origin[axis] + index * self.spacing[axis])

    def index(self, axis, coord) -> int:
        """The cell whose plane holds ``coord``; ConfigError outside the domain."""
        lo, hi = self.low(axis), self.high(axis)
        if not lo <= coord <= hi:
            raise ConfigError(f"plot: --slice {AXES[axis]}={coord:g} is outside the domain, which spans "
                              f"{lo:g} to {hi:g} along {AXES[axis]}; give a coordinate inside it")
        return min(self.shape[axis] - 1, int((coord - lo) // self.spacing[axis]))


def planes(grid, slices=()) -> list[tuple[int, int]]:
    """(axis, cell index) of each plane drawn of a 3-D field: the ones asked
    for, else one per axis through the centre of the domain (never a wall)."""
    if slices:
        return [(axis, grid.index(axis, coord)) for axis, coord in slices]
    return [(axis, grid.index(axis, 0.5 * (grid.low(axis) + grid.high(axis)))) for axis in range(3)]


def _read(path, plane):
    """(step, time, the field or its ``plane``) of a frame."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            u = f["heat/u"]
            step, t = int(f.attrs["step"]), float(f.attrs["time"])
            at = Ellipsis if plane is None else tuple(plane[1] if a == plane[0] else slice(None) for a in range(3))
            return step, t, np.asarray(u[at], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise unreadable(path, exc) from None


class View:
    """How every frame of one series is drawn: the planes, the colour map
    and norm, the figure's size."""

    def __init__(self, paths, look=Look(), kind="checkpoints"):
        self.grid = Grid(paths[-1])
        ndim = len(self.grid.shape)
        if look.slices and ndim != 3:
            raise ConfigError(f"plot: --slice is for 3-D fields; this run's field is {ndim}-D")
        self.planes = planes(self.grid, look.slices) if ndim == 3 else [None]
        ranges = [field_range(p) for p in paths]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if look.vmin is not None and look.vmax is None and look.vmin >= hi:
            raise ConfigError(f"plot: --vmin {look.vmin:g} is not below the field's maximum {hi:g}; give --vmax too")
        if look.vmax is not None and look.vmin is None and look.vmax <= lo:
            raise ConfigError(f"plot: --vmax {look.vmax:g} is not above the field's minimum {lo:g}; give --vmin too")
        self.range = (lo, hi)
        self.cmap, self.norm = colour_scale(lo, hi, look.cmap, look.vmin, look.vmax)
        self.dpi = look.dpi

    def _axes_of(self, plane):
        """(row axis, column axis) of a drawn plane."""
        return (0, 1) if plane is None else tuple(a for a in range(3) if a != plane[0])

    def new_figure(self):
        """A figure that fits the panels: each as wide and high as its plane
        (the longer side one panel unit), with room for labels and the colour bar."""
        g = self.grid
        sides = []
        for plane in self.planes:
            a, b = self._axes_of(plane)
            w, h = g.high(b) - g.low(b), g.high(a) - g.low(a)
            sides.append((max(0.25, w / max(w, h)), max(0.25, h / max(w, h))))
        unit = 3.6 if len(self.planes) > 1 else 4.8
        width = unit * sum(w for w, _ in sides) + 0.7 * len(sides) + 1.2
        height = unit * max(h for _, h in sides) + 1.3
        return figure(min(width, 16.0), min(height, 9.0), self.dpi, layout="compressed")

    def draw(self, fig, path, index=None, tail=None) -> str:
        """Draw the frame at ``path`` on ``fig`` (``index`` and ``tail``, a
        movie's, change nothing for a field); returns its file stem."""
        g = self.grid
        axes, image = [], None
        for k, plane in enumerate(self.planes):
            step, t, field = _read(path, plane)
            a, b = self._axes_of(plane)
            ax = fig.add_subplot(1, len(self.planes), k + 1)
            image = ax.imshow(field, origin="lower", extent=(g.low(b), g.high(b), g.low(a), g.high(a)),
                              cmap=self.cmap, norm=self.norm, aspect="equal", interpolation="nearest")
            ax.set_xlabel(f"{AXES[b]} (length units)")
            ax.set_ylabel(f"{AXES[a]} (length units)")
            if plane is not None:
                ax.set_title(f"{AXES[plane[0]]} = {g.centre(*plane):.4g}")
            axes.append(ax)
        fig.colorbar(image, ax=axes, shrink=0.9, label="temperature u")
        fig.suptitle(f"{run_name(path)}: heat {'x'.join(map(str, g.shape))}, step {step}, t = {t:.6g}")
        return f"field_{step:09d}"
