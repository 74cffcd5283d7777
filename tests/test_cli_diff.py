"""drtool diff / reconcile through the CLI on two fake clusters, and every bad input."""

from __future__ import annotations

import json

from drtool.model import IndexDef, TableName
from tests.conftest import Cli, load_table, on_cluster, sample_docs, table_texts

T = TableName("app", "users")


def _seed(primary, standby, n=1500):
    docs = sample_docs(n, pad=50)
    load_table(primary, "app.users", docs)
    load_table(standby, "app.users", docs)
    load_table(primary, "app.empty", [])
    load_table(standby, "app.empty", [])


def _diverge(primary, standby):
    standby.put_texts(T, ['{"id":"k0000000","v":1}', '{"id":"k0000750","v":1}', '{"id":"zz"}'])
    standby.delete(T, ['"k0001499"'])


def test_diff_equal_clusters_exit_0(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    result = cli("diff")
    assert result.exit_code == 0, result.stderr
    assert "app.users" in result.stdout and "DIFFERS" not in result.stdout
    assert "2 tables compared, 0 differ" in result.stderr
    data = json.loads(cli("diff", "--json").stdout)
    assert data["equal"] is True and data["bytes"] > 0
    assert {t["table"]: t["documents"]["primary"] for t in data["tables"]} == {
        "app.empty": 0, "app.users": 1500}


def test_diff_reports_every_key_and_exits_1(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    _diverge(primary_server, standby_server)
    result = cli("diff", "--json")
    assert result.exit_code == 1, result.stderr
    users = {t["table"]: t for t in json.loads(result.stdout)["tables"]}["app.users"]
    assert (users["missing"], users["extra"], users["changed"]) == (
        ['"k0001499"'], ['"zz"'], ['"k0000000"', '"k0000750"'])
    assert users["traffic"]["bytes"] < 1500 * 100  # less than a per-row hash stream
    human = cli("diff", "--table", "app.users")
    assert human.exit_code == 1
    assert 'app.users: changed: "k0000000", "k0000750"' in human.stdout
    assert 'app.users: missing on standby: "k0001499"' in human.stdout
    assert "1 differ" in human.stderr and "crossed the network" in human.stderr


def test_diff_schema_and_missing_table(cli, primary_server, standby_server):
    _seed(primary_server, standby_server, n=10)
    load_table(primary_server, "app.only_primary", sample_docs(7))

    async def index(cluster):
        await cluster.create_index(T, IndexDef("by_n", primary_server.index_blob("n")))
    on_cluster(primary_server, index)
    result = cli("diff")
    assert result.exit_code == 1
    assert "app.users: index by_n: present on primary, missing on standby" in result.stdout
    assert "app.only_primary: table: present on primary, missing on standby" in result.stdout
    data = {t["table"]: t for t in json.loads(cli("diff", "--json").stdout)["tables"]}
    assert data["app.only_primary"]["missing_count"] == 7
    assert data["app.only_primary"]["exists"] == {"primary": True, "standby": False}


def test_reconcile_then_diff_equal_both_directions(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    _diverge(primary_server, standby_server)
    load_table(primary_server, "app.only_primary", sample_docs(20))
    original_standby = table_texts(standby_server, "app.users")

    done = cli("reconcile", "--json")
    assert done.exit_code == 0, done.stdout + done.stderr
    tables = {t["table"]: t for t in json.loads(done.stdout)["tables"]}
    assert (tables["app.users"]["written"], tables["app.users"]["deleted"]) == (3, 1)
    assert tables["app.only_primary"]["written"] == 20
    assert cli("diff").exit_code == 0
    for name in ("app.users", "app.only_primary"):
        assert table_texts(standby_server, name) == table_texts(primary_server, name)

    # Put the old standby documents back on the standby, then make the primary equal to it.
    standby_server.delete(T, [json.dumps(json.loads(d)["id"]) for d in table_texts(standby_server, "app.users")])
    standby_server.put_texts(T, original_standby)
    back = cli("reconcile", "--direction", "standby-to-primary", "--table", "app.users")
    assert back.exit_code == 0, back.stdout + back.stderr
    assert "wrote 3, deleted 1 documents on primary" in back.stdout
    assert table_texts(primary_server, "app.users") == original_standby
    assert cli("diff", "--table", "app.users").exit_code == 0


def test_reconcile_dry_run_writes_nothing(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    _diverge(primary_server, standby_server)
    before = table_texts(standby_server, "app.users")
    result = cli("reconcile", "--dry-run")
    assert result.exit_code == 1
    assert "app.users: would write 3 and delete 1 documents on standby" in result.stdout
    assert 'app.users: delete: "zz"' in result.stdout
    assert table_texts(standby_server, "app.users") == before
    assert cli("diff").exit_code == 1


def test_diff_against_snapshot(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    assert cli("snapshot").exit_code == 0
    assert cli("diff", "--against", "latest").exit_code == 0
    primary_server.put_texts(T, ['{"id":"k0000003","v":"new"}', '{"id":"new"}'])
    primary_server.delete(T, ['"k0000500"'])
    result = cli("diff", "--against", "latest", "--json")
    assert result.exit_code == 1
    users = {t["table"]: t for t in json.loads(result.stdout)["tables"]}["app.users"]
    assert users["target"].startswith("snapshot ")
    assert (users["missing"], users["extra"], users["changed"]) == (['"new"'], ['"k0000500"'], ['"k0000003"'])


def test_bad_inputs(cli, deployment, primary_server, standby_server, tmp_path):
    _seed(primary_server, standby_server, n=5)
    unknown = cli("diff", "--table", "app.nope")
    assert unknown.exit_code == 2
    assert "table app.nope does not exist on primary or standby" in unknown.stderr
    assert cli("reconcile", "--table", "app.nope").exit_code == 2
    bad = cli("reconcile", "--direction", "sideways")
    assert bad.exit_code == 2 and "--direction" in bad.stderr
    assert cli("diff", "--against", "no-such-snapshot").exit_code == 2

    standby_server.down = True
    down = cli("diff")
    assert down.exit_code == 3 and "standby" in down.stderr
    standby_server.down = False
    primary_server.down = True
    down = cli("reconcile", "--direction", "standby-to-primary")
    assert down.exit_code == 3 and "primary" in down.stderr
    primary_server.down = False

    text = deployment.path.read_text().replace("[standby]\n", "").replace(
        'hosts = ["fake-standby:28015"]\n', "")
    lonely = tmp_path / "no-standby.toml"
    lonely.write_text(text)
    for command in ("diff", "reconcile"):
        result = Cli(lonely)(command)
        assert result.exit_code == 2 and "no [standby] section" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_diff_against_layered_snapshot_lists_every_key(cli, primary_server, standby_server):
    _seed(primary_server, standby_server)
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(T, ['{"id":"k0000010","v":"changed"}', '{"id":"k0000011x"}'])
    primary_server.delete(T, ['"k0000012"'])
    second = json.loads(cli("snapshot", "--json").stdout)
    assert {t["table"]: t["layers"] for t in second["tables"]}["app.users"] == 2
    assert cli("diff", "--against", "latest").exit_code == 0  # the live table is the snapshot
    primary_server.put_texts(T, ['{"id":"k0000010","v":"again"}', '{"id":"k0000012"}'])
    primary_server.delete(T, ['"k0000011x"'])
    result = cli("diff", "--against", "latest", "--json")
    assert result.exit_code == 1
    users = {t["table"]: t for t in json.loads(result.stdout)["tables"]}["app.users"]
    assert (users["missing"], users["extra"], users["changed"]) == (
        ['"k0000012"'], ['"k0000011x"'], ['"k0000010"'])


def test_writer_only_host_lists_keys_against_a_snapshot(tmp_path, primary_server, standby_server):
    from tests.conftest import writer_only_deployment

    dep, _ = writer_only_deployment(tmp_path)
    cli = Cli(dep.path)
    _seed(primary_server, standby_server, n=300)
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(T, ['{"id":"k0000100","v":1}'])
    result = cli("diff", "--against", "latest", "--table", "app.users", "--json")
    assert result.exit_code == 1, result.stderr
    users = json.loads(result.stdout)["tables"][0]
    assert users["changed"] == ['"k0000100"'] and users["missing"] == users["extra"] == []


def test_a_policy_for_diff_and_reconcile_needs_no_repository_or_keys(tmp_path, primary_server, standby_server):
    _seed(primary_server, standby_server, n=20)
    _diverge(primary_server, standby_server)
    path = tmp_path / "compare-only.toml"
    path.write_text('name = "cmp"\n[primary]\nhosts = ["fake-primary:28015"]\n'
                    '[standby]\nhosts = ["fake-standby:28015"]\n')
    cli = Cli(path)
    assert cli("diff").exit_code == 1
    assert cli("reconcile").exit_code == 0
    assert cli("diff").exit_code == 0
    assert table_texts(standby_server, "app.users") == table_texts(primary_server, "app.users")
    for command in (("snapshot",), ("snapshots",), ("diff", "--against", "latest")):
        result = cli(*command)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.strip().endswith(
            f"{path}: no [repository] section: 'drtool {command[0]}' needs it "
            '(add [repository] with url = "file:///path" or "sftp://user@host/path")'), result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    path.write_text(path.read_text() + f'[repository]\nurl = "file://{tmp_path / "repo"}"\n')
    no_keys = cli("snapshot")
    assert no_keys.exit_code == 2 and "no [encryption] section: 'drtool snapshot' needs it" in no_keys.stderr
