"""forget, prune and unlock through the CLI with fake clusters and a local repository: every
remaining snapshot stays restorable (verify --read-data, restore) after forget --prune; locks
held by other processes stop prune; bad input is refused with exit code 2."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from drtool.wiring.open import open_repository
from drtool.config.policy import load_policy
from tests.conftest import load_table, sample_docs, table_texts
from tests.test_cli_repository import _one_line_error


def with_repo(dep, action):
    """Run ``await action(repo)`` on the deployment's repository in a loop of its own."""

    async def go():
        repo = await open_repository(load_policy(dep.path))
        try:
            return await action(repo)
        finally:
            await repo.close()

    return asyncio.run(go())


async def _manifests(repo):
    return [await repo.load_manifest(sid) for sid in await repo.list_snapshots()]


def repo_files(dep) -> dict[str, bytes]:
    return {str(p.relative_to(dep.repo_dir)): p.read_bytes()
            for p in dep.repo_dir.rglob("*") if p.is_file()}


def data_ids(dep, kind: str = "data") -> set[str]:
    return {p.name for p in (dep.repo_dir / kind).rglob("*") if p.is_file()}


def snap(cli, *args: str) -> str:
    result = cli("snapshot", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["id"]


def hold_lock(dep, kind: str, purpose: str, *, age: timedelta = timedelta(0)) -> None:
    """Leave a lock object as another process (alive, or dead ``age`` ago) would."""
    refreshed = datetime.now(UTC) - age
    with_repo(dep, lambda repo: repo.lock(kind, purpose, clock=lambda: refreshed).acquire())


def test_forget_prune_keeps_the_remaining_snapshots_restorable(deployment, cli, primary_server,
                                                                standby_server):
    load_table(primary_server, "app.gone", sample_docs(200, pad=50))
    table = load_table(primary_server, "app.t", sample_docs(600, pad=300))
    ids = [snap(cli, "--table", "app.gone"), snap(cli, "--table", "app.t")]
    primary_server.put_texts(table, [d.replace('"pad": "x', '"pad": "changed x')
                                     for d in sample_docs(40, start=100, pad=300)])
    ids.append(snap(cli, "--table", "app.t"))
    primary_server.delete(table, [f'"k{i:07d}"' for i in range(0, 600, 7)])
    primary_server.put_texts(table, sample_docs(30, start=5000, pad=300))
    ids.append(snap(cli, "--table", "app.t"))

    before = repo_files(deployment)
    dry = cli("forget", "--keep-last", "1", "--prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert repo_files(deployment) == before  # a dry run writes nothing, not even a lock
    planned = json.loads(dry.stdout)

    done = cli("forget", "--keep-last", "1", "--prune", "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert {d["id"] for d in report["removed"]} == {d["id"] for d in planned["removed"]}
    assert report["prune"]["objects_deleted"] == planned["prune"]["objects_deleted"] > 0

    remaining = with_repo(deployment, _manifests)
    latest = remaining[-1]
    assert latest.id == ids[-1] and latest.parent == ids[-2]  # an incremental one ...
    assert [m.id for m in remaining] == [latest.id] == [d["id"] for d in report["kept"]]
    assert report["kept"][-1]["reasons"] == ["last"]  # ... kept alone: it lists every object

    referenced = {ref.id for m in remaining for t in m.tables for ref in t.objects()}
    assert data_ids(deployment) == referenced  # exactly the unreferenced objects went
    indexes = {i for m in remaining for t in m.tables for i, _ in t.index_objects()}
    assert data_ids(deployment, "index") == indexes and indexes
    assert len(set(before) - set(repo_files(deployment))) >= report["prune"]["objects_deleted"]
    assert not (deployment.repo_dir / "locks").exists() or not any((deployment.repo_dir / "locks").iterdir())

    checked = cli("verify", "--read-data")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    restored = cli("restore", "latest", "--to", "standby")
    assert restored.exit_code == 0, restored.stderr
    assert table_texts(standby_server, "app.t") == table_texts(primary_server, "app.t")

    again = cli("prune")
    assert again.exit_code == 0 and "deleted 0 objects" in again.stdout


def test_forget_without_prune_removes_manifests_and_keeps_data(deployment, cli, primary_server):
    load_table(primary_server, "app.a", sample_docs(100, pad=50))
    load_table(primary_server, "app.b", sample_docs(50, pad=50))
    first = snap(cli, "--table", "app.a")
    second = snap(cli, "--table", "app.b")  # builds on nothing: another table
    data = data_ids(deployment)
    result = cli("forget", "--keep-last", "1")
    assert result.exit_code == 0, result.stderr
    assert "1 snapshots kept, removed 1" in result.stdout
    assert first in result.stdout and "remove" in result.stdout
    assert [m.id for m in with_repo(deployment, _manifests)] == [second]
    assert data_ids(deployment) == data  # data waits for prune
    pruned = json.loads(cli("prune", "--json").stdout)
    assert pruned["objects_deleted"] > 0 and data_ids(deployment) < data
    assert cli("verify", "--read-data").exit_code == 0


def test_forget_takes_its_defaults_from_the_policy(deployment, primary_server):
    deployment.path.write_text(deployment.path.read_text() + "[retention]\nkeep_last = 2\n")
    from tests.conftest import Cli

    cli = Cli(deployment.path)
    load_table(primary_server, "app.t", sample_docs(20, pad=10))
    ids = [snap(cli) for _ in range(3)]
    plan = json.loads(cli("forget", "--dry-run", "--json").stdout)
    assert [d["id"] for d in plan["kept"]] == ids[1:] and plan["dry_run"]
    override = json.loads(cli("forget", "--dry-run", "--json", "--keep-last", "3").stdout)
    assert [d["id"] for d in override["kept"]] == ids


def test_prune_refuses_while_a_snapshot_holds_its_lock(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(20, pad=10))
    snap(cli)
    hold_lock(deployment, "shared", "snapshot")
    _one_line_error(cli("prune"), 6, "repository is locked by snapshot on host", "try again later")
    _one_line_error(cli("forget", "--keep-last", "1"), 6, "locked by snapshot")
    kept = cli("unlock")
    assert kept.exit_code == 0 and "0 locks removed, 1 kept" in kept.stdout
    forced = cli("unlock", "--force")
    assert forced.exit_code == 0 and "1 locks removed, 0 kept" in forced.stdout
    assert "warning" in forced.stderr
    assert cli("prune").exit_code == 0


def test_a_stale_lock_is_ignored_and_unlock_removes_it(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(20, pad=10))
    snap(cli)
    hold_lock(deployment, "exclusive", "prune", age=timedelta(hours=1))
    pruned = cli("prune", "--json")
    assert pruned.exit_code == 0, pruned.stderr
    assert json.loads(pruned.stdout)["objects_deleted"] == 0
    removed = cli("unlock", "--json")
    assert removed.exit_code == 0
    assert [x["purpose"] for x in json.loads(removed.stdout)["removed"]] == ["prune"]
    assert not any((deployment.repo_dir / "locks").iterdir())


@pytest.mark.parametrize("args, fragment", [
    (["forget"], "no retention rule given"),
    (["forget", "--keep-last", "0"], "refusing to forget everything"),
    (["forget", "--keep-daily", "-1"], "greater than or equal to 0"),
    (["forget", "--keep-last", "many"], "valid integer"),
    (["prune", "--keep-last", "1"], "--keep-last"),
])
def test_bad_input_is_refused_with_exit_code_2(deployment, cli, primary_server, args, fragment):
    load_table(primary_server, "app.t", sample_docs(5, pad=10))
    snap(cli)
    before = repo_files(deployment)
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert fragment in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert repo_files(deployment) == before


def test_snapshot_refuses_while_prune_holds_the_repository(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(50, pad=10))
    hold_lock(deployment, "exclusive", "prune")
    blocked = cli("snapshot")
    assert blocked.exit_code == 6, blocked.stderr
    assert "locked by prune" in blocked.stderr
    assert cli("snapshots", "--json").stdout.strip() == "[]"
    assert cli("unlock", "--force").exit_code == 0
    assert cli("snapshot").exit_code == 0


def test_stale_prune_lock_does_not_block_snapshots(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(50, pad=10))
    hold_lock(deployment, "exclusive", "prune", age=timedelta(hours=2))
    result = cli("snapshot")
    assert result.exit_code == 0, result.stderr


def test_restore_and_verify_refuse_while_prune_runs(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(20, pad=10))
    assert cli("snapshot").exit_code == 0
    hold_lock(deployment, "exclusive", "prune")
    for args in (("verify",), ("restore", "latest", "--rename", "app.t=copy.t")):
        result = cli(*args)
        assert result.exit_code == 6, (args, result.stderr)
        assert "locked by prune" in result.stderr
    assert "copy" not in primary_server.dbs  # nothing was written


def test_verify_without_lock_runs_beside_prune(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(20, pad=10))
    assert cli("snapshot").exit_code == 0
    hold_lock(deployment, "exclusive", "prune")
    assert cli("verify").exit_code == 6
    result = cli("verify", "--no-lock", "--read-data")
    assert result.exit_code == 0, result.stderr
    assert "0 problems" in result.stdout
