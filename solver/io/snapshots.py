"""Snapshots: output for looking at and analysing, apart from checkpoints.

A run's snapshots live in ``RUN/snapshots/snap_NNNNNNNNN.h5`` (the step
zero-padded to 9 digits, more past 999,999,999), one file per snapshot,
written collectively through the same block writer as checkpoints: under a
temporary name and renamed into place once whole, so a run killed mid-write
leaves every earlier snapshot readable.  Each holds the chosen fields with
the checkpoints' dataset names (``/heat/u`` with ``origin``, ``spacing``
and ``centering``; ``/nbody/position``, ``velocity``, ``mass``, ``id``,
rows in id order) and root attributes ``format = "solver-snapshot"``,
``step``, ``time``, ``problem`` and a checksum like a checkpoint's.
Snapshots are never pruned.

The reading side (``snapshot_paths``, ``read_snapshot``) needs only h5py
and NumPy: scripts and the plotting code use it.
"""
from __future__ import annotations

import os
import re

import numpy as np

FORMAT = "solver-snapshot"
DIRECTORY = "snapshots"
_NAME = re.compile(r"^snap_(\d{9,})\.h5$")


def snapshot_name(step: int) -> str:
    return f"snap_{step:09d}.h5"


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the complete snapshots in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    return sorted((int(m.group(1)), os.path.join(directory, name))
                  for name in os.listdir(directory) if (m := _NAME.match(name)))


def snapshot_paths(run_dir: str) -> list[str]:
    """The complete snapshot files of the run in ``run_dir``, sorted by step
    (files still being written have other names and are not listed)."""
    return [path for _, path in list_snapshots(os.path.join(run_dir, DIRECTORY))]


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_snapshot(path: str) -> dict:
    """One snapshot as plain Python and NumPy values:

    ``step`` (int), ``time`` (float), ``problem`` ("heat" | "nbody"),
    ``arrays``: {dataset name: array} ("heat/u", "nbody/position", ...; the
    fields the run chose), floating data as float64 whatever the stored
    precision, ids as int64; each array is also under its dataset name at
    the top level (``snap["heat/u"]``); for heat, ``origin`` and ``spacing``
    (coordinates of cell 0's centre and the cell size per array axis, as
    float64 arrays), None otherwise; ``attrs``: every root attribute."""
    import h5py
    arrays, origin, spacing = {}, None, None
    with h5py.File(path, "r") as f:
        attrs = {key: (_text(v) if isinstance(v, (bytes, str)) else v) for key, v in f.attrs.items()}
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(names):
            dset = f[name]
            kind = np.int64 if np.issubdtype(dset.dtype, np.integer) else np.float64
            arrays[name] = np.asarray(dset[...], dtype=kind)
            if name == "heat/u":
                origin = np.asarray(dset.attrs["origin"], dtype=np.float64)
                spacing = np.asarray(dset.attrs["spacing"], dtype=np.float64)
    return {"step": int(attrs["step"]), "time": float(attrs["time"]), "problem": _text(attrs.get("problem", "")),
            "arrays": arrays, "origin": origin, "spacing": spacing, "attrs": attrs, "path": path, **arrays}
