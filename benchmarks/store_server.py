"""A whole server: the demo store under gunicorn (2 workers), tracking on and off, side by side.

Three servers of the same store on loopback ports share an embedded Redis (no worker runs:
tracked events wait in the outbox): tracked, untracked (``KLAVIYO_ENABLED=False``), and
"round trip only", the untracked store plus one bare Redis round trip per page
(``_round_trip.py``): the floor that DESIGN.md's one round trip per request sets, which no
trimming of the library's Python removes. A shopper signs in once (``POST /login``: the
session and the signed identity cookie) and a load generator in another process sends that
shopper's product page requests at a fixed concurrency: wrk when installed (``make bench``
installs Debian's), else ``_load.py`` (threads). Rounds alternate between the servers so
machine noise hits them alike; each round runs ``--duration`` seconds per server.

    .venv/bin/python benchmarks/store_server.py [--rounds 5] [--duration 10] [--concurrency 8]
                                                [--client auto|wrk|python] [--smoke]

Prints requests per second per server (median of the rounds; each round's spread) and the ratio
to the untracked server, with the load generator's latency p50/p99. Checks that the tracked
server queued a Viewed Product for every page it served, the round trip server an entry, and
the untracked one nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _round_trip
import httpx
import redis
from _support import VENV_BIN, median, parse_args, table

import flask_klaviyo
from flask_klaviyo.delivery import keys
from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis

# The checkout whose flask_klaviyo this script imported (PYTHONPATH may name another one, to
# compare two commits): gunicorn runs there, as it puts its working directory first on sys.path.
ROOT = Path(flask_klaviyo.__file__).resolve().parents[1]
LOAD = Path(__file__).resolve().parent / "_load.py"
PAGE = "/products/gooseneck-kettle"
SHOPPER = "sarah.mason@klaviyo-demo.com"
PUBLIC_KEY = "AbC123"
START_TIMEOUT = 30.0
SETTLE = 0.5  # seconds between runs of the load generator
VARIANTS = ("untracked", "tracked", "round trip only")
ROUND_TRIP = "round trip only"  # the untracked store + one bare Redis round trip per page


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gunicorn:
    """``gunicorn -w 2 'example_store:create_app()'`` in its own process group, stopped by pid."""

    def __init__(
        self, folder: Path, redis_url: str, *, enabled: bool, round_trip: bool = False
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"gunicorn-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "STORE_"))}
        env.update(
            SECRET_KEY="bench-secret-key",
            KLAVIYO_ENABLED="true" if enabled else "false",
            KLAVIYO_REDIS_URL=redis_url,
            KLAVIYO_PRIVATE_API_KEY="pk_bench_key",
            KLAVIYO_PUBLIC_API_KEY=PUBLIC_KEY,
            KLAVIYO_API_URL="http://127.0.0.1:9",  # no worker runs: nothing is sent
            KLAVIYO_INSPECTOR="false",  # as in production (auto turns it on for a loopback API)
            STORE_DATABASE=str(folder / f"store-{self.port}.sqlite3"),
            STORE_PAYMENTS_AUTO_CALLBACK="false",
        )
        command = [str(VENV_BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{self.port}"]
        command += ["--graceful-timeout", "5"]
        if round_trip:  # benchmarks/_round_trip.py: the store plus the bare round trip
            env[_round_trip.REDIS_ENV] = redis_url
            command += ["--pythonpath", str(Path(__file__).resolve().parent)]
            command.append("_round_trip:create_app()")
        else:
            command.append("example_store:create_app()")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait(self) -> None:
        """Until it serves the product page (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + PAGE, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not answer in {START_TIMEOUT:g}s")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM its process group (the master and its workers), then SIGKILL."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def sign_in(server: Gunicorn) -> str:
    """The shopper's Cookie header after ``POST /login`` (session + signed identity cookie)."""
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        response = client.post("/login", data={"email": SHOPPER}, headers={"Referer": PAGE})
        assert response.status_code == 303, response.status_code
        client.get(PAGE)  # the flashed "Signed in" message is shown once
        held = dict(client.cookies.items())
    assert "klaviyo_id" in held and "session" in held, held
    return "; ".join(f"{key}={value}" for key, value in held.items())


def check_page(server: Gunicorn, cookie: str, tracked: bool) -> None:
    body = httpx.get(server.url + PAGE, headers={"Cookie": cookie}, timeout=10.0).text
    identified = f'"identify": {{"email": "{SHOPPER}"}}' in body
    assert identified is tracked, "the bridge identifies the shopper only when tracked"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def load_wrk(url: str, cookie: str, concurrency: int, duration: float) -> dict[str, Any]:
    command = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(duration))}s"]
    command += ["--latency", "-H", f"Cookie: {cookie}", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or out}")
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        # a sync worker closes each connection after answering: reads that find it closed are
        # wrk's bookkeeping, not failures; connect errors and timeouts are
        "errors": int(errors.group(1)) + int(errors.group(4)) if errors else 0,
        "p50_ms": _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }


def load_python(url: str, cookie: str, concurrency: int, duration: float) -> dict[str, Any]:
    command = [sys.executable, str(LOAD), url, "--concurrency", str(concurrency)]
    command += ["--duration", str(duration), "--header", f"Cookie: {cookie}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["per_second"] = (found["requests"] - found["non_2xx"]) / found["seconds"]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used (from /proc; a process gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def server_pids(server: Gunicorn) -> list[int]:
    """The gunicorn master and its workers."""
    pids = [server.process.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == server.process.pid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def queued_length(connection: redis.Redis, name: str) -> int:
    """The entries the server ``name`` pushes to (the outbox, or the round trip's own stream)."""
    stream = _round_trip.STREAM if name == ROUND_TRIP else keys.outbox_stream("klaviyo")
    return int(connection.xlen(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server/round")
    parser.add_argument("--concurrency", type=int, default=8, help="connections kept busy")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per server, unmeasured")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parse_args(parser, smoke={"rounds": 1, "duration": 1.0, "concurrency": 2, "warmup": 0.5})
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    load = load_wrk if client == "wrk" else load_python
    if client == "wrk" and args.duration < 1:
        load = load_python  # wrk's duration is whole seconds

    # SIGTERM (a timeout) still stops the servers and Redis: the finally below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    folder = Path(tempfile.mkdtemp(prefix="klaviyo-bench-server-"))
    redis_url = embedded_redis_url(folder)
    servers: dict[str, Gunicorn] = {}
    try:
        servers["tracked"] = Gunicorn(folder, redis_url, enabled=True)
        servers["untracked"] = Gunicorn(folder, redis_url, enabled=False)
        servers[ROUND_TRIP] = Gunicorn(folder, redis_url, enabled=False, round_trip=True)
        for server in servers.values():  # both start at once
            server.wait()
        cookie = sign_in(servers["tracked"])
        check_page(servers["tracked"], cookie, True)
        check_page(servers["untracked"], cookie, False)
        check_page(servers[ROUND_TRIP], cookie, False)
        connection = redis.Redis.from_url(redis_url)
        redis_pid = int(connection.info("server")["process_id"])
        # the server's processes, and Redis for those that push (their pushes are Redis's work)
        pids = {
            "untracked": server_pids(servers["untracked"]),
            "tracked": [*server_pids(servers["tracked"]), redis_pid],
            ROUND_TRIP: [*server_pids(servers[ROUND_TRIP]), redis_pid],
        }
        for name in VARIANTS:
            load(servers[name].url + PAGE, cookie, args.concurrency, args.warmup)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                time.sleep(SETTLE)  # the pushes of the last pages served reach Redis
                before = queued_length(connection, name)
                cpu_before, redis_before = cpu_seconds(pids[name]), cpu_seconds([redis_pid])
                found = load(servers[name].url + PAGE, cookie, args.concurrency, args.duration)
                time.sleep(SETTLE)
                queued = queued_length(connection, name) - before
                served = found["requests"] - found["non_2xx"]
                found["cpu_ms"] = (cpu_seconds(pids[name]) - cpu_before) * 1000 / max(1, served)
                redis_ms = (cpu_seconds([redis_pid]) - redis_before) * 1000 / max(1, served)
                found["redis_ms"] = redis_ms
                if name != "untracked":
                    assert queued >= served, f"{served} {name} pages, {queued} entries queued"
                else:
                    assert queued == 0, f"the untracked server queued {queued} events"
                assert found["non_2xx"] == 0, found
                results[name].append(found)
        connection.close()
        report(results, args, client)
    finally:
        for server in servers.values():
            server.stop()
        stop_embedded_redis(folder)
        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, client: str) -> None:
    base = median([r["per_second"] for r in results["untracked"]])
    print(
        f"demo store under gunicorn (2 sync workers), product page of a logged-in shopper, "
        f"{args.concurrency} connections, {len(results['tracked'])} rounds x {args.duration:g} s "
        f"per server, alternating (load: {client})"
    )
    rows = []
    for name in VARIANTS:
        rates = sorted(r["per_second"] for r in results[name])
        rate = median(rates)
        rows.append(
            [
                name,
                f"{rate:,.0f}",
                f"{rates[0]:,.0f}-{rates[-1]:,.0f}",
                f"{rate / base:.3f}",
                f"{median([r['p50_ms'] for r in results[name]]):.2f}",
                f"{median([r['p99_ms'] for r in results[name]]):.2f}",
                f"{median([r['cpu_ms'] for r in results[name]]):.2f}",
                f"{median([r['redis_ms'] for r in results[name]]):.2f}",
                sum(r["errors"] for r in results[name]),
            ]
        )
    headers = ["server", "req/s", "per round (min-max)", "x untracked", "p50 ms", "p99 ms"]
    print(table([*headers, "CPU ms per page", "of which Redis", "errors"], rows))
    print(
        "CPU ms per page: the server's processes (gunicorn's master and workers; plus Redis for "
        "the two that push) per page served, which a busy machine inflates less than req/s; "
        "round trip only: the untracked store plus one bare Redis round trip per page "
        "(benchmarks/_round_trip.py), the floor of DESIGN.md's one round trip per request"
    )


if __name__ == "__main__":
    main()
