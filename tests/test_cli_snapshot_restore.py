"""snapshot -> snapshots -> verify --read-data -> restore, through the CLI, fake clusters and a
real local repository; plus every bad input of the snapshot/restore issue."""

from __future__ import annotations

import json


from drtool.reql.digest import fold
from drtool.model import IndexDef, TableName
from drtool.cluster.fake import FakeServer
from tests.conftest import (
    Cli,
    latest_manifest,
    load_table,
    on_cluster,
    sample_docs,
    table_texts,
    write_policy,
    writer_only_deployment,
)


INDEX_BLOB = FakeServer.index_blob('function(var1) { return var1("n"); }')
HOOK_BLOB = FakeServer.hook_blob()


def _seed(server, n: int = 3000, pad: int = 400) -> TableName:
    table = load_table(server, "app.users", sample_docs(n, pad=pad))

    async def schema(cluster):
        await cluster.create_index(table, IndexDef("by_n", INDEX_BLOB))
        await cluster.set_write_hook(table, HOOK_BLOB)

    on_cluster(server, schema)
    return table


def test_snapshot_verify_restore_roundtrip(deployment, cli, primary_server, standby_server):
    _seed(primary_server, pad=2000)  # > 4 MiB: at least two segments
    load_table(primary_server, "app.empty", [])
    load_table(primary_server, "billing.invoices", sample_docs(50, pad=10))

    snap = cli("snapshot", "--json")
    assert snap.exit_code == 0, snap.stderr
    info = json.loads(snap.stdout)
    assert info["documents"] == 3050
    tables = {t["table"]: t for t in info["tables"]}
    assert set(tables) == {"app.users", "app.empty", "billing.invoices"}
    assert tables["app.users"]["segments"] > 1  # several content-defined segments

    listing = json.loads(cli("snapshots", "--json").stdout)
    assert [s["id"] for s in listing] == [info["id"]]
    assert listing[0]["documents"] == 3050 and listing[0]["policy"] == "test"
    assert listing[0]["bytes_new"] == listing[0]["bytes_stored"] > 0

    checked = cli("verify", "--read-data")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    assert "0 problems" in checked.stdout

    restored = cli("restore", "latest", "--to", "standby", "--json")
    assert restored.exit_code == 0, restored.stderr
    report = {t["target"]: t for t in json.loads(restored.stdout)["tables"]}
    assert all(t["digest_ok"] and t["created"] for t in report.values())
    assert report["app.users"]["indexes_created"] == ["by_n"]

    for name in ("app.users", "app.empty", "billing.invoices"):
        assert table_texts(standby_server, name) == table_texts(primary_server, name)
    users = TableName("app", "users")
    meta = on_cluster(standby_server, lambda c: c.table_meta(users))
    assert [i.name for i in meta.indexes] == ["by_n"]
    assert meta.indexes[0].blob == INDEX_BLOB
    assert meta.write_hook == HOOK_BLOB
    assert on_cluster(standby_server, lambda c: c.range_digest(users)) == fold(
        table_texts(primary_server, "app.users"))


def test_second_snapshot_of_unchanged_table_uploads_nothing(deployment, cli, primary_server):
    _seed(primary_server, 2000)
    first = json.loads(cli("snapshot", "--json").stdout)
    second = json.loads(cli("snapshot", "--json").stdout)
    assert first["bytes_new"] > 0
    assert second["bytes_new"] == 0
    assert second["tables"][0]["digest"] == first["tables"][0]["digest"]


def test_snapshot_selected_table_and_unknown_table(deployment, cli, primary_server):
    _seed(primary_server, 10)
    load_table(primary_server, "app.other", sample_docs(5))
    only = json.loads(cli("snapshot", "--table", "app.other", "--json").stdout)
    assert [t["table"] for t in only["tables"]] == ["app.other"]

    missing = cli("snapshot", "--table", "app.nope")
    assert missing.exit_code == 2
    assert "table app.nope does not exist on primary" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout


def test_write_during_scan_is_in_the_snapshot(deployment, cli, primary_server, standby_server):
    table = load_table(primary_server, "app.live", sample_docs(4000))
    seen, done = [], []

    def write_behind_the_scan(scanned_table, key) -> None:
        # Once the scan is well past the start, change documents it has already read.
        seen.append(key)
        if len(seen) == 3000 and not done:
            done.append(True)
            primary_server.put_texts(table, ['{"id":"k0000001","changed":true}'])
            primary_server.delete(table, ['"k0000002"'])
            primary_server.put_texts(table, ['{"id":"k0000001x","new":true}'])

    primary_server.on_scan_row(write_behind_the_scan)
    result = cli("snapshot", "--json")
    assert result.exit_code == 0, result.stderr
    assert done, "the scan hook never ran"

    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    restored = table_texts(standby_server, "app.live")
    assert '{"changed":true,"id":"k0000001"}' in restored
    assert '{"id":"k0000001x","new":true}' in restored
    assert not any('"id":"k0000002"' in t for t in restored)
    assert restored == table_texts(primary_server, "app.live")


def once_at_row(server, n: int, action) -> tuple[list, list]:
    """Call ``action(table)`` when the ``n``th row is scanned (once); returns the rows seen
    and whether it fired."""
    seen, fired = [], []

    def hook(scanned_table, key) -> None:
        seen.append(key)
        if len(seen) == n and not fired:
            fired.append(True)
            action(scanned_table)

    server.on_scan_row(hook)
    return seen, fired


def test_feed_overflow_rereads_the_table(deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.busy", sample_docs(2000))
    seen, fired = once_at_row(primary_server, 500, primary_server.force_feed_overflow)
    result = cli("snapshot", "--json")
    assert result.exit_code == 0, result.stderr
    assert fired
    assert json.loads(result.stdout)["tables"][0]["rescans"] == 1
    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    assert table_texts(standby_server, "app.busy") == table_texts(primary_server, "app.busy")


def test_a_feed_lost_mid_scan_starts_the_table_again_and_the_snapshot_finishes(
        deployment, cli, primary_server, standby_server, monkeypatch):
    """The feed's connection is lost half-way through the scan (the server it read from
    died): the table is read again through a new feed, the snapshot finishes and restores
    equal (with no retries left it would be exit 3, one line)."""
    from drtool.util import retry as snapshot_module

    monkeypatch.setattr(snapshot_module, "RECONNECT_FIRST", 0.01)
    load_table(primary_server, "app.moved", sample_docs(2000))
    seen, fired = once_at_row(primary_server, 500, primary_server.drop_feeds)
    result = cli("snapshot", "--json")
    assert result.exit_code == 0, result.stderr
    assert fired and len(seen) > 2000  # read again
    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    assert table_texts(standby_server, "app.moved") == table_texts(primary_server, "app.moved")
    monkeypatch.setattr(snapshot_module, "RECONNECTS", 0)
    seen.clear(), fired.clear()
    load_table(primary_server, "app.other", sample_docs(1000))
    failed = cli("snapshot", "--table", "app.other")
    assert failed.exit_code == 3 and failed.stderr.count("\n") == 1, failed.stderr
    assert "changefeed on app.other was dropped" in failed.stderr


def test_dropped_connection_resumes_the_scan(deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.flaky", sample_docs(2500))
    primary_server.fail_scan_after(1200)
    result = cli("snapshot", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tables"][0]["rescans"] == 0
    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    assert table_texts(standby_server, "app.flaky") == table_texts(primary_server, "app.flaky")


def test_renamed_restore_and_table_filter(deployment, cli, primary_server):
    _seed(primary_server, 100)
    load_table(primary_server, "app.other", sample_docs(3))
    assert cli("snapshot").exit_code == 0
    result = cli("restore", "latest", "--table", "app.users", "--rename", "app.users=copy.users2")
    assert result.exit_code == 0, result.stderr
    assert table_texts(primary_server, "copy.users2") == table_texts(primary_server, "app.users")
    assert TableName("copy", "other") not in on_cluster(primary_server, lambda c: c.list_tables())


def test_restore_into_table_with_documents_needs_conflict(deployment, cli, primary_server):
    table = _seed(primary_server, 200)
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(table, ['{"id":"k0000005","local":1}'])
    primary_server.delete(table, ['"k0000006"'])

    refused = cli("restore", "latest")
    assert refused.exit_code == 2
    assert "table app.users already has documents: pass --conflict" in refused.stderr

    conflicted = cli("restore", "latest", "--conflict", "error")
    assert conflicted.exit_code == 7
    assert "199 documents already existed" in conflicted.stderr
    texts = table_texts(primary_server, "app.users")
    assert '{"id":"k0000005","local":1}' in texts  # not overwritten
    assert any('"id":"k0000006"' in t for t in texts)  # the missing one was written

    replaced = cli("restore", "latest", "--conflict", "replace", "--json")
    assert replaced.exit_code == 0, replaced.stderr
    assert json.loads(replaced.stdout)["tables"][0]["digest_ok"] is True


def test_restore_bad_inputs(deployment, cli, primary_server):
    _seed(primary_server, 20)
    assert cli("snapshot").exit_code == 0

    missing = cli("restore", "20990101T000000Z-deadbeef")
    assert missing.exit_code == 2 and "snapshot 20990101T000000Z-deadbeef does not exist" in missing.stderr
    assert "drtool snapshots lists the ones it holds" in missing.stderr  # what to do

    bad_rename = cli("restore", "latest", "--rename", "app.users=nodot")
    assert bad_rename.exit_code == 2 and "--rename target: expected db.table" in bad_rename.stderr
    no_equals = cli("restore", "latest", "--rename", "app.users")
    assert no_equals.exit_code == 2 and "expected db.table=db2.table2" in no_equals.stderr

    not_in_snapshot = cli("restore", "latest", "--table", "app.ghost")
    assert not_in_snapshot.exit_code == 2 and "table app.ghost is not in snapshot" in not_in_snapshot.stderr

    bad_mode = cli("restore", "latest", "--conflict", "merge")
    assert bad_mode.exit_code == 2 and "--conflict: expected error, replace or skip" in bad_mode.stderr


def test_primary_key_mismatch(deployment, cli, primary_server, standby_server):
    _seed(primary_server, 10)
    assert cli("snapshot").exit_code == 0
    load_table(standby_server, "app.users", [], primary_key="uid")
    result = cli("restore", "latest", "--to", "standby", "--conflict", "replace")
    assert result.exit_code == 7
    assert "table app.users has primary key 'uid' but app.users in the snapshot has 'id'" in result.stderr


def test_corrupted_segment_mid_restore(deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.big", sample_docs(3000, pad=4000))  # >= 3 segments
    snap = json.loads(cli("snapshot", "--json").stdout)
    assert snap["tables"][0]["segments"] >= 3
    manifest = latest_manifest(deployment.path)
    victim = manifest.tables[0].layers[0].segments[2].id
    path = next(deployment.repo_dir.glob(f"data/*/{victim}"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))

    result = cli("restore", "latest", "--to", "standby")
    assert result.exit_code == 6
    assert "restore of app.big into app.big stopped" in result.stderr
    assert victim in result.stderr
    written = len(table_texts(standby_server, "app.big"))
    first_two = sum(s.count for s in manifest.tables[0].layers[0].segments[:2])
    assert f"{first_two} documents had been written before it" in result.stderr
    assert written == first_two

    verified = cli("verify", "--read-data")
    assert verified.exit_code == 1
    assert victim in verified.stdout and "app.big" in verified.stdout


def test_unreachable_cluster_and_wrong_password(deployment, cli, primary_server, monkeypatch):
    primary_server.down = True
    down = cli("snapshot")
    assert down.exit_code == 3
    assert "fake-primary:28015" in down.stderr
    primary_server.down = False

    primary_server.users["admin"] = "right"
    deployment.rewrite(primary='password_env = "DRTOOL_TEST_PW"')
    wrong = cli("snapshot", env={"DRTOOL_TEST_PW": "s3cr3t-not-it"})
    assert wrong.exit_code == 4
    assert "wrong user or password" in wrong.stderr
    assert "s3cr3t-not-it" not in wrong.stderr + wrong.stdout  # no secret echoed


def test_real_adapter_unreachable_host(tmp_path):
    """A host no fake serves goes to the real driver: a closed port is exit 3, named."""
    dep = write_policy(tmp_path)
    dep.path.write_text(dep.path.read_text().replace("fake-primary:28015", "127.0.0.1:1"))
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    result = cli("snapshot")
    assert result.exit_code == 3
    assert "127.0.0.1:1" in result.stderr


def test_restore_without_identity(tmp_path, primary_server, standby_server):
    """A snapshot host with only recipients + writer key can snapshot but not restore."""
    dep, _ = writer_only_deployment(tmp_path)
    cli = Cli(dep.path)
    _seed(primary_server, 30)
    assert cli("snapshot").exit_code == 0
    assert cli("snapshots").exit_code == 0
    assert cli("verify").exit_code == 0

    result = cli("restore", "latest", "--to", "standby")
    assert result.exit_code == 5
    assert "restore needs a key that can decrypt" in result.stderr
    assert on_cluster(standby_server, lambda c: c.list_tables()) == []

    deep = cli("verify", "--read-data")
    assert deep.exit_code == 5


def test_no_table_matches_the_policy(deployment, cli, primary_server):
    load_table(primary_server, "other.t", sample_docs(3))
    deployment.path.write_text(deployment.path.read_text() + '[tables]\ninclude = ["app.*"]\n')
    result = cli("snapshot")
    assert result.exit_code == 2
    assert "no table of the primary matches [tables]" in result.stderr


def test_feed_that_keeps_overflowing_gives_up(deployment, cli, primary_server):
    table = load_table(primary_server, "app.busy", sample_docs(300, pad=10))

    def overflow_always(scanned_table, key) -> None:
        primary_server.force_feed_overflow(table)

    primary_server.on_scan_row(overflow_always)
    result = cli("snapshot")
    assert result.exit_code == 7
    assert "changefeed on app.busy overflowed 4 times during the scan" in result.stderr
    assert cli("snapshots", "--json").stdout.strip() == "[]"  # no half-made snapshot


def test_two_tables_renamed_onto_one_target(deployment, cli, primary_server):
    load_table(primary_server, "app.a", sample_docs(3))
    load_table(primary_server, "app.b", sample_docs(3))
    assert cli("snapshot").exit_code == 0
    result = cli("restore", "latest", "--rename", "app.a=x.t", "--rename", "app.b=x.t")
    assert result.exit_code == 2
    assert "two tables would be restored into the same target table" in result.stderr


def test_internal_error_is_one_line_without_traceback(deployment, cli, primary_server, monkeypatch):
    load_table(primary_server, "app.t", sample_docs(3))

    async def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("drtool.cli.data_commands.take_snapshot", broken)
    result = cli("snapshot")
    assert result.exit_code == 70
    assert result.stderr.strip() == ("drtool: error: internal error: RuntimeError: simulated bug "
                                     "(set DRTOOL_DEBUG=1 for a traceback and please report it)")
