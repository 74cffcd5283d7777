"""Failback (``drtool failback``): move the application's writes back to the cluster that was
primary before the last failover, once it has returned.

Steps, before the planned switch of drtool.failover.planned (recorded in roles; resumable):

1. ``fence-returning``: the returning cluster gets the current roles (so its old runner and
   any stale command see the new generation) and is fenced, unless it still is (a planned
   failover or ``--unplanned --force`` left it fenced: that record is reused, so the values
   restored at the end are the ones from before the first fence).
2. ``lost-writes``: the documents it has that the current primary lacks or has differently
   are written to the lost-writes file (drtool.failover.lost_writes), never dropped
   silently; done once (a resumed run never rewrites the file).
3. ``reconcile``: it is made equal to the current primary by delta (diff/reconcile: only
   differing documents move, never a full copy); users and permissions copied (its fenced
   write permissions kept). Documents the application keeps changing on the current primary
   through every round are not an error here: the switch fences it, and its final diff
   reconciles them with nothing changing any more.
4. the planned switch back (fence the current primary, drain, stop replication, final diff,
   promote, unfence: the returning cluster's own recorded permissions restored last).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drtool.compare.diff import DiffOptions
from drtool.compare.reconcile import ReconcileOptions, reconcile_tables
from drtool.compare.shape import target_shape
from drtool.errors import FailoverError, UsageError
from drtool.failover import steps
from drtool.coordination.fence import FenceRecord, apply_fence
from drtool.failover.lost_writes import find_lost_writes
from drtool.failover.planned import PLANNED, Confirm, Outcome, application_change, refuse_other_kind, switch
from drtool.failover.run import FailoverRun
from drtool.coordination.users_sync import standby_fence_users, sync_users
from drtool.model import utcnow
from drtool.cluster import Connector
from drtool.config.policy import Policy

BEFORE = ("fence-returning", "lost-writes", "reconcile")


def default_lost_writes_path(policy: Policy, generation: int) -> Path:
    return Path(f"drtool-lost-writes-{policy.name}-generation-{generation}.jsonl")


async def failback(policy: Policy, *, lost_writes: Path | None = None, dry_run: bool = False,
                   confirm: Confirm = lambda plan: True,
                   say: Callable[[str], None] = lambda line: None,
                   connector: Connector | None = None) -> Outcome:
    """Run (or resume) a failback; see the module doc."""
    async with FailoverRun(policy, say, connector) as run:
        for role in ("primary", "standby"):
            await run.connect(role)
        refuse_other_kind(run, "failback")
        reached, progress = run.reached, run.progress
        current, returning, generation = run.direction()
        if reached is None:
            last = run.newest.extra.get("last") or {}
            if generation == 0 or last.get("kind") not in ("planned", "unplanned"):
                raise UsageError(f"nothing to fail back: the {current} is the primary "
                                 f"(generation {generation}) and no failover moved it there")
        for role in (current, returning):
            run.require(role)
        path = Path(progress.get("lost_writes_path") or lost_writes
                    or default_lost_writes_path(policy, generation))
        if reached is None and path.exists():
            raise UsageError(f"{path}: the lost-writes file already exists: move it away or "
                             "pass --lost-writes FILE")
        out = Outcome("failback", current, returning, generation, dry_run=dry_run,
                      resumed_at=reached)
        tables = await run.selected_tables(current)
        returning_fence = await _returning_fence(run, returning, tables, generation)
        current_fence = await steps.fence_plan(run, current, tables, generation + 1) \
            if reached not in PLANNED else FenceRecord.from_json(progress["fence"])
        out.warnings += returning_fence.warnings + current_fence.warnings
        out.plan = [f"fence the returning {returning}: "
                    + (", ".join(returning_fence.describe()) or "nothing to change"),
                    f"write the documents only the {returning} has to {path}",
                    f"reconcile the {returning} from the {current} by delta ({len(tables)} tables)",
                    f"then a planned failover back: fence the {current}, final diff, promote the "
                    f"{returning} (generation {generation + 1}), restore its permissions"]
        out.application = application_change(run, returning)
        if dry_run or not confirm(out.plan):
            return out
        await run.acquire_lease(returning)
        base = {"kind": "failback", "from": current, "to": returning, "generation": generation,
                "reverse": False, "holder": run.holder.id, "lost_writes_path": str(path),
                "started": progress.get("started") or utcnow(),
                "returning_fence": returning_fence.to_json()}
        todo = BEFORE if reached is None else BEFORE[BEFORE.index(reached):] \
            if reached in BEFORE else ()
        for step in todo:
            if step == "fence-returning":
                await run.set_step("fence-returning", **base)
                await apply_fence(run.require(returning).cluster, returning_fence)  # type: ignore[arg-type]
            elif step == "lost-writes":
                await run.set_step("lost-writes")
                found = await find_lost_writes(run.require(returning).cluster,  # type: ignore[arg-type]
                                               run.require(current).cluster, tables, path)
                await run.set_step("reconcile", lost_writes=found.to_json())
            elif step == "reconcile":
                await _reconcile(run, current, returning, tables, returning_fence)
        out.lost_writes = run.progress.get("lost_writes")
        await switch(run, out, source=current, target=returning, generation=generation,
                     record=current_fence, target_record=returning_fence, lift_target=True,
                     reverse=True, kind="failback",
                     reached=reached if reached in PLANNED else None)
        return out


async def _returning_fence(run: FailoverRun, role: str, tables, generation: int) -> FenceRecord:
    """The fence of the returning cluster: recorded by this run, or left by the failover
    that made it the old primary, or a new plan."""
    progress, fenced = run.progress, run.newest.extra.get("fenced") or {}
    if progress.get("returning_fence"):
        return FenceRecord.from_json(progress["returning_fence"])
    if fenced.get("cluster") == role and fenced.get("fence"):
        return FenceRecord.from_json(fenced["fence"])
    cluster = run.require(role).cluster
    from drtool.coordination.fence import plan_fence

    return await plan_fence(cluster, run.policy.failover, tables, generation)  # type: ignore[arg-type]


async def _reconcile(run: FailoverRun, current: str, returning: str, tables,
                     fence: FenceRecord) -> None:
    src, dst = run.require(current).cluster, run.require(returning).cluster
    shape = DiffOptions(shape=target_shape(run.policy.replication, returning))
    results = await reconcile_tables(src, dst, tables, source_role=current,  # type: ignore[arg-type]
                                     target_role=returning, options=ReconcileOptions(diff=shape))
    bad = [f"{r.table}: {'; '.join(r.unresolved)}" for r in results
           if not r.equal_after and not r.still_changing]
    if bad:
        raise FailoverError(f"reconcile of the {returning} left differences ({' | '.join(bad)}); "
                            "fix them and run drtool failback again to resume")
    moved = sum(r.written + r.deleted for r in results)
    run.say(f"  reconciled the {returning}: {moved} documents written or deleted")
    changing = sum(r.remaining for r in results if r.still_changing)
    if changing:  # the application still writes: the switch fences it, then reconciles them
        run.say(f"  {changing} documents are still changing on the {current}: the final diff "
                f"reconciles them once it is fenced")
    kept = frozenset((u, d, t) for u, d, t, _ in fence.writes)
    await sync_users(src, dst, run.policy.failover, tables, keep_fenced=kept,  # type: ignore[arg-type]
                     fence_users=standby_fence_users(run.policy.failover))
