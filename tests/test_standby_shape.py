"""A smaller standby (``[replication] standby_replicas``/``standby_shards``, fake clusters: a
3-server primary and a 1-server standby): the runner creates its tables in the policy's shape,
``diff`` compares against that shape (exit 0 when every document is equal), ``reconcile``
leaves nothing unresolved, ``restore --to standby`` applies it; without the setting the
runner's create error names it."""

from __future__ import annotations

import asyncio
import json

from drtool.config.policy import load_policy
from drtool.model import TableName
from drtool.standby.events import LOGGER

from tests.conftest import Cli, connect_fake, write_policy
from tests.replication_helpers import (
    Background, replicate_until_streaming, replication_section, wait_until,
)

T = TableName("app", "t")


def three_by_three(primary_server, standby_server) -> None:
    primary_server.servers, standby_server.servers = 3, 1

    async def make():
        c = connect_fake(primary_server)
        await c.ensure_db("app")
        await c.create_table(T, primary_key="id", shards=3, replicas=3)
        await c.insert_texts(T, ['{"id":%d}' % i for i in range(50)])
    asyncio.run(make())


def test_diff_and_reconcile_follow_the_policys_standby_shape(tmp_path, primary_server,
                                                             standby_server):
    three_by_three(primary_server, standby_server)
    dep = write_policy(tmp_path, extra=replication_section(standby_replicas="1"))
    policy = load_policy(dep.path)
    replicate_until_streaming(policy)
    meta = asyncio.run(connect_fake(standby_server).table_meta(T))
    assert (meta.shards, meta.replicas) == (3, 1)
    cli = Cli(dep.path)
    diff = cli("diff", "--json", "-q")
    assert diff.exit_code == 0, diff.stdout + diff.stderr
    assert json.loads(diff.stdout)["tables"][0]["schema"] == []
    reconcile = cli("reconcile", "-q")
    assert reconcile.exit_code == 0, reconcile.stdout + reconcile.stderr
    assert "not resolved" not in reconcile.stdout
    # a standby table of another shape than the policy's is still a difference
    standby_server.table_obj(T).shards = 1
    diff = cli("diff", "-q")
    assert diff.exit_code == 1
    assert "shards: 3 on primary, 1 on standby" in diff.stdout
    standby_server.table_obj(T).shards, standby_server.table_obj(T).replicas = 3, 3
    diff = cli("diff", "-q")
    assert diff.exit_code == 1
    assert "replicas: 3 (standby_replicas = 1) on primary, 3 on standby" in diff.stdout


def test_without_standby_replicas_the_create_error_names_it(tmp_path, primary_server,
                                                            standby_server, caplog):
    three_by_three(primary_server, standby_server)
    policy = load_policy(write_policy(tmp_path, extra=replication_section()).path)
    caplog.set_level("WARNING", logger=LOGGER)

    async def go():
        async with Background(policy) as bg:
            await wait_until(lambda: any("table-error" in m for m in caplog.messages),
                             "the table's create error")
            assert bg.runner.replicators[T].state == "error"
    asyncio.run(go())
    error = next(m for m in caplog.messages if "table-error" in m)
    assert error.startswith("table-error: app.t: cannot create it on the standby with 3 shards "
                            "and 3 replicas: ")
    assert "can't put 3 replicas on servers with the tag `default`" in error
    assert error.endswith("; set [replication] standby_replicas (and standby_shards) to what the "
                          "standby can hold, e.g. standby_replicas = 1 for a one-server standby")


def test_restore_to_the_standby_applies_the_policys_shape(tmp_path, primary_server,
                                                          standby_server):
    three_by_three(primary_server, standby_server)
    dep = write_policy(tmp_path, extra=replication_section(standby_replicas="1",
                                                           standby_shards="2"))
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    assert cli("snapshot", "-q").exit_code == 0
    restored = cli("restore", "latest", "--to", "standby", "-q")
    assert restored.exit_code == 0, restored.stdout + restored.stderr
    meta = asyncio.run(connect_fake(standby_server).table_meta(T))
    assert (meta.shards, meta.replicas) == (2, 1)
    assert standby_server.texts(T) == primary_server.texts(T)
    # to the primary: the snapshot's recorded shape
    connect_primary = connect_fake(primary_server)
    asyncio.run(connect_primary.drop_table(T))
    assert cli("restore", "latest", "-q").exit_code == 0
    meta = asyncio.run(connect_fake(primary_server).table_meta(T))
    assert (meta.shards, meta.replicas) == (3, 3)
