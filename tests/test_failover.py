"""Failover and failback procedures on the fake clusters, with the real runner
(drtool.standby.runner) streaming: every step, resuming after a crash at each step, refusals,
the generation fencing a stale runner, failback with writes on both sides."""

from __future__ import annotations

import asyncio
import json

import pytest

from drtool.cluster.fake import NETWORK
from drtool.cluster.fake import FakeServer
from drtool.coordination.state import StateStore
from drtool.errors import FailoverError, LeaseHeld, PermissionDenied, StaleGeneration, UsageError
from drtool.failover import run as run_module
from drtool.failover.failback import failback
from drtool.failover.planned import PLANNED, planned_failover
from drtool.failover.unplanned import unplanned_failover
from drtool.model import PermissionRow, TableName
from drtool.config.policy import load_policy

from tests.conftest import connect_fake, write_policy
from tests.failover_helpers import (
    APP_PASSWORD, APP_PASSWORD_ENV, Writer, app_connect, failover_section, roles_of,
    with_users_sync,
)
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until

T = TableName("app", "orders")


@pytest.fixture
def policy(tmp_path, primary_server: FakeServer, standby_server: FakeServer, monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    primary_server.users["app"] = APP_PASSWORD
    primary_server.permissions[("app", None, None)] = {"read": True, "write": True}
    dep = write_policy(tmp_path, extra=replication_section() + failover_section())
    return load_policy(dep.path)


async def make_table(server: FakeServer, n: int = 50) -> None:
    c = connect_fake(server)
    await c.ensure_db(T.db)
    await c.create_table(T, primary_key="id", shards=1, replicas=1)
    await c.insert_texts(T, ['{"id":"seed%d"}' % i for i in range(n)])


async def streaming(policy):
    bg = with_users_sync(Background(policy))
    await bg.__aenter__()
    await bg.streaming(1)
    await wait_equal(policy)
    await wait_until(lambda: bg.runner.lag is not None, "a heartbeat on the standby")
    return bg


def app_perms(server: FakeServer) -> list:
    return sorted((k, v) for k, v in server.permissions.items() if k[0] == "app")


async def test_planned_failover_with_a_writer(policy, primary_server, standby_server):
    await make_table(primary_server)
    before = app_perms(primary_server)
    bg = await streaming(policy)
    # while it is the standby, the application cannot write there (replication would
    # overwrite or delete what it wrote): the runner keeps the app user fenced on it
    await wait_until(lambda: standby_server.permissions.get(("app", "app", None)) == {"write": False},
                     "the app user fenced on the standby")
    stray = await app_connect(policy, "standby")
    with pytest.raises(PermissionDenied):
        await stray.insert_texts(T, ['{"id":"stray"}'])
    await stray.close()
    writer = Writer(policy, T)
    task = asyncio.create_task(writer.run())
    try:
        await wait_until(lambda: len(writer.acked) > 20, "the writer writing")
        lines: list[str] = []
        out = await planned_failover(policy, connector=NETWORK, reverse=True, say=lines.append)
        await wait_until(lambda: writer.role == "standby" and len(writer.acked) > 0
                         and writer.switched_at is not None, "the writer on the new primary")
        count = len(writer.acked)
        await wait_until(lambda: len(writer.acked) > count + 20, "writes on the new primary")
    finally:
        writer.stop()
        await task
    assert (out.source, out.target, out.generation) == ("primary", "standby", 1)
    assert [line for line in lines if line.startswith("step ")] == [f"step {s}" for s in PLANNED[:-2]] + ["step promote"]
    assert "fake-standby:28015" in out.application
    for role in ("primary", "standby"):
        roles = await roles_of(policy, role)
        assert (roles.generation, roles.primary, roles.step, roles.replicate) == (1, "standby", None, True)
        assert roles.extra["last"]["kind"] == "planned"
    # every acknowledged write is on the new primary
    stored = {json.loads(t)["id"] for t in standby_server.texts(T)}
    assert [n for n in writer.acked if n not in stored] == []
    # the old primary is fenced for the app user; the new primary takes its writes
    old = await app_connect(policy, "primary")
    with pytest.raises(PermissionDenied):
        await old.insert_texts(T, ['{"id":"late"}'])
    await old.close()
    assert ("app", "app", None) not in standby_server.permissions
    assert app_perms(standby_server) == before
    await bg.__aexit__(None, None, None)


async def test_dry_run_changes_nothing(policy, primary_server, standby_server):
    await make_table(primary_server)
    bg = await streaming(policy)
    try:
        out = await planned_failover(policy, connector=NETWORK, dry_run=True)
    finally:
        await bg.__aexit__(None, None, None)
    assert out.dry_run and any("fence the standby until it is promoted" in p for p in out.plan)
    assert (await roles_of(policy, "standby")).generation == 0
    assert ("app", "app", None) not in primary_server.permissions


async def test_planned_needs_a_streaming_runner(policy, primary_server):
    await make_table(primary_server)
    with pytest.raises(FailoverError, match="no drtool replicate runner is streaming into the standby"):
        await planned_failover(policy, connector=NETWORK)


class Killed(BaseException):
    """A crash right after a step was recorded (the lease stays, as after kill -9)."""


def crash_after(monkeypatch, step: str):
    real_set_step, real_close = run_module.FailoverRun.set_step, run_module.FailoverRun.close

    async def set_step(self, name, **progress):
        await real_set_step(self, name, **progress)
        if name == step:
            raise Killed(step)

    async def close(self):  # a killed process releases nothing
        self._lease_side = None
        if self._renewer is not None:
            self._renewer.cancel()
        self._renewer = None
        await real_close(self)

    monkeypatch.setattr(run_module.FailoverRun, "set_step", set_step)
    monkeypatch.setattr(run_module.FailoverRun, "close", close)


@pytest.mark.parametrize("step", PLANNED[:-1])
async def test_planned_failover_resumes_after_a_crash_at_each_step(policy, primary_server,
                                                                    standby_server, monkeypatch,
                                                                    step):
    await make_table(primary_server)
    monkeypatch.setattr(run_module, "_pid_alive", lambda pid: False)  # the killed run is gone
    bg = await streaming(policy)
    try:
        with monkeypatch.context() as patch:
            crash_after(patch, step)
            with pytest.raises(Killed):
                await planned_failover(policy, connector=NETWORK, reverse=True)
        stopped = await roles_of(policy, "standby")
        assert stopped.step is not None and stopped.extra["failover"]["step"] == step
        from drtool.standby.status import read_status

        assert f"failover step {step} (generation 0): run the same failover/failback command " \
            "again to finish it" in (await read_status(policy, NETWORK)).problems
        if PLANNED.index(step) <= PLANNED.index("final-diff"):  # diffed when resumed
            primary_server.put_texts(T, ['{"id":"during"}'])  # only drtool can write there
        out = await planned_failover(policy, connector=NETWORK, reverse=True)
    finally:
        await bg.__aexit__(None, None, None)
    assert (out.resumed_at, out.generation) == (step, 1)
    for role in ("primary", "standby"):
        roles = await roles_of(policy, role)
        assert (roles.generation, roles.primary, roles.step) == (1, "standby", None)
    assert standby_server.texts(T) == primary_server.texts(T)
    assert ("app", "app", None) not in standby_server.permissions
    assert primary_server.permissions[("app", "app", None)] == {"write": False}


async def test_two_failovers_cannot_run_at_once(policy, primary_server, standby_server):
    await make_table(primary_server)
    bg = await streaming(policy)
    try:
        gate = asyncio.Event()

        def confirm(plan):
            return True

        first = asyncio.create_task(planned_failover(policy, connector=NETWORK, confirm=confirm,
                                                     say=lambda line: gate.set()))
        await asyncio.wait_for(gate.wait(), 10)  # the first one holds the lease now
        with pytest.raises(LeaseHeld, match="another failover or failback is running"):
            await planned_failover(policy, connector=NETWORK)
        await first
    finally:
        await bg.__aexit__(None, None, None)


async def test_a_stale_runner_is_refused_by_the_generation(policy, primary_server, standby_server):
    await make_table(primary_server)
    bg = await streaming(policy)
    store = StateStore(connect_fake(standby_server), policy.replication.state_db, policy.name)
    roles = await store.read_roles()
    from drtool.coordination.state import Roles

    await store.write_roles(Roles(generation=roles.generation + 1, primary="standby"),
                            expected_generation=roles.generation)
    with pytest.raises(StaleGeneration, match="a failover happened"):
        await asyncio.wait_for(bg.task, 10)
    bg.runner.stop()


async def test_unplanned_refused_while_the_primary_answers(policy, primary_server, standby_server):
    await make_table(primary_server)
    with pytest.raises(FailoverError, match="the primary still answers .*--planned, or --force"):
        await unplanned_failover(policy, connector=NETWORK)
    assert (await roles_of(policy, "standby")).generation == 0


async def test_unplanned_then_failback_with_writes_on_both_sides(policy, primary_server,
                                                                 standby_server, tmp_path,
                                                                 monkeypatch):
    await make_table(primary_server)
    before = app_perms(primary_server)
    bg = await streaming(policy)
    await bg.__aexit__(None, None, None)
    # writes the primary acknowledged but never replicated, then it dies
    primary_server.put_texts(T, ['{"id":"only-old","v":1}', '{"id":"seed1","v":"old"}'])
    primary_server.down = True
    out = await unplanned_failover(policy, connector=NETWORK)
    assert (out.generation, out.loss["heartbeat"] is not None) == (1, True)
    assert "may be missing" in out.loss["message"]
    new = await app_connect(policy, "standby")
    await new.insert_texts(T, ['{"id":"only-new"}', '{"id":"seed1","v":"new"}'], conflict="replace")
    await new.close()
    # the old primary returns: it still believes it is the primary (generation 0)
    primary_server.down = False
    assert (await roles_of(policy, "primary")).generation == 0
    with pytest.raises(UsageError, match="already exists"):
        (tmp_path / "taken.jsonl").write_text("")
        await failback(policy, connector=NETWORK, lost_writes=tmp_path / "taken.jsonl")
    lost = tmp_path / "lost.jsonl"
    result = await failback(policy, connector=NETWORK, lost_writes=lost)
    assert result.generation == 2 and result.target == "primary"
    lines = [json.loads(line) for line in lost.read_text().splitlines()]
    assert [(l["key"], l["kind"], l["doc"]) for l in lines] == [
        ("only-old", "missing", {"id": "only-old", "v": 1}),
        ("seed1", "changed", {"id": "seed1", "v": "old"})]
    assert result.lost_writes["count"] == 2
    assert primary_server.texts(T) == standby_server.texts(T)  # reconciled, then switched
    assert '{"id":"only-new"}' in primary_server.texts(T)
    assert app_perms(primary_server) == before  # permissions restored on failback
    for role in ("primary", "standby"):
        roles = await roles_of(policy, role)
        assert (roles.generation, roles.primary, roles.step) == (2, "primary", None)
    with pytest.raises(UsageError, match="nothing to fail back"):
        await failback(policy, connector=NETWORK, lost_writes=tmp_path / "again.jsonl")


async def test_unplanned_force_fences_the_primary_first(policy, primary_server, standby_server):
    await make_table(primary_server)
    out = await unplanned_failover(policy, connector=NETWORK, force=True)
    assert out.generation == 1
    assert primary_server.permissions[("app", "app", None)] == {"write": False}
    old = await app_connect(policy, "primary")
    with pytest.raises(PermissionDenied):
        await old.insert_texts(T, ['{"id":1}'])
    await old.close()


async def test_write_hook_fence_for_an_admin_application(tmp_path, primary_server, standby_server,
                                                         monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    pol = load_policy(write_policy(tmp_path, extra=replication_section()
                                   + failover_section("admin", fence="write-hook")).path)
    await make_table(primary_server)
    own = FakeServer.hook_blob()
    await connect_fake(primary_server).set_write_hook(T, own)
    bg = await streaming(pol)
    try:
        out = await planned_failover(pol, connector=NETWORK)
    finally:
        await bg.__aexit__(None, None, None)
    assert out.generation == 1
    res = await connect_fake(primary_server).insert_texts(T, ['{"id":"x"}'])
    assert "generation 1" in res.first_error
    assert primary_server.table_obj(T).write_hook != own
    assert standby_server.table_obj(T).write_hook == own  # the table's own hook on the new primary
