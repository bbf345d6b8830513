"""The frames of a run that pictures and movies are drawn from: its
snapshots (``RUN/snapshots/snap_N.h5``) and its checkpoints.  Both hold
the same datasets, so one reader serves both.

A frame reads as ``snapshots.read_snapshot`` gives it: ``step``, ``time``,
``problem`` and every dataset by name (``heat/u``, ``nbody/position``...)."""
from __future__ import annotations

import os

import numpy as np

from ..config import ConfigError
from .rotation import list_checkpoints
from .snapshots import DIRECTORY, list_snapshots, read_snapshot


def frames(run_dir) -> tuple[str, list[tuple[int, str]]]:
    """(what they are, [(step, path)...] oldest first): the run's snapshots
    and its checkpoints, the snapshot where both have a step (the newest
    state of a run is often a checkpoint off the snapshot cadence)."""
    snaps = dict(list_snapshots(os.path.join(run_dir, DIRECTORY)))
    checkpoints = {s: p for s, p in list_checkpoints(os.path.join(run_dir, "checkpoints")) if s not in snaps}
    kind = " and ".join(k for k, have in (("snapshots", snaps), ("checkpoints", checkpoints)) if have)
    return kind, sorted({**checkpoints, **snaps}.items())


def unreadable(path, exc) -> ConfigError:
    """The error for a frame that cannot be read (bad input: the user's file)."""
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"plot: {path} cannot be read as a snapshot or checkpoint: {why}")


def problem_of(path) -> str:
    """The ``problem`` attribute of a snapshot or checkpoint."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs["problem"]
    except (OSError, KeyError) as exc:
        raise unreadable(path, exc) from None
    return value.decode() if isinstance(value, bytes) else str(value)


def read_frame(path) -> dict:
    """One snapshot or checkpoint (``snapshots.read_snapshot``: the same
    dataset names in both); a file that is not one is a ConfigError naming it."""
    try:
        return read_snapshot(path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise unreadable(path, exc) from None


def field_range(path, name="heat/u", rows=1 << 22) -> tuple[float, float]:
    """The min and max of one dataset of a frame, read in slabs of about
    ``rows`` elements (a large 3-D field is never held whole)."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            d = f[name]
            step = max(1, rows // max(1, int(np.prod(d.shape[1:]))))
            lo, hi = np.inf, -np.inf
            for start in range(0, d.shape[0], step):
                block = np.asarray(d[start:start + step], dtype=np.float64)
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    except (OSError, KeyError, ValueError) as exc:
        raise unreadable(path, exc) from None
    return lo, hi
