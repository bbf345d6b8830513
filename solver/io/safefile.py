"""Files a run creates: only where nothing stood, never through a link.

Every file is written under a temporary name that this process creates
exclusively (``O_EXCL | O_NOFOLLOW``: a link or file planted at that name is
refused, never followed or truncated), and renamed into place once it is
complete.  A rename replaces a link at the final name by the file; it never
writes through it.
"""
from __future__ import annotations

import os
import secrets

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_new(path: str, mode: int = 0o644) -> int:
    """A descriptor of a new file at ``path``; FileExistsError if anything
    (a file, a link, a FIFO) is already there."""
    return os.open(path, _NEW, mode)


def temporary_name(path: str, tag: str = "") -> str:
    """A hidden name beside ``path`` that no other writer will pick:
    ``.NAME.TAG.part`` with a random tag unless one is given."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{tag or secrets.token_hex(4)}.part")


def reserve_temporary(path: str) -> str:
    """Create an empty temporary file beside ``path`` (exclusively) and return
    its name: a library that opens files by name (HDF5) then writes into a
    file this process made, not into whatever stood there."""
    while True:
        tmp = temporary_name(path)
        try:
            os.close(create_new(tmp))
            return tmp
        except FileExistsError:
            continue


def write_atomically(path: str, data: bytes | str, sync: bool = True) -> None:
    """``path`` holds ``data``, complete, or is left as it was: written under
    a new temporary name, flushed to disk with ``sync``, then renamed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = reserve_temporary(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def discard(path: str) -> None:
    """Remove a temporary file this process made, if it is still there."""
    try:
        os.remove(path)
    except OSError:
        pass
