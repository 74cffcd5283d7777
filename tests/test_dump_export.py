"""export-dump, and import-dump --via a cluster: archives rethinkdb restore reads, written from
snapshots; unordered archives sorted by a cluster's scratch tables."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from pathlib import Path

from drtool.cluster.fake import FakeServer
from drtool.dumps import archive as dump_archive
from drtool.model import TableName
from tests.conftest import latest_manifest, load_table, sample_docs, table_texts
from tests.dump_archives import info, json_file, table_files, write_archive
from tests.golden import GOLDEN
from tests.test_dump_interop import _archive, _seed

INDEX_BLOB = FakeServer.index_blob('function(var1) { return var1("n"); }')
HOOK_BLOB = FakeServer.hook_blob()


def golden_texts() -> list[str]:
    """Every golden document as the real server printed it, in key order."""
    return list(GOLDEN["table_in_key_order"])


# --- export-dump ---------------------------------------------------------------------------
def _read_back(path: Path) -> dict[TableName, tuple]:
    catalog = dump_archive.read_catalog(path)
    out = {}
    for table, batches in dump_archive.rows(catalog):
        out[table.name] = (table.meta, [text for batch in batches for _, text in batch])
    return out


def test_export_dump_writes_what_rethinkdb_restore_reads(deployment, cli, primary_server, tmp_path):
    _, texts = _seed(primary_server)
    load_table(primary_server, "app.empty", [])
    snap = json.loads(cli("snapshot", "--json").stdout)
    out = tmp_path / "out" / "export.tar.gz"
    out.parent.mkdir()

    result = cli("export-dump", "latest", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["snapshot"] == snap["id"] and report["bytes"] == out.stat().st_size
    assert sorted(p.name for p in out.parent.iterdir()) == ["export.tar.gz"]  # no temp left
    back = _read_back(out)
    meta, exported = back[TableName("app", "t")]
    assert exported == texts
    assert meta.primary_key == "id" and meta.write_hook == HOOK_BLOB
    assert [(i.name, i.blob) for i in meta.indexes] == [("by_n", INDEX_BLOB)]
    assert back[TableName("app", "empty")][1] == []
    raw = out.read_bytes()
    text = gzip.decompress(raw)
    assert b'"primary_key": "id"' in text and b"rethinkdb_dump_" in text

    # and it imports back to the very same snapshot content
    assert cli("import-dump", str(out)).exit_code == 0
    again = latest_manifest(deployment.path).table(TableName("app", "t"))
    assert again.digest == next(t["digest"] for t in snap["tables"] if t["table"] == "app.t")


def test_export_dump_refuses_to_overwrite(deployment, cli, primary_server, tmp_path):
    load_table(primary_server, "app.t", sample_docs(10))
    assert cli("snapshot").exit_code == 0
    out = tmp_path / "exists.tar.gz"
    out.write_bytes(b"keep me")
    result = cli("export-dump", "latest", "--out", str(out))
    assert result.exit_code == 2
    assert f"{out} already exists: export-dump never overwrites" in result.stderr
    assert out.read_bytes() == b"keep me"
    nodir = cli("export-dump", "latest", "--out", str(tmp_path / "no" / "x.tar.gz"))
    assert nodir.exit_code == 2 and "no such directory" in nodir.stderr
    table = cli("export-dump", "latest", "--out", str(tmp_path / "y.tar.gz"), "--table", "app.q")
    assert table.exit_code == 2 and "table app.q is not in snapshot" in table.stderr
    assert not (tmp_path / "y.tar.gz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_of_a_layered_snapshot_is_its_final_state(deployment, cli, primary_server, tmp_path):
    table = load_table(primary_server, "app.t", sample_docs(3000, pad=2000))
    assert cli("snapshot").exit_code == 0
    primary_server.put_texts(table, ['{"id":"k0000005","changed":true}', '{"id":"zz"}'])
    primary_server.delete(table, ['"k0000007"'])
    later = json.loads(cli("snapshot", "--json").stdout)
    assert later["tables"][0]["layers"] == 2
    out = tmp_path / "layered.tar.gz"
    assert cli("export-dump", "latest", "--out", str(out), "--table", "app.t").exit_code == 0
    assert _read_back(out)[table][1] == table_texts(primary_server, "app.t")


def test_member_names_with_dot_slash_prefix(deployment, cli, tmp_path):
    """tar -C dir -czf x.tar.gz . names members ./<dump>/<db>/<table>.*"""
    archive = write_archive(tmp_path / "dot.tar.gz", table_files("app", "t", ['{"id":1}']),
                            top="./rethinkdb_dump_x")
    result = cli("import-dump", str(archive), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["imported"]["dump"] == "rethinkdb_dump_x"


# --- --via: canonicalised and sorted by a cluster ------------------------------------------
def _scratch_dbs(server: FakeServer) -> list[str]:
    return [db for db in server.dbs if db.startswith("drtool_import_")]


def test_via_cluster_stores_the_same_snapshot_and_drops_its_scratch(deployment, cli,
                                                                   primary_server,
                                                                   standby_server, tmp_path):
    _, texts = _seed(primary_server)
    archive = _archive(tmp_path, texts)
    assert cli("import-dump", str(archive)).exit_code == 0
    client = latest_manifest(deployment.path).table(TableName("app", "t"))
    result = cli("import-dump", str(archive), "--via", "standby", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["imported"]["via"] == "standby fake-standby:28015"
    via = latest_manifest(deployment.path).table(TableName("app", "t"))
    assert via.layers == client.layers and via.digest == client.digest
    assert _scratch_dbs(standby_server) == []


def test_via_cluster_sorts_an_unordered_archive(deployment, cli, standby_server, tmp_path):
    docs = [f'{{"id":{i},"v":"é{i}"}}' for i in (5, 3, 9, 1, 7)]
    archive = write_archive(tmp_path / "unordered.tar.gz", {
        "app/t.info": info(), "app/t.json": json_file(docs)})
    assert cli("import-dump", str(archive)).exit_code == 2
    result = cli("import-dump", str(archive), "--via", "standby")
    assert result.exit_code == 0, result.stderr
    assert cli("restore", "latest", "--to", "standby", "--rename", "app.t=app.sorted").exit_code == 0
    assert table_texts(standby_server, "app.sorted") == [
        f'{{"id":{i},"v":"é{i}"}}' for i in (1, 3, 5, 7, 9)]
    assert _scratch_dbs(standby_server) == []


def test_via_cluster_refusing_a_document_leaves_nothing(deployment, cli, standby_server, tmp_path):
    archive = write_archive(tmp_path / "dup.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 2},\n{"id": 1},\n{"id": 2}\n]\n'})
    result = cli("import-dump", str(archive), "--via", "standby")
    assert result.exit_code == 2, result.stderr
    assert (f"{archive}: rethinkdb_dump_2026-12-01T08:59:57/app/t.json: standby "
            "fake-standby:28015 refused a document: Duplicate primary key") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _scratch_dbs(standby_server) == []
    assert json.loads(cli("snapshots", "--json").stdout) == []
    bad = cli("import-dump", str(archive), "--via", "elsewhere")
    assert bad.exit_code == 2 and "--via: expected primary or standby" in bad.stderr


def test_export_memory_does_not_hold_the_table(deployment, cli, primary_server, tmp_path):
    """export-dump of a 40 MB table spools to disk: a small bounded peak."""
    from drtool.dumps.exporter import export_dump
    from drtool.wiring.open import open_repository
    from drtool.config.policy import load_policy

    load_table(primary_server, "app.big", [f'{{"id":"k{i:07d}","pad":"{"y" * 1000}"}}'
                                           for i in range(40_000)])
    assert cli("snapshot").exit_code == 0
    primary_server.dbs.clear()  # the fake's copy is not what is measured

    async def go():
        repo = await open_repository(load_policy(deployment.path))
        try:
            manifest = await repo.resolve("latest")
            tracemalloc.start()
            report = await export_dump(repo, manifest, tmp_path / "big.tar.gz")
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return report, peak
        finally:
            await repo.close()

    report, peak = asyncio.run(go())
    assert report.tables == [(TableName("app", "big"), 40_000)] and report.bytes_json > 40e6
    assert peak < 30e6, f"peak {peak / 1e6:.1f} MB while exporting 40 MB"
