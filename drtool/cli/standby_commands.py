"""Commands of the warm standby: replicate (the long-running runner) and status."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from drtool.cli import render
from drtool.cli.common import JsonOpt, connector, PolicyOpt, policy_from, reports_errors, run
from drtool.coordination.state import HEARTBEAT, LEASES, format_time
from drtool.errors import CheckFailed, ClusterUnreachable, UsageError
from drtool.standby.events import LOGGER, Events, Metrics
from drtool.coordination.users_sync import runner_users_sync
from drtool.standby.runner import Runner
from drtool.changelog.status import status_lines
from drtool.standby.status import StandbyStatus, read_status, repository_status
from drtool.util.tasks import describe_tasks

TEXT_LOG = "%(asctime)s %(levelname)s %(message)s"


@reports_errors
def replicate(
    ctx: typer.Context,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port (/metrics).")] = None,
    log_format: Annotated[str, typer.Option(help="Log lines as text or json (one per event, on stderr).")] = "text",
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Exit 8 when a live runner holds the lease instead of waiting as a hot spare.")] = False,
    policy: PolicyOpt = None,
) -> None:
    """Keep the standby current with the primary until stopped (SIGTERM/SIGINT: apply what
    was read, release the lease, exit 0); takes the scheduled snapshots. While another live
    runner holds the lease, wait as a hot spare and take over when it stops renewing."""
    pol = policy_from(ctx, policy)
    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format: expected text or json, got {log_format!r}")
    metrics: Metrics = Metrics()
    if metrics_port is not None:
        from drtool.standby.metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
    events = Events(log_format, metrics)
    users_sync = runner_users_sync(pol.failover, pol.tables, pol.replication.state_db, pol.name,
                                   protected=tuple(c.user for c in (pol.primary, pol.standby) if c),
                                   events=events)
    runner = Runner(pol, events, users_sync=users_sync,  # UsageError without [standby]
                    connector=connector(ctx), wait=not no_wait)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if log_format == "json" else TEXT_LOG))
    logger = logging.getLogger(LOGGER)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        loop.add_signal_handler(signal.SIGUSR1, lambda: events.emit(
            "tasks", "what the runner is doing:\n  " + "\n  ".join(describe_tasks())))
        try:
            await runner.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.remove_signal_handler(sig)

    try:
        if metrics_port is not None:
            metrics.serve(metrics_port)  # type: ignore[attr-defined]
        run(go())
    finally:
        metrics_close = getattr(metrics, "close", None)
        if metrics_close:
            metrics_close()
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved  # leave the process as it was (tests, embedding)


@reports_errors
def status(ctx: typer.Context, policy: PolicyOpt = None, json: JsonOpt = False) -> None:
    """Replication lag, table states, last repair and snapshot, lease holder, roles; exit 0
    when the standby is healthy (lag within [replication] lag_threshold), 1 when not, 3 when a
    cluster does not answer (what the other one holds is still shown)."""
    pol = policy_from(ctx, policy)
    if pol.standby is None and pol.archive is not None:  # the runner keeps the log alone
        repo = run(repository_status(pol))
        if json:
            render.print_json({"policy": pol.name, "repository": repo})
        else:
            for line in ([f"repository: cannot read: {repo['error']}"] if "error" in repo
                         else status_lines(repo.get("archive", {}))):
                print(line)
        if "error" in repo:
            raise typer.Exit(CheckFailed.exit_code)
        return
    found = run(read_status(pol, connector(ctx)))
    if json:
        render.print_json(found.to_json())
    else:
        _print_status(found)
    if found.unreachable:
        raise typer.Exit(ClusterUnreachable.exit_code)
    if not found.healthy:
        raise typer.Exit(CheckFailed.exit_code)


def _unread(s: StandbyStatus, table: str) -> str:
    return f"cannot read {s.state_db}.{table} on the {s.roles.target} (see the problems)"


def _print_status(s: StandbyStatus) -> None:
    r = s.roles
    print(f"policy {s.policy}: {'healthy' if s.healthy else 'NOT HEALTHY'}")
    print(f"roles: generation {r.generation}, primary is the policy's {r.primary}; replicating "
          f"{r.source} -> {r.target}"
          + (f"; failover step {(r.extra.get('failover') or {}).get('step') or r.step}" if r.step else "")
          + ("" if r.replicate else "; replication off"))
    for role, why in s.unreachable.items():
        print(f"{role}: DOES NOT ANSWER ({why})")
    if s.lag is not None:
        lag = f"{s.lag:.3f} s"
    elif s.heartbeat_age is not None:
        lag = (f"unknown: the {r.source} does not answer; newest heartbeat on the {r.target} "
               f"{format_time(s.heartbeat.time)}, {s.heartbeat_age:.1f} s ago")
    elif r.target in s.unreachable:
        lag = f"unknown: the {r.target} does not answer"
    elif (r.target, HEARTBEAT) in s.unread:
        lag = f"unknown: {_unread(s, HEARTBEAT)}"
    else:
        lag = "unknown (no heartbeat)"
    print(f"lag: {lag} (threshold {s.threshold:g} s)")
    if s.lease is None and (r.target, LEASES) in s.unread:
        print(f"runner: unknown: {_unread(s, LEASES)}")
    elif s.lease is None:
        print("runner: none holds the lease")
    else:
        state = "EXPIRED" if s.lease.expired else "held"
        print(f"runner: {s.lease.describe()} ({state})")
    by_runner: dict[str, list[str]] = {}
    for table, owner in sorted(s.owners.items()):
        by_runner.setdefault(owner, []).append(table)
    notes = {m.holder: m for m in s.members}
    for owner, tables in by_runner.items():
        print(f"shares: runner {owner} replicates {', '.join(tables)}"
              + _member_detail(notes.get(owner)))
    for spare in s.spares:
        print(f"spare: runner {spare.holder} on {spare.host} (pid {spare.pid}) waits to take over")
    if s.runner:
        print(f"runner record: {s.runner.get('state')} (runner {s.runner.get('runner')})")
    snap = (s.runner or {}).get("snapshot")
    if snap:
        what = snap.get("id") or snap.get("message")
        print(f"last scheduled snapshot: {snap.get('result')} at {format_time(snap.get('time'))}: {what}")
    repo = s.repository
    if "error" in repo:
        print(f"repository: cannot read: {repo['error']}")
    elif repo.get("latest"):
        print(f"repository: {repo['snapshots']} snapshots, latest {repo['latest']} at "
              f"{repo['time']} from {repo['source']}")
    else:
        print("repository: no snapshot yet")
    if "archive" in repo:
        for line in status_lines(repo["archive"]):
            print(line)
    repair = s.last_repair
    if repair:
        print(f"last gap repair: {repair['table']} after {repair.get('reason')} at "
              f"{format_time(repair.get('time'))}: {repair.get('differing')} differed, wrote "
              f"{repair.get('written')}, deleted {repair.get('deleted')}")
    if s.tables and s.fenced is not None:  # the write-hook standby fence: shown per table
        render.print_table(None, ["table", "state", "detail", "updated", "fenced"], [
            (str(t.table), t.state, _detail(t), format_time(t.updated),
             "yes" if s.fenced.get(str(t.table)) else "NO") for t in s.tables])
    elif s.tables:
        render.print_table(None, ["table", "state", "detail", "updated"], [
            (str(t.table), t.state, _detail(t), format_time(t.updated)) for t in s.tables])
    for problem in s.problems:
        print(f"problem: {problem}")


def _detail(t) -> str:
    if t.state == "copying" and t.progress:
        return f"{t.progress.get('done')} of ~{t.progress.get('total')} documents"
    return t.message or ""


def _member_detail(member) -> str:
    """`` (on HOST, N of M tables streaming, lag X s)`` from a sharing runner's record."""
    if member is None or not member.note:
        return ""
    note = member.note
    return (f" (on {member.host}, {note.get('streaming')} of {note.get('tables')} tables "
            f"streaming, lag {note.get('lag', 0):.3f} s)")
