"""restore --delta stopped part-way (the target lost, Ctrl-C) or written to meanwhile: the
message says to run the same restore --delta again, naming the table and the snapshot, and
that run finishes the job (texts and range digests equal to the snapshot's)."""

from __future__ import annotations

import json

from tests.conftest import latest_manifest, load_table, sample_docs, table_texts
from tests.test_delta_restore import N, _damage, _range_digests


def _stop_after_writes(monkeypatch, n: int, stop) -> list[int]:
    """Every FakeCluster.insert_texts after the first ``n`` calls first runs ``stop()`` (the
    target stops answering, or Ctrl-C); returns the sizes of the batches sent."""
    from drtool.cluster.fake import FakeCluster

    sent: list[int] = []
    insert = FakeCluster.insert_texts

    async def insert_then_stop(self, table, docs, **kw):
        if len(sent) >= n:
            stop()
        sent.append(len(docs))
        return await insert(self, table, docs, **kw)

    monkeypatch.setattr(FakeCluster, "insert_texts", insert_then_stop)
    return sent


def _rerun_hint(table: str, snapshot_id: str) -> str:
    return (f"table {table} may be partly restored from snapshot {snapshot_id}: run the same "
            f"restore {snapshot_id} --delta again to finish (it is idempotent: it writes only "
            "what still differs)")


def test_target_lost_half_way_then_the_same_delta_restore_finishes(deployment, cli,
                                                                    primary_server, monkeypatch):
    table = load_table(primary_server, "app.big", sample_docs(N, pad=300))
    assert cli("snapshot").exit_code == 0
    manifest = latest_manifest(deployment.path)
    original = table_texts(primary_server, "app.big")
    updated, deleted, inserted = _damage(primary_server, table, fraction=0.05)
    damaged = table_texts(primary_server, "app.big")

    def lose_the_target():
        primary_server.down = True

    sent = _stop_after_writes(monkeypatch, 1, lose_the_target)
    monkeypatch.setattr("drtool.util.retry.RECONNECT_FIRST", 0.01)
    result = cli("restore", "latest", "--delta")
    assert result.exit_code == 3, result.stderr
    *notes, line = result.stderr.strip().splitlines()  # tried again 4 times first
    assert len(notes) == 4 and all(": starting again in " in n for n in notes), notes
    assert line.startswith("drtool: error: primary fake-primary:28015: lost connection")
    assert line.endswith(_rerun_hint("app.big", manifest.id)), line
    assert "--conflict" not in line
    assert len(sent) == 2  # one batch written, the next refused
    primary_server.down = False
    partly = table_texts(primary_server, "app.big")
    assert partly != damaged and partly != original

    monkeypatch.undo()
    again = cli("restore", manifest.id, "--delta", "--json")
    assert again.exit_code == 0, again.stderr
    [report] = json.loads(again.stdout)["tables"]
    assert report["digest_ok"] and report["written_count"] == len(updated) + len(deleted) - sent[0]
    assert set(report["deleted"]) <= set(inserted)  # the first run deleted some of them
    assert table_texts(primary_server, "app.big") == original
    entry = manifest.table(table)
    assert _range_digests(primary_server, table, entry) == [(r.count, r.digest) for r in entry.ranges]


def test_interrupted_delta_restore_says_to_run_it_again(deployment, cli, primary_server,
                                                        monkeypatch):
    table = load_table(primary_server, "app.big", sample_docs(N, pad=300))
    assert cli("snapshot").exit_code == 0
    manifest = latest_manifest(deployment.path)
    original = table_texts(primary_server, "app.big")
    _damage(primary_server, table, fraction=0.05)

    def ctrl_c():
        raise KeyboardInterrupt

    _stop_after_writes(monkeypatch, 1, ctrl_c)
    result = cli("restore", "latest", "--delta", "--table", "app.big")
    assert result.exit_code == 130, result.stderr
    assert result.stderr.strip() == "drtool: error: interrupted: " + _rerun_hint(
        "app.big", manifest.id)
    assert table_texts(primary_server, "app.big") != original
    monkeypatch.undo()
    again = cli("restore", manifest.id, "--delta", "--table", "app.big", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["tables"][0]["digest_ok"]
    assert table_texts(primary_server, "app.big") == original


def test_an_error_before_any_write_gives_no_rerun_advice(deployment, cli, primary_server,
                                                        monkeypatch):
    from drtool.util import retry

    monkeypatch.setattr(retry, "RECONNECT_FIRST", 0.01)
    table = load_table(primary_server, "app.t", sample_docs(100))
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(table, ['{"id":"k0000001","v":2}'])
    primary_server.fail_next("segment_digests", times=1 + retry.RECONNECTS)  # every attempt
    result = cli("restore", "latest", "--delta")
    assert result.exit_code == 3
    *notes, line = result.stderr.strip().splitlines()
    assert len(notes) == retry.RECONNECTS
    assert line == ("drtool: error: primary fake-primary:28015: lost connection (injected, "
                    "segment_digests)")


def test_written_to_during_the_delta_restore_is_exit_1(deployment, cli, primary_server,
                                                       monkeypatch):
    """A write landing after the repair (before the final check): exit 1, one line naming the
    table and the snapshot; running it again makes the table equal."""
    from drtool.cluster.fake import FakeCluster

    table = load_table(primary_server, "app.t", sample_docs(100))
    assert cli("snapshot").exit_code == 0
    snap = latest_manifest(deployment.path).id
    original = table_texts(primary_server, "app.t")
    primary_server.put_texts(table, ['{"id":"k0000001","v":2}'])
    sync = FakeCluster.sync

    async def sync_then_a_write(self, t):
        await sync(self, t)
        primary_server.put_texts(table, ['{"id":"k0000050","meanwhile":true}'])

    monkeypatch.setattr(FakeCluster, "sync", sync_then_a_write)
    result = cli("restore", "latest", "--delta", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["tables"][0]["ranges_differing"] == 1
    assert result.stderr == (f"drtool: error: after the delta restore app.t still differs from "
                             f"snapshot {snap} (written to meanwhile?): run the same restore "
                             "--delta again\n")
    monkeypatch.undo()
    assert cli("restore", snap, "--delta").exit_code == 0
    assert table_texts(primary_server, "app.t") == original
