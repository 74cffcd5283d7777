"""Commands that move the application's writes: failover, failback, reapply."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from drtool.cli import render
from drtool.cli.common import JsonOpt, connector, PolicyOpt, policy_from, reports_errors, run
from drtool.wiring.open import connect_role
from drtool.errors import CheckFailed, ClusterUnreachable, UsageError
from drtool.failover.failback import failback as run_failback
from drtool.coordination.guard import check_write, current_roles
from drtool.failover.lost_writes import reapply_lost_writes
from drtool.failover.planned import Outcome, planned_failover
from drtool.failover.unplanned import unplanned_failover

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and print the plan; change nothing.")]


def _confirm(yes: bool, as_json: bool):
    def confirm(plan: list[str]) -> bool:
        if not as_json:
            for n, line in enumerate(plan, 1):
                print(f"{n}. {line}")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("confirmation needed and stdin is not a terminal: pass --yes")
        answer = input("Proceed? type yes: ").strip().lower()
        if answer != "yes":
            raise CheckFailed("not confirmed: nothing was changed")
        return True

    return confirm


def _say(as_json: bool):
    return (lambda line: None) if as_json else (lambda line: render.info(line))


def _report(out: Outcome, as_json: bool) -> None:
    if as_json:
        render.print_json(out.to_json())
        return
    if out.dry_run:
        for n, line in enumerate(out.plan, 1):
            print(f"{n}. {line}")
    for warning in out.warnings:
        print(f"warning: {warning}")
    if out.dry_run:
        print(f"dry run: nothing changed; afterwards the application must {out.application}")
        return
    if out.loss:
        print(f"data-loss window: {out.loss['message']}")
    if out.lost_writes:
        lw = out.lost_writes
        where = lw.get("file") or "no file (nothing was lost)"
        print(f"lost writes: {lw.get('count', 0)} documents only the old primary had: {where}"
              + (f"; re-apply with: drtool reapply {lw['file']}" if lw.get("file") else ""))
    if out.repaired:
        print(f"final diff repaired {out.repaired} documents")
    timing = ", ".join(f"{k} {v}" for k, v in out.timings.items())
    print(f"{out.kind} done: the {out.target} is the primary (generation {out.generation})"
          + (f"; {timing}" if timing else ""))
    print(f"now {out.application}")


@reports_errors
def failover(
    ctx: typer.Context,
    planned: Annotated[bool, typer.Option("--planned", help="Both clusters up: fence, drain, promote; nothing lost.")] = False,
    unplanned: Annotated[bool, typer.Option("--unplanned", help="The primary is gone: promote the standby now.")] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reverse: Annotated[bool, typer.Option("--reverse", help="Then replicate the new primary into the old one (--planned).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Promote even though the primary answers; it is fenced first (--unplanned).")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Move the application's writes to the other cluster (see README, "Failover runbook")."""
    if planned == unplanned:
        raise UsageError("choose one of --planned (both clusters up) or --unplanned (the primary is gone)")
    if planned and force:
        raise UsageError("--force is for --unplanned (promoting while the primary answers)")
    if unplanned and (reverse or dry_run):
        raise UsageError(f"{'--reverse' if reverse else '--dry-run'} is for --planned only")
    pol = policy_from(ctx, policy)
    if planned:
        out = run(planned_failover(pol, reverse=reverse, dry_run=dry_run,
                                   confirm=_confirm(yes, json), say=_say(json),
                                   connector=connector(ctx)))
    else:
        out = run(unplanned_failover(pol, force=force, confirm=_confirm(yes, json),
                                     say=_say(json), connector=connector(ctx)))
    _report(out, json)


@reports_errors
def failback(
    ctx: typer.Context,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    lost_writes: Annotated[Path | None, typer.Option("--lost-writes", help="Where to write the documents only the returning cluster has (default drtool-lost-writes-POLICY-generation-N.jsonl).")] = None,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Move the writes back to the cluster that was primary before the last failover."""
    pol = policy_from(ctx, policy)
    out = run(run_failback(pol, lost_writes=lost_writes, dry_run=dry_run,
                           confirm=_confirm(yes, json), say=_say(json),
                           connector=connector(ctx)))
    _report(out, json)


@reports_errors
def reapply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A lost-writes file written by drtool failback.")],
    conflict: Annotated[str, typer.Option(help="error: write only documents the primary lacks; replace: overwrite; skip: keep the primary's.")] = "error",
    dry_run: DryRunOpt = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write the documents of a lost-writes file into the current primary."""
    if conflict not in ("error", "replace", "skip"):
        raise UsageError(f"--conflict: expected error, replace or skip, got {conflict!r}")
    if not file.is_file():
        raise UsageError(f"{file}: no such lost-writes file")
    pol = policy_from(ctx, policy)

    async def go():
        clusters = {}
        try:
            for role in ("primary", "standby") if pol.standby else ("primary",):
                try:  # the roles decide which one is written; one of them may be down
                    clusters[role] = await connect_role(pol, role, connector(ctx))
                except ClusterUnreachable as err:
                    clusters[role] = err
            reachable = [c for c in clusters.values() if not isinstance(c, Exception)]
            if not reachable:
                raise next(iter(clusters.values()))
            roles = await current_roles(pol, *reachable)
            target = clusters.get(roles.primary)
            if isinstance(target, Exception):
                raise target
            await check_write(pol, roles.primary, target, must_be_primary=True, what="reapply")
            return roles.primary, await reapply_lost_writes(target, file, conflict=conflict,  # type: ignore[arg-type]
                                                            dry_run=dry_run)
        finally:
            for c in clusters.values():
                if not isinstance(c, Exception):
                    await c.close()

    role, results = run(go())
    conflicts = sum(r.errors for r in results.values())
    if json:
        render.print_json({"into": role, "dry_run": dry_run, "tables": {
            t: {"inserted": r.inserted, "replaced": r.replaced, "unchanged": r.unchanged,
                "errors": r.errors, "first_error": r.first_error} for t, r in results.items()}})
    else:
        for table, r in results.items():
            verb = "would write" if dry_run else "wrote"
            print(f"{table}: {verb} {r.inserted + r.replaced} documents into the {role}"
                  + (f", {r.errors} refused ({r.first_error})" if r.errors else ""))
    if conflicts and conflict == "error":
        render.error(f"{conflicts} documents already exist on the {role} with other content: "
                     "compare them, then run again with --conflict replace or skip")
        raise typer.Exit(7)
