"""Commands that work on the repository only: keygen, init, snapshots, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drtool.cli import render
from drtool.cli.common import JsonOpt, PolicyOpt, QuietOpt, policy_from, quiet, reports_errors, run
from drtool.snapshots import catalog
from drtool.repo import identity as keys
from drtool.wiring.open import open_repository
from drtool.changelog.verify_log import verify_log
from drtool.snapshots.verify import Problem
from drtool.snapshots.verify import verify as verify_snapshots
from drtool.errors import CheckFailed
from drtool.util.units import format_bytes


@reports_errors
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Identity file to create (mode 0600).")],
    policy: PolicyOpt = None,
) -> None:
    """Create an identity (private key) and print its public recipient string."""
    recipient = keys.keygen(out)
    render.info(f"wrote identity {out} (mode 0600); keep it secret and keep a copy offline.")
    render.info("Public key (put it in encryption.recipients of the policy):")
    print(recipient)


@reports_errors
def init(ctx: typer.Context, policy: PolicyOpt = None, json: JsonOpt = False) -> None:
    """Create the repository named by the policy (refuses an existing one)."""
    pol = policy_from(ctx, policy)

    notes: list[str] = []

    async def go():
        async with await open_repository(pol, create=True, notes=notes) as repo:
            return repo

    repo = run(go())
    if json:
        render.print_json({"repository": repo.id, "location": repo.storage.location,
                           "notes": notes})
    else:
        print(f"created repository {repo.id} at {repo.storage.location}")
        for note in notes:
            render.info(f"note: {note}")


@reports_errors
def snapshots(ctx: typer.Context, policy: PolicyOpt = None, json: JsonOpt = False) -> None:
    """List the snapshots in the repository."""
    pol = policy_from(ctx, policy)

    async def go():
        async with await open_repository(pol) as repo:
            return await catalog.list_snapshots(repo)

    summaries = run(go())
    if json:
        render.print_json([s.to_json() for s in summaries])
        return
    if not summaries:
        render.info("no snapshots yet (run drtool snapshot)")
        return
    policies = {s.policy for s in summaries}
    one_policy = len(policies) == 1  # then named once in the title, not on every row
    columns = ["id", "time (UTC)"] + ([] if one_policy else ["policy"]) + [
        "tables", "documents", "stored", "new"]
    render.print_table(f"snapshots of policy {summaries[0].policy}" if one_policy else None, columns, [
        (s.id, s.time[:19].replace("T", " ")) + (() if one_policy else (s.policy,)) + (
            len(s.tables), s.documents, format_bytes(s.bytes_stored), format_bytes(s.bytes_new))
        for s in summaries
    ])
    for s in summaries:
        if s.imported:
            render.info(f"{s.id}: imported from {s.imported['archive']} (rethinkdb dump of "
                        f"{s.imported['time'][:19].replace('T', ' ')} UTC)")


@reports_errors
def verify(
    ctx: typer.Context,
    snapshot: Annotated[str | None, typer.Argument(help="Snapshot id, prefix or 'latest' (default: all).")] = None,
    read_data: Annotated[bool, typer.Option("--read-data", help="Decrypt and check every object.")] = False,
    no_lock: Annotated[bool, typer.Option("--no-lock", help="Take no repository lock (for a read-only repository; a prune running meanwhile shows as missing objects).")] = False,
    policy: PolicyOpt = None,
    json: JsonOpt = False,
    quiet_: QuietOpt = False,
) -> None:
    """Check that every object of the snapshots exists (and, with --read-data, is intact)."""
    pol = policy_from(ctx, policy)

    async def go():
        async with await open_repository(pol) as repo:
            with render.RichProgress(quiet(ctx, quiet_)) as progress:
                report = await verify_snapshots(repo, snapshot, read_data=read_data,
                                                progress=progress, lock=not no_lock)
                if snapshot is None:  # the whole repository: the change log too
                    objects, found = await verify_log(repo, read_data=read_data)
                    report.objects += objects
                    report.problems += [Problem("", t, o, m) for t, o, m in found]
                return report

    report = run(go())
    if json:
        render.print_json({
            "snapshots": report.snapshots, "objects": report.objects, "read_data": read_data,
            "bytes_read": report.bytes_read,
            "problems": [p.__dict__ for p in report.problems],
        })
    else:
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        what = "read and checked" if read_data else "present with the expected size"
        print(f"{report.snapshots} snapshots, {report.objects} objects {what}: "
              f"{len(report.problems)} problems")
    if report.problems:
        raise typer.Exit(CheckFailed.exit_code)
