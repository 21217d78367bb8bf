"""Every benchmark script still runs: each in its ``--smoke`` mode (tiny sizes, a few seconds, the
same code path as ``make bench``), as a subprocess; it must exit 0 and print its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = (
    "request_overhead",
    "store_page",
    "store_server",
    "drain_throughput",
    "rate_limited_drain",
    "latency",
    "worker_memory",
    "catalog_sync",
    "backfill",
    "replicated_push",
)
TIMEOUT = 240.0  # smoke runs take seconds; a worker that never starts is given up after 60 s
NUMBER = re.compile(r"\d")


def table_rows(output: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the Markdown table in ``output`` (cells stripped)."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("|")]
    assert len(lines) >= 3, f"no table printed:\n{output}"
    header, rule, *body = lines
    assert set(rule) <= set("|- "), f"no header rule under {header!r}"

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    return cells(header), [cells(line) for line in body]


def test_the_table_reader_finds_header_and_rows() -> None:
    header, rows = table_rows("title\n| a | b |\n|---|---|\n| 1 | 2.5 |\nverdict\n")
    assert header == ["a", "b"] and rows == [["1", "2.5"]]


def test_every_benchmark_script_is_covered() -> None:
    found = {path.stem for path in BENCHMARKS.glob("*.py") if not path.stem.startswith("_")}
    assert found - {"bench_app"} == set(SCRIPTS)  # bench_app is the workers' Flask app


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_in_smoke_mode_and_prints_its_table(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    # This checkout's flask_klaviyo, in the script and in the workers it starts.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{script} --smoke took over {TIMEOUT:g} s:\n{exc.stdout}") from None
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{output[-4000:]}"
    header, rows = table_rows(done.stdout)
    assert len(header) >= 2 and all(header), header
    assert rows, f"{script} printed a table without rows:\n{done.stdout}"
    for row in rows:
        assert len(row) == len(header), row
        assert any(NUMBER.search(cell) for cell in row[1:]), f"no figures in {row}"
