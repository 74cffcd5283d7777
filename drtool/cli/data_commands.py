"""Commands that move table data: snapshot, restore."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from drtool.changelog.restore_at import delta_at, parse_at, restore_at
from drtool.changelog.timeline import iso_ms
from drtool.cli import render
from drtool.coordination.guard import check_write
from drtool.cli.common import (
    SAMPLE_KEYS, JsonOpt, connector, PolicyOpt, QuietOpt, Role, TableOpt, parse_role, policy_from, quiet, reports_errors, run,
)
from drtool.snapshots.restore import (
    RestoreOptions,
    conflicts_error,
    parse_renames,
    plan_tables,
    restore_snapshot,
)
from drtool.config.policy import select_tables
from drtool.compare.shape import target_shape
from drtool.wiring.open import connect_role, open_repository, parse_tables, repository_and_cluster
from drtool.snapshots.snapshot import take_snapshot
from drtool.wiring.snapshots import snapshot_options
from drtool.config.policy import Policy
from drtool.errors import EXIT_INTERRUPTED, CheckFailed, UsageError
from drtool.snapshots.delta_restore import DeltaOptions, DeltaReport, delta_restore, rerun_hint
from drtool.util.units import format_bytes

@reports_errors
def snapshot(
    ctx: typer.Context,
    table: TableOpt = None,
    from_: Annotated[str | None, typer.Option("--from", help="Read from primary or standby (default: schedule.snapshot_from).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Copy every table in full instead of storing only what changed.")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Copy the selected tables into the repository; print the snapshot id."""
    pol = policy_from(ctx, policy)
    role = parse_role(from_, pol.schedule.snapshot_from)
    requested = parse_tables(table or [])

    async def go():
        async with repository_and_cluster(pol, role, connector=connector(ctx)) as (repo, cluster, _):
            tables = select_tables(pol, await cluster.list_tables(), requested, where=role)
            if not tables:
                raise UsageError(f"no table of the {role} matches [tables] in {pol.path}")
            options = await snapshot_options(pol, cluster, role, full=full)
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                return await take_snapshot(repo, cluster, tables, policy_name=pol.name,
                                           source=role, progress=progress, options=options)

    manifest = run(go())
    if json:
        render.print_json({
            "id": manifest.id, "time": manifest.time, "source": manifest.source,
            "documents": manifest.doc_count, "bytes_new": manifest.bytes_new,
            "bytes_stored": manifest.bytes_referenced,
            "parent": manifest.parent,
            "tables": [{"table": str(t.name), "documents": t.doc_count, "digest": t.digest,
                        "segments": len(t.objects()), "layers": len(t.layers),
                        "rescans": t.rescans}
                       for t in manifest.tables],
        })
        return
    render.print_table(None, ["table", "documents", "segments", "digest"], [
        (str(t.name), t.doc_count, len(t.objects()), t.digest) for t in manifest.tables
    ])
    render.info(f"{manifest.doc_count} documents, {format_bytes(manifest.bytes_new)} new of "
                f"{format_bytes(manifest.bytes_referenced)} stored")
    print(manifest.id)


@reports_errors
def restore(
    ctx: typer.Context,
    snapshot: Annotated[Optional[str], typer.Argument(help="Snapshot id, unique prefix, or 'latest' (not with --at).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Restore the tables as they were at this time (change log): 2026-12-04T10:15:29Z, 2026-12-04T11:15:29+01:00 or -15m.")] = None,
    table: TableOpt = None,
    to: Role = "primary",
    rename: Annotated[Optional[list[str]], typer.Option(help="db.t=db2.t2: restore a table under another name (repeatable).")] = None,
    conflict: Annotated[str | None, typer.Option(help="error | replace | skip: needed when a target table has documents.")] = None,
    shards: Annotated[int | None, typer.Option(min=1, help="Shard count for created tables.")] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="Replica count for created tables.")] = None,
    delta: Annotated[bool, typer.Option("--delta", help="Repair existing tables: write only the documents that differ from the snapshot, delete those it lacks.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --delta: only list what would change.")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Restore a snapshot's tables (data, indexes, write hook) and check their digests."""
    pol = policy_from(ctx, policy)
    role = parse_role(to, "primary")
    if dry_run and not delta:
        raise UsageError("--dry-run works with --delta only")
    if delta and (conflict or shards or replicas):
        raise UsageError("--delta cannot be combined with --conflict, --shards or --replicas "
                         "(it replaces differing documents in existing tables)")
    if (snapshot is None) == (at is None):
        raise UsageError("restore: give a snapshot id (or 'latest') or --at TIME, not both")
    if at is not None and delta:
        run_delta_restore_at(ctx, pol, at, role, RestoreOptions(
            tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or [])),
            dry_run=dry_run, json=json, quiet_=quiet(ctx, quiet_))
        return
    if delta:
        run_delta_restore(ctx, pol, snapshot, role, RestoreOptions(
            tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or [])),
            dry_run=dry_run, json=json, quiet_=quiet(ctx, quiet_))
        return
    if conflict is not None and conflict not in ("error", "replace", "skip"):
        raise UsageError(f"--conflict: expected error, replace or skip, got {conflict!r}")
    shape = target_shape(pol.replication, role)  # restore --to standby: the policy's shape
    options = RestoreOptions(
        tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or []),
        conflict=conflict, shards=shards or shape.create("shards"),  # type: ignore[arg-type]
        replicas=replicas or shape.create("replicas"),
    )

    async def go():
        async with repository_and_cluster(pol, role, snapshot=snapshot,
                                          connector=connector(ctx)) as (repo, cluster, manifest):
            await check_write(pol, role, cluster, what="restore")
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                return manifest.id, await restore_snapshot(repo, cluster, manifest, options,
                                                           progress=progress)

    if at is not None:
        label, reports = run_restore_at(ctx, pol, at, role, options, quiet_=quiet(ctx, quiet_))
    else:
        label, reports = run(go())
    if json:
        render.print_json({("at" if at else "snapshot"): label, "tables": [{
            "source": str(r.source), "target": str(r.target), "created": r.created,
            "documents": r.documents, "written": r.written.written, "conflicts": r.conflicts,
            "indexes_created": r.indexes_created, "digest_ok": r.digest_ok,
            "digest_expected": r.digest_expected, "digest_found": r.digest_found,
            "ranges_differing": r.ranges_differing, "notes": r.notes,
        } for r in reports]})
    else:
        render.print_table(f"restored {'--at ' if at else 'snapshot '}{label}",
                           ["table", "into", "documents", "written", "conflicts", "digest"], [
            (str(r.source), str(r.target), r.documents, r.written.written, r.conflicts,
             "equal" if r.digest_ok else f"DIFFERS ({r.ranges_differing} ranges)")
            for r in reports])
        for r in reports:
            for note in r.notes:
                render.info(f"{r.target}: {note}")
    refused = conflicts_error(reports)
    if refused is not None:
        render.error(str(refused))
        raise typer.Exit(refused.exit_code)
    if any(not r.digest_ok and not r.had_documents for r in reports):
        render.error("a restored table's digest differs from the snapshot's (see above)")
        raise typer.Exit(CheckFailed.exit_code)


def run_delta_restore(ctx: typer.Context, pol: Policy, snapshot: str, role: str,
                      options: RestoreOptions, *, dry_run: bool, json: bool, quiet_: bool) -> None:
    """``restore --delta [--dry-run]``: called by the restore command. Interrupted (Ctrl-C)
    once the tables are known, it says to run it again, naming them and the snapshot."""
    interrupted = "a dry run changes nothing" if dry_run else "no table was written to yet"

    async def go():
        nonlocal interrupted
        async with await open_repository(pol) as repo:
            manifest = await repo.resolve(snapshot)
            targets = [target for _, target in plan_tables(manifest, options)]
            if not dry_run:
                interrupted = rerun_hint(manifest.id, targets)
            async with await connect_role(pol, role, connector(ctx)) as cluster:
                if not dry_run:
                    await check_write(pol, role, cluster, what="restore --delta")
                with render.RichProgress(quiet(ctx, quiet_)) as progress:
                    return manifest, await delta_restore(
                        repo, cluster, manifest, options, DeltaOptions(dry_run=dry_run),
                        progress=progress)

    try:
        manifest, reports = run(go())
    except KeyboardInterrupt:
        render.error(f"interrupted: {interrupted}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if json:
        render.print_json({"snapshot": manifest.id, "dry_run": dry_run,
                           "tables": [r.to_json() for r in reports]})
    else:
        _print_delta(manifest.id, reports, dry_run)
    differing = [r.target for r in reports if not r.digest_ok]
    if not dry_run and differing:
        render.error(f"after the delta restore {', '.join(map(str, differing))} still "
                     f"{'differs' if len(differing) == 1 else 'differ'} from snapshot "
                     f"{manifest.id} (written to meanwhile?): run the same restore --delta again")
        raise typer.Exit(CheckFailed.exit_code)


def _print_delta(snapshot_id: str, reports: list[DeltaReport], dry_run: bool) -> None:
    verb = "would write" if dry_run else "written"
    render.print_table(
        f"delta restore of snapshot {snapshot_id}{' (dry run: nothing changed)' if dry_run else ''}",
        ["table", "into", "documents", "ranges changed", verb, "deleted" if not dry_run
         else "would delete", "bytes moved", "digest"], [
            (str(r.source), str(r.target), r.documents, f"{r.ranges_changed} of {r.ranges}",
             len(r.written), len(r.deleted), format_bytes(r.bytes_written + r.traffic.bytes),
             "-" if dry_run else ("equal" if r.digest_ok else f"DIFFERS ({r.ranges_differing} ranges)"))
            for r in reports])
    for r in reports:
        for label, keys in (("write", r.written), ("delete", r.deleted)):
            if keys:
                cut = len(keys) if dry_run else SAMPLE_KEYS  # a dry run lists every key
                shown = ", ".join(keys[:cut]) + (", ..." if len(keys) > cut else "")
                render.info(f"{r.target}: {label} {len(keys)}: {shown}")
        for action in r.shape:
            render.info(f"{r.target}: {'would ' if dry_run else ''}{action}")
        for note in r.notes:
            render.info(f"{r.target}: {note}")


def run_restore_at(ctx: typer.Context, pol: Policy, at_text: str, role: str,
                   options: RestoreOptions, *, quiet_: bool):
    """``restore --at T``: returns (the time restored to, the tables' reports)."""
    at = parse_at(at_text)

    async def go():
        async with await open_repository(pol) as repo:
            async with await connect_role(pol, role, connector(ctx)) as cluster:
                await check_write(pol, role, cluster, what="restore --at")
                with render.RichProgress(quiet_) as progress:
                    return await restore_at(repo, cluster, at, options,
                                            selects=pol.tables.selects, progress=progress)

    return iso_ms(at), run(go())


def run_delta_restore_at(ctx: typer.Context, pol: Policy, at_text: str, role: str,
                         options: RestoreOptions, *, dry_run: bool, json: bool,
                         quiet_: bool) -> None:
    """``restore --at T --delta [--dry-run]``: rewind existing tables to T."""
    at = parse_at(at_text)

    async def go():
        async with await open_repository(pol) as repo:
            async with await connect_role(pol, role, connector(ctx)) as cluster:
                if not dry_run:
                    await check_write(pol, role, cluster, what="restore --at --delta")
                with render.RichProgress(quiet_) as progress:
                    return await delta_at(repo, cluster, at, options,
                                          DeltaOptions(dry_run=dry_run),
                                          selects=pol.tables.selects, progress=progress)

    try:
        reports = run(go())
    except KeyboardInterrupt:
        render.error(f"interrupted: run the same restore --at {iso_ms(at)} --delta again to "
                     "finish (it writes only what still differs)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if json:
        render.print_json({"at": iso_ms(at), "dry_run": dry_run,
                           "tables": [r.to_json() for r in reports]})
    else:
        _print_delta(f"--at {iso_ms(at)}", reports, dry_run)
    differing = [r.target for r in reports if not r.digest_ok]
    if not dry_run and differing:
        render.error(f"after the delta restore {', '.join(map(str, differing))} still differs "
                     f"from its state at {iso_ms(at)} (written to meanwhile?): run the same "
                     "restore --at --delta again")
        raise typer.Exit(CheckFailed.exit_code)
