"""What ``flask klaviyo catalog sync`` prints when it is done: the summary (its progress while
it waits is ``flask_klaviyo.progress``, shared by every long command)."""

from __future__ import annotations

from .sync import SyncReport

__all__ = ["render_report"]


def render_report(report: SyncReport) -> list[str]:
    """The summary: per resource created, updated, deleted, unchanged; then the failures."""
    verb = "would " if report.dry_run else ""
    lines = []
    for name, counts in report.plan.summary().items():
        lines.append(
            f"{name:>10}: {verb}create {counts['create']:,}, {verb}update {counts['update']:,}, "
            f"{verb}delete {counts['delete']:,}, unchanged {counts['unchanged']:,}"
        )
    if report.dry_run:
        lines.append("dry run: nothing was sent")
        for name, changes in (
            ("category", report.plan.categories),
            ("item", report.plan.items),
            ("variant", report.plan.variants),
        ):
            for action, ids in (("create", changes.create), ("update", changes.update),
                                ("delete", changes.delete)):  # fmt: skip
                for external in ids[:20]:
                    lines.append(f"  {action} {name} {external}")
                if len(ids) > 20:
                    lines.append(f"  ... and {len(ids) - 20:,} more {name} {action}s")
    elif not report.waited:
        lines.append("queued; the workers apply it (failures become dead letters)")
    failed = len(report.failed) + len(report.invalid)
    lines.append(f"failed: {failed:,} in {report.seconds:.1f}s")
    for entry in report.invalid:
        lines.append(f"  invalid {entry['item']}: {entry['field']}: {entry['message']}")
    for record in report.failed:
        operation = record.get("operation") or {}
        detail = "; ".join(str(e.get("detail")) for e in record.get("errors") or ())
        lines.append(f"  {operation.get('op')} {operation.get('key')}: {detail}")
    return lines
