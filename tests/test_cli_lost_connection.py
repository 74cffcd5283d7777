"""Every command that reads or writes a cluster table by table starts a table again when its
connection is lost part-way (the server it used died; drtool.util.retry): diff, reconcile and
restore here (snapshot: test_cli_snapshot_restore), through the CLI on fake clusters, with the
one-line exit 3 once the retries are spent or when starting again is not safe."""

from __future__ import annotations

import json

import pytest

from drtool.model import TableName
from tests.conftest import load_table, sample_docs, table_texts

T = TableName("app", "users")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("drtool.util.retry.RECONNECT_FIRST", 0.01)


def test_diff_compares_a_table_again_after_a_lost_connection(cli, primary_server,
                                                             standby_server, monkeypatch):
    docs = sample_docs(500)
    load_table(primary_server, "app.users", docs)
    load_table(standby_server, "app.users", docs[:-1])
    standby_server.fail_next("chunk_digests", times=2)
    result = cli("diff", "--json")
    assert result.exit_code == 1, result.stderr  # the one missing document, found
    assert json.loads(result.stdout)["tables"][0]["missing"] == [json.dumps(
        json.loads(docs[-1])["id"])]
    assert result.stderr.count("lost connection (injected, chunk_digests): starting again") == 2

    monkeypatch.setattr("drtool.util.retry.RECONNECTS", 1)
    standby_server.fail_next("chunk_digests", times=2)
    failed = cli("diff")
    assert failed.exit_code == 3 and failed.stderr.count("\n") == 2, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("drtool: error: ")
    assert "lost connection (injected, chunk_digests)" in failed.stderr.splitlines()[-1]


def test_reconcile_starts_a_table_again_after_a_lost_connection(cli, primary_server,
                                                                standby_server):
    load_table(primary_server, "app.users", sample_docs(3000, pad=50))
    load_table(standby_server, "app.users", sample_docs(1000, pad=50))
    standby_server.fail_next("insert_texts")  # the first batch of repairs is lost
    result = cli("reconcile")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "starting again" in result.stderr
    assert table_texts(standby_server, "app.users") == table_texts(primary_server, "app.users")
    assert cli("diff").exit_code == 0


def test_restore_into_a_new_table_starts_again_after_a_lost_connection(
        deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.users", sample_docs(5000, pad=50))
    assert cli("snapshot").exit_code == 0
    standby_server.fail_next("insert_texts")
    result = cli("restore", "latest", "--to", "standby", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "starting again" in result.stderr
    table = json.loads(result.stdout)["tables"][0]
    assert table["created"] is True and table["digest_ok"] is True
    assert table_texts(standby_server, "app.users") == table_texts(primary_server, "app.users")


def test_restore_with_conflict_error_into_an_existing_table_is_not_repeated(
        deployment, cli, primary_server, standby_server):
    """Documents of the first attempt would come back as conflicts: exit 3, one line."""
    load_table(primary_server, "app.users", sample_docs(2000))
    assert cli("snapshot").exit_code == 0
    load_table(standby_server, "app.users", ['{"id":"local"}'])
    standby_server.fail_next("insert_texts")
    refused = cli("restore", "latest", "--to", "standby", "--conflict", "error")
    assert refused.exit_code == 3 and refused.stderr.count("\n") == 1, refused.stderr
    assert "starting again" not in refused.stderr

    standby_server.fail_next("insert_texts")
    replaced = cli("restore", "latest", "--to", "standby", "--conflict", "replace")
    assert replaced.exit_code == 0, replaced.stdout + replaced.stderr
    assert "starting again" in replaced.stderr
    assert set(table_texts(primary_server, "app.users")) < set(
        table_texts(standby_server, "app.users"))


def test_diff_against_a_snapshot_compares_a_table_again_after_a_lost_connection(
        deployment, cli, primary_server):
    load_table(primary_server, "app.users", sample_docs(800))
    assert cli("snapshot").exit_code == 0
    primary_server.delete(T, ['"k0000005"'])
    primary_server.fail_next("segment_digests")
    result = cli("diff", "--against", "latest", "--json")
    assert result.exit_code == 1, result.stderr
    assert "starting again" in result.stderr
    assert json.loads(result.stdout)["tables"][0]["extra"] == ['"k0000005"']


def test_restore_delta_repairs_a_table_again_after_a_lost_connection(
        deployment, cli, primary_server):
    load_table(primary_server, "app.users", sample_docs(3000, pad=50))
    assert cli("snapshot").exit_code == 0
    kept = table_texts(primary_server, "app.users")
    primary_server.delete(T, ['"k%07d"' % i for i in range(0, 3000, 7)])
    primary_server.fail_next("insert_texts")
    result = cli("restore", "latest", "--delta", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "starting again" in result.stderr
    assert table_texts(primary_server, "app.users") == kept
