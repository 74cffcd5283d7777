"""What ``drtool status`` shows of the change log, read from the repository and the spool
directory (so it works whether or not a runner is running): per table the restorable times,
the end of the newest slice and the archive's lag (now minus that end: the repository's RPO,
by this machine's clock), the timelines and the breaks that started them (cause recorded in
each base marker); the spool's size."""

from __future__ import annotations

import json
import time
from pathlib import Path

from drtool.changelog.slices import BaseRef, parse_log_name
from drtool.changelog.timeline import iso_ms, load_timelines, restorable
from drtool.errors import DrtoolError
from drtool.model import TableName
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository


async def archive_status(repo: Repository, spool: Path | None) -> dict:
    tables: dict[str, dict] = {}
    causes: dict[str, dict[str, int]] = {}
    for name in await repo.list_log(LOG_PREFIX):
        if isinstance(parse_log_name(name), BaseRef):
            try:
                marker = json.loads(await repo.get_base_marker(name))
            except (DrtoolError, ValueError):
                continue
            per = causes.setdefault(marker["table"], {})
            for cause in marker.get("after", []):  # the breaks since the previous base
                per[cause] = per.get(cause, 0) + 1
    now = time.time() * 1000
    for table in sorted(causes):
        timelines = await load_timelines(repo, TableName.parse(table))
        spans = restorable(timelines)
        newest = max((s.t1 for tl in timelines for s in tl.slices), default=None)
        tables[table] = {
            "restorable": [[iso_ms(lo), iso_ms(hi - 1)] for lo, hi in spans],
            "newest_slice_end": None if newest is None else iso_ms(newest),
            "lag": None if newest is None else round(max(0.0, now - newest) / 1000, 3),
            "timelines": len(timelines),
            "breaks": {c: n for c, n in causes[table].items() if c != "start"},
            "starts": causes[table].get("start", 0),
        }
    spool_bytes = (sum(p.stat().st_size for p in spool.glob("*.slice"))
                   if spool is not None and spool.is_dir() else 0)
    lags = [t["lag"] for t in tables.values() if t["lag"] is not None]
    return {"tables": tables, "spool_bytes": spool_bytes,
            "lag": max(lags) if lags else None}


def status_lines(archive: dict) -> list[str]:
    lag = "unknown" if archive.get("lag") is None else f"{archive['lag']:.1f} s"
    out = [f"change log: archive lag {lag} (repository RPO), spool "
           f"{archive.get('spool_bytes', 0)} bytes"]
    for table, t in archive.get("tables", {}).items():
        spans = ", ".join(f"{a} .. {b}" for a, b in t["restorable"]) or "nothing yet"
        breaks = ", ".join(f"{c} {n}" for c, n in t["breaks"].items()) or "none"
        out.append(f"  {table}: restorable {spans}; {t['timelines']} timelines; breaks: "
                   f"{breaks}")
    return out
