"""Restores that stop or are refused part-way: interrupted, too few servers for the replicas,
refused write batches, durability and write acks kept, write results checked."""

from __future__ import annotations

import pytest

from drtool.model import TableName
from tests.conftest import (
    load_table,
    on_cluster,
    sample_docs,
    table_texts,
)


def test_interrupted_restore_says_what_to_do(deployment, cli, primary_server, monkeypatch):
    load_table(primary_server, "app.t", sample_docs(3))
    assert cli("snapshot").exit_code == 0

    async def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("drtool.cli.data_commands.restore_snapshot", interrupted)
    result = cli("restore", "latest", "--rename", "app.t=copy.t")
    assert result.exit_code == 130
    assert "interrupted: the target tables may be partly restored" in result.stderr
    assert "--conflict replace" in result.stderr
    assert "--delta (it writes only what differs)" in result.stderr  # the cheaper re-run


def test_restore_into_a_smaller_cluster_needs_replica_override(deployment, cli, primary_server,
                                                               standby_server):
    primary_server.servers = 3
    table = TableName("app", "wide")

    async def create(cluster):
        await cluster.ensure_db("app")
        await cluster.create_table(table, primary_key="id", shards=2, replicas=3)
        await cluster.insert_texts(table, sample_docs(20, pad=10))

    on_cluster(primary_server, create)
    assert cli("snapshot").exit_code == 0
    refused = cli("restore", "latest", "--to", "standby")
    assert refused.exit_code == 7
    assert "cannot create app.wide with 2 shards and 3 replicas as recorded" in refused.stderr
    assert "--replicas N" in refused.stderr
    fitted = cli("restore", "latest", "--to", "standby", "--replicas", "1", "--shards", "1")
    assert fitted.exit_code == 0, fitted.stderr
    meta = on_cluster(standby_server, lambda c: c.table_meta(table))
    assert (meta.shards, meta.replicas) == (1, 1)
    assert table_texts(standby_server, "app.wide") == table_texts(primary_server, "app.wide")


def test_a_refused_write_batch_fails_the_restore(deployment, cli, primary_server, standby_server):
    """Every batch's result is checked, however the batches interleave (a refused batch once
    went unnoticed when the target already had documents)."""
    from drtool.errors import ClusterError

    load_table(primary_server, "app.t", sample_docs(8000, pad=400))
    assert cli("snapshot").exit_code == 0
    load_table(standby_server, "app.t", ['{"id":"other"}'])
    standby_server.fail_next("insert_texts", ClusterError("fake-standby: write refused (injected)"))
    result = cli("restore", "latest", "--to", "standby", "--conflict", "replace")
    assert result.exit_code == 7, result.stdout + result.stderr
    assert "write refused (injected)" in result.stderr


def test_restore_keeps_durability_and_write_acks(deployment, cli, primary_server, standby_server):
    table = TableName("app", "tuned")

    async def create(cluster):
        await cluster.ensure_db("app")
        await cluster.create_table(table, primary_key="id", shards=1, replicas=1,
                                   durability="soft", write_acks="single")
        await cluster.insert_texts(table, sample_docs(5, pad=10))

    on_cluster(primary_server, create)
    assert cli("snapshot").exit_code == 0
    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    meta = on_cluster(standby_server, lambda c: c.table_meta(table))
    assert (meta.durability, meta.write_acks) == ("soft", "single")


@pytest.mark.parametrize("result, message", [
    (dict(errors=1, first_error="Primary key too long (max 127 characters): ..."),
     "writing to copy.t failed: Primary key too long"),
    (dict(inserted=1), "writing to copy.t: the server acknowledged 1 of 3 documents"),
])
def test_write_results_the_server_reports_are_checked(deployment, cli, primary_server, monkeypatch,
                                                     result, message):
    """Per-document failures come back in the result, not as exceptions (reql-facts.md)."""
    from drtool.cluster.fake import FakeCluster
    from drtool.model import WriteResult

    load_table(primary_server, "app.t", sample_docs(3, pad=10))
    assert cli("snapshot").exit_code == 0

    async def partial_insert(self, table, docs, **kwargs):
        return WriteResult(**result)

    monkeypatch.setattr(FakeCluster, "insert_texts", partial_insert)
    refused = cli("restore", "latest", "--rename", "app.t=copy.t")
    assert refused.exit_code == 7
    assert message in refused.stderr
