"""What ``flask klaviyo backfill`` prints when it is done (its progress while it runs is
:mod:`flask_klaviyo.progress`, shared by every long command): sent, skipped, rejected with line
numbers and reasons, and what Klaviyo refused once the workers delivered it."""

from __future__ import annotations

from .runner import BackfillReport

__all__ = ["render_report"]

SHOWN = 50  # rejected lines and refusals printed one by one (the counts are exact)


def render_report(report: BackfillReport) -> list[str]:
    """The summary, one line per fact; failures listed (up to ``SHOWN``) with their reasons."""
    lines: list[str] = []
    earlier = report.earlier
    noun = "record" if report.kind == "profiles" else "order"
    if report.dry_run:
        lines.append(f"dry run: {report.records:,} {noun}s checked, nothing was sent")
        lines.extend(f"  {sample}" for sample in report.samples)
        more = report.records - report.rejected - len(report.samples)
        if more > 0:
            lines.append(f"  ... and {more:,} more")
        lines.append(_counts("would send", report.sent))
        if earlier is not None and earlier.position:
            lines.append(
                f"checkpoint: a real run resumes after line {earlier.position:,} "
                "(--restart starts over)"
            )
    else:
        lines.append(_counts("sent", report.sent) + f" from {report.records:,} {noun}s")
        if report.skipped:
            lines.append(
                f"skipped: {report.skipped:,} lines queued by an earlier run (the checkpoint)"
            )
        if earlier is not None and earlier.sent:
            lines.append(_counts("  earlier runs sent", earlier.sent))
    lines.append(f"rejected: {report.rejected:,}")
    for entry in report.rejected_lines[:SHOWN]:
        lines.append(f"  line {entry['line']}: {entry['reason']}")
    if report.rejected > SHOWN:
        lines.append(f"  ... and {report.rejected - SHOWN:,} more")
    if earlier is not None and earlier.rejected and not report.dry_run and report.skipped:
        lines.append(f"  (earlier runs rejected {earlier.rejected:,}: run --dry-run to list)")
    if report.waited:
        lines.append(f"refused by Klaviyo: {len(report.dead):,} (dead letters; replayable)")
        for record in report.dead[:SHOWN]:
            detail = "; ".join(str(e.get("detail")) for e in record.get("errors") or ())
            lines.append(f"  {_subject(record)}: {detail}")
    elif not report.dry_run:
        lines.append("queued; the workers deliver it (refusals become dead letters)")
    lines.append(f"in {report.seconds:.1f}s")
    return lines


def _counts(verb: str, counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    return f"{verb}: {total:,}" + (f" ({parts})" if parts else "")


def _subject(record: dict[str, object]) -> str:
    event = record.get("event")
    if isinstance(event, dict):
        return f"{event.get('metric')} {event.get('unique_id')}"
    operation = record.get("operation")
    if isinstance(operation, dict):
        return f"{operation.get('op')} {operation.get('key')}"
    return str(record.get("id"))
