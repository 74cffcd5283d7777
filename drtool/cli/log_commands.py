"""Commands of the change log: ``timeline`` (``restore --at`` is in data_commands)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from drtool.changelog.restore_at import logged_tables
from drtool.changelog.timeline import iso_ms, load_timelines, restorable
from drtool.cli import render
from drtool.cli.common import JsonOpt, PolicyOpt, policy_from, reports_errors, run
from drtool.wiring.open import open_repository, parse_tables


TableOpt = Annotated[
    Optional[list[str]],
    typer.Option("--table", "-t", help="db.table to show (repeatable; default: every logged table)."),
]


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


