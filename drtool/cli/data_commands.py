"""Commands that move table data: snapshot, restore."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from drtool.cli import render
from drtool.failover.guard import check_write
from drtool.cli.app import JsonOpt, PolicyOpt, QuietOpt, app, policy_from, quiet, reports_errors, run
from drtool.core.restore import (
    RestoreOptions,
    conflicts_error,
    parse_renames,
    restore_snapshot,
)
from drtool.core.session import connect_role, open_repository, parse_tables, select_tables
from drtool.core.snapshot import SnapshotOptions, take_snapshot
from drtool.failover.standby_fence import fenced_hooks
from drtool.errors import CheckFailed, UsageError
from drtool.units import format_bytes

TableOpt = Annotated[
    Optional[list[str]],
    typer.Option("--table", "-t", help="db.table to include (repeatable; default: the policy's)."),
]
Role = Annotated[str | None, typer.Option(help="Cluster to use: primary or standby.")]


def _role(value: str | None, default: str) -> str:
    role = value or default
    if role not in ("primary", "standby"):
        raise UsageError(f"expected primary or standby, got {role!r}")
    return role


@app.command()
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
    role = _role(from_, pol.schedule.snapshot_from)
    requested = parse_tables(table or [])

    async def go():
        async with await open_repository(pol) as repo, await connect_role(pol, role) as cluster:
            tables = select_tables(pol, await cluster.list_tables(), requested, where=role)
            if not tables:
                raise UsageError(f"no table of the {role} matches [tables] in {pol.path}")
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                reads = pol.throttle.primary_reads if role == "primary" else None
                options = SnapshotOptions(
                    full=full, primary_reads=reads, max_layers=pol.schedule.full_after_layers,
                    max_delta_ratio=pol.schedule.full_after_delta,
                    fenced_hooks=await fenced_hooks(cluster, pol))
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


@app.command()
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
    role = _role(to, "primary")
    if dry_run and not delta:
        raise UsageError("--dry-run works with --delta only")
    if delta and (conflict or shards or replicas):
        raise UsageError("--delta cannot be combined with --conflict, --shards or --replicas "
                         "(it replaces differing documents in existing tables)")
    if (snapshot is None) == (at is None):
        raise UsageError("restore: give a snapshot id (or 'latest') or --at TIME, not both")
    if at is not None and delta:
        from drtool.cli.log_commands import run_delta_restore_at

        run_delta_restore_at(ctx, pol, at, role, RestoreOptions(
            tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or [])),
            dry_run=dry_run, json=json, quiet_=quiet(ctx, quiet_))
        return
    if delta:
        from drtool.cli.interop_commands import run_delta_restore

        run_delta_restore(ctx, pol, snapshot, role, RestoreOptions(
            tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or [])),
            dry_run=dry_run, json=json, quiet_=quiet(ctx, quiet_))
        return
    if conflict is not None and conflict not in ("error", "replace", "skip"):
        raise UsageError(f"--conflict: expected error, replace or skip, got {conflict!r}")
    options = RestoreOptions(
        tables=tuple(parse_tables(table or [])), renames=parse_renames(rename or []),
        conflict=conflict, shards=shards, replicas=replicas,  # type: ignore[arg-type]
    )

    async def go():
        async with await open_repository(pol) as repo:
            manifest = await repo.resolve(snapshot)
            async with await connect_role(pol, role) as cluster:
                await check_write(pol, role, cluster, what="restore")
                with render.RichProgress(quiet(ctx, quiet_)) as progress:
                    return manifest.id, await restore_snapshot(repo, cluster, manifest, options,
                                                               progress=progress)

    if at is not None:
        from drtool.cli.log_commands import run_restore_at

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
