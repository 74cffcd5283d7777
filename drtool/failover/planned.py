"""Planned failover (``drtool failover --planned``): move the application's writes to the other
cluster with no acknowledged write lost.

Steps (recorded in roles, see drtool.failover.run; a killed run resumes at its step):

1. check (nothing written): both clusters answer, a runner streams into the target with lag
   within ``max_lag``; the plan is printed; ``--dry-run`` stops here; confirmation.
2. ``fence``: the fence record (previous permissions / hooks) is stored, then applied on the
   source: the application can no longer write there.
3. ``drain``: a heartbeat written after the fence is visible on the target.
4. ``stop-replication``: the runner is asked to stop (STATE-DB.md) and its lease released.
5. ``final-diff``: users and permissions copied; every selected table compared, the ones that
   differ reconciled (the source is fenced, nothing changes under the diff).
6. ``promote``: generation + 1 with the target as primary, on the target then the source
   (``replicate`` true with ``--reverse``: the waiting runner starts again the other way).
7. ``unfence``: the recorded write permissions (and hooks) restored on the new primary.
Then the step is cleared and ``extra["last"]`` records the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drtool.coordination.roles import STOP_REPLICATION, Roles
from drtool.errors import FailoverError
from drtool.failover import steps
from drtool.coordination.fence import FenceRecord
from drtool.failover.run import FailoverRun
from drtool.model import utcnow
from drtool.cluster import Connector
from drtool.config.policy import Policy

PLANNED = ("fence", "drain", STOP_REPLICATION, "final-diff", "promote", "unfence")
Confirm = Callable[[list[str]], bool]


@dataclass
class Outcome:
    """What a failover or failback did (or would do, in a dry run)."""

    kind: str
    source: str
    target: str
    generation: int  # the new generation (the current one for a dry run)
    dry_run: bool = False
    resumed_at: str | None = None
    plan: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    application: str = ""
    repaired: int = 0
    timings: dict = field(default_factory=dict)
    loss: dict | None = None  # unplanned: the data-loss window
    lost_writes: dict | None = None  # failback: the lost-writes file

    def to_json(self) -> dict:
        return dict(self.__dict__)


def steps_to_run(all_steps: tuple[str, ...], reached: str | None) -> tuple[str, ...]:
    """The steps left when resuming at ``reached`` (all of them for a new run)."""
    return all_steps[all_steps.index(reached):] if reached in all_steps else all_steps


def application_change(run: FailoverRun, target: str) -> str:
    section = run.policy.primary if target == "primary" else run.policy.standby
    return (f"point the application at the {target}: {', '.join(section.hosts)}"  # type: ignore[union-attr]
            f" (users: {', '.join(run.policy.failover.app_users) or 'none named'})")


def refuse_other_kind(run: FailoverRun, kind: str) -> None:
    """A different kind of run stopped half-way: it must be finished first."""
    reached, recorded = run.reached, run.progress.get("kind")
    if reached is not None and recorded is None:
        raise FailoverError(f"the roles record step {reached} (generation "
                            f"{run.newest.generation}) but not the run that set it: see drtool "
                            "status; nothing was changed")
    if reached is not None and recorded != kind:
        command = {"planned": "drtool failover --planned", "unplanned": "drtool failover "
                   "--unplanned", "failback": "drtool failback"}.get(recorded, recorded)
        raise FailoverError(f"a {recorded} run stopped at step {reached} (generation "
                            f"{run.newest.generation}): run {command} again to finish it first")


async def switch(run: FailoverRun, out: Outcome, *, source: str, target: str, generation: int,
                 record: FenceRecord, target_record: FenceRecord, reverse: bool, kind: str,
                 reached: str | None, lift_target: bool = False) -> None:
    """Steps 2-7 from ``reached`` (shared by failback for its final switch). The target is
    fenced too (first: the runner normally keeps it so) until it is promoted, so that no
    application write lands on it before the final diff. At the end the source's record is
    lifted on it; with ``lift_target`` (failback: the target's record holds its own values
    from before it was first fenced) the target's record too, last."""
    progress = {"kind": kind, "from": source, "to": target, "generation": generation,
                "reverse": reverse, "fence": record.to_json(), "holder": run.holder.id,
                "started": run.progress.get("started") or utcnow(),
                "target_fence": target_record.to_json()}
    tables = await run.selected_tables(source)
    fenced_at = run.progress.get("fenced_at")
    started = time.monotonic()
    for step in steps_to_run(PLANNED, reached):
        if step == "fence":
            await run.set_step("fence", **progress)
            await steps.fence(run, target, target_record)
            fenced_at = await steps.fence(run, source, record)
            started = time.monotonic()
        elif step == "drain":
            await run.set_step("drain", fenced_at=fenced_at)
            await steps.drain(run, source, target, fenced_at or 0.0)
        elif step == STOP_REPLICATION:
            await run.set_step(STOP_REPLICATION)
            wait = run.policy.replication.lease_ttl + 5
            if not await steps.stop_replication(run, target, wait=wait):
                raise FailoverError(
                    f"the runner still holds its lease {wait:g} s after it was asked to stop: "
                    "stop drtool replicate, then run the same failover again to resume")
        elif step == "final-diff":
            await run.set_step("final-diff")
            out.warnings += await steps.copy_users(run, source, target, tables, [target_record])
            out.repaired = await steps.final_diff(run, source, target, tables)
        elif step == "promote":
            await run.set_step("promote")
            extra = {k: v for k, v in run.newest.extra.items() if k not in ("failover", "fenced")}
            extra["failover"] = {**run.progress, "step": "unfence"}
            extra["fenced"] = {"cluster": source, "fence": record.to_json()}
            await steps.promote(run, source, target, generation, replicate=reverse, extra=extra)
        elif step == "unfence":
            lift = [record, target_record] if lift_target else [record]
            skipped = await steps.unfence(run, target, lift)
            out.warnings += [f"not restored on the {target}: {s}" for s in skipped]
            out.timings["fence_to_writable_s"] = round(time.monotonic() - started, 3)
            out.timings["steps_started_s"] = dict(run.step_started)
    await finish(run, kind, source, target)
    out.generation = run.newest.generation


async def finish(run: FailoverRun, kind: str, source: str, target: str, **last) -> None:
    """Clear the step; ``extra["last"]`` says what the finished run did."""
    extra = {k: v for k, v in run.newest.extra.items() if k != "failover"}
    extra["last"] = {"kind": kind, "from": source, "to": target,
                     "generation": run.newest.generation, "finished": utcnow(), **last}
    roles = Roles(run.newest.generation, run.newest.primary, None, run.newest.replicate,
                  extra=extra)
    await run.record(roles)


async def planned_failover(policy: Policy, *, reverse: bool = False, dry_run: bool = False,
                           confirm: Confirm = lambda plan: True,
                           say: Callable[[str], None] = lambda line: None,
                           connector: Connector | None = None) -> Outcome:
    """Run (or resume) a planned failover; see the module doc. Raises FailoverError (exit 7)
    when a check fails, ClusterUnreachable when a cluster does not answer."""
    async with FailoverRun(policy, say, connector) as run:
        for role in ("primary", "standby"):
            run.require((await run.connect(role)).role)
        refuse_other_kind(run, "planned")
        reached = run.reached
        source, target, generation = run.direction()
        if reached is not None:
            reverse = bool(run.progress["reverse"])
        out = Outcome("planned", source, target, generation, dry_run=dry_run, resumed_at=reached)
        tables = await run.selected_tables(source)
        if reached is None:
            lag = await steps.check_runner(run, source, target)
            out.plan.append(f"check: the runner streams into the {target}, {lag:.1f} s behind")
        record = await steps.fence_plan(run, source, tables, generation + 1)
        target_record = await steps.fence_plan(run, target, tables, generation + 1,
                                               key="target_fence")
        out.warnings += record.warnings
        out.plan += _plan_lines(source, target, tables, record, generation, reverse, reached)
        out.application = application_change(run, target)
        if dry_run or not confirm(out.plan):
            return out
        await run.acquire_lease(target)
        await switch(run, out, source=source, target=target, generation=generation,
                     record=record, target_record=target_record, reverse=reverse,
                     kind="planned", reached=reached)
        return out


def _plan_lines(source: str, target: str, tables, record: FenceRecord, generation: int,
                reverse: bool, reached: str | None) -> list[str]:
    lines = [f"resume the planned failover stopped at step {reached}"] if reached else []
    lines += [f"fence the {target} until it is promoted, then the {source}: "
              + (", ".join(record.describe()) or "nothing to change"),
              f"drain: wait until a heartbeat written after the fence is on the {target}",
              "stop replication (the runner releases its lease)",
              f"final diff of {len(tables)} tables: {', '.join(map(str, tables))} "
              "(reconciled if they differ); users and permissions copied",
              f"promote the {target}: generation {generation + 1} on both clusters",
              f"unfence the application users on the {target}"]
    if reverse:
        lines.append(f"reverse: the runner then replicates the {target} into the {source}")
    return lines
