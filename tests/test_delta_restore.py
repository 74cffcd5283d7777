"""restore --delta: only the documents that differ from the snapshot are written (or deleted),
unchanged ranges are neither read nor written, and afterwards every recorded range digest
equals the snapshot's."""

from __future__ import annotations

import asyncio
import json
import random

from drtool.cluster.fake import FakeServer
from drtool.snapshots.delta_restore import delta_restore, DeltaOptions
from drtool.snapshots.restore import RestoreOptions
from drtool.wiring.open import open_repository
from drtool.model import IndexDef, TableName
from drtool.config.policy import load_policy
from tests.conftest import (
    connect_fake, latest_manifest, load_table, on_cluster, sample_docs, table_texts,
)

INDEX_BLOB = FakeServer.index_blob('function(var1) { return var1("n"); }')
N = 20_000


def _damage(server: FakeServer, table: TableName, fraction: float = 0.001, seed: int = 7):
    """Change ``fraction`` of the table: a third updated, a third deleted, a third new keys.
    Returns (updated, deleted, inserted) key texts."""
    rng = random.Random(seed)
    keys = [f'"k{i:07d}"' for i in rng.sample(range(N), int(N * fraction * 2))]
    third = len(keys) // 2
    updated, deleted = sorted(keys[:third]), sorted(keys[third:])
    inserted = sorted(f'"k{i:07d}x"' for i in rng.sample(range(N), third))
    server.put_texts(table, [f'{{"id":{k},"damaged":true}}' for k in updated])
    server.delete(table, deleted)
    server.put_texts(table, [f'{{"id":{k},"new":true}}' for k in inserted])
    return updated, deleted, inserted


def _range_digests(server: FakeServer, table: TableName, entry) -> list[tuple[int, str]]:
    async def go(cluster):
        bounds = [None] + [r.upto for r in entry.ranges[:-1]]
        return await cluster.segment_digests(table, list(zip(bounds, [r.upto for r in entry.ranges])))

    return on_cluster(server, go)


def test_delta_restore_after_changing_a_tenth_of_a_percent(deployment, cli, primary_server):
    table = load_table(primary_server, "app.big", sample_docs(N, pad=300))
    on_cluster(primary_server, lambda c: c.create_index(table, IndexDef("by_n", INDEX_BLOB)))
    assert cli("snapshot").exit_code == 0
    entry = latest_manifest(deployment.path).table(table)
    original = table_texts(primary_server, "app.big")
    assert len(entry.ranges) > 2  # 9.8 MiB in segments of at most 4 MiB (cuts are random)
    updated, deleted, inserted = _damage(primary_server, table)
    on_cluster(primary_server, lambda c: c.drop_index(table, "by_n"))

    dry = cli("restore", "latest", "--delta", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    [planned] = json.loads(dry.stdout)["tables"]
    assert planned["written"] == sorted(updated + deleted)
    assert planned["deleted"] == inserted
    assert planned["schema"] == ["create index by_n"]
    assert planned["digest_ok"] is None
    assert table_texts(primary_server, "app.big") != original  # the dry run changed nothing
    human = cli("restore", "latest", "--delta", "--dry-run")
    assert "dry run: nothing changed" in human.stdout
    assert f"delete {len(inserted)}: " + ", ".join(inserted) in human.stderr  # every key listed

    result = cli("restore", "latest", "--delta", "--json")
    assert result.exit_code == 0, result.stderr
    [done] = json.loads(result.stdout)["tables"]
    assert done["written"] == planned["written"] and done["deleted"] == inserted
    assert done["digest_ok"] is True and done["ranges_differing"] == 0
    assert done["bytes_written"] < 0.01 * sum(len(t.encode()) for t in original)
    assert table_texts(primary_server, "app.big") == original
    assert _range_digests(primary_server, table, entry) == [(r.count, r.digest) for r in entry.ranges]
    meta = on_cluster(primary_server, lambda c: c.table_meta(table))
    assert [i.name for i in meta.indexes] == ["by_n"]
    assert cli("diff", "--against", "latest").exit_code == 0

    again = json.loads(cli("restore", "latest", "--delta", "--json").stdout)["tables"][0]
    assert again["ranges_changed"] == 0 and again["written_count"] == again["deleted_count"] == 0


def test_unchanged_ranges_are_never_read_or_written(deployment, cli, primary_server, monkeypatch):
    table = load_table(primary_server, "app.big", sample_docs(N, pad=300))
    assert cli("snapshot").exit_code == 0
    manifest = latest_manifest(deployment.path)
    entry = manifest.table(table)
    primary_server.put_texts(table, ['{"id":"k0000100","damaged":true}'])  # one range only
    reads, writes = [], []

    async def go():
        repo = await open_repository(load_policy(deployment.path))
        cluster = connect_fake(primary_server)
        get_data, insert = repo.get_data, cluster.insert_texts

        async def counting_get(object_id):
            reads.append(object_id)
            return await get_data(object_id)

        async def counting_insert(t, docs, **kw):
            writes.extend(docs)
            return await insert(t, docs, **kw)

        repo.get_data, cluster.insert_texts = counting_get, counting_insert
        try:
            return await delta_restore(repo, cluster, manifest, RestoreOptions(), DeltaOptions())
        finally:
            await cluster.close()
            await repo.close()

    [report] = asyncio.run(go())
    assert report.ranges_changed == 1 and report.written == ['"k0000100"']
    assert reads == [entry.layers[0].segments[0].id]  # only the changed range's segment
    assert len(writes) == 1 and '"k0000100"' in writes[0]
    # The live side sent digests and a few keys, far fewer bytes than the range's documents.
    assert report.traffic.received < entry.layers[0].segments[0].plain_size / 20


def test_delta_restore_of_a_layered_snapshot_renamed(deployment, cli, primary_server, standby_server):
    table = load_table(primary_server, "app.t", sample_docs(3000, pad=2000))
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(table, ['{"id":"k0000005","v":2}', '{"id":"zz"}'])
    primary_server.delete(table, ['"k0000007"'])
    assert json.loads(cli("snapshot", "--json").stdout)["tables"][0]["layers"] == 2
    wanted = table_texts(primary_server, "app.t")
    copy = load_table(standby_server, "app.copy", sample_docs(3000, pad=2000))  # the old state
    standby_server.put_texts(copy, ['{"id":"k0000009","stale":true}'])

    result = cli("restore", "latest", "--delta", "--to", "standby", "--rename", "app.t=app.copy",
                 "--json")
    assert result.exit_code == 0, result.stderr
    [report] = json.loads(result.stdout)["tables"]
    assert report["written"] == ['"k0000005"', '"k0000009"', '"zz"']
    assert report["deleted"] == ['"k0000007"']
    assert table_texts(standby_server, "app.copy") == wanted
    assert report["digest_ok"]


def test_delta_restore_bad_inputs(deployment, cli, primary_server):
    """Each refusal: exactly one line, its exit code, nothing written."""
    load_table(primary_server, "app.t", sample_docs(10))
    assert cli("snapshot").exit_code == 0
    snap = latest_manifest(deployment.path).id
    before = table_texts(primary_server, "app.t")
    cases = [
        (("restore", "latest", "--dry-run"), 2, "--dry-run works with --delta only"),
        (("restore", "latest", "--delta", "--conflict", "replace"), 2,
         "--delta cannot be combined with --conflict, --shards or --replicas (it replaces "
         "differing documents in existing tables)"),
        (("restore", "latest", "--delta", "--shards", "2"), 2,
         "--delta cannot be combined with --conflict, --shards or --replicas (it replaces "
         "differing documents in existing tables)"),
        (("restore", "latest", "--delta", "--rename", "app.t=app.gone"), 2,
         "table app.gone does not exist on primary fake-primary:28015: restore --delta repairs "
         "an existing table; restore without --delta creates it"),
        (("restore", "latest", "--delta", "--table", "app.x"), 2,
         f"table app.x is not in snapshot {snap}"),
        (("restore", "nosuch", "--delta"), 2,
         f"snapshot nosuch does not exist in file://{deployment.repo_dir}: drtool snapshots "
         "lists the ones it holds"),
        (("restore", "latest", "--delta", "--to", "elsewhere"), 2,
         "expected primary or standby, got 'elsewhere'"),
    ]
    load_table(primary_server, "app.other_key", [], primary_key="name")
    cases.append((("restore", "latest", "--delta", "--rename", "app.t=app.other_key"), 7,
                  "table app.other_key has primary key 'name' but app.t in the snapshot has "
                  "'id': restore into another table with --rename"))
    for args, code, message in cases:
        result = cli(*args)
        assert (result.exit_code, result.stderr) == (code, f"drtool: error: {message}\n"), args
    assert table_texts(primary_server, "app.t") == before


def test_traffic_counts_the_segment_digest_queries(deployment, cli, primary_server):
    """An identical table: nothing is written, and the traffic reported is exactly the two
    segment-digest queries over the recorded ranges (before and the final check)."""
    from drtool.compare.diff_ranges import SearchParams, Side
    from drtool.snapshots.diff_snapshot import recorded_ranges
    from drtool.util.units import format_bytes

    # ~26 MB: segments are cut at random keys (the repository's chunk key) but never exceed
    # 4 MiB, so at least 7 ranges whatever the key: more than the 4 queries, several per query
    table = load_table(primary_server, "app.t", sample_docs(24000, pad=1000))
    assert cli("snapshot").exit_code == 0
    entry = latest_manifest(deployment.path).table(table)
    assert len(entry.ranges) >= 5

    async def one_query(cluster):
        side = Side(cluster, table, SearchParams())
        await side.segment_digests(recorded_ranges(entry))
        return side.traffic

    result = cli("restore", "latest", "--delta", "--json")
    assert result.exit_code == 0, result.stderr
    [report] = json.loads(result.stdout)["tables"]
    assert report["ranges_changed"] == 0 and report["written_count"] == 0
    assert report["bytes_written"] == 0 and report["digest_ok"]
    assert report["traffic"]["bytes"] > 0 and report["traffic"]["queries"] >= 2
    one = on_cluster(primary_server, one_query)
    assert report["traffic"] == {"queries": 2 * one.queries, "sent": 2 * one.sent,
                                 "received": 2 * one.received, "bytes": 2 * one.bytes}
    human = cli("restore", "latest", "--delta")
    assert human.exit_code == 0 and f" {format_bytes(2 * one.bytes)} " in human.stdout


def test_delta_restore_refused_while_a_failover_is_in_progress(deployment, cli, primary_server,
                                                               standby_server):
    from drtool.coordination.state import Roles, StateStore

    load_table(primary_server, "app.t", sample_docs(10))
    assert cli("snapshot").exit_code == 0
    copy = load_table(standby_server, "app.t", sample_docs(9))

    async def failover_step(cluster):
        store = StateStore(cluster, "drtool", "test")  # the policy's default state_db
        await store.ensure()
        await store.write_roles(Roles(0, "primary", "drain"), expected_generation=0)

    on_cluster(standby_server, failover_step)
    before = standby_server.texts(copy)
    result = cli("restore", "latest", "--delta", "--to", "standby")
    assert result.exit_code == 8, result.stderr
    assert result.stderr.strip() == (
        "drtool: error: a failover is in progress (step drain, generation 0): restore --delta "
        "would write into the standby; finish it first (run the same drtool failover/failback "
        "command again)")
    assert standby_server.texts(copy) == before
    dry = cli("restore", "latest", "--delta", "--to", "standby", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr  # a dry run writes nothing: allowed
    assert json.loads(dry.stdout)["tables"][0]["written"] == ['"k0000009"']


def _store_with_ranges_not_following_segments(policy_path, manifest):
    """Store a copy of ``manifest`` whose first table records one range for the whole table
    (as a drtool older than the segment-digest format would): returns the copy."""
    import dataclasses

    from drtool.repo.manifest import Range

    entry = manifest.tables[0]
    whole = Range(None, entry.doc_count, entry.digest)
    old = dataclasses.replace(manifest, id=manifest.id[:-8] + "0ddf0a11",
                              tables=(dataclasses.replace(entry, ranges=(whole,)),))

    async def go():
        async with await open_repository(load_policy(policy_path)) as repo:
            await repo.put_manifest(old)

    asyncio.run(go())
    return old


def test_snapshot_whose_ranges_do_not_follow_its_segments_is_refused(deployment, cli,
                                                                      primary_server):
    """On the core (fake cluster) and from the CLI: one line, exit 2, nothing written."""
    import pytest

    from drtool.errors import UsageError

    # 5.8 MiB: more than one segment of at most 4 MiB, wherever the random cuts fall
    table = load_table(primary_server, "app.t", sample_docs(5000, pad=1000))
    assert cli("snapshot").exit_code == 0
    manifest = latest_manifest(deployment.path)
    assert len(manifest.table(table).layers[0].segments) > 1
    old = _store_with_ranges_not_following_segments(deployment.path, manifest)
    primary_server.put_texts(table, ['{"id":"k0000001","v":2}'])
    before = table_texts(primary_server, "app.t")
    message = ("table app.t of this snapshot was made by an older drtool (its ranges do not "
               "follow its segments): restore --delta cannot use it; restore with --conflict "
               "replace instead")

    async def core():
        async with await open_repository(load_policy(deployment.path)) as repo:
            cluster = connect_fake(primary_server)
            try:
                await delta_restore(repo, cluster, old, RestoreOptions())
            finally:
                await cluster.close()

    with pytest.raises(UsageError) as err:
        asyncio.run(core())
    assert str(err.value) == message and err.value.exit_code == 2
    result = cli("restore", old.id, "--delta")
    assert (result.exit_code, result.stderr) == (2, f"drtool: error: {message}\n")
    assert table_texts(primary_server, "app.t") == before
    assert cli("restore", manifest.id, "--delta").exit_code == 0  # the real one still works


def test_delta_restore_needs_a_key_that_reads_data(tmp_path, primary_server, standby_server):
    from tests.conftest import Cli, writer_only_deployment

    dep, _ = writer_only_deployment(tmp_path)
    load_table(primary_server, "app.t", sample_docs(10))
    cli = Cli(dep.path)
    assert cli("snapshot").exit_code == 0
    result = cli("restore", "latest", "--delta")
    assert (result.exit_code, result.stderr) == (5, (
        "drtool: error: restore --delta needs a key that can decrypt document data: set "
        "encryption.identity_file or encryption.passphrase_env in the policy\n"))

