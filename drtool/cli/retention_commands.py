"""Commands that remove what is no longer wanted: forget, prune, unlock."""

from __future__ import annotations

from typing import Annotated

import typer

from drtool.changelog.retention import log_retention
from drtool.cli import render
from drtool.changelog.retention import log_retention
from drtool.cli.common import JsonOpt, PolicyOpt, policy_from, reports_errors, run
from drtool.snapshots import retention
from drtool.wiring.open import open_repository
from drtool.config.policy import RetentionPolicy
from drtool.errors import UsageError
from drtool.util.units import DURATION_EXPECTED, format_bytes, parse_duration


def _keep(period: str) -> object:
    return typer.Option(min=0, help=f"Keep the newest snapshot of each of the last N {period} "
                                    "that have snapshots.")


DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]


async def _with_repo(pol, action):
    async with await open_repository(pol) as repo:
        return await action(repo)


def _prune_lines(report: retention.PruneReport) -> list[str]:
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"prune: {report.snapshots} snapshots reference {report.objects_referenced} of "
             f"{report.objects_stored} objects ({format_bytes(report.bytes_stored)}); {verb} "
             f"{report.objects_deleted} objects, {format_bytes(report.bytes_deleted)} freed"]
    if report.retention_extended:
        lines.append(f"prune: extended the Object Lock retention of {report.retention_extended} "
                     "objects the kept snapshots need")
    if report.waiting.objects:
        lines.append(_waiting_line("prune", report.waiting.objects, "objects", report.waiting,
                                   report.dry_run))
    if report.objects_missing:
        lines.append(f"prune: {report.objects_missing} referenced objects are missing: "
                     "run drtool verify")
    return lines


def _waiting_line(command: str, count: int, what: str, waiting, dry_run: bool) -> str:
    size = f" ({format_bytes(waiting.bytes)})" if waiting.bytes else ""
    return (f"{command}: {count} {what}{size} {'would wait' if dry_run else 'wait'}: under Object "
            f"Lock retention until {waiting.until} at the latest; run {command} again after that")


@reports_errors
def forget(
    ctx: typer.Context,
    keep_last: Annotated[int | None, typer.Option(min=0, help="Keep the N newest snapshots.")] = None,
    keep_hourly: Annotated[int | None, _keep("hours")] = None,
    keep_daily: Annotated[int | None, _keep("days")] = None,
    keep_weekly: Annotated[int | None, _keep("ISO weeks")] = None,
    keep_monthly: Annotated[int | None, _keep("months")] = None,
    keep_log: Annotated[str | None, typer.Option(help="Keep the change log restorable for this long (e.g. 7d).")] = None,
    dry_run: DryRunOpt = False,
    prune: Annotated[bool, typer.Option("--prune", help="Then delete data no snapshot references.")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove snapshots outside the retention rules (any --keep-* given replaces the policy's
    retention section). Data stays until prune, which keeps every object a remaining snapshot
    references (incremental snapshots included)."""
    pol = policy_from(ctx, policy)
    log_window = None
    if keep_log is not None:
        try:
            log_window = parse_duration(keep_log)
        except ValueError:
            raise UsageError(f"--keep-log: expected {DURATION_EXPECTED}, got {keep_log!r}") from None
    given = RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                            log_window)
    rules = given if given != RetentionPolicy() else pol.retention
    report = run(_with_repo(pol, lambda repo: retention.forget(
        repo, rules, dry_run=dry_run, prune=prune, log=log_retention(rules))))
    if json:
        render.print_json(report.to_json())
        return
    render.print_table("dry run: nothing changed" if dry_run else None, ["snapshot", "time", "action", "reasons"], [
        (d.id, d.time.replace("T", " ").rstrip("Z"), "keep" if d.keep else "remove",
         ", ".join(d.reasons)) for d in report.decisions])
    verb = "would remove" if dry_run else "removed"
    held = len(report.held)
    print(f"{len(report.kept)} snapshots kept, {verb} {len(report.removed) - held}")
    if held:
        print(_waiting_line("forget", held, "snapshots", report.waiting, dry_run))
    if report.log_deleted:
        print(f"change log: {verb} {report.log_deleted} objects "
              f"({format_bytes(report.log_bytes)}) outside keep_log")
    for line in _prune_lines(report.prune) if report.prune else []:
        print(line)


@reports_errors
def prune_command(ctx: typer.Context, dry_run: DryRunOpt = False, policy: PolicyOpt = None,
                  json: JsonOpt = False) -> None:
    """Delete the data objects that no snapshot references (under the exclusive lock)."""
    pol = policy_from(ctx, policy)
    report = run(_with_repo(pol, lambda repo: retention.prune(repo, dry_run=dry_run)))
    if json:
        render.print_json(report.to_json())
        return
    for line in _prune_lines(report):
        print(line)


@reports_errors
def unlock(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Remove live locks too (only when no drtool process uses the repository).")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove stale repository locks (left by processes that died)."""
    pol = policy_from(ctx, policy)
    report = run(_with_repo(pol, lambda repo: retention.unlock(repo, force=force)))
    if force and report.removed:
        render.info("warning: --force removed locks that may belong to running processes; a "
                    "snapshot or prune still running will stop when it notices")
    if json:
        render.print_json(report.to_json())
        return
    for lock in report.removed:
        print(f"removed lock {lock.id}: {lock.describe()}")
    for lock in report.kept:
        print(f"kept lock {lock.id}: {lock.describe()} (--force removes it)")
    print(f"{len(report.removed)} locks removed, {len(report.kept)} kept")
