"""drtool replicate / drtool status from the CLI (fake clusters): every bad input and fault is
one line with its exit code; status reads the state databases with no runner running."""

from __future__ import annotations

import asyncio
import json

from drtool.cluster.rethink.util import PermissionDenied
from drtool.coordination.state import LeaseHolder, StateStore, TableState, runner_lease
from drtool.errors import ClusterUnreachable
from drtool.model import TableName
from drtool.config.policy import load_policy

from tests.conftest import Cli, connect_fake, load_table, write_policy
from tests.replication_helpers import replicate_until_streaming, replication_section


def setup(tmp_path, **replication: str):
    dep = write_policy(tmp_path, extra=replication_section(**replication))
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    return dep, cli, load_policy(dep.path)


def streaming(tmp_path, primary_server, **tables: int):
    """A policy (lag threshold 1 h) whose tables ``app.<name>`` of that many documents a
    runner has replicated and stopped."""
    dep, cli, policy = setup(tmp_path, lag_threshold='"1h"')
    for name, n in tables.items():
        load_table(primary_server, f"app.{name}", ['{"id":%d}' % i for i in range(n)])
    replicate_until_streaming(policy, len(tables))
    return cli, policy


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_standby_section(tmp_path, primary_server):
    dep = write_policy(tmp_path, extra=replication_section())
    dep.path.write_text(dep.path.read_text().replace('[standby]\nhosts = ["fake-standby:28015"]\n', ""))
    for command in ("replicate", "status"):
        result = Cli(dep.path)(command)
        assert result.exit_code == 2
        assert one_line(result) == (f"drtool: error: {dep.path}: no [standby] section: drtool "
                                    + ("replicate needs the standby cluster to replicate into "
                                       "(or [archive] to keep only the change log)"
                                       if command == "replicate" else
                                       "status reports on the standby cluster"))


def test_standby_unreachable_at_start(tmp_path, primary_server, standby_server):
    dep, cli, _ = setup(tmp_path)
    standby_server.down = True
    result = cli("replicate")
    assert result.exit_code == 3
    assert one_line(result).startswith("drtool: error: standby: cannot reach any of "
                                       "fake-standby:28015")
    assert cli("status").exit_code == 3


def test_bad_log_format_and_credentials(tmp_path, primary_server, standby_server):
    dep, cli, _ = setup(tmp_path)
    bad = cli("replicate", "--log-format", "xml")
    assert bad.exit_code == 2
    assert one_line(bad) == "drtool: error: --log-format: expected text or json, got 'xml'"
    dep.rewrite(standby='user = "app"\npassword_env = "DRTOOL_TEST_STANDBY_PW"')
    refused = cli("replicate", env={"DRTOOL_TEST_STANDBY_PW": "wrong"})
    assert refused.exit_code == 4
    assert "user 'app' was refused: wrong user or password" in one_line(refused)


def test_permission_refused_names_what_is_missing(tmp_path, primary_server, standby_server):
    dep, cli, _ = setup(tmp_path)
    standby_server.fail_next("ensure_table", PermissionDenied(
        "standby fake-standby:28015: permission denied: User `app` does not have the required "
        "`config` permission"))
    result = cli("replicate")
    assert result.exit_code == 7
    assert "does not have the required `config` permission" in one_line(result)


def test_lease_held_by_another_runner(tmp_path, primary_server, standby_server):
    dep, cli, policy = setup(tmp_path)

    async def hold():
        store = StateStore(connect_fake(standby_server), policy.replication.state_db, policy.name)
        await store.ensure()
        got = await store.acquire_lease(runner_lease(policy.name),
                                        LeaseHolder("other-runner", "host-b", 4242), ttl=600)
        assert got.acquired

    asyncio.run(hold())
    result = cli("replicate", "--no-wait")
    assert result.exit_code == 8
    line = one_line(result)
    assert line.startswith(f"drtool: error: policy {policy.name}: another runner holds the "
                           "lease on the standby: runner other-runner on host-b (pid 4242) holds "
                           "it until 20")
    assert line.endswith("; stop that runner first, or wait until its lease expires")
    status = json.loads(cli("status", "--json").stdout)
    assert status["lease"]["holder"] == "other-runner" and status["lease"]["expired"] is False


def test_status_before_any_runner_and_after_one(tmp_path, primary_server, standby_server):
    dep, cli, policy = setup(tmp_path, lag_threshold='"1h"')
    before = cli("status")
    assert before.exit_code == 1
    assert "problem: no heartbeat on the standby: is drtool replicate running?" in before.stdout
    load_table(primary_server, "app.t", ['{"id":%d}' % i for i in range(30)])
    replicate_until_streaming(policy)
    after = cli("status", "--json")
    assert after.exit_code == 0, after.stdout
    found = json.loads(after.stdout)
    assert found["healthy"] is True and found["lag_seconds"] >= 0
    assert found["roles"] == {"generation": 0, "primary": "primary", "step": None,
                              "replicate": True, "source": "primary", "target": "standby"}
    assert found["lease"] is None and found["runner"]["state"] == "stopped"
    assert [(t["table"], t["state"]) for t in found["tables"]] == [("app.t", "stopped")]
    assert found["repository"] == {"snapshots": 0}
    text = cli("status")
    assert text.exit_code == 0 and "policy test: healthy" in text.stdout
    assert "runner: none holds the lease" in text.stdout

    async def broken():
        store = StateStore(connect_fake(standby_server), policy.replication.state_db, policy.name)
        await store.put_table_state(TableState(TableName("app", "t"), "error",
                                               message="primary key differs"))
    asyncio.run(broken())
    unhealthy = cli("status")
    assert unhealthy.exit_code == 1
    assert "problem: app.t: primary key differs" in unhealthy.stdout


def test_status_with_the_primary_down_shows_what_the_standby_holds(tmp_path, primary_server,
                                                                   standby_server):
    """The disaster case: the operator needs status most when the primary is gone."""
    cli, policy = streaming(tmp_path, primary_server, t=30)
    primary_server.down = True
    text = cli("status")
    assert text.exit_code == 3, text.stdout + text.stderr
    assert text.stderr == ""
    assert "primary: DOES NOT ANSWER (primary: cannot reach any of fake-primary:28015" in text.stdout
    assert "lag: unknown: the primary does not answer; newest heartbeat on the standby 20" in text.stdout
    assert "app.t" in text.stdout and "stopped" in text.stdout  # the table states are read
    found = json.loads(cli("status", "--json").stdout)
    assert found["healthy"] is False and found["lag_seconds"] is None
    assert list(found["unreachable"]) == ["primary"]
    assert 0 <= found["heartbeat_age_seconds"] < 600
    assert found["problems"][0].startswith("primary: cannot reach any of fake-primary:28015")
    assert found["problems"][1].startswith("the newest heartbeat on the standby was written ")
    assert [(t["table"], t["state"]) for t in found["tables"]] == [("app.t", "stopped")]
    assert found["roles"]["generation"] == 0


def test_status_with_the_standby_down(tmp_path, primary_server, standby_server):
    dep, cli, _ = setup(tmp_path)
    standby_server.down = True
    found = cli("status", "--json")
    assert found.exit_code == 3
    got = json.loads(found.stdout)
    assert list(got["unreachable"]) == ["standby"] and got["tables"] == []
    assert got["problems"] == [got["unreachable"]["standby"]]
    text = cli("status")
    assert "lag: unknown: the standby does not answer" in text.stdout
    primary_server.down = True
    both = cli("status", "--json")
    assert both.exit_code == 3
    assert sorted(json.loads(both.stdout)["unreachable"]) == ["primary", "standby"]


def test_status_names_a_state_table_it_cannot_read_and_shows_the_rest(tmp_path, primary_server,
                                                                      standby_server):
    """A state table whose servers are down (on a real cluster: "None of the replicas for
    this table are accessible") is named in one problem line; status does not die."""
    cli, policy = streaming(tmp_path, primary_server, t=30)
    gone = ClusterUnreachable("standby fake-standby:28015 table drtool.roles: the cluster is not "
                              "available: None of the replicas for this table are accessible; "
                              "try again later")
    for form in ([], ["--json"]):
        standby_server.fail_next("get_docs", gone)  # the first read on the standby: its roles
        result = cli("status", *form)
        assert result.exit_code == 1 and result.stderr == "", result.stdout + result.stderr
        problem = (f"cannot read {policy.replication.state_db}.roles on the standby: "
                   "standby fake-standby:28015 table "
                   "drtool.roles: the cluster is not available: None of the replicas for this "
                   "table are accessible; try again later")
        if form:
            found = json.loads(result.stdout)
            assert found["unreadable"] == [problem] and found["problems"] == [problem]
            assert [(t["table"], t["state"]) for t in found["tables"]] == [("app.t", "stopped")]
            assert found["heartbeat"] is not None and found["lag_seconds"] is not None
        else:
            assert f"problem: {problem}" in result.stdout, result.stdout
            assert "app.t" in result.stdout and "lag: " in result.stdout


def test_status_names_a_table_a_cluster_cannot_serve_now_and_why(tmp_path, primary_server,
                                                                 standby_server):
    """A selected table with a shard on a server that is down (on a real cluster: "Cannot
    perform read: primary replica for shard ... not available") is named with the cluster and
    the server's reason, whatever the state tables say; status does not die."""
    cli, policy = streaming(tmp_path, primary_server, t=30, u=3)
    why = ('standby fake-standby:28015 table app.t: the cluster is not available: Cannot '
           'perform read: primary replica for shard ["", +inf) not available; try again later')
    for form in ([], ["--json"]):
        standby_server.fail_next("key_bounds", ClusterUnreachable(why))  # app.t's probe
        result = cli("status", *form)
        assert result.exit_code == 1 and result.stderr == "", result.stdout + result.stderr
        problem = f"app.t: unavailable on the standby: {why}"
        if form:
            found = json.loads(result.stdout)
            assert found["unavailable"] == [{"table": "app.t", "cluster": "standby",
                                             "reason": why}]
            assert found["problems"] == [problem]
            assert [t["state"] for t in found["tables"]] == ["stopped", "stopped"]
        else:
            assert f"problem: {problem}" in result.stdout, result.stdout
    healthy = json.loads(cli("status", "--json").stdout)
    assert healthy["unavailable"] == [] and healthy["healthy"] is True, healthy


def test_status_text_does_not_say_nobody_holds_a_lease_it_cannot_read(tmp_path, primary_server,
                                                                      standby_server):
    """The standby's state tables all unreadable (a server of two down: they lost their
    quorum): the text says the runner and the lag are unknown, not that nobody holds the
    lease or that there is no heartbeat."""
    cli, policy = streaming(tmp_path, primary_server, t=3)
    gone = ClusterUnreachable("standby fake-standby:28015 table drtool.leases: the cluster is not "
                              "available: Cannot perform read: The primary replica isn't "
                              "connected to a quorum of replicas; try again later")
    standby_server.fail_next("get_docs", gone, times=100)
    standby_server.fail_next("scan", gone, times=100)
    result = cli("status")
    assert result.exit_code == 1 and result.stderr == "", result.stdout + result.stderr
    db = policy.replication.state_db
    assert (f"runner: unknown: cannot read {db}.leases on the standby (see the problems)"
            in result.stdout), result.stdout
    assert (f"lag: unknown: cannot read {db}.heartbeat on the standby (see the problems) "
            "(threshold 3600 s)" in result.stdout), result.stdout
    assert "none holds the lease" not in result.stdout
