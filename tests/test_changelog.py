"""The change log on the fake cluster: the runner writes slices and bases, restore --at."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from drtool.wiring.open import connect_role
from drtool.config.policy import load_policy
from drtool.standby.events import Events
from drtool.standby.runner import Runner
from drtool.cluster import fake
from tests.conftest import Cli, PRIMARY_HOST, load_table, sample_docs, table_texts
from tests.replication_helpers import wait_until

DELTA_MS = 1000  # the documented δ: writes acknowledged before T − δ are in a restore to T


def archive_only(dep, tmp_path: Path, slice_every: str = "0.5s") -> Path:
    """The deployment's policy without [standby], with [archive]."""
    text = dep.path.read_text().replace(f'[standby]\nhosts = ["fake-standby:28015"]\n', "")
    text += (f'[archive]\nslice_every = "{slice_every}"\nspool = "{tmp_path / "spool"}"\n'
             '[replication]\nschema_poll = "1s"\n')
    dep.path.write_text(text)
    return dep.path


class LogRunner:
    def __init__(self, path: Path) -> None:
        self.runner = Runner(load_policy(path), Events(), connector=fake.NETWORK)
        self.task: asyncio.Task | None = None

    async def __aenter__(self):
        self.task = asyncio.create_task(self.runner.run())
        return self

    def tables(self):
        archive = self.runner.archive.archive
        return {} if archive is None else archive.archivers

    async def logging(self, n: int) -> None:
        def ready():
            if self.task.done():
                self.task.result()
            arch = self.tables()
            return len(arch) >= n and all(a.state.base and a.state.sealed_until
                                          for a in arch.values())
        await wait_until(ready, f"{n} tables with a base and a sealed slice")

    async def uploaded_past(self, ms: int) -> None:
        def done():
            archive = self.runner.archive.archive
            return archive.uploaded_until and all(v > ms for v in archive.uploaded_until.values())
        await wait_until(done, "slices uploaded past the mark")

    async def __aexit__(self, *exc) -> None:
        self.runner.stop()
        await asyncio.wait_for(self.task, 30)


def iso(ms: int) -> str:
    from drtool.changelog.timeline import iso_ms
    return iso_ms(ms)


def test_delete_by_mistake_restored_by_restore_at_and_delta(deployment, primary_server, tmp_path):
    path = archive_only(deployment, tmp_path)
    load_table(primary_server, "app.items", sample_docs(300))
    marks = {}

    async def scenario():
        async with LogRunner(path) as bg:
            await bg.logging(1)
            async with await connect_role(load_policy(path), "primary", fake.NETWORK) as c:
                from drtool.model import TableName
                t = TableName.parse("app.items")
                await c.insert_texts(t, sample_docs(50, start=300), conflict="replace")
                await c.delete_keys(t, ['"k0000005"'])
                await asyncio.sleep(1.2)
                marks["before"] = int(primary_server.now() * 1000)
                marks["texts"] = primary_server.texts(t)
                await asyncio.sleep(1.2)
                keys = [json.dumps(json.loads(d)["id"]) for d in primary_server.texts(t)]
                await c.delete_keys(t, keys)  # the mistake
                await asyncio.sleep(1.2)
                marks["after"] = int(primary_server.now() * 1000)
                await bg.uploaded_past(marks["after"])

    asyncio.run(scenario())
    assert table_texts(primary_server, "app.items") == []
    cli = Cli(path)
    shown = cli("timeline", "--json")
    assert shown.exit_code == 0, shown.stderr
    spans = json.loads(shown.stdout)["tables"][0]["restorable"]
    assert spans and spans[0]["from_ms"] <= marks["before"] <= spans[-1]["to_ms"]

    status = cli("status", "--json")
    assert status.exit_code == 0, status.stderr
    logged = json.loads(status.stdout)["repository"]["archive"]["tables"]["app.items"]
    assert logged["restorable"] and logged["lag"] is not None and logged["breaks"] == {}
    blast = cli("diff", "--against", iso(marks["before"]), "--table", "app.items", "--json",
                "-q")
    assert blast.exit_code == 1, blast.stderr  # the blast radius, nothing written
    found = json.loads(blast.stdout)["tables"][0]
    assert (found["extra_count"], found["missing_count"], found["changed_count"]) == (349, 0, 0)
    assert found["target"].startswith("state at ")
    assert table_texts(primary_server, "app.items") == []
    got = cli("restore", "--at", iso(marks["before"]), "--rename", "app.items=app.back", "-q")
    assert got.exit_code == 0, got.stderr
    assert table_texts(primary_server, "app.back") == marks["texts"]
    assert len(marks["texts"]) == 349

    dry = cli("restore", "--at", iso(marks["before"]), "--delta", "--dry-run", "--json", "-q")
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["tables"][0]["written_count"] == 349
    assert table_texts(primary_server, "app.items") == []
    got = cli("restore", "--at", iso(marks["before"]), "--delta", "-q")
    assert got.exit_code == 0, got.stderr
    assert table_texts(primary_server, "app.items") == marks["texts"]
    same = cli("diff", "--against", iso(marks["before"]), "--table", "app.items", "--json", "-q")
    assert same.exit_code == 0 and json.loads(same.stdout)["equal"], same.stdout + same.stderr

    # after the deletion: the table was empty
    got = cli("restore", "--at", iso(marks["after"]), "--rename", "app.items=app.empty", "-q")
    assert got.exit_code == 0, got.stderr
    assert table_texts(primary_server, "app.empty") == []


def test_time_outside_the_log_is_one_line_exit_2_nothing_written(deployment, primary_server,
                                                                  tmp_path):
    path = archive_only(deployment, tmp_path)
    load_table(primary_server, "app.items", sample_docs(20))
    marks = {}

    async def scenario():
        async with LogRunner(path) as bg:
            await bg.logging(1)
            marks["now"] = int(primary_server.now() * 1000)
            await bg.uploaded_past(marks["now"] + 500)

    asyncio.run(scenario())
    cli = Cli(path)
    for at in ("2020-01-01T00:00:00Z", iso(int(time.time() * 1000) + 3_600_000)):
        got = cli("restore", "--at", at, "--rename", "app.items=app.x", "-q")
        assert got.exit_code == 2, got.stderr
        assert got.stderr.strip().count("\n") == 0, got.stderr
        assert "cannot be restored to" in got.stderr and "nearest restorable times" in got.stderr
        assert "app.x" not in [str(t) for t in primary_server.dbs.get("app", {})] or \
            table_texts(primary_server, "app.x") == []
    assert "x" not in primary_server.dbs["app"]
    only_bases = cli("restore", "latest", "--rename", "app.items=app.y", "-q")
    assert only_bases.exit_code == 2 and "besides the change log's bases" in only_bases.stderr
    assert cli("snapshot", "-q").exit_code == 0
    latest = cli("restore", "latest", "--rename", "app.items=app.y", "-q")
    assert latest.exit_code == 0, latest.stderr  # the scheduled/manual snapshot, not a base


def test_at_parsing_bad_input():
    from drtool.changelog.restore_at import parse_at
    from drtool.errors import UsageError
    import pytest

    assert parse_at("2026-12-04T10:15:29Z") == parse_at("2026-12-04T11:15:29+01:00")
    assert parse_at("-15m", now=1000.0) == 100_000
    for bad in ("2026-12-04T10:15:29", "yesterday", "-15x"):
        with pytest.raises(UsageError):
            parse_at(bad)


def _log_with_slices(deployment, primary_server, tmp_path) -> tuple[Path, dict]:
    path = archive_only(deployment, tmp_path)
    load_table(primary_server, "app.items", sample_docs(30))
    marks = {}

    async def scenario():
        async with LogRunner(path) as bg:
            await bg.logging(1)
            from drtool.model import TableName
            for i in range(4):
                primary_server.put_texts(TableName.parse("app.items"),
                                         sample_docs(5, start=100 + 5 * i))
                await asyncio.sleep(0.6)
            marks["end"] = int(primary_server.now() * 1000)
            await bg.uploaded_past(marks["end"])

    asyncio.run(scenario())
    return path, marks


def test_verify_names_a_missing_and_a_damaged_slice_and_restore_refuses(
        deployment, primary_server, tmp_path):
    path, marks = _log_with_slices(deployment, primary_server, tmp_path)
    cli = Cli(path)
    ok = cli("verify", "--read-data", "-q")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    slices = sorted((deployment.repo_dir / "log").glob("*/*/s-*"))
    assert len(slices) >= 4
    missing, damaged = slices[1], slices[2]
    missing.unlink()
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 1
    damaged.write_bytes(bytes(data))
    got = cli("verify", "--read-data", "-q")
    assert got.exit_code == 1
    assert f"object log/{missing.relative_to(deployment.repo_dir / 'log')}" in got.stdout
    assert "slice missing" in got.stdout
    assert f"slice log/{damaged.relative_to(deployment.repo_dir / 'log')} failed " \
           "authentication" in got.stdout
    refused = cli("restore", "--at", iso(marks["end"]), "--rename", "app.items=app.r", "-q")
    assert refused.exit_code == 6, refused.stderr  # a repository problem
    assert refused.stderr.strip().count("\n") == 0
    assert f"slice log/{missing.relative_to(deployment.repo_dir / 'log')} is missing" \
        in refused.stderr
    assert "r" not in primary_server.dbs["app"]
    base = next((deployment.repo_dir / "log").glob("*/*/b-*")).name[2:]
    (deployment.repo_dir / "snapshots" / base).unlink()  # a base forgotten by hand
    gone = cli("verify", "-q")
    assert gone.exit_code == 1 and f"base snapshot {base} is missing" in gone.stdout


def test_forget_keep_log_keeps_the_window_and_its_bases(deployment, primary_server, tmp_path):
    path = archive_only(deployment, tmp_path)
    load_table(primary_server, "app.items", sample_docs(30))
    from drtool.model import TableName
    t = TableName.parse("app.items")
    marks = {}

    async def run_once(key: str, start: int):
        async with LogRunner(path) as bg:
            await bg.logging(1)
            primary_server.put_texts(t, sample_docs(3, start=start))
            await asyncio.sleep(0.6)
            marks[key] = int(primary_server.now() * 1000)
            marks[key + "-texts"] = primary_server.texts(t)
            await bg.uploaded_past(marks[key])

    asyncio.run(run_once("old", 100))
    time.sleep(3.5)
    asyncio.run(run_once("new", 200))
    cli = Cli(path)
    assert cli("snapshot", "-q").exit_code == 0  # the newest snapshot: keep-last 1 keeps it
    got = cli("forget", "--keep-last", "1", "--keep-log", "3s", "--json")
    assert got.exit_code == 0, got.stderr
    report = json.loads(got.stdout)
    kept_for_log = [d for d in report["kept"] if any("change log" in r for r in d["reasons"])]
    assert len(kept_for_log) == 1 and len(report["removed"]) == 1
    # the log's bases do not count towards keep-last: the manual snapshot is the one kept
    assert [d["reasons"] for d in report["kept"] if d not in kept_for_log] == [["last"]]
    assert report["log_deleted"] >= 2  # the old timeline's slices and its base marker
    ok = cli("restore", "--at", iso(marks["new"]), "--rename", "app.items=app.n", "-q")
    assert ok.exit_code == 0, ok.stderr
    assert table_texts(primary_server, "app.n") == marks["new-texts"]
    old = cli("restore", "--at", iso(marks["old"]), "--rename", "app.items=app.o", "-q")
    assert old.exit_code == 2 and "nearest restorable times" in old.stderr
    assert cli("verify", "-q").exit_code == 0


def test_the_log_goes_on_while_the_standby_is_down(deployment, primary_server, standby_server,
                                                   tmp_path):
    text = deployment.path.read_text() + (
        f'[archive]\nslice_every = "0.5s"\nspool = "{tmp_path / "spool"}"\n'
        '[replication]\nschema_poll = "1s"\nlease_ttl = "5s"\n')
    deployment.path.write_text(text)
    load_table(primary_server, "app.items", sample_docs(30))
    from drtool.model import TableName
    t = TableName.parse("app.items")
    marks = {}

    async def scenario():
        async with LogRunner(deployment.path) as bg:
            await bg.logging(1)
            standby_server.down = True
            primary_server.put_texts(t, sample_docs(5, start=500))
            # δ later: a change is stamped when the archiver reads it, a moment after the write
            marks["end"] = int(primary_server.now() * 1000) + DELTA_MS
            await bg.uploaded_past(marks["end"])
            assert bg.tables()[t].state.breaks == {}
            standby_server.down = False

    asyncio.run(scenario())
    got = Cli(deployment.path)("restore", "--at", iso(marks["end"]), "--rename",
                               "app.items=app.copy", "-q")
    assert got.exit_code == 0, got.stderr
    assert table_texts(primary_server, "app.copy") == table_texts(primary_server, "app.items")
