"""Results a command writes into a directory that may hold the user's own
files (``plot --out``, ``bench compute --dir``): a file there is replaced
only if this solver wrote it, as the hidden list beside it records (its
name and the SHA-256 of what was written); a user's file of the same name
is never replaced.  Files are written whole under a temporary name and
renamed (``safefile``), so never through a link.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat

from ..config import ConfigError, open_regular, read_small_text
from .safefile import write_atomically

LIST = ".solver-written"         # {"files": {name: sha256 of the content written}}


def _written(directory) -> dict:
    """What the list in ``directory`` says this solver wrote there; nothing
    when there is no list, or one that is not ours."""
    try:
        record = json.loads(read_small_text(os.path.join(directory, LIST), "list of written files"))
        files = record.get("files", {}) if isinstance(record, dict) else {}
        return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, ValueError, ConfigError):
        return {}


def _digest(path) -> str | None:
    """SHA-256 of a regular file (not a link) at ``path``; None for anything else."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        sha = hashlib.sha256()
        with open_regular(path, "") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        return sha.hexdigest()
    except (OSError, ConfigError):
        return None


def check_replaceable(directory, names, option) -> None:
    """A ConfigError naming the first of ``names`` that stands in ``directory``
    and is not what this solver wrote there (``option`` names the command's
    directory option in the message)."""
    ours = _written(directory)
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and (name not in ours or _digest(path) != ours[name]):
            raise ConfigError(f"{option}: {path} exists and was not written by solver, which never replaces "
                              f"a file it did not write; choose another {option} directory, or move that file "
                              f"away (nothing was written)")


def write_results(directory, files: dict, option) -> list[str]:
    """Write ``files`` ({name: bytes}) into ``directory`` (made if missing)
    and record them in its list; ConfigError, with nothing written, if any
    of them would replace a file this solver did not write, or if the
    directory cannot be made or written to (the user's choice of place)."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"{option}: {directory} exists and is not a directory; choose another {option} directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot create the directory {directory}: {exc.strerror or exc}; "
                          f"choose another {option} directory") from None
    check_replaceable(directory, files, option)
    ours = _written(directory)
    paths = []
    try:
        for name, data in files.items():
            path = os.path.join(directory, name)
            write_atomically(path, data, sync=False)
            ours[name] = hashlib.sha256(data).hexdigest()
            paths.append(path)
        write_atomically(os.path.join(directory, LIST), json.dumps({"files": ours}, indent=1) + "\n", sync=False)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise                            # a full disk or a failing file system: not the user's input
        raise ConfigError(f"{option}: cannot write into {directory}: {exc.strerror}; choose another {option} "
                          f"directory") from None
    return paths
