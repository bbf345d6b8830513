"""Where a run lives and where it restarts from.

A run directory holds one run's history (its lineage): ``checkpoints/``,
``diagnostics.csv``, XDMF files and a marker file ``.solver-run`` that names
the run and is locked while a job writes there.  A fresh run gets a new
directory, created exclusively.  A restart continues in the checkpoint's own
run directory only from that run's newest checkpoint; a restart from an older
checkpoint (a branch), or into a directory other than its own, needs a new
``--output`` directory.  ``--restart latest`` takes the newest complete
checkpoint of the output directory; ``--restart PATH`` a checkpoint file or a
run directory.  A checkpoint whose data do not match their checksums counts
as damaged: ``latest`` passes over it (moved aside once the run starts), a
named one is an error.  ``--discard-newer`` continues the run from an older
checkpoint, moving the newer ones (and the run's newer snapshots) aside.  The checkpoint must describe the
same problem as the config (shape, physics and start); anything else is one
clear error before anything is allocated or written, and files are moved
aside only once the run is sure to start (``OutputDir.commit``).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import socket
import sys
import uuid

from .config import ConfigError, parse_override
from .io.checkpoint import now_utc
from .io.inputs import ChecksumMismatch, NewerFormat, check_file, inspect, require, verify
from .io.rotation import list_checkpoints, run_dir_of, set_aside
from .models import get, load_settings
from .parallel.mpi import emit, root_decides

MARKER = ".solver-run"
SUBDIRS = ("checkpoints", "snapshots", "plots")       # where a run writes inside its directory


def _candidates(directory: str, what: str) -> list[str]:
    """The complete checkpoints of a run directory, newest first."""
    ckpt_dir = os.path.join(directory, "checkpoints")
    found = list_checkpoints(ckpt_dir) or list_checkpoints(directory)
    if not found:
        hint = ""
        if os.path.isdir(directory) and _never_written(directory):
            hint = (f"; the run there stopped before its first checkpoint was complete: start it again "
                    f"without --restart (--output {directory})")
        raise ConfigError(f"{what}: no complete checkpoint (checkpoints/step_*.h5) in {directory}{hint}")
    return [path for _, path in reversed(found)]


def restart_candidates(spec: str, output_dir: str | None) -> tuple[list[str], bool]:
    """(checkpoints ``--restart spec`` may start from, the one to try first
    first; whether a file was named): a named file alone, or a run's
    checkpoints newest first."""
    if spec == "latest":
        if not output_dir:
            raise ConfigError("--restart latest: name the run with --output DIR (or [output] dir in the config)")
        if not os.path.isdir(output_dir):
            raise ConfigError(f"--restart latest: output directory {output_dir} does not exist")
        return _candidates(output_dir, "--restart latest"), False
    if os.path.isdir(spec):
        return _candidates(spec, f"--restart {spec}"), False
    return [spec], True


def first_sound(candidates, comm, named: bool):
    """(info, damaged) of the first candidate whose metadata and checksums
    are sound, and [(path, why)] of the newer ones that are not (collective).
    A named file that is not sound is an error; so is a run none of whose
    checkpoints is (that of its newest)."""
    damaged, first_error = [], None
    for path in candidates:
        try:
            info = inspect(path, comm)
            verify(info, comm)
            return info, damaged
        except NewerFormat:
            raise
        except ChecksumMismatch as exc:
            if named:
                raise ConfigError(f"{exc}; --restart latest passes over a damaged checkpoint, and "
                                  f"--restart EARLIER_FILE --discard-newer continues from an earlier one") from None
            first_error = first_error or exc
            damaged.append((path, "its data do not match their checksums"))
        except ConfigError as exc:
            if named:
                raise
            first_error = first_error or exc
            damaged.append((path, "it cannot be read"))
    raise first_error


def settings_from_checkpoint(info, overrides):
    """The run's own config, stored in the checkpoint, with --set overrides."""
    name = os.path.basename(run_dir_of(info.path))
    text, source = str(info.attrs["config"]), f"config stored in {info.path}"
    try:
        load_settings(text, source, [], name)
    except ConfigError as exc:
        raise ConfigError(f"--restart: the config stored in {info.path} is not valid ({exc})") from None
    return load_settings(text, source, overrides, name)     # an error now is the user's --set (or --backend)


def check_compatible(settings, info):
    """The checkpoint must hold the config's problem, with the same physics
    and the datasets that problem's checkpoints hold."""
    problem = info.attrs["problem"]
    if problem != settings.kind:
        raise ConfigError(f"--restart: {info.path} holds a {problem!r} run but problem.kind is {settings.kind!r}")
    try:
        stored = load_settings(str(info.attrs["config"]), "stored config")
    except ConfigError as exc:
        raise ConfigError(f"--restart: the config stored in {info.path} is not valid ({exc})") from None
    spec = get(problem)
    mine, theirs = settings.model, getattr(stored, problem)
    for key in spec.PHYSICS:
        a, b = getattr(mine, key), getattr(theirs, key)
        if a != b:
            raise ConfigError(f"--restart: {problem}.{key} is {_show(a)} in the config but {_show(b)} in {info.path}; "
                              f"a restart cannot change it")
    require(info, spec.datasets(settings), "--restart")


def _show(v):
    return list(v) if isinstance(v, tuple) else repr(v)


class OutputDir:
    """A run directory this process writes into: claimed exclusively (a new
    one) or continued (the run's own), its marker locked for as long as the
    process lives.  ``release()`` undoes a claim that was never used: it
    removes only what the claim created.  ``commit()`` moves files aside
    that the run replaces, once it is sure to start."""

    def __init__(self, path, run_id, parent=None):
        self.path, self.run_id, self.parent = path, run_id, parent
        self._created = []           # what the claim made, in order (removed if the run never starts)
        self._aside = []             # (path, tag, why): moved aside by commit()
        self._lock = None

    # --- rank 0 only ---------------------------------------------------------
    def create(self):
        """A new run: the directory must not exist or be empty; made exclusively."""
        try:
            self._create()
        except BaseException:
            self.release()
            raise

    def _create(self):
        path = self.path
        try:
            self._make_parents(os.path.dirname(os.path.abspath(path)))
            try:
                os.mkdir(path)
                self._created.append(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise ConfigError(f"--output: {path} exists and is not a directory") from None
                if not _never_written(path):
                    raise ConfigError(f"--output: {path} already exists and is not empty (another run's "
                                      f"directory?); continue that run with --restart latest --output {path}, "
                                      f"or choose a new output directory (nothing was changed)") from None
                # what a run that died before its first checkpoint left: its place is
                # taken if no job holds it; its diagnostics are moved aside, not lost
                if os.path.isfile(os.path.join(path, "diagnostics.csv")):
                    self._aside.append((os.path.join(path, "diagnostics.csv"), "abandoned",
                                        "rows of a run that stopped before its first checkpoint"))
                if os.path.lexists(os.path.join(path, "run.xdmf")):     # the new run writes its own
                    self._aside.append((os.path.join(path, "run.xdmf"), "abandoned",
                                        "not this run's (a run that stopped before its first checkpoint?)"))
            self._claim_marker(exclusive=not os.path.lexists(os.path.join(path, MARKER)))
        except OSError as exc:
            raise ConfigError(f"--output: cannot create the run directory {path}: {exc.strerror or exc}") from None

    def _make_parents(self, directory):
        """Create the missing directories above the run's, remembering each."""
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for d in reversed(missing):
            os.mkdir(d)
            self._created.append(d)

    def resume(self):
        """The run's own directory: lock its marker (made if an older solver left none)."""
        try:
            self._claim_marker(exclusive=False, rewrite=False)
        except OSError as exc:
            raise ConfigError(f"--restart: cannot write to the run directory {self.path}: "
                              f"{exc.strerror or exc}") from None

    def _claim_marker(self, exclusive, rewrite=True):
        """Open (``exclusive``: create) the marker, lock it at once through the
        same descriptor, then write the run's id into it (``rewrite``, or when
        it was empty).  The advisory lock is released by the OS when this
        process ends, however it ends; file systems without locks skip it.
        A link at the marker's name is never followed, and a link where the
        run keeps its files is refused (never written through)."""
        import fcntl
        for name in SUBDIRS:
            inner = os.path.join(self.path, name)
            if os.path.islink(inner):
                raise ConfigError(f"--output: {inner} is a symbolic link; the run writes only into directories "
                                  f"of its own: replace the link with a directory, or choose another output "
                                  f"directory (nothing was changed)")
            if os.path.lexists(inner) and not os.path.isdir(inner):
                raise ConfigError(f"--output: {inner} exists and is not a directory; the run keeps its files "
                                  f"there: move it away, or choose another output directory (nothing was changed)")
        marker = os.path.join(self.path, MARKER)
        fd = os.open(marker, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                     | (os.O_EXCL if exclusive else 0), 0o644)
        if exclusive:
            self._created.append(marker)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"--output: {self.path} is in use by another running job; wait for it to end, "
                              f"or choose a new output directory") from None
        except OSError:
            pass                     # no locking here: the exclusive create still guards new runs
        self._lock = fd
        if rewrite or os.fstat(fd).st_size == 0:
            text = json.dumps({"run_id": self.run_id, "parent": self.parent, "created": now_utc(),
                               "host": socket.gethostname()}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)

    def set_aside_later(self, path, tag, why):
        """Have ``commit()`` move ``path`` (and its XDMF sidecar) aside."""
        self._aside.append((path, tag, why))

    def commit(self):
        """The run starts: move aside what it replaces (renamed ``PATH.TAG``,
        numbered if taken; never deleted), one line each."""
        try:
            for path, tag, why in self._aside:
                moved = set_aside(path, tag)
                sidecar = path[:-3] + ".xdmf"
                if path.endswith(".h5") and os.path.lexists(sidecar):
                    set_aside(sidecar, tag)
                emit(sys.stderr, f"solver: warning: {path}: {why}; moved aside to {os.path.basename(moved)}\n")
        except OSError as exc:
            raise ConfigError(f"--restart: cannot move {exc.filename} aside in {self.path}: "
                              f"{exc.strerror or exc}") from None
        self._aside = []

    def unlock(self):
        """Let another job (or a later Simulation in this process) claim the
        directory before this process ends."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def release(self):
        """Undo a claim that was not used (bad input found after it)."""
        for path in reversed(self._created):
            try:
                (os.rmdir if os.path.isdir(path) and not os.path.islink(path) else os.remove)(path)
            except OSError:
                pass
        self._created, self._aside = [], []


_TEMPORARY = re.compile(r"^\..+\.part$")


def _never_written(path) -> bool:
    """Empty, or holding only what a run that died before its first complete
    checkpoint left: its marker, diagnostics.csv, its snapshots and run.xdmf
    (the next run there moves them aside), and a checkpoints/ directory that
    is empty or holds only temporary files."""
    found = {name for name in os.listdir(path) if not _TEMPORARY.match(name)}
    if found - {MARKER, "checkpoints", "diagnostics.csv", "snapshots", "run.xdmf"}:
        return False
    ckpt = os.path.join(path, "checkpoints")
    if "checkpoints" not in found:
        return True
    return os.path.isdir(ckpt) and all(_TEMPORARY.match(name) for name in os.listdir(ckpt))


def _default_dir(settings) -> str:
    """runs/NAME-YYYYmmdd-HHMMSS, with -2, -3, ... when that name is taken."""
    base = os.path.join("runs", f"{settings.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    candidate, k = base, 1
    while os.path.exists(candidate):
        k += 1
        candidate = f"{base}-{k}"
    return candidate


def _claim_new(settings, requested, parent=None) -> OutputDir:
    if requested or settings.output.dir:
        out = OutputDir(requested or settings.output.dir, uuid.uuid4().hex, parent)
        out.create()
        return out
    for _ in range(100):                 # a default name another run took a moment ago: the next one
        out = OutputDir(_default_dir(settings), uuid.uuid4().hex, parent)
        try:
            out.create()
            return out
        except ConfigError:
            if not os.path.exists(out.path):
                raise
    raise ConfigError("--output: no free default run directory under runs/; name one with --output")


def _claim_continued(directory, info, damaged=(), discard_newer=False) -> OutputDir:
    """Continue the run in ``directory`` from ``info``, which must be its
    newest sound checkpoint, or (``discard_newer``) any of its checkpoints.
    Newer ones that are damaged (``damaged``: [(path, why)], or unreadable)
    or discarded are moved aside when the run starts (renamed, never deleted)."""
    step = int(info.attrs["step"])
    known = {os.path.abspath(p): why for p, why in damaged}      # however the run's path was written
    newer = [os.path.abspath(p) for s, p in list_checkpoints(os.path.join(directory, "checkpoints")) if s > step]
    why = {p: known.get(p) or (None if _readable(p) else "it cannot be read") for p in newer}
    sound = [p for p in newer if why[p] is None]
    if sound and not discard_newer:
        raise ConfigError(f"--restart: {info.path} (step {step}) is older than the newest checkpoint of its run "
                          f"({os.path.basename(sound[-1])}); continuing there would mix two histories. Branch into "
                          f"a new directory with --output NEW_DIR, continue the run with --restart latest, or "
                          f"continue from this checkpoint with --discard-newer (newer checkpoints are moved aside)")
    run_id = info.attrs.get("run_id") or _marker_run_id(directory) or uuid.uuid4().hex
    out = OutputDir(directory, run_id)
    out.resume()
    for path in newer:
        if why[path] is None:
            out.set_aside_later(path, "discarded", f"newer than step {step} (--discard-newer)")
        else:
            out.set_aside_later(path, "damaged", f"{why[path]} (damaged); continuing from step {step}")
    if discard_newer:
        for path in _own_snapshots_after(directory, step, run_id):
            out.set_aside_later(path, "discarded", f"a snapshot newer than step {step} (--discard-newer)")
    return out


def _own_snapshots_after(directory, step, run_id) -> list[str]:
    """The run's own snapshot files after ``step`` (regular files whose
    run_id is the run's; any other is moved aside when the run starts)."""
    from .io.rotation import run_id_of
    from .io.snapshots import DIRECTORY, list_snapshots
    return [path for s, path in list_snapshots(os.path.join(directory, DIRECTORY))
            if s > step and run_id_of(path) == run_id]


def _readable(path) -> bool:
    try:
        check_file(path, "")
        return True
    except ConfigError:
        return False


def _marker_run_id(directory):
    try:
        with open(os.path.join(directory, MARKER)) as fh:
            return json.load(fh).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _claim(settings, requested, restart_info=None, source_dir=None, damaged=(), discard_newer=False):
    """Rank 0: the OutputDir of a fresh run, a continued run or a branch."""
    if restart_info is None:
        return _claim_new(settings, requested)
    directory = requested or source_dir
    if source_dir and os.path.isdir(directory) and os.path.samefile(directory, source_dir):
        return _claim_continued(source_dir, restart_info, damaged, discard_newer)
    if discard_newer:
        raise ConfigError(f"--discard-newer: it applies to a run continued in its own directory"
                          f"{' ' + source_dir if source_dir else ''}, not to a branch into {directory}")
    if os.path.isdir(directory) and os.path.isdir(os.path.join(directory, "checkpoints")):
        raise ConfigError(f"--output: {directory} holds another run; a restart from {restart_info.path} continues "
                          f"in its own run directory{' ' + source_dir if source_dir else ''} or branches into a "
                          f"new one (nothing was changed)")
    return _claim_new(settings, directory, parent=os.path.abspath(restart_info.path))


def claim_output_dir(comm, settings, requested, restart_info=None, source_dir=None, damaged=(),
                     discard_newer=False) -> OutputDir:
    """The run directory, claimed by rank 0 (collective; ConfigError on every rank)."""
    claimed = [None]

    def on_root():
        claimed[0] = _claim(settings, requested, restart_info, source_dir, damaged, discard_newer)
        return claimed[0].path, claimed[0].run_id, claimed[0].parent
    path, run_id, parent = root_decides(comm, on_root)
    return claimed[0] or OutputDir(path, run_id, parent)


def _set_output_dir(overrides):
    """The last ``--set output.dir=...``, if any."""
    found = [value for section, key, value in map(parse_override, overrides) if (section, key) == ("output", "dir")]
    return found[-1] if found else None


def plan(args, comm, load_config, overrides):
    """(settings, output_dir, checkpoint info or None) for ``run`` arguments.

    ``load_config()`` returns settings from the config file or the built-in
    default; on a restart without a config file, the checkpoint's own config
    is used, with ``overrides`` (``--set``) applied."""
    discard_newer = getattr(args, "discard_newer", False)
    if not args.restart:
        if discard_newer:
            raise ConfigError("--discard-newer: it goes with --restart FILE (the checkpoint to continue from)")
        settings = load_config()
        return settings, claim_output_dir(comm, settings, args.output), None
    settings = load_config() if args.config else None
    set_dir = _set_output_dir(overrides)
    named = args.config or set_dir is not None
    hint_dir = args.output or (settings.output.dir if settings else None) or set_dir
    candidates, named_file = root_decides(comm, restart_candidates, args.restart, hint_dir)
    info, damaged = first_sound(candidates, comm, named_file)
    path = info.path
    if settings is None:
        settings = settings_from_checkpoint(info, overrides)
    settings = get(settings.kind).for_restart(settings, info)
    check_compatible(settings, info)
    in_run = os.path.basename(os.path.dirname(os.path.abspath(path))) == "checkpoints"
    source_dir = run_dir_of(path) if in_run else None
    requested = args.output or (settings.output.dir if named else "")
    if not requested and not source_dir:
        raise ConfigError(f"--restart: {path} is not inside a run directory (RUN/checkpoints/); "
                          f"name the directory to write into with --output DIR")
    return settings, claim_output_dir(comm, settings, requested, info, source_dir, damaged, discard_newer), info
