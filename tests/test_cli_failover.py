"""drtool failover / failback / reapply from the command line on the fake clusters: every bad
input is one line and its exit code; stale commands are refused by the generation."""

from __future__ import annotations

import asyncio

import pytest

from drtool.cluster.fake import FakeServer
from drtool.coordination.state import Roles, StateStore

from tests.conftest import Cli, connect_fake, load_table, write_policy
from tests.failover_helpers import APP_PASSWORD, APP_PASSWORD_ENV, failover_section
from tests.replication_helpers import replication_section


@pytest.fixture
def dep(tmp_path, primary_server: FakeServer, standby_server: FakeServer, monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    primary_server.users["app"] = APP_PASSWORD
    primary_server.permissions[("app", None, None)] = {"read": True, "write": True}
    load_table(primary_server, "app.orders", ['{"id":%d}' % i for i in range(5)])
    d = write_policy(tmp_path, extra=replication_section("drtool_cli_state") + failover_section())
    return d


def one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drtool: error: "), result.stderr
    assert text in lines[0], lines[0]


def set_roles(server: FakeServer, generation: int, primary: str, step: str | None = None):
    async def go():
        store = StateStore(connect_fake(server), "drtool_cli_state", "test")
        await store.ensure()
        now = await store.read_roles()
        await store.write_roles(Roles(generation, primary, step), expected_generation=now.generation)
    asyncio.run(go())


@pytest.mark.parametrize("args, code, text", [
    ((), 2, "choose one of --planned (both clusters up) or --unplanned"),
    (("--planned", "--unplanned"), 2, "choose one of --planned"),
    (("--planned", "--force"), 2, "--force is for --unplanned"),
    (("--unplanned", "--reverse"), 2, "--reverse is for --planned only"),
    (("--unplanned", "--dry-run"), 2, "--dry-run is for --planned only"),
    (("--unplanned", "--yes"), 7, "the primary still answers (primary fake-primary:28015): use drtool failover --planned, or --force"),
    (("--planned", "--yes"), 7, "no drtool replicate runner is streaming into the standby"),
])
def test_failover_bad_input(dep, args, code, text):
    one_line(Cli(dep.path)("failover", *args), code, text)


def test_failover_without_standby_section(tmp_path, primary_server):
    d = write_policy(tmp_path)
    d.path.write_text(d.path.read_text().replace('[standby]\nhosts = ["fake-standby:28015"]\n', ""))
    one_line(Cli(d.path)("failover", "--planned"), 2, "no [standby] section: failover needs two clusters")


def test_failover_standby_unreachable(dep, standby_server):
    standby_server.down = True
    one_line(Cli(dep.path)("failover", "--unplanned", "--yes"), 3, "standby: cannot reach any of fake-standby:28015")


def test_confirmation_needs_a_terminal_or_yes(dep, primary_server):
    primary_server.down = True
    one_line(Cli(dep.path)("failover", "--unplanned"), 2, "confirmation needed and stdin is not a terminal: pass --yes")


def test_unplanned_from_the_cli(dep, primary_server, standby_server):
    primary_server.down = True
    result = Cli(dep.path)("failover", "--unplanned", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "data-loss window: no heartbeat ever reached the standby" in result.stdout
    assert "unplanned done: the standby is the primary (generation 1)" in result.stdout
    assert "point the application at the standby: fake-standby:28015" in result.stdout


def test_failback_bad_input(dep, tmp_path):
    one_line(Cli(dep.path)("failback", "--yes"), 2, "nothing to fail back: the primary is the primary (generation 0)")
    result = Cli(dep.path)("reapply", str(tmp_path / "none.jsonl"))
    one_line(result, 2, "none.jsonl: no such lost-writes file")
    (tmp_path / "x.jsonl").write_text("garbage\n")
    one_line(Cli(dep.path)("reapply", str(tmp_path / "x.jsonl"), "--conflict", "merge"), 2,
             "--conflict: expected error, replace or skip, got 'merge'")
    one_line(Cli(dep.path)("reapply", str(tmp_path / "x.jsonl")), 2, "line 1: not a lost-writes line")


def test_a_failover_in_progress_refuses_other_writes(dep, standby_server):
    set_roles(standby_server, 0, "primary", "drain")
    one_line(Cli(dep.path)("reconcile"), 8, "a failover is in progress (step drain, generation 0): reconcile would write into the standby")
    one_line(Cli(dep.path)("failover", "--unplanned", "--yes"), 7, "the roles record step drain (generation 0) but not the run that set it")


def test_stale_reconcile_refused_after_a_failover(dep, standby_server, primary_server):
    set_roles(standby_server, 3, "standby")
    one_line(Cli(dep.path)("reconcile"), 8, "the standby is the primary since generation 3: reconcile from the primary would overwrite it")
    assert Cli(dep.path)("reconcile", "--dry-run").exit_code in (0, 1)  # reading is fine
    result = Cli(dep.path)("reconcile", "--direction", "standby-to-primary")
    assert result.exit_code == 1 and "drtool: error" not in result.stderr  # allowed: it ran


def test_reapply_into_the_current_primary(dep, standby_server, primary_server, tmp_path):
    load_table(standby_server, "app.orders", ['{"id":1}'])
    set_roles(standby_server, 1, "standby")
    lost = tmp_path / "lost.jsonl"
    lost.write_text('{"current":null,"doc":{"id":7,"v":"lost"},"key":7,"kind":"missing","table":"app.orders"}\n'
                    '{"current":{"id":1},"doc":{"id":1,"v":"old"},"key":1,"kind":"changed","table":"app.orders"}\n')
    primary_server.down = True  # the old primary may still be gone: the roles decide
    dry = Cli(dep.path)("reapply", str(lost), "--dry-run")
    assert dry.exit_code == 0 and "app.orders: would write 2 documents into the standby" in dry.stdout
    result = Cli(dep.path)("reapply", str(lost))
    one_line(result, 7, "1 documents already exist on the standby with other content")
    assert '{"id":7,"v":"lost"}' in standby_server.texts(__import__("drtool.model").model.TableName("app", "orders"))
    assert Cli(dep.path)("reapply", str(lost), "--conflict", "replace").exit_code == 0


def test_status_reports_users_without_a_password_source(dep, primary_server):
    primary_server.users["reports"] = "pw"
    primary_server.permissions[("reports", "app", None)] = {"read": True}
    result = Cli(dep.path)("status")
    assert result.exit_code == 1
    assert ("problem: user reports has no password source in the policy "
            "([failover.users.reports]): not created on the target") in result.stdout
    assert "user app" not in result.stdout  # app has one (password_env)
