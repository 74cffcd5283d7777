"""Unplanned failover (``drtool failover --unplanned``): the primary is gone; promote the other
cluster at once and say how much may be lost.

Refused while the primary still answers (use ``--planned``), unless ``--force``: then the
primary is fenced first. Steps (recorded in roles on the target; on the source too when it
answers): ``fence`` (only with --force and a reachable source), ``stop-replication`` (the
runner is asked to stop; promotion does not wait for it more than a moment: the new
generation stops it anyway), ``promote``, ``unfence``. The data-loss window is the source's
time of the newest heartbeat on the target: writes the source acknowledged after it may be
missing. ``extra["failback"]`` records what ``drtool failback`` needs (the old primary's
fence record when it was fenced, the window); the old primary's own roles are corrected when
it returns (failback's first step).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drtool.coordination.roles import STOP_REPLICATION
from drtool.coordination.state import format_time
from drtool.errors import FailoverError
from drtool.failover import steps
from drtool.coordination.fence import FenceRecord
from drtool.failover.planned import Confirm, Outcome, application_change, finish, refuse_other_kind, steps_to_run
from drtool.failover.run import PROBE_TIMEOUT, FailoverRun
from drtool.coordination.standby_fence import read_standby_fence
from drtool.model import utcnow
from drtool.cluster import Connector
from drtool.config.policy import Policy

UNPLANNED = ("fence", STOP_REPLICATION, "promote", "unfence")
STOP_WAIT = 1.0


async def unplanned_failover(policy: Policy, *, force: bool = False,
                             confirm: Confirm = lambda plan: True,
                             say: Callable[[str], None] = lambda line: None,
                           connector: Connector | None = None) -> Outcome:
    """Promote the non-primary cluster now; see the module doc."""
    started = time.monotonic()
    async with FailoverRun(policy, say, connector) as run:
        # the cluster to promote must answer; which one it is comes from its roles
        for role in ("standby", "primary"):
            await run.connect(role, timeout=PROBE_TIMEOUT)
        refuse_other_kind(run, "unplanned")
        reached, progress = run.reached, run.progress
        source, target, generation = run.direction()
        run.require(target)
        alive = run.side(source).reachable
        if alive and not force and reached is None:
            raise FailoverError(
                f"the {source} still answers ({run.side(source).cluster.description}): use "  # type: ignore[union-attr]
                "drtool failover --planned, or --force to promote anyway (it is fenced first)")
        out = Outcome("unplanned", source, target, generation, resumed_at=reached)
        record = None
        if alive:
            tables = await run.selected_tables(source)
            record = await steps.fence_plan(run, source, tables, generation + 1)
            out.warnings += record.warnings
        elif progress.get("fence"):
            record = FenceRecord.from_json(progress["fence"])
        out.plan = ([f"fence the {source}: " + ", ".join(record.describe())] if alive and record
                    else [f"the {source} does not answer: it is not fenced (failback fences it)"])
        out.plan += [f"promote the {target} now: generation {generation + 1}",
                     "report the data-loss window from the newest heartbeat"]
        out.application = application_change(run, target)
        if not confirm(out.plan):
            return out
        await run.acquire_lease(target)
        progress = {"kind": "unplanned", "from": source, "to": target, "generation": generation,
                    "reverse": False, "holder": run.holder.id,
                    "started": progress.get("started") or utcnow(),
                    "fence": record.to_json() if record else None}
        for step in steps_to_run(UNPLANNED, reached):
            if step == "fence":
                await run.set_step("fence", **progress)
                if alive and record is not None:
                    await steps.fence(run, source, record)
            elif step == STOP_REPLICATION:
                await run.set_step(STOP_REPLICATION, **progress)
                await steps.stop_replication(run, target, wait=STOP_WAIT)
            elif step == "promote":
                out.loss = await _loss_window(run, source, target)
                await run.set_step("promote", loss=out.loss)
                extra = {k: v for k, v in run.newest.extra.items() if k not in ("failover", "fenced")}
                extra["failover"] = {**run.progress, "step": "unfence"}
                extra["failback"] = {"from": target, "to": source, "generation": generation + 1,
                                     "loss": out.loss, "fenced": bool(alive and record)}
                if record is not None and alive:
                    extra["fenced"] = {"cluster": source, "fence": record.to_json()}
                await steps.promote(run, source, target, generation, replicate=False, extra=extra)
                out.timings["promote_s"] = round(time.monotonic() - started, 3)
            elif step == "unfence":
                standing = await read_standby_fence(run.require(target).store)
                lift = [r for r in (standing, record if alive else None) if r is not None]
                skipped = await steps.unfence(run, target, lift)
                out.warnings += [f"not restored on the {target}: {s}" for s in skipped]
        out.loss = out.loss or run.progress.get("loss")
        await finish(run, "unplanned", source, target, loss=out.loss)
        out.generation = run.newest.generation
        return out


async def _loss_window(run: FailoverRun, source: str, target: str) -> dict:
    """The heartbeat the target last received from the source, and how old it is."""
    store = run.require(target).store
    beat = await store.read_heartbeat()  # type: ignore[union-attr]
    now = await run.require(target).cluster.server_time()  # type: ignore[union-attr]
    if beat is None:
        return {"heartbeat": None, "age_s": None,
                "message": f"no heartbeat ever reached the {target}: anything the {source} "
                           "acknowledged may be missing"}
    age = max(0.0, now - beat.time)
    return {"heartbeat": beat.time, "age_s": round(age, 3),
            "message": f"writes the {source} acknowledged after {format_time(beat.time)} "
                       f"({age:.1f} s before the promotion) may be missing; drtool failback "
                       "lists them when it returns"}
