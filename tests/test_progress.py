"""The one progress display of long commands: a bar with rate and ETA in a terminal, plain
lines (every few seconds or tenth of the way, and at the end) anywhere else."""

from __future__ import annotations

import io

from flask_klaviyo.progress import Progress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_line_every_tenth_with_rate_and_time_left() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress(200, "backfill", "orders", file=out, clock=clock, every=3600)
    for _ in range(200):
        clock.now += 0.05  # 20 a second
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # one per tenth, the last at the end; not one per item
    assert lines[0] == "backfill: 20 of 200 orders (20/s, 9s left)"
    assert lines[-1] == "backfill: 200 of 200 orders (20/s)"


def test_off_a_terminal_a_line_every_few_seconds_when_the_total_is_unknown() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress(None, "replay", "dead letters", file=out, clock=clock, every=5.0)
    for _ in range(60):
        clock.now += 0.5
        bar.update(10)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # every 5 s of 30 s; the last one is already up to date
    assert lines[0] == "replay: 100 dead letters (20/s)"
    assert lines[-1].startswith("replay: 600 dead letters")


def test_a_callback_with_done_and_total_drives_it_and_the_end_is_always_printed() -> None:
    out = io.StringIO()
    with progress(None, "catalog", "operations applied", file=out) as bar:
        bar.goto(2, 3)
    [line] = out.getvalue().splitlines()
    assert line.startswith("catalog: 2 of 3 operations applied (")
    quiet = io.StringIO()
    with progress(0, "replay", "dead letters", file=quiet):
        pass
    assert quiet.getvalue().startswith("replay: 0 of 0 dead letters")  # nothing to do: said


def test_in_a_terminal_a_bar_with_position_and_rate() -> None:
    out = Terminal()
    with progress(None, "replay", "dead letters", file=out) as bar:
        for done in range(6):
            bar.goto(done, 5)
    drawn = out.getvalue()
    assert "replay" in drawn and "5/5" in drawn and "dead letters/s" in drawn
    assert "#" in drawn  # the bar itself
    assert "\n" not in drawn.rstrip("\n")  # redrawn in place, not a line per step
