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

import math
import os
import re
import stat
import sys

import numpy as np

FORMAT = "solver-snapshot"
DIRECTORY = "snapshots"
_NAME = re.compile(r"^snap_(\d{9,})\.h5$")


def snapshot_name(step: int) -> str:
    return f"snap_{step:09d}.h5"


def _named(directory: str) -> list[tuple[int, str]]:
    """(step, path) of everything in ``directory`` with a snapshot's name, oldest first."""
    if not os.path.isdir(directory):
        return []
    return sorted((int(m.group(1)), os.path.join(directory, name))
                  for name in os.listdir(directory) if (m := _NAME.match(name)))


def _regular(path) -> bool:
    """A regular file, not a link: never a FIFO, which opening would block on."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the complete snapshots in ``directory``, oldest first
    (regular files only: a link or a FIFO there is not a snapshot we wrote)."""
    return [(step, path) for step, path in _named(directory) if _regular(path)]


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


# --- the writing side (collective unless said otherwise) -------------------------
def _same(stored, run_id) -> bool:
    """Whether a file's stored run_id is this run's (a planted file may hold any type there)."""
    return stored is None if run_id is None else (isinstance(stored, str) and stored == run_id)


def _on_grid(time, every) -> bool:
    """Whether ``time`` is a whole multiple of ``every`` (to well within a step)."""
    k = round(time / every)
    return abs(time - k * every) <= 1e-9 * max(abs(time), every)


class SnapshotSeries:
    """A run's snapshot series: when the next snapshot falls, what it holds,
    and the run's temporal XDMF (``xdmf.SnapshotCollection``) kept up to
    date as files land.  ``fields``: the model's SNAPSHOT_FIELDS."""

    def __init__(self, output, output_dir, fields, lineage, collection):
        self.every, self.every_dt = output.snapshot_every, output.snapshot_dt
        self.wanted = {fields[name] for name in output.snapshot_fields}
        self.precision = np.dtype(output.snapshot_precision)
        self.bodies = None if output.snapshot_bodies == "all" else int(output.snapshot_bodies)
        self.names = tuple(output.snapshot_fields)
        self.directory = os.path.join(output_dir, DIRECTORY)
        self.lineage = dict(lineage or {})
        self.collection = collection
        self.overflow = None         # (dataset, |value|) that the chosen precision cannot hold, on this rank
        self.writing = output.snapshots_on       # False: only the run's earlier series is kept in run.xdmf
        self.listed = False          # rank 0, after begin(): whether run.xdmf lists snapshots

    # --- cadence ------------------------------------------------------------------
    def due(self, step, time) -> bool:
        """Whether ``step`` (at simulated ``time``) is on the cadence."""
        if self.every:
            return step % self.every == 0
        return _on_grid(time, self.every_dt)

    def next_step(self, step, time, dt) -> int:
        """The first snapshot step after ``step``: the next multiple of
        snapshot_every, or the step that lands on the next multiple of
        snapshot_dt (the model's dt divides it; if a restart changed dt so
        that it does not, the first step past it)."""
        if self.every:
            return (step // self.every + 1) * self.every
        k = math.floor(time / self.every_dt)
        if _on_grid(time, self.every_dt):
            k = round(time / self.every_dt)
        steps = ((k + 1) * self.every_dt - time) / dt
        whole = round(steps)
        return step + max(1, whole if abs(steps - whole) <= 1e-6 else math.ceil(steps))

    # --- start of a run ---------------------------------------------------------------
    def begin(self, comm, step, time, branch) -> bool:
        """Make the snapshot directory and keep in it only this run's history
        up to ``step``: this run's snapshots after ``step`` are removed (a
        continued run recomputes that stretch, as it cuts diagnostics.csv
        back; ``--discard-newer`` has moved them aside already), any other run's (one that died before its first checkpoint in
        this directory) is moved aside as ``.abandoned``, never deleted.  Then
        read the snapshots kept into the run's XDMF, and say whether a
        snapshot of the start is due: step 0, a branch's first step, or a step
        on the cadence whose snapshot is missing (collective).  A run that
        writes none keeps its earlier series up to ``step`` in run.xdmf
        (``listed``, on rank 0) and never makes the directory."""
        from ..parallel.mpi import root_decides
        return root_decides(comm, self._begin_on_root, step, time, branch)

    def _begin_on_root(self, step, time, branch):
        from ..config import ConfigError
        try:
            return self._begin(step, time, branch)
        except OSError as exc:
            raise ConfigError(f"output: cannot prepare the snapshots in {self.directory}: "
                              f"{exc.strerror or exc}; check the directory's permissions") from None

    def _begin(self, step, time, branch):
        from ..parallel.mpi import emit
        from .rotation import run_id_of, set_aside
        if not self.writing and not os.path.isdir(self.directory):
            return False
        os.makedirs(self.directory, exist_ok=True)
        run_id = self.lineage.get("run_id")
        for later, path in _named(self.directory):
            if not (_regular(path) and _same(run_id_of(path), run_id)):     # never opened unless a plain file
                moved = set_aside(path, "abandoned")
                emit(sys.stderr, f"solver: warning: {path}: not this run's snapshot; moved aside to "
                                 f"{os.path.basename(moved)}\n")
            elif later > step:
                os.remove(path)
        kept = [path for _, path in list_snapshots(self.directory)]
        self.collection.begin(kept)
        self.listed = bool(kept)
        if not self.writing or os.path.lexists(os.path.join(self.directory, snapshot_name(step))):
            return False
        # a branch's first step starts its series; its later runs (run() again) keep to the cadence
        return step == 0 or (bool(branch) and not kept) or self.due(step, time)

    # --- one snapshot -------------------------------------------------------------------
    def attrs(self, model) -> dict:
        """Root attributes: the model's (collective), this run's lineage, the format."""
        attrs = {**model.checkpoint_attrs(), **self.lineage}
        attrs.update(format=FORMAT, fields=",".join(self.names), precision=self.precision.name)
        return attrs

    def datasets(self, model) -> list:
        """The chosen fields of the model's state, in the chosen precision,
        cut to the first ``snapshot_bodies`` bodies by id (a rank whose bodies
        all lie past them writes an empty block)."""
        from .blocks import Dataset
        chosen = []
        for ds in model.checkpoint_datasets():
            if ds.name not in self.wanted:
                continue
            shape, where, block, memory = tuple(ds.shape), ds.where, ds.block, ds.memory
            local = ds.local
            if self.bodies is not None and ds.name.startswith("nbody/") and self.bodies < shape[0]:
                start, stop = where[0].start, where[0].stop
                lo, hi = min(start, self.bodies), min(stop, self.bodies)
                shape, where = (self.bodies,) + shape[1:], (slice(lo, hi),) + tuple(where[1:])
                local, memory = block[:hi - lo], None
            if np.issubdtype(local.dtype, np.floating) and local.dtype != self.precision:
                source = local if memory is None else local[memory]
                with np.errstate(over="ignore"):
                    local = source.astype(self.precision)
                memory = None
                lost = np.isinf(local) & np.isfinite(source)
                if lost.any() and self.overflow is None:
                    self.overflow = (ds.name, float(np.abs(source[lost]).max()))
            chosen.append(Dataset(ds.name, shape, local, where, dict(ds.attrs), memory))
        return chosen

    def chosen(self, model, comm) -> list:
        """``datasets(model)``, once every rank has agreed that the chosen
        precision holds them (collective): a finite value that float32
        cannot hold would be a silent inf in the file, so it is an error
        (ConfigError, on every rank) naming the dataset and the remedy."""
        from ..config import ConfigError
        self.overflow = None
        chosen = self.datasets(model)
        found = [x for x in comm.allgather(self.overflow) if x is not None]
        if found:
            name, largest = found[0]
            raise ConfigError(f"output.snapshot_precision: {self.precision.name} cannot hold {name} at step "
                              f"{model.step_count} (|value| up to {max(v for _, v in found):.6g}, beyond "
                              f"{float(np.finfo(self.precision).max):.6g}); use snapshot_precision = \"float64\"")
        return chosen

    def written(self, path):
        """Rank 0, once ``path`` is in place: list it in the run's XDMF."""
        self.collection.add(path)
