"""Which checkpoints a run directory holds, and which of them may go.

Complete checkpoints are named ``step_NNNNNNNNN.h5``: the step zero-padded
to 9 digits, more for steps past 999,999,999 (a file being written has
another name until it is whole), so listing is a directory scan.
Pruning deletes only older checkpoints of the same run, or ones this
process wrote: never a newer one, nor anybody else's.
"""
from __future__ import annotations

import errno
import os
import re

_NAME = re.compile(r"^step_(\d{9,})\.h5$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}.h5"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := _NAME.match(name))]
    return sorted(found)


def run_dir_of(checkpoint_path: str) -> str:
    """The run directory of ``RUN/checkpoints/step_N.h5``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))


def run_id_of(path):
    """The ``run_id`` attribute of a checkpoint (None when absent or unreadable)."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_id")
    except (OSError, KeyError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def prune(directory, keep, newest_step, mine=(), run_id=None):
    """Delete checkpoints older than ``newest_step`` beyond the ``keep``
    newest, with their sidecars, but only ones this process wrote (``mine``)
    or of the same run (``run_id``)."""
    older = [path for step, path in list_checkpoints(directory) if step < newest_step]
    for old in older[:max(0, len(older) - (keep - 1))]:
        if old not in mine and (run_id is None or run_id_of(old) != run_id):
            continue
        for stale in (old, old[:-3] + ".xdmf"):
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass


def set_aside(path, tag) -> str:
    """Rename ``path`` to ``PATH.TAG`` (``PATH.TAG.2``, ``.3``, ... when that
    is taken) and return the new path: kept, and never over another file."""
    k = 1
    while True:
        target = f"{path}.{tag}" if k == 1 else f"{path}.{tag}.{k}"
        k += 1
        try:
            os.link(path, target, follow_symlinks=False)    # fails where anything stands
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
                raise
            if os.path.lexists(target):                     # no hard links here: look, then rename
                continue
            os.rename(path, target)
            return target
        os.remove(path)
        return target
