"""``python -m flask_klaviyo.testing`` and the ``flask-klaviyo-fake`` script: run the stand-in
in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ._config import DEFAULT_API_KEY, DEFAULT_COMPANY_ID, DEFAULT_HOST
from .fake import FakeKlaviyo

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_klaviyo.testing",
        description="A local Klaviyo stand-in (Events API + client endpoints) with an inspector.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="private key to accept")
    parser.add_argument("--company-id", default=DEFAULT_COMPANY_ID, help="public key / company id")
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind")
    parser.add_argument(
        "--rate-limits",
        default=None,
        help='enforce limits: "klaviyo" (the published ones) or JSON '
        '{"bulk_create_events": [[10, 1], [150, 60]], ...}',
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="run the rate-limit windows N times faster"
    )
    parser.add_argument(
        "--no-keep-events",
        action="store_true",
        help="count and dedup accepted events without keeping them (long benchmarks)",
    )
    parser.add_argument(
        "--job-delay",
        type=float,
        default=0.0,
        help="seconds before a bulk job completes (0: on the first GET of it)",
    )
    args = parser.parse_args(argv)
    limits = args.rate_limits
    if limits not in (None, "klaviyo"):
        try:
            limits = json.loads(limits)
        except ValueError as exc:
            print(f"--rate-limits: not JSON: {exc}", file=sys.stderr)
            return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C stays default
            previous[signum] = signal.signal(signum, on_signal)
    try:
        fake = FakeKlaviyo(
            api_key=args.api_key,
            company_id=args.company_id,
            host=args.host,
            port=args.port,
            rate_limits=limits,
            time_scale=args.time_scale,
            keep_events=not args.no_keep_events,
            job_delay=args.job_delay,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"Klaviyo stand-in could not start: {exc}", file=sys.stderr)
        return 2
    print(f"Klaviyo stand-in listening on {fake.url} (inspector at /)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
