"""Commands that move data in and out of ``rethinkdb dump`` archives: import-dump, export-dump."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drtool.cli import render
from drtool.cli.common import JsonOpt, connector, PolicyOpt, QuietOpt, policy_from, quiet, reports_errors, run, TableOpt
from drtool.dumps.exporter import check_target, export_dump
from drtool.dumps.importer import import_dump
from drtool.wiring.open import connect_role, open_repository, parse_tables
from drtool.errors import UsageError
from drtool.util.units import format_bytes



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
                async with await connect_role(pol, via, connector(ctx)) as cluster:
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
