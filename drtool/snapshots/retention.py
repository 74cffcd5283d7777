"""Retention: forget (remove snapshot manifests outside the rules), prune (delete data objects
no remaining snapshot references) and unlock (remove stale repository locks).

Selection is restic's: snapshots sorted newest first by their time (UTC); ``keep_last`` N keeps
the N newest; ``keep_hourly`` N keeps the newest snapshot of each of the N most recent distinct
hours that have snapshots; likewise daily, weekly (ISO week) and monthly. A snapshot is kept if
any rule keeps it. A snapshot that kept ones build on (``parent``) is not kept for that reason:
every manifest lists every object its tables need (the parent's layers included), so prune
keeps those objects as long as any remaining snapshot references them.
A snapshot whose manifest cannot be read is never forgotten (nothing is known about it), does
not count towards the rules, and makes prune refuse to run.

Safety (docs/FORMAT.md §8): forget and prune run under the repository's exclusive lock, so no
snapshot runs meanwhile; forget deletes manifests only; prune computes the referenced set from
every remaining manifest before deleting anything and deletes only unreferenced data and index
objects (segments; segment indexes and deletion lists),
so an interrupted run leaves every remaining snapshot intact and can simply be run again.
Key objects are kept (see PruneReport). ``dry_run`` takes no lock and changes nothing.
Under Object Lock (drtool.snapshots.object_lock) a manifest or object still retained is left in
place and counted as waiting: a snapshot forget could not remove keeps its objects. ``forget
--prune`` also extends the retention of what the rules keep (its manifests, the objects they
reference, keys and config) once it is half gone, so that deduplicated old objects stay
immutable as long as a kept snapshot needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from drtool.snapshots.object_lock import Waiting, delete_unless_retained, still_retained
from drtool.errors import DrtoolError, NotFound, RepositoryError, UsageError
from drtool.config.policy import RetentionPolicy
from drtool.repo.locks import EXCLUSIVE, AnyLock, HeldLock, LockRecord, remove_locks
from drtool.repo.repository import Repository

RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")
DELETE_CONCURRENCY = 8


def _bucket(rule: str, t: datetime, sid: str) -> str:
    """The period a snapshot falls in for ``rule``; also the text of the keep reason."""
    if rule == "keep_last":
        return sid
    if rule == "keep_hourly":
        return f"{t:%Y-%m-%d %H}:00"
    if rule == "keep_daily":
        return f"{t:%Y-%m-%d}"
    if rule == "keep_weekly":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{t:%Y-%m}"


def check_rules(rules: RetentionPolicy) -> None:
    """UsageError unless every given rule is >= 0 and at least one is > 0."""
    for rule in RULES:
        value = getattr(rules, rule)
        if value is not None and value < 0:
            raise UsageError(f"--{rule.replace('_', '-')} must be >= 0, got {value}")
    if not any(getattr(rules, rule) for rule in RULES) and rules.keep_log is None:
        raise UsageError(
            "no retention rule given: pass --keep-last/--keep-hourly/--keep-daily/--keep-weekly/"
            "--keep-monthly or set them in [retention] of the policy (refusing to forget everything)")


@dataclass(frozen=True)
class Candidate:
    """What selection needs of a snapshot. ``readable`` False: its manifest cannot be read."""

    id: str
    time: datetime
    parent: str | None = None
    readable: bool = True
    problem: str = ""


def select(candidates: list[Candidate], rules: RetentionPolicy) -> dict[str, list[str]]:
    """The snapshots to keep, each with the reasons it is kept (pure; see module docstring)."""
    check_rules(rules)
    keep = {c.id: [f"manifest unreadable ({c.problem})"] for c in candidates if not c.readable}
    newest_first = sorted((c for c in candidates if c.readable), key=lambda c: (c.time, c.id),
                          reverse=True)  # rules count usable snapshots only
    for rule in RULES:
        remaining = getattr(rules, rule) or 0
        last = None
        for c in newest_first:
            if remaining <= 0:
                break
            bucket = _bucket(rule, c.time, c.id)
            if bucket != last:
                what = "last" if rule == "keep_last" else f"{rule[5:]} {bucket}"
                keep.setdefault(c.id, []).append(what)
                last, remaining = bucket, remaining - 1
    return keep


def _time_of(sid: str, text: str | None) -> datetime:
    """A manifest's time (UTC); the time in its id when the text is missing or malformed."""
    try:
        if text:
            return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        pass
    return datetime.strptime(sid[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


async def candidates(repo: Repository) -> list[Candidate]:
    """Every snapshot of the repository as a Candidate (unreadable manifests included)."""
    out = []
    for sid in await repo.list_snapshots():
        try:
            m = await repo.load_manifest(sid)
        except NotFound:
            continue  # removed meanwhile
        except DrtoolError as err:
            out.append(Candidate(sid, _time_of(sid, None), None, False, str(err)))
            continue
        out.append(Candidate(sid, _time_of(sid, m.time), m.parent))
    return out


async def _count_retained(repo: Repository, objects: list[tuple[str, str, int]],
                          waiting: Waiting, ids: list[str] | None = None) -> None:
    """Dry runs under Object Lock: count the (kind, id, size) objects still retained (one
    HEAD each), and append their ids to ``ids``."""
    slots = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one(kind: str, oid: str, size: int) -> None:
        async with slots:
            until = still_retained(await repo.stat_object(kind, oid))
        if until is not None:
            waiting.add(size, until)
            if ids is not None:
                ids.append(oid)

    await asyncio.gather(*(one(*o) for o in objects))


@dataclass(frozen=True)
class Decision:
    id: str
    time: str  # ISO 8601 UTC
    keep: bool
    reasons: list[str]


@dataclass
class PruneReport:
    """Counts of one prune. Key objects (``keys/``, a few hundred bytes per writing session)
    are never deleted: knowing which are unused needs the header of every remaining data
    object, one more request per object."""

    dry_run: bool
    snapshots: int = 0  # remaining snapshots whose objects were kept
    objects_referenced: int = 0  # data and index objects
    objects_stored: int = 0
    bytes_stored: int = 0
    objects_deleted: int = 0  # (dry run: that would be deleted)
    bytes_deleted: int = 0
    objects_missing: int = 0  # referenced but not stored: run drtool verify
    waiting: Waiting = field(default_factory=Waiting)  # unreferenced, under Object Lock still
    retention_extended: int = 0  # objects of kept snapshots whose Object Lock was extended

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ForgetReport:
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    prune: PruneReport | None = None
    log_deleted: int = 0  # change-log objects outside keep_log (dry run: would be)
    log_bytes: int = 0
    held: list[str] = field(default_factory=list)  # removed, but under Object Lock still
    waiting: Waiting = field(default_factory=Waiting)  # those manifests

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    def to_json(self) -> dict:
        return {"dry_run": self.dry_run, "kept": [asdict(d) for d in self.kept],
                "removed": [asdict(d) for d in self.removed],
                "prune": self.prune.to_json() if self.prune else None,
                "held": self.held, "waiting": asdict(self.waiting),
                "log_deleted": self.log_deleted, "log_bytes": self.log_bytes}


def _locked(repo: Repository, dry_run: bool, purpose: str):
    """The exclusive lock, or nothing for a dry run (which writes nothing, not even a lock)."""
    return contextlib.nullcontext(None) if dry_run else repo.lock(EXCLUSIVE, purpose)


def _check(held: HeldLock | None) -> None:
    if held is not None:
        held.check()


async def forget(repo: Repository, rules: RetentionPolicy, *, dry_run: bool = False,
                 prune: bool = False, log=None) -> ForgetReport:
    """Remove the manifests of the snapshots ``rules`` do not keep (and with ``prune``, the
    data objects they alone referenced). ``log(repo)`` (drtool.changelog.retention, given by
    the caller): a plan whose ``bases`` (the change log's) are decided by it alone: kept when
    in its ``keep``, not counted by the rules; its ``delete`` log objects are deleted after
    the manifests. Raises UsageError (no
    rule), RepositoryError (locked by a running snapshot or prune; prune refused because a
    manifest is unreadable)."""
    check_rules(rules)
    report = ForgetReport(dry_run)
    async with _locked(repo, dry_run, "forget") as held:
        found = await candidates(repo)
        plan = await log(repo) if log is not None else None
        counted = [c for c in found if plan is None or c.id not in plan.bases]
        keep = select(counted, rules) if any(getattr(rules, r) for r in RULES) else {
            c.id: [] for c in counted}  # keep_log alone: snapshots are not forgotten
        for sid, reasons in (plan.keep.items() if plan else ()):
            keep.setdefault(sid, []).extend(reasons)
        for c in sorted(found, key=lambda c: (c.time, c.id)):
            report.decisions.append(Decision(c.id, c.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                             c.id in keep, keep.get(c.id, [])))
        if dry_run and repo.storage.retention:
            await _count_retained(repo, [("snapshot", d.id, 0) for d in report.removed],
                                  report.waiting, report.held)
        if not dry_run:
            for d in report.removed:  # manifests first: data goes only after recomputing refs
                _check(held)
                if not await delete_unless_retained(repo.delete_manifest(d.id), 0, report.waiting):
                    report.held.append(d.id)  # stays, and keeps what it references
        if plan is not None:
            report.log_deleted, report.log_bytes = len(plan.delete), plan.bytes
            for name in plan.delete if not dry_run else ():
                _check(held)
                await delete_unless_retained(repo.delete_log(name), 0, report.waiting)
        if prune:
            gone = {d.id for d in report.removed} - set(report.held)
            report.prune = await _prune(repo, held, dry_run=dry_run, excluding=gone,
                                        kept={d.id for d in report.kept})
    return report


async def prune(repo: Repository, *, dry_run: bool = False) -> PruneReport:
    """Delete every data object no snapshot references. Raises RepositoryError when locked
    or when a manifest cannot be read (then nothing is deleted)."""
    async with _locked(repo, dry_run, "prune") as held:
        return await _prune(repo, held, dry_run=dry_run)


async def _prune(repo: Repository, held: HeldLock | None, *, dry_run: bool,
                 excluding: frozenset[str] | set[str] = frozenset(),
                 kept: set[str] | None = None) -> PruneReport:
    """``kept``: the snapshots forget's rules keep; under Object Lock their manifests and
    objects get their retention extended (Repository.extend_retention) after the deletions."""
    report = PruneReport(dry_run)
    referenced: dict[str, set[str]] = {"data": set(), "index": set()}
    keep_locked: set[tuple[str, str]] = set()
    for sid in await repo.list_snapshots():
        if sid in excluding:
            continue  # dry run of forget --prune: as if forgotten
        try:
            manifest = await repo.load_manifest(sid)
        except NotFound:
            continue  # a deleted snapshot needs nothing
        except DrtoolError as err:
            raise RepositoryError(
                f"prune refused, nothing deleted: snapshot {sid} cannot be read ({err}); "
                "restore the manifest from a copy or remove snapshots/" + sid + " by hand") from None
        report.snapshots += 1
        for entry in manifest.tables:
            referenced["data"].update(ref.id for ref in entry.objects())
            referenced["index"].update(oid for oid, _ in entry.index_objects())
            if kept is not None and sid in kept:
                keep_locked.update(("data", ref.id) for ref in entry.objects())
                keep_locked.update(("index", oid) for oid, _ in entry.index_objects())
        if kept is not None and sid in kept:
            keep_locked.add(("snapshot", sid))
    stored = {"data": await repo.list_data(), "index": await repo.list_index()}
    doomed: list[tuple[str, str]] = []
    for kind in ("data", "index"):
        found, wanted = stored[kind], referenced[kind]
        report.objects_referenced += len(wanted)
        report.objects_stored += len(found)
        report.bytes_stored += sum(found.values())
        report.objects_missing += len(wanted - found.keys())
        gone = sorted(set(found) - wanted)
        report.objects_deleted += len(gone)
        report.bytes_deleted += sum(found[o] for o in gone)
        doomed += [(kind, o) for o in gone]
    if dry_run:
        if repo.storage.retention:
            await _count_retained(repo, [(k, o, stored[k][o]) for k, o in doomed], report.waiting)
            report.objects_deleted -= report.waiting.objects
            report.bytes_deleted -= report.waiting.bytes
        return report
    slots = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def delete(kind: str, oid: str) -> None:
        async with slots:
            _check(held)  # stop at once if our lock may have been ignored as stale
            size = stored[kind][oid]
            gone = repo.delete_data(oid) if kind == "data" else repo.delete_index(oid)
            if not await delete_unless_retained(gone, size, report.waiting):
                report.objects_deleted -= 1
                report.bytes_deleted -= size

    await asyncio.gather(*(delete(kind, oid) for kind, oid in doomed))
    if kept is not None:
        _check(held)
        report.retention_extended = await repo.extend_retention(keep_locked)
    return report


@dataclass(frozen=True)
class UnlockReport:
    removed: list[AnyLock]
    kept: list[AnyLock]  # live (or, without force, damaged) locks left in place

    @staticmethod
    def _json(lock: AnyLock) -> dict:
        if isinstance(lock, LockRecord):
            return {"id": lock.id, "kind": lock.kind, "purpose": lock.purpose, "host": lock.host,
                    "pid": lock.pid, "created": lock.created.isoformat(),
                    "refreshed": lock.refreshed.isoformat()}
        return {"id": lock.id, "damaged": lock.why}

    def to_json(self) -> dict:
        return {"removed": [self._json(x) for x in self.removed],
                "kept": [self._json(x) for x in self.kept]}


async def unlock(repo: Repository, *, force: bool = False, now: datetime | None = None) -> UnlockReport:
    """Remove stale lock objects; with ``force`` every lock object, live ones included (only
    safe when no drtool process is using the repository)."""
    removed, kept = await remove_locks(repo.locks, force=force, now=now)
    return UnlockReport(removed, kept)
