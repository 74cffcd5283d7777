"""Checking the change log (``drtool verify``, docs/FORMAT.md §10): every base marker reads
and names an existing snapshot; every timeline's slices touch (a hole between two runs is a
missing slice, named); with ``read_data`` every slice decrypts, matches its name, belongs to
the table of its table key, and follows a slice ending where it starts. Problems are
collected as ``(table, object, message)``, not raised."""

from __future__ import annotations

import json

from drtool.changelog.slices import BaseRef, SliceRef, decode_slice, parse_log_name
from drtool.changelog.timeline import Timeline
from drtool.errors import DrtoolError
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository

Problem = tuple[str, str, str]  # (table or table key, object name, message)


async def verify_log(repo: Repository, *, read_data: bool) -> tuple[int, list[Problem]]:
    """Check every log object; return (objects checked, problems)."""
    snapshots = set(await repo.list_snapshots())
    by_timeline: dict[tuple[str, str], list[SliceRef]] = {}
    names: dict[str, str] = {}  # table key -> table name (from the markers)
    problems: list[Problem] = []
    listed = await repo.list_log(LOG_PREFIX)
    for name, size in sorted(listed.items()):
        ref = parse_log_name(name, size)
        key = name.split("/")[1] if name.count("/") >= 3 else ""
        if isinstance(ref, BaseRef):
            try:
                marker = json.loads(await repo.get_base_marker(name))
                names[key] = marker["table"]
                if repo.log_table_key(marker["table"]) != key:
                    problems.append((marker["table"], name, "base marker names another table"))
            except (DrtoolError, ValueError, KeyError, TypeError) as err:
                problems.append((key, name, f"base marker unreadable: {err}"))
                continue
            if ref.snapshot not in snapshots:
                problems.append((marker["table"], name,
                                 f"base snapshot {ref.snapshot} is missing (forgotten?)"))
        elif isinstance(ref, SliceRef):
            by_timeline.setdefault((key, ref.timeline), []).append(ref)
    for (key, timeline), slices in sorted(by_timeline.items()):
        table = names.get(key, key)
        tl = Timeline(timeline, sorted(slices))
        try:
            for _a, _b, missing in tl.gaps():
                problems.append((table, missing, "slice missing: the timeline goes on after it"))
        except DrtoolError as err:
            problems.append((table, f"{LOG_PREFIX}{key}/{timeline}", str(err)))
        if read_data:
            problems += [(table, n, m) for n, m in await _read_slices(repo, key, tl.slices)]
    return len(listed), problems


async def _read_slices(repo: Repository, key: str, slices: list[SliceRef]) -> list[tuple[str, str]]:
    out = []
    for ref in slices:
        try:
            header, _ = decode_slice(ref.name, await repo.get_slice(ref.name))
        except DrtoolError as err:
            out.append((ref.name, str(err)))
            continue
        if repo.log_table_key(header.table) != key:
            out.append((ref.name, "slice belongs to another table"))
        follows = parse_log_name(header.follows) if header.follows != "base" else None
        if header.follows != "base" and not (isinstance(follows, SliceRef)
                                             and follows.t1 == ref.t0):
            out.append((ref.name, f"slice follows {header.follows}, which does not end where "
                                  "it starts"))
    return out
