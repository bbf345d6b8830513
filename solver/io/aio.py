"""Rank 0's asyncio helpers: I/O that is naturally asynchronous and must not
block steps, on an event loop in a helper thread.

- after each checkpoint: rewrite the run's XDMF time series (the model's
  ``grid``), render a PNG snapshot (``snapshot(path, out_dir)``, the model's
  picture, when given), both off the event loop in worker threads;
- watch the output directory for request files ``STOP`` and ``CHECKPOINT``,
  each taken once whatever its file type (``take_request``);
- an optional JSON status endpoint on http://127.0.0.1:PORT/ (``output.status_port``).
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import stat
import sys
import threading

from .xdmf import write_time_series

REQUEST_FILES = {"STOP": "stop", "CHECKPOINT": "checkpoint"}


class AsyncHelper:
    def __init__(self, output_dir, triggers, grid, status_port=0, snapshot=None, poll_seconds=0.5):
        self.output_dir, self.triggers, self.grid = output_dir, triggers, grid
        self.snapshot, self.poll_seconds = snapshot, poll_seconds
        self.status = {"state": "starting"}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="solver-aio", daemon=True)
        self._thread.start()
        self._futures = []
        self._series_lock = None
        self._server = None
        self._clients = 0
        self._watch = self._call(self._watch_requests())
        if status_port:
            started = self._call(self._start_server(status_port))
            try:
                started.result(timeout=10)
            except OSError as exc:
                self._futures.remove(started)
                self.close()
                from ..config import ConfigError
                raise ConfigError(f"output.status_port: port {status_port} on 127.0.0.1 cannot be used "
                                  f"({exc.strerror or exc}); choose another port, or 0 for off") from None

    def _call(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._futures.append(future)
        return future

    # --- after a checkpoint -------------------------------------------------------
    def checkpoint_written(self, path):
        """Thread-safe: called from the writer thread once ``path`` is in place."""
        self.status = {**self.status, "last_checkpoint": path}
        self._call(self._after_checkpoint(path))

    async def _after_checkpoint(self, path):
        if self._series_lock is None:
            self._series_lock = asyncio.Lock()
        async with self._series_lock:
            await asyncio.to_thread(write_time_series, self.output_dir, self.grid)
        if self.snapshot is not None:
            try:
                await asyncio.to_thread(self.snapshot, path, os.path.join(self.output_dir, "snapshots"))
            except ImportError as exc:
                sys.stderr.write(f"solver: warning: snapshots need matplotlib ({exc}); pip install .[plot]\n")
                self.snapshot = None

    # --- request files --------------------------------------------------------------
    async def _watch_requests(self):
        refused = set()          # requests that could not be removed: taken once, not again
        while True:
            for name, what in REQUEST_FILES.items():
                how = take_request(os.path.join(self.output_dir, name), refused)
                if how is None:
                    continue
                if what == "stop":
                    self.triggers.request_stop(f"request file {name}: {how}")
                else:
                    self.triggers.request_checkpoint(f"request file {name}: {how}")
            await asyncio.sleep(self.poll_seconds)

    # --- status endpoint ------------------------------------------------------------
    async def _start_server(self, port):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    MAX_CLIENTS = 8          # connections served at once; more are closed at once
    READ_SECONDS = 1.0       # how long a client may take to send its request

    async def _serve(self, reader, writer):
        if self._clients >= self.MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self.READ_SECONDS)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            body = json.dumps(self.status).encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await asyncio.wait_for(writer.drain(), timeout=self.READ_SECONDS)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            self._clients -= 1
            writer.close()

    # --- shutdown ---------------------------------------------------------------------
    def close(self, timeout=60):
        """Finish pending work (time series, snapshots), then stop the loop."""
        for future in list(self._futures):
            if future is self._watch:
                continue
            try:
                future.result(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - report, do not lose the run over a PNG
                sys.stderr.write(f"solver: warning: background output task failed: {exc}\n")
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _shutdown(self):
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


_KINDS = {stat.S_IFREG: "a file", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def take_request(path, refused=None) -> str | None:
    """Take the request at ``path`` once, whatever it is, without opening it
    or following it: a file, a link (never its target), a FIFO or an empty
    directory is removed; a directory with contents is renamed aside.  Returns
    how it was taken, for the one line that says so, or None when nothing (new)
    is there.  One that cannot be removed is remembered in ``refused`` and
    taken only once."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if refused is not None and identity in refused:
        return None
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
    try:
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(path)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                aside = f"{path}.taken-{secrets.token_hex(3)}"
                os.rename(path, aside)
                return f"{kind} with contents, moved aside to {os.path.basename(aside)}"
        else:
            os.unlink(path)
    except FileNotFoundError:
        return None                          # taken by someone else meanwhile
    except OSError as exc:
        if refused is not None:
            refused.add(identity)
        return f"{kind} that cannot be removed ({exc.strerror}): remove it, or the next start takes it again"
    if kind == "a file":
        return "removed"
    return f"{kind}, removed" + ("; its target is untouched" if kind == "a symbolic link" else "")
