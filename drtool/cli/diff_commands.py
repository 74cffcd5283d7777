"""Commands that compare and repair clusters: diff, reconcile."""

from __future__ import annotations

from typing import Annotated

import typer

from drtool.changelog.restore_at import diff_at, looks_like_time, parse_at
from drtool.cli import render
from drtool.cli.common import SAMPLE_KEYS, JsonOpt, connector, PolicyOpt, QuietOpt, policy_from, quiet, reports_errors, run, TableOpt
from drtool.compare.diff import DiffOptions, TableDiff, diff_tables, tables_of_both
from drtool.snapshots.diff_snapshot import diff_against_snapshot
from drtool.compare.reconcile import ReconcileOptions, TableReconcile, reconcile_tables
from drtool.compare.shape import target_shape
from drtool.wiring.open import connect_role, parse_tables, repository_and_cluster
from drtool.errors import CheckFailed, UsageError
from drtool.coordination.guard import check_write
from drtool.util.units import format_bytes

DIRECTIONS = {"primary-to-standby": ("primary", "standby"),
              "standby-to-primary": ("standby", "primary")}


async def _with_pair(ctx, pol, source_role: str, target_role: str, work):
    """Connect both clusters (the unreachable one is named by its error), run ``work``."""
    async with await connect_role(pol, source_role, connector(ctx)) as source, \
            await connect_role(pol, target_role, connector(ctx)) as target:
        return await work(source, target)


@reports_errors
def diff(
    ctx: typer.Context,
    table: TableOpt = None,
    against: Annotated[str, typer.Option(help="standby, a snapshot (id, unique prefix or 'latest'), or a time of the change log (2026-12-04T10:15:29Z, -15m).")] = "standby",
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Compare the primary's tables with the standby's (or a snapshot's) by server-side
    digests; exit 1 when anything differs."""
    pol = policy_from(ctx, policy)
    requested = parse_tables(table or [])
    if against == "primary":
        raise UsageError("--against: expected standby or a snapshot id, got 'primary'")

    async def clusters(source, target):
        tables = await tables_of_both(pol, source, target, requested, where="primary or standby")
        with render.RichProgress(quiet(ctx, quiet_)) as progress:
            return await diff_tables(source, target, tables, progress=progress,
                                     options=DiffOptions(shape=target_shape(pol.replication,
                                                                            "standby")))

    async def snapshot():
        async with repository_and_cluster(pol, "primary", snapshot=against,
                                          connector=connector(ctx)) as (
                repo, cluster, manifest):
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                return await diff_against_snapshot(cluster, repo, manifest, pol, requested,
                                                   progress=progress)

    async def at_time(at: int):
        async with repository_and_cluster(pol, "primary", connector=connector(ctx)) as (
                repo, cluster, _):
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                return await diff_at(repo, cluster, at, requested, selects=pol.tables.selects,
                                     progress=progress)

    if against == "standby":
        results = run(_with_pair(ctx, pol, "primary", "standby", clusters))
    elif looks_like_time(against):
        results = run(at_time(parse_at(against)))
    else:
        results = run(snapshot())
    _print_diffs(results, json)
    if any(not d.equal for d in results):
        raise typer.Exit(CheckFailed.exit_code)


def _print_diffs(results: list[TableDiff], as_json: bool) -> None:
    total = sum(d.traffic.bytes for d in results)
    if as_json:
        render.print_json({"equal": all(d.equal for d in results), "bytes": total,
                           "tables": [d.to_json() for d in results]})
        return
    if not results:
        render.info("no table to compare (check [tables] in the policy)")
        return
    target = results[0].target_role
    render.print_table(None, ["table", "status", "documents", f"missing on {target}",
                              f"extra on {target}", "changed", "schema", "bytes"], [
        (str(d.table), "equal" if d.equal else "DIFFERS", _counts(d), d.missing_count,
         d.extra_count, d.changed_count, len(d.schema), format_bytes(d.traffic.bytes))
        for d in results])
    for d in results:
        for s in d.schema:
            print(f"{d.table}: {s.describe(d.source_role, d.target_role)}")
        for what, keys in ((f"missing on {target}", d.missing), (f"extra on {target}", d.extra),
                           ("changed", d.changed)):
            if keys:
                more = f" (+{len(keys) - SAMPLE_KEYS} more, see --json)" if len(keys) > SAMPLE_KEYS else ""
                print(f"{d.table}: {what}: {', '.join(keys[:SAMPLE_KEYS])}{more}")
        for note in d.notes:
            print(f"{d.table}: {note}")
    differing = sum(not d.equal for d in results)
    render.info(f"{len(results)} tables compared, {differing} differ; "
                f"{format_bytes(total)} crossed the network (estimated), "
                f"{sum(d.traffic.queries for d in results)} queries")


def _counts(d: TableDiff) -> str:
    if d.source_count == d.target_count:
        return str(d.source_count)
    return f"{d.source_count} / {d.target_count}"


@reports_errors
def reconcile(
    ctx: typer.Context,
    table: TableOpt = None,
    direction: Annotated[str, typer.Option(help="primary-to-standby or standby-to-primary.")] = "primary-to-standby",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; write nothing (exit 1 if anything would).")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Make the target's tables equal to the source's, writing only what differs."""
    pol = policy_from(ctx, policy)
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction: expected {' or '.join(DIRECTIONS)}, got {direction!r}")
    source_role, target_role = DIRECTIONS[direction]
    requested = parse_tables(table or [])
    options = ReconcileOptions(dry_run=dry_run, drop_tables=frozenset(requested),
                               diff=DiffOptions(shape=target_shape(pol.replication, target_role)))

    async def work(source, target):
        if not dry_run:
            await check_write(pol, target_role, target, source_role=source_role, source=source,
                              what="reconcile")
        tables = await tables_of_both(pol, source, target, requested, where="primary or standby")
        with render.RichProgress(quiet(ctx, quiet_)) as progress:
            return await reconcile_tables(source, target, tables, source_role=source_role,
                                          target_role=target_role, options=options,
                                          progress=progress)

    results = run(_with_pair(ctx, pol, source_role, target_role, work))
    _print_reconcile(results, json, dry_run, target_role)
    if any(not r.equal_after for r in results):
        raise typer.Exit(CheckFailed.exit_code)


def _print_reconcile(results: list[TableReconcile], as_json: bool, dry_run: bool, target: str) -> None:
    if as_json:
        render.print_json({"dry_run": dry_run, "target": target,
                           "equal_after": all(r.equal_after for r in results),
                           "tables": [r.to_json() for r in results]})
        return
    for r in results:
        if r.before.equal:
            print(f"{r.table}: equal, nothing to do")
            continue
        for action in r.actions:
            print(f"{r.table}: {action}" + (" (dry run)" if dry_run else ""))
        if dry_run:
            if r.to_write or r.to_delete:
                print(f"{r.table}: would write {len(r.to_write)} and delete {len(r.to_delete)} "
                      f"documents on {target}")
            for what, keys in (("write", r.to_write), ("delete", r.to_delete)):
                if keys:
                    print(f"{r.table}: {what}: {', '.join(keys[:SAMPLE_KEYS])}"
                          + (f" (+{len(keys) - SAMPLE_KEYS} more)" if len(keys) > SAMPLE_KEYS else ""))
        else:
            print(f"{r.table}: wrote {r.written}, deleted {r.deleted} documents on {target} "
                  f"in {r.rounds} round(s); {'now equal' if r.equal_after else 'still differs'}")
        for problem in r.unresolved:
            print(f"{r.table}: not resolved: {problem}")
    moved = sum(r.before.traffic.bytes + r.traffic.bytes for r in results)
    changed = sum(not r.before.equal for r in results)
    render.info(f"{len(results)} tables, {changed} differed; "
                f"{format_bytes(moved)} crossed the network (estimated)")
