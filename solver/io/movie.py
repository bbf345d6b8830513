"""A movie of a series of frames: every frame drawn on one figure, encoded
by ffmpeg when it is on PATH, else (GIF only) by Pillow.  Rendered into a
private temporary directory and returned as bytes, so the caller writes it
under its final name only when it is complete (``io.owned``)."""
from __future__ import annotations

import os
import tempfile

from ..config import ConfigError
from .figures import finish

MOVIE_TYPES = (".mp4", ".gif")
MOST_FRAMES = 400            # a longer series is sampled evenly (a GIF holds every frame in memory)


def encoder(path) -> str:
    """"ffmpeg" or "pillow" for a movie at ``path``; ConfigError when none fits."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in MOVIE_TYPES:
        raise ConfigError(f"plot: --movie {path}: the name must end in .mp4 or .gif")
    try:
        from matplotlib import animation
    except ImportError:
        raise ConfigError("plot: movies need matplotlib: pip install .[plot]") from None
    if animation.writers.is_available("ffmpeg"):
        return "ffmpeg"
    if ext == ".gif":
        return "pillow"
    raise ConfigError(f"plot: --movie {path}: an .mp4 needs ffmpeg on PATH, which is not there; "
                      f"install ffmpeg, or write a .gif (Pillow)")


def sample(count, most=MOST_FRAMES) -> list[int]:
    """Indices of the frames a movie shows: all of them, or ``most`` evenly
    spread ones, the first and last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(k * (count - 1) / (most - 1)) for k in range(most)})


def render_movie(fig, draw, indices, path, fps=None) -> bytes:
    """The movie (type from ``path``'s name) of ``draw(k)`` for k in
    ``indices``, each drawn on ``fig`` after clearing it."""
    from matplotlib import animation
    how = encoder(path)
    fps = fps or max(4, min(30, round(len(indices) / 8)))
    width, height = (2 * round(v * fig.dpi / 2) / fig.dpi for v in fig.get_size_inches())
    fig.set_size_inches(width, height)               # whole, even pixel counts: what H.264 needs
    if how == "ffmpeg":
        writer = animation.FFMpegWriter(fps=fps)       # H.264 in yuv420p, or a GIF with its own palette
    else:
        writer = animation.PillowWriter(fps=fps)
    with tempfile.TemporaryDirectory(prefix="solver-movie-") as scratch:
        out = os.path.join(scratch, "movie" + os.path.splitext(path)[1].lower())
        with writer.saving(fig, out, dpi=fig.dpi):
            for k in indices:
                fig.clear()
                draw(k)
                finish(fig)
                writer.grab_frame()
        with open(out, "rb") as fh:
            return fh.read()
