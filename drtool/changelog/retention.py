"""Log retention (``[retention] keep_log``): which log objects forget deletes and which base
snapshots it must keep.

With ``keep_log = W`` every time in ``[now - W, now]`` that is restorable stays restorable:
per table and timeline, the bases kept are those complete inside the window plus the newest
one complete before its start (it covers the window's first seconds); slices ending at or
before the earliest kept base's ``from`` go, and so do timelines that ended before the window
and the markers of bases not kept. Without ``keep_log`` nothing of the log is deleted. In both
cases the snapshots named by the remaining base markers are kept by forget whatever the
snapshot rules say (the log needs them), and bases do not count towards the snapshot rules
(``keep_last 5`` keeps five snapshots besides the log's bases). ``now`` is the local clock (hosts' clocks must agree
to within a few minutes, as for locks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drtool.changelog.slices import BaseRef, SliceRef, parse_log_name
from drtool.errors import DrtoolError
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository


@dataclass
class LogPlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> reasons
    bases: set[str] = field(default_factory=set)  # every snapshot a marker names
    delete: list[str] = field(default_factory=list)  # log object names
    bytes: int = 0  # stored bytes of what is deleted


async def plan_log_retention(repo: Repository, keep_log: float | None, now_ms: int) -> LogPlan:
    listed = await repo.list_log(LOG_PREFIX)
    groups: dict[tuple[str, str], dict] = {}
    plan = LogPlan()
    for name, size in listed.items():
        ref = parse_log_name(name, size)
        if ref is None:
            continue
        group = groups.setdefault((name.split("/")[1], ref.timeline),
                                  {"slices": [], "bases": []})
        if isinstance(ref, SliceRef):
            group["slices"].append(ref)
        else:
            group["bases"].append(ref)
            plan.bases.add(ref.snapshot)
    start = None if keep_log is None else now_ms - int(keep_log * 1000)
    for (_key, timeline), group in sorted(groups.items()):
        bases = []
        for ref in group["bases"]:
            try:
                marker = json.loads(await repo.get_base_marker(ref.name))
                bases.append((int(marker["restorable_from"]), int(marker["from"]), ref,
                              marker["table"]))
            except (DrtoolError, ValueError, KeyError, TypeError):
                plan.keep[ref.snapshot] = ["base of the change log (marker unreadable)"]
        bases.sort(key=lambda b: b[0])
        end = max((s.t1 for s in group["slices"]), default=0)
        if start is None:
            kept = bases
        elif end <= start:
            kept = []
        else:
            before = [b for b in bases if b[0] < start]
            kept = before[-1:] + [b for b in bases if b[0] >= start]
        for _r, _f, ref, table in kept:
            plan.keep.setdefault(ref.snapshot, []).append(
                f"base of {table}'s change log (timeline {timeline})")
        doomed = [b[2] for b in bases if b not in kept]
        if start is not None:
            first_from = min((b[1] for b in kept), default=None)
            doomed += [s for s in group["slices"]
                       if first_from is None or s.t1 <= first_from]
        for ref in doomed:
            plan.delete.append(ref.name)
            plan.bytes += listed.get(ref.name, 0)
    return plan


def log_retention(rules) -> Callable[[Repository], Awaitable[LogPlan]]:
    """The ``log`` argument of ``core.retention.forget`` for a RetentionPolicy."""
    return lambda repo: plan_log_retention(repo, rules.keep_log, int(time.time() * 1000))
