"""The embedded default: one real Redis per instance folder, shared by processes, persistent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis

JOIN = (
    "import sys, redis; from flask_klaviyo.embedded import embedded_redis_url as e; "
    "u = e(sys.argv[1]); c = redis.Redis.from_url(u); print(u); print(c.get('k').decode()); "
    "c.set('from-child', '1')"
)


def server_pid(url: str) -> int:
    return int(redis.Redis.from_url(url).info("server")["process_id"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] != "Z"


def test_a_second_process_joins_the_same_server_and_its_exit_does_not_stop_it(
    tmp_path: Path,
) -> None:
    url = embedded_redis_url(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        client.set("k", "shared")
        child = subprocess.run(
            [sys.executable, "-c", JOIN, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        child_url, value = child.stdout.split()
        assert child_url == url and value == "shared"
        assert client.get("from-child") == b"1"  # the child's exit left the server running
    finally:
        stop_embedded_redis(tmp_path)


def test_stop_ends_the_server_and_data_survives_a_restart(tmp_path: Path) -> None:
    url = embedded_redis_url(tmp_path)
    pid = server_pid(url)
    redis.Redis.from_url(url).set("order", "1234")
    stop_embedded_redis(tmp_path)
    assert not alive(pid)
    again = embedded_redis_url(tmp_path)
    try:
        assert server_pid(again) != pid
        assert redis.Redis.from_url(again).get("order") == b"1234"
    finally:
        stop_embedded_redis(tmp_path)
