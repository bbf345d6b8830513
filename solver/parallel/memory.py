"""How much memory this process can still have: the node's MemAvailable, or
less where a cgroup limits it (SLURM's --mem, a container, systemd).

A limit may sit on the process's own cgroup or on any cgroup above it, in
either cgroup version: v2's ``memory.max`` minus ``memory.current``, v1's
memory controller ``memory.limit_in_bytes`` minus ``memory.usage_in_bytes``,
read on every level from the process's cgroup (``/proc/self/cgroup``) up to
the root of its mount (``/proc/self/mountinfo``); the tightest wins.  Page
cache the kernel drops before it kills (``inactive_file`` in ``memory.stat``)
counts as available, as it does in MemAvailable.

Every path is read under ``root``, so that a test can lay out a fake /proc
and /sys.  Imports nothing from MPI.
"""
from __future__ import annotations

import os
import re

UNLIMITED = 1 << 62            # cgroup v1 writes "no limit" as 2^63 - 1 rounded to pages


def available_memory(root: str = "/") -> int | None:
    """Bytes this process can still allocate (the tightest of MemAvailable
    and every cgroup limit above it); None where none of them can be read."""
    found = [n for n in (_mem_available(root), cgroup_available(root)) if n is not None]
    return min(found) if found else None


def cgroup_available(root: str = "/") -> int | None:
    """The tightest cgroup memory limit above this process, less what is in
    use there; None where no limit is set or none can be read."""
    found = []
    for version, path in _own_cgroups(root):
        point, mount_root = _mount_of(root, version)
        for directory in _levels(root, point, mount_root, path):
            left = _left_at(directory, version)
            if left is not None:
                found.append(left)
    return min(found) if found else None


def _under(root, path) -> str:
    return os.path.join(root, path.lstrip("/"))


def _read(path) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path) -> int | None:
    """The integer a cgroup file holds; None for "max", a missing file or anything else."""
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _mem_available(root) -> int | None:
    for line in (_read(_under(root, "proc/meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def _own_cgroups(root) -> list[tuple[int, str]]:
    """(version, path) of this process's cgroups that can hold a memory limit:
    the v2 one (``0::PATH``) and the v1 memory controller's (``N:...memory...:PATH``).
    Without /proc/self/cgroup: the roots of both, as a process sees them in a
    container with its own cgroup namespace."""
    text = _read(_under(root, "proc/self/cgroup"))
    if text is None:
        return [(2, "/"), (1, "/")]
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found.append((2, path))
        elif "memory" in controllers.split(","):
            found.append((1, path))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes spaces, tabs, newlines and backslashes as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_of(root, version) -> tuple[str, str]:
    """(mount point, cgroup path at that mount's root) of the v2 hierarchy or
    the v1 memory controller; the usual places when mountinfo does not say."""
    for line in (_read(_under(root, "proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if (version == 2 and fstype == "cgroup2") or (version == 1 and fstype == "cgroup" and "memory" in options):
            return _unescape(fields[4]), _unescape(fields[3])
    return ("/sys/fs/cgroup" if version == 2 else "/sys/fs/cgroup/memory"), "/"


def _levels(root, point, mount_root, path) -> list[str]:
    """The directories of cgroup ``path`` and of each cgroup above it, up to
    the mount's root, that this mount shows (a path outside the mount's root,
    as another cgroup namespace sees it, shows only the mount's root)."""
    if mount_root != "/":
        inside = path == mount_root or path.startswith(mount_root.rstrip("/") + "/")
        path = path[len(mount_root):] if inside else "/"
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        parts = []
    base = _under(root, point)
    return [os.path.join(base, *parts[:k]) for k in range(len(parts), -1, -1)]


def _left_at(directory, version) -> int | None:
    """What one cgroup's limit leaves: the limit less the usage, plus the
    inactive page cache; None where it sets no limit."""
    if version == 2:
        limit_file, usage_file, cache_key = "memory.max", "memory.current", "inactive_file"
    else:
        limit_file, usage_file, cache_key = "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
    limit = _number(os.path.join(directory, limit_file))
    if limit is None or limit >= UNLIMITED:
        return None
    used = _number(os.path.join(directory, usage_file)) or 0
    cache = 0
    for line in (_read(os.path.join(directory, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == cache_key and value.strip().isdigit():
            cache = min(int(value), used)
    return max(0, limit - used + cache)
