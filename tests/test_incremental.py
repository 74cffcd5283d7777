"""Incremental snapshots: only what changed is stored, as delta layers; every snapshot of a
chain restores exactly its own state."""

from __future__ import annotations

import json
import random
import re

from drtool.model import TableName
from tests.conftest import Cli, load_table, sample_docs, table_texts, writer_only_deployment

TABLE = TableName("app", "t")


def _change(server, *, updates=(), inserts=(), deletes=()):
    server.put_texts(TABLE, [json.dumps({"id": f"k{i:07d}", "updated": True, "i": i}) for i in updates]
                     + [json.dumps({"id": f"new{i:07d}", "fresh": i}) for i in inserts])
    server.delete(TABLE, [json.dumps(f"k{i:07d}") for i in deletes])


def _snapshot(cli, *args):
    result = cli("snapshot", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _restore_equals(cli, snapshot_id, expected, standby_server, name="check.t"):
    result = cli("restore", snapshot_id, "--to", "standby", "--rename", f"app.t={name}", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tables"][0]["digest_ok"] is True
    assert table_texts(standby_server, name) == expected


def test_incremental_stores_only_changes_and_restores_each_state(
        deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.t", sample_docs(6000))
    first = _snapshot(cli)
    state1 = table_texts(primary_server, "app.t")

    rng = random.Random(7)
    _change(primary_server, updates=rng.sample(range(6000), 60), inserts=range(60),
            deletes=rng.sample(range(6000), 20))
    second = _snapshot(cli)
    state2 = table_texts(primary_server, "app.t")
    assert second["tables"][0]["layers"] == 2
    assert second["parent"] == first["id"]
    assert second["documents"] == 6000 + 60 - 20
    assert 0 < second["bytes_new"] < 0.1 * first["bytes_new"], (second["bytes_new"], first["bytes_new"])

    _change(primary_server, updates=[1, 2, 3], deletes=[4])
    third = _snapshot(cli)
    state3 = table_texts(primary_server, "app.t")
    assert third["tables"][0]["layers"] == 3

    assert cli("verify", "--read-data").exit_code == 0
    _restore_equals(cli, first["id"], state1, standby_server, "check.one")
    _restore_equals(cli, second["id"], state2, standby_server, "check.two")
    _restore_equals(cli, third["id"], state3, standby_server, "check.three")


def test_unchanged_table_adds_no_layer(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(500))
    first = _snapshot(cli)
    again = _snapshot(cli)
    assert again["bytes_new"] == 0 and again["tables"][0]["layers"] == 1
    assert again["tables"][0]["digest"] == first["tables"][0]["digest"]


def test_chain_depth_and_full_flag_force_full_copies(deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.t", sample_docs(300))
    _snapshot(cli)
    for i in range(6):
        _change(primary_server, updates=[i])
        assert _snapshot(cli)["tables"][0]["layers"] == i + 2
    _change(primary_server, updates=[100])
    seventh = _snapshot(cli)
    assert seventh["tables"][0]["layers"] == 1  # the chain was 7 layers deep: copied in full
    _change(primary_server, updates=[101])
    assert _snapshot(cli, "--full")["tables"][0]["layers"] == 1
    _restore_equals(cli, "latest", table_texts(primary_server, "app.t"), standby_server)


def test_large_delta_triggers_full_copy_next_time(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(1000))
    _snapshot(cli)
    _change(primary_server, updates=range(500))  # half the table
    assert _snapshot(cli)["tables"][0]["layers"] == 2
    _change(primary_server, updates=[600])
    assert _snapshot(cli)["tables"][0]["layers"] == 1  # deltas exceeded 30% of the base


def test_writer_only_host_makes_incrementals(tmp_path, primary_server, standby_server):
    dep, keyfile = writer_only_deployment(tmp_path)
    writer = Cli(dep.path)
    load_table(primary_server, "app.t", sample_docs(800))
    _snapshot(writer)
    _change(primary_server, updates=[5, 6], inserts=[1], deletes=[7])
    second = _snapshot(writer)
    assert second["tables"][0]["layers"] == 2

    # The restore host has the identity instead of the writer key.
    restorer = tmp_path / "restore.toml"
    restorer.write_text(dep.path.read_text().replace(
        f'writer_key_file = "{dep.writer_key}"', f'identity_file = "{keyfile}"'))
    _restore_equals(Cli(restorer), "latest", table_texts(primary_server, "app.t"), standby_server)


def test_writes_during_incremental_are_included(deployment, cli, primary_server, standby_server):
    load_table(primary_server, "app.t", sample_docs(3000))
    _snapshot(cli)
    _change(primary_server, updates=[2500])
    seen, done = [], []

    def write_behind(scanned_table, key):
        seen.append(key)
        if len(seen) == 50 and not done:  # while the changed range is being read
            done.append(True)
            _change(primary_server, updates=[1], inserts=[9], deletes=[2])

    primary_server.on_scan_row(write_behind)
    second = _snapshot(cli)
    assert done
    assert second["tables"][0]["layers"] >= 2
    _restore_equals(cli, "latest", table_texts(primary_server, "app.t"), standby_server)


def test_changed_ranges_are_read_as_hashes_and_only_changed_documents_fetched(
        deployment, cli, primary_server, standby_server, monkeypatch):
    from drtool.cluster.fake import FakeCluster

    load_table(primary_server, "app.t", sample_docs(2000))
    _snapshot(cli)
    _change(primary_server, updates=[1234], deletes=[55])
    reads = {"scan": 0, "hash_scan": 0, "fetched": []}
    scan, hash_scan, get_docs = FakeCluster.scan, FakeCluster.hash_scan, FakeCluster.get_docs

    def counting_scan(self, table, **kw):
        reads["scan"] += 1
        return scan(self, table, **kw)

    def counting_hash_scan(self, table, **kw):
        reads["hash_scan"] += 1
        return hash_scan(self, table, **kw)

    async def counting_get_docs(self, table, keys):
        reads["fetched"].extend(keys)
        return await get_docs(self, table, keys)

    monkeypatch.setattr(FakeCluster, "scan", counting_scan)
    monkeypatch.setattr(FakeCluster, "hash_scan", counting_hash_scan)
    monkeypatch.setattr(FakeCluster, "get_docs", counting_get_docs)
    second = _snapshot(cli)
    monkeypatch.undo()
    assert reads["scan"] == 0  # no document was read in full from the primary ...
    assert 1 <= reads["hash_scan"] <= 2  # ... only the hashes of the (one or two) changed ranges
    assert reads["fetched"] == ['"k0001234"']  # and the one changed document
    assert second["tables"][0]["layers"] == 2
    _restore_equals(cli, "latest", table_texts(primary_server, "app.t"), standby_server)


def test_policy_sets_when_a_full_copy_is_made(deployment, cli, primary_server):
    deployment.path.write_text(deployment.path.read_text()
                               + "[schedule]\nfull_after_layers = 2\nfull_after_delta = \"500%\"\n")
    load_table(primary_server, "app.t", sample_docs(300))
    _snapshot(cli)
    _change(primary_server, updates=[1])
    assert _snapshot(cli)["tables"][0]["layers"] == 2
    _change(primary_server, updates=[2])
    assert _snapshot(cli)["tables"][0]["layers"] == 1  # the chain reached full_after_layers


def _forge(deployment, change) -> str:
    """Store a copy of the latest manifest, altered by ``change(manifest) -> manifest``, as a
    new snapshot (as a buggy or malicious writer could); return its id."""
    import asyncio
    from dataclasses import replace

    from drtool.wiring.open import open_repository
    from drtool.config.policy import load_policy
    from drtool.repo.objects import new_snapshot_id

    async def go():
        async with await open_repository(load_policy(deployment.path)) as repo:
            latest = await repo.resolve("latest")
            forged = replace(change(latest), id=new_snapshot_id(after=latest.id))
            await repo.put_manifest(forged)
            return forged.id

    return asyncio.run(go())


def test_verify_read_data_checks_the_merged_layers_against_the_ranges(deployment, cli,
                                                                      primary_server):
    from dataclasses import replace

    from drtool.reql.digest import fold_digests

    load_table(primary_server, "app.t", sample_docs(500))
    _snapshot(cli)
    _change(primary_server, updates=[7], deletes=[8])
    assert _snapshot(cli)["tables"][0]["layers"] == 2
    assert cli("verify", "--read-data").exit_code == 0

    def wrong_range(manifest):  # consistent table digest, wrong range digest
        table = manifest.tables[0]
        ranges = (replace(table.ranges[0], digest="00000000-0000-5000-8000-000000000000"),)
        ranges += table.ranges[1:]
        table = replace(table, ranges=ranges, digest=fold_digests(r.digest for r in ranges))
        return replace(manifest, tables=(table,))

    forged = _forge(deployment, wrong_range)
    result = cli("verify", forged, "--read-data")
    assert result.exit_code == 1
    assert f"snapshot {forged} table app.t: range 1 of" in result.stdout
    assert "the layers merged give" in result.stdout


def test_verify_read_data_checks_index_objects_against_documents(deployment, cli, primary_server):
    from dataclasses import replace

    load_table(primary_server, "app.t", sample_docs(3000, pad=4000))  # several segments
    _snapshot(cli)

    def swapped_index(manifest):  # segment 0 paired with segment 1's index object
        table = manifest.tables[0]
        segs = list(table.layers[0].segments)
        segs[0] = replace(segs[0], index=segs[1].index, index_size=segs[1].index_size)
        layer = replace(table.layers[0], segments=tuple(segs))
        return replace(manifest, tables=(replace(table, layers=(layer,)),))

    forged = _forge(deployment, swapped_index)
    result = cli("verify", forged, "--read-data")
    assert result.exit_code == 1
    assert re.search(r"index object [0-9a-f]{64} (lists \d+ documents, the segment holds \d+"
                     r"|line 1 does not match the document's hash)", result.stdout), result.stdout
