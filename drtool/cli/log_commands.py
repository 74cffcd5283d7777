"""Commands of the change log: ``restore --at`` (called by restore), ``timeline``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from drtool.changelog.restore_at import delta_at, logged_tables, parse_at, restore_at
from drtool.changelog.timeline import iso_ms, load_timelines, restorable
from drtool.cli import render
from drtool.cli.app import JsonOpt, PolicyOpt, app, policy_from, reports_errors, run
from drtool.core.delta_restore import DeltaOptions
from drtool.core.restore import RestoreOptions
from drtool.core.session import connect_role, open_repository, parse_tables
from drtool.errors import EXIT_INTERRUPTED, CheckFailed
from drtool.failover.guard import check_write
from drtool.policy import Policy


def run_restore_at(ctx: typer.Context, pol: Policy, at_text: str, role: str,
                   options: RestoreOptions, *, quiet_: bool):
    """``restore --at T``: returns (the time restored to, the tables' reports)."""
    at = parse_at(at_text)

    async def go():
        async with await open_repository(pol) as repo:
            async with await connect_role(pol, role) as cluster:
                await check_write(pol, role, cluster, what="restore --at")
                with render.RichProgress(quiet_) as progress:
                    return await restore_at(repo, cluster, at, options,
                                            selects=pol.tables.selects, progress=progress)

    return iso_ms(at), run(go())


def run_delta_restore_at(ctx: typer.Context, pol: Policy, at_text: str, role: str,
                         options: RestoreOptions, *, dry_run: bool, json: bool,
                         quiet_: bool) -> None:
    """``restore --at T --delta [--dry-run]``: rewind existing tables to T."""
    from drtool.cli.interop_commands import _print_delta

    at = parse_at(at_text)

    async def go():
        async with await open_repository(pol) as repo:
            async with await connect_role(pol, role) as cluster:
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


TableOpt = Annotated[
    Optional[list[str]],
    typer.Option("--table", "-t", help="db.table to show (repeatable; default: every logged table)."),
]


@app.command()
@reports_errors
def timeline(ctx: typer.Context, table: TableOpt = None, policy: PolicyOpt = None,
             json: JsonOpt = False) -> None:
    """Show each table's change log: timelines, bases, slices and restorable intervals."""
    pol = policy_from(ctx, policy)
    requested = parse_tables(table or [])

    async def go():
        async with await open_repository(pol) as repo:
            tables = requested or await logged_tables(repo)
            return [(t, await load_timelines(repo, t)) for t in tables]

    found = run(go())
    out = []
    for t, timelines in found:
        out.append({
            "table": str(t),
            "restorable": [{"from": iso_ms(lo), "to": iso_ms(hi - 1), "from_ms": lo,
                            "to_ms": hi - 1} for lo, hi in restorable(timelines)],
            "timelines": [{
                "id": tl.id, "started": iso_ms(tl.start),
                "bases": [{"snapshot": b.snapshot, "from_ms": b.from_ms,
                           "restorable_from_ms": b.restorable_from} for b in tl.bases],
                "slices": len(tl.slices), "bytes": sum(s.size for s in tl.slices),
                "runs": [{"from_ms": r[0].t0, "to_ms": r[-1].t1, "slices": len(r)}
                         for r in tl.runs()],
            } for tl in timelines],
        })
    if json:
        render.print_json({"tables": out})
        return
    rows = []
    for entry in out:
        spans = entry["restorable"] or [{"from": "-", "to": "-"}]
        for span in spans:
            rows.append((entry["table"], span["from"], span["to"], len(entry["timelines"]),
                         sum(tl["slices"] for tl in entry["timelines"])))
    render.print_table("restorable times (primary's clock, UTC; bounds included)",
                       ["table", "from", "to", "timelines", "slices"], rows)


__all__ = ["run_restore_at", "run_delta_restore_at", "timeline", "EXIT_INTERRUPTED"]
