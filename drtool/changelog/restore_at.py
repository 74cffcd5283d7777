"""Restoring tables to a time: ``drtool restore --at T`` (and ``--delta``, ``diff --against T``).

Per table: plan (``timeline.plan_restore``: the newest base at or before T on a timeline whose
slices reach past T), read the plan's slices (``state.load_changes``), then write the base's
documents with the changes applied as a restore writes (indexes, write hook, digest check),
or with ``delta`` rewind an existing table writing only what differs. Every table's plan and
slices are read before anything is written: a time that cannot be restored, or a slice that
is missing or damaged, refuses the whole command with nothing written.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime

from drtool.changelog.slices import parse_log_name, BaseRef
from drtool.changelog.state import StateAt, load_changes, state_entry
from drtool.changelog.timeline import (
    RestorePlan, iso_ms, load_timelines, plan_restore, restorable,
)
from drtool.cluster.base import Cluster
from drtool.reql.digest import r_uuid
from drtool.snapshots.delta_restore import DeltaOptions, DeltaReport, delta_table
from drtool.snapshots.diff_snapshot import diff_table_snapshot
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.restore import RestoreOptions, TableRestore, restore_table
from drtool.errors import EncryptionKeyError, IntegrityError, NotFound, UsageError
from drtool.repo.manifest import TableEntry
from drtool.model import TableName
from drtool.repo.log_objects import LOG_PREFIX
from drtool.repo.repository import Repository
from drtool.util.units import parse_duration

_RELATIVE = re.compile(r"^-\s*(\S+)$")


def looks_like_time(text: str) -> bool:
    """``--against``: a time (``-15m``, ``2026-...``) rather than a snapshot id or a role."""
    return bool(_RELATIVE.match(text.strip()) or re.match(r"^\d{4}-\d{2}-\d{2}[T ]", text))


def parse_at(text: str, *, now: float | None = None) -> int:
    """``--at``: ISO 8601 with ``Z`` or an offset, or ``-15m`` (before now) -> ms since the
    epoch. UsageError for anything else (a time without offset is ambiguous)."""
    m = _RELATIVE.match(text.strip())
    if m:
        try:
            seconds = parse_duration(m.group(1))
        except ValueError:
            raise UsageError(f"--at {text}: expected a duration like -15m or -2h30m") from None
        return int(((time.time() if now is None else now) - seconds) * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at {text}: expected a time like 2026-12-04T10:15:29Z, "
                         "2026-12-04T11:15:29+01:00 or -15m") from None
    if when.tzinfo is None:
        raise UsageError(f"--at {text}: give the time zone (Z or an offset like +01:00)")
    return int(when.timestamp() * 1000)


async def logged_tables(repo: Repository) -> list[TableName]:
    """Every table with a base in the log (names from the base markers)."""
    names: set[str] = set()
    seen_keys: set[str] = set()
    for name in await repo.list_log(LOG_PREFIX):
        ref = parse_log_name(name)
        key = name.split("/")[1]
        if isinstance(ref, BaseRef) and key not in seen_keys:
            seen_keys.add(key)
            names.add(json.loads(await repo.get_base_marker(name))["table"])
    return sorted(TableName.parse(n) for n in names)


@dataclass
class Prepared:
    plan: RestorePlan
    base: TableEntry
    state: StateAt
    target: TableName


async def prepare(repo: Repository, tables: list[TableName], at: int,
                  renames: dict[TableName, TableName], *, named: set[TableName] | None = None
                  ) -> list[Prepared]:
    """Plan every table and read every slice needed (raises before anything is written).
    A table not ``named`` (default: all are) whose log starts after ``at`` is left out (it
    was not logged then)."""
    if not repo.can_read_data:
        raise EncryptionKeyError(
            "restore --at needs a key that can decrypt document data: set "
            "encryption.identity_file or encryption.passphrase_env in the policy")
    out = []
    for table in tables:
        timelines = await load_timelines(repo, table)
        spans = restorable(timelines)
        if named is not None and table not in named and (not spans or at < spans[0][0]):
            continue
        plan = plan_restore(table, timelines, at)
        manifest = await repo.load_manifest(plan.base.snapshot)
        entry = manifest.table(table)
        if entry is None:
            raise IntegrityError(f"base {plan.base.snapshot} of {table}'s log does not hold "
                                 f"{table}")
        changes = await load_changes(repo, plan)
        out.append(Prepared(plan, entry, StateAt(repo, entry, changes),
                            renames.get(table, table)))
    if not out:
        raise UsageError(f"no table of the policy's selection was logged at {iso_ms(at)} "
                         "(see drtool timeline)")
    targets = [p.target for p in out]
    if len(set(targets)) != len(targets):
        raise UsageError("--rename: two tables would be restored into the same target table")
    return out


async def choose_tables(repo: Repository, options: RestoreOptions, selects) -> list[TableName]:
    logged = await logged_tables(repo)
    wanted = list(options.tables) + [s for s, _ in options.renames if s not in options.tables]
    for name in wanted:
        if name not in logged:
            raise NotFound(f"table {name} has no change log in the repository "
                           "(drtool timeline lists the tables that have one)")
    if options.tables:
        return sorted(set(options.tables))
    chosen = [t for t in logged if selects(t)]
    if not chosen:
        raise NotFound("no table of the policy's selection has a change log in the repository")
    return chosen


async def restore_at(repo: Repository, cluster: Cluster, at: int, options: RestoreOptions, *,
                     selects=lambda t: True, progress: Progress = NullProgress()
                     ) -> list[TableRestore]:
    """Restore the chosen tables as they were at ``at`` (ms, primary's clock)."""
    async with repo.lock("shared", "restore"):
        tables = await choose_tables(repo, options, selects)
        prepared = await prepare(repo, tables, at, dict(options.renames),
                                 named=set(options.tables) | set(dict(options.renames)))
        return [await restore_table(repo, cluster, p.base, p.target, options,
                                    progress=progress, state=p.state) for p in prepared]


async def delta_at(repo: Repository, cluster: Cluster, at: int, options: RestoreOptions,
                   delta: DeltaOptions = DeltaOptions(), *, selects=lambda t: True,
                   progress: Progress = NullProgress()) -> list[DeltaReport]:
    """Rewind existing tables to ``at`` writing only the documents that differ."""
    async with repo.lock("shared", "restore"):
        tables = await choose_tables(repo, options, selects)
        prepared = await prepare(repo, tables, at, dict(options.renames),
                                 named=set(options.tables) | set(dict(options.renames)))
        reports = []
        for p in prepared:
            entry = await state_entry(p.state)
            reports.append(await delta_table(repo, cluster, entry, p.target, delta,
                                             snapshot_id=f"--at {iso_ms(at)}",
                                             progress=progress, rows_of=p.state.range_rows))
        return reports


async def diff_at(repo: Repository, cluster: Cluster, at: int, tables: list[TableName], *,
                  selects=lambda t: True, progress: Progress = NullProgress()) -> list:
    """Which keys of the chosen tables differ between the live tables and their state at
    ``at`` (``drtool diff --against TIME``): nothing is written. Compares like ``diff
    --against SNAPSHOT``: the server's digests per recorded range, then per-document hashes
    of the ranges that differ."""
    async with repo.lock("shared", "restore"):
        options = RestoreOptions(tables=tuple(tables))
        chosen = await choose_tables(repo, options, selects)
        prepared = await prepare(repo, chosen, at, {}, named=set(tables))
        out = []
        for p in prepared:
            entry = await state_entry(p.state)

            async def hashes(i: int, state: StateAt = p.state) -> dict:
                return {k: r_uuid(d) for k, d in await state.range_rows(i)}

            out.append(await diff_table_snapshot(
                cluster, repo, entry, p.plan.table, role="primary",
                label=f"state at {iso_ms(at)}", progress=progress, hashes_of=hashes))
        return out
