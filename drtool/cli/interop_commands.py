"""Commands that move data in and out of ``rethinkdb dump`` archives (import-dump,
export-dump), and the rendering of ``restore --delta`` (its options live on ``restore``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drtool.cli import render
from drtool.cli.app import JsonOpt, PolicyOpt, QuietOpt, app, policy_from, quiet, reports_errors, run
from drtool.cli.data_commands import TableOpt
from drtool.core.delta_restore import DeltaOptions, DeltaReport, delta_restore, rerun_hint
from drtool.core.export_dump import check_target, export_dump
from drtool.core.import_dump import import_dump
from drtool.core.restore import RestoreOptions, plan_tables
from drtool.core.session import connect_role, open_repository, parse_tables
from drtool.errors import EXIT_INTERRUPTED, CheckFailed, UsageError
from drtool.failover.guard import check_write
from drtool.policy import Policy
from drtool.units import format_bytes

SAMPLE_KEYS = 5


@app.command("import-dump")
@reports_errors
def import_dump_command(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="A .tar.gz written by rethinkdb dump.")],
    table: TableOpt = None,
    via: Annotated[str | None, typer.Option(help="primary or standby: canonicalise and sort the documents through a scratch table there (for archives not in key order); default: on this machine.")] = None,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Store a rethinkdb dump archive as a snapshot (deduplicated with the others)."""
    pol = policy_from(ctx, policy)
    requested = parse_tables(table or [])
    if via is not None and via not in ("primary", "standby"):
        raise UsageError(f"--via: expected primary or standby, got {via!r}")

    async def go():
        async with await open_repository(pol) as repo:
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                if via is None:
                    return await import_dump(repo, archive, policy_name=pol.name,
                                             tables=requested, progress=progress)
                async with await connect_role(pol, via) as cluster:
                    return await import_dump(repo, archive, policy_name=pol.name,
                                             tables=requested, via=cluster, progress=progress)

    manifest = run(go())
    imported = manifest.extra["imported"]
    if json:
        render.print_json({
            "id": manifest.id, "time": manifest.time, "source": manifest.source,
            "imported": imported, "documents": manifest.doc_count,
            "bytes_new": manifest.bytes_new, "bytes_stored": manifest.bytes_referenced,
            "tables": [{"table": str(t.name), "documents": t.doc_count, "digest": t.digest,
                        "segments": len(t.objects()), "primary_key": t.meta.primary_key,
                        "indexes": [i.name for i in t.meta.indexes],
                        "write_hook": t.meta.write_hook is not None}
                       for t in manifest.tables],
        })
        return
    render.print_table(f"imported {imported['archive']} (dump of {imported['time'][:19]} UTC)",
                       ["table", "documents", "segments", "indexes", "digest"], [
        (str(t.name), t.doc_count, len(t.objects()), len(t.meta.indexes), t.digest)
        for t in manifest.tables])
    render.info(f"{manifest.doc_count} documents, {format_bytes(manifest.bytes_new)} new of "
                f"{format_bytes(manifest.bytes_referenced)} stored")
    print(manifest.id)


@app.command("export-dump")
@reports_errors
def export_dump_command(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Archive to write (.tar.gz); must not exist.")],
    table: TableOpt = None,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Write a snapshot as an archive that rethinkdb restore reads."""
    pol = policy_from(ctx, policy)
    requested = parse_tables(table or [])
    check_target(out)

    async def go():
        async with await open_repository(pol) as repo:
            manifest = await repo.resolve(snapshot)
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                return manifest, await export_dump(repo, manifest, out, tables=requested,
                                                   progress=progress)

    manifest, report = run(go())
    if json:
        render.print_json({"snapshot": manifest.id, "path": str(report.path),
                           "bytes": report.size, "bytes_json": report.bytes_json,
                           "tables": [{"table": str(t), "documents": n} for t, n in report.tables]})
        return
    render.print_table(f"exported snapshot {manifest.id}", ["table", "documents"],
                       [(str(t), n) for t, n in report.tables])
    render.info(f"{format_bytes(report.size)} written ({format_bytes(report.bytes_json)} of JSON)")
    print(report.path)


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
            async with await connect_role(pol, role) as cluster:
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
