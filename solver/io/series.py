"""The frames of a run that pictures and movies are drawn from: its
snapshots (``RUN/snapshots/snap_N.h5``) when it has any, else its
checkpoints.  Both hold the same datasets, so one reader serves both.

A frame reads as a dict: ``step``, ``time``, ``problem``, every dataset
by name (``heat/u``, ``nbody/position``...) as float64, and for heat the
grid's ``heat/origin`` and ``heat/spacing``."""
from __future__ import annotations

import os
import re

import numpy as np

from ..config import ConfigError
from .rotation import list_checkpoints

_SNAPSHOT = re.compile(r"^snap_(\d{9,})\.h5$")


def snapshot_paths(run_dir) -> list[str]:
    """The run's snapshot files, by step (the snapshot writer's reader when
    there is one; a directory scan otherwise)."""
    try:
        from .snapshots import snapshot_paths as listed
    except ImportError:
        directory = os.path.join(run_dir, "snapshots")
        if not os.path.isdir(directory):
            return []
        found = sorted((int(m.group(1)), name) for name in os.listdir(directory) if (m := _SNAPSHOT.match(name)))
        return [os.path.join(directory, name) for _, name in found]
    return list(listed(run_dir))


def _step_of(path) -> int:
    return int(re.search(r"(\d+)\.h5$", os.path.basename(path)).group(1))


def frames(run_dir) -> tuple[str, list[tuple[int, str]]]:
    """("snapshots" | "checkpoints", [(step, path)...] oldest first)."""
    snaps = snapshot_paths(run_dir)
    if snaps:
        return "snapshots", [(_step_of(p), p) for p in snaps]
    return "checkpoints", list_checkpoints(os.path.join(run_dir, "checkpoints"))


def _plain(value):
    return value.decode() if isinstance(value, bytes) else value.item() if isinstance(value, np.generic) else value


def read_frame(path, names=None) -> dict:
    """One snapshot or checkpoint as a dict (see the module's docstring);
    ``names``: only these datasets.  A file that is not one of ours is a
    ConfigError naming it."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            frame = {"step": int(f.attrs["step"]), "time": float(f.attrs["time"]),
                     "problem": str(_plain(f.attrs["problem"])), "path": path}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and (names is None or name in names):
                    frame[name] = np.asarray(obj[...], dtype=np.float64)
            f.visititems(visit)
            if "heat/u" in f:
                frame["heat/origin"] = np.asarray(f["heat/u"].attrs["origin"], dtype=np.float64)
                frame["heat/spacing"] = np.asarray(f["heat/u"].attrs["spacing"], dtype=np.float64)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"plot: {path} cannot be read as a snapshot or checkpoint: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return frame


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
        raise ConfigError(f"plot: {path} cannot be read as a snapshot or checkpoint: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return lo, hi
