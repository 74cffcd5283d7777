"""import-dump and export-dump: rethinkdb dump archives in and out, through the CLI, fake
clusters and a real local repository; every bad archive is one line with exit code 2 and
leaves no snapshot."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from drtool.reql import canonical
from drtool.cluster.fake import FakeServer
from drtool.dumps import archive as dump_archive
from drtool.model import IndexDef, TableName
from tests.conftest import latest_manifest, load_table, on_cluster, sample_docs, table_texts
from tests.dump_archives import as_dump_text, info, json_file, table_files, write_archive
from tests.golden import GOLDEN

INDEX_BLOB = FakeServer.index_blob('function(var1) { return var1("n"); }')
HOOK_BLOB = FakeServer.hook_blob()


def golden_texts() -> list[str]:
    """Every golden document as the real server printed it, in key order."""
    return list(GOLDEN["table_in_key_order"])


def test_dump_form_of_every_golden_document_canonicalises_to_the_server_text():
    """The proof behind client-side canonicalisation: the server's text -> the driver's
    decoding -> json.dumps (what rethinkdb dump writes) -> canonical_text gives the server's
    text back, byte for byte, for every value the real server printed."""
    texts = [d["canonical"] for d in GOLDEN["documents"]] + golden_texts()
    assert len(texts) > 60
    for text in texts:
        for dumped in (as_dump_text(text), json.dumps(json.loads(text), ensure_ascii=False),
                       json.dumps(json.loads(text), sort_keys=True, indent=1)):
            assert canonical.canonical_text(dumped) == text, dumped


def _seed(server: FakeServer) -> tuple[TableName, list[str]]:
    """app.t on the fake primary: the golden documents and 3,000 padded ones (> 4 MiB: several
    segments), an index and a hook. Returns it and its texts."""
    docs = golden_texts() + sample_docs(3000, pad=2000)
    table = load_table(server, "app.t", docs)

    async def schema(cluster):
        await cluster.create_index(table, IndexDef("by_n", INDEX_BLOB))
        await cluster.set_write_hook(table, HOOK_BLOB)

    on_cluster(server, schema)
    return table, table_texts(server, "app.t")


def _archive(tmp_path: Path, texts: list[str], **extra) -> Path:
    files = table_files("app", "t", texts, indexes={"by_n": INDEX_BLOB}, hook=HOOK_BLOB,
                        shards=1)
    files.update(extra)
    return write_archive(tmp_path / "dump.tar.gz", files)


def test_import_dump_then_restore_verify_diff_and_dedup(deployment, cli, primary_server,
                                                        standby_server, tmp_path):
    _, texts = _seed(primary_server)
    load_table(primary_server, "app.empty", [])
    archive = _archive(tmp_path, texts, **table_files("app", "empty", []))

    result = cli("import-dump", str(archive), "--json")
    assert result.exit_code == 0, result.stderr
    imported = json.loads(result.stdout)
    assert imported["imported"] == {"archive": "dump.tar.gz",
                                    "dump": "rethinkdb_dump_2026-12-01T08:59:57",
                                    "time": "2026-12-01T08:59:58.000000Z", "via": None}
    tables = {t["table"]: t for t in imported["tables"]}
    assert tables["app.t"]["documents"] == len(texts) and tables["app.t"]["segments"] > 1
    assert tables["app.t"]["indexes"] == ["by_n"] and tables["app.t"]["write_hook"]
    assert tables["app.empty"]["documents"] == 0

    listing = json.loads(cli("snapshots", "--json").stdout)
    assert [s["id"] for s in listing] == [imported["id"]]
    assert listing[0]["source"] == "rethinkdb dump archive dump.tar.gz"
    assert listing[0]["imported"]["time"] == "2026-12-01T08:59:58.000000Z"
    human = cli("snapshots")
    assert (f"{imported['id']}: imported from dump.tar.gz (rethinkdb dump of 2026-12-01 "
            "08:59:58 UTC)") in human.stderr

    assert cli("verify", "--read-data").exit_code == 0
    same = cli("diff", "--against", "latest")
    assert same.exit_code == 0, same.stdout + same.stderr

    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    assert table_texts(standby_server, "app.t") == texts  # byte-identical server texts
    meta = on_cluster(standby_server, lambda c: c.table_meta(TableName("app", "t")))
    assert [(i.name, i.blob) for i in meta.indexes] == [("by_n", INDEX_BLOB)]
    assert meta.write_hook == HOOK_BLOB

    # A later snapshot of the live table builds on the imported one: nothing new to store.
    later = json.loads(cli("snapshot", "--json").stdout)
    assert later["bytes_new"] == 0 and later["parent"] is None  # unchanged: no delta layer
    full = json.loads(cli("snapshot", "--full", "--json").stdout)
    assert full["bytes_new"] == 0  # same segments, already stored
    assert {t["table"]: t["digest"] for t in full["tables"]} == {
        t["table"]: t["digest"] for t in imported["tables"]}


def test_imported_table_is_stored_exactly_like_a_snapshot(deployment, cli, primary_server, tmp_path):
    _, texts = _seed(primary_server)
    assert cli("snapshot").exit_code == 0
    snap = latest_manifest(deployment.path).table(TableName("app", "t"))
    archive = _archive(tmp_path, texts)
    assert cli("import-dump", str(archive)).exit_code == 0
    imp = latest_manifest(deployment.path).table(TableName("app", "t"))
    assert imp.layers == snap.layers  # the same objects (ids, sizes, index objects)
    assert (imp.ranges, imp.digest, imp.doc_count) == (snap.ranges, snap.digest, snap.doc_count)
    assert imp.meta == snap.meta


def test_import_dump_selected_table_and_shards_from_estimates(deployment, cli, primary_server,
                                                              tmp_path):
    files = table_files("app", "a", ['{"id":1}'], shards=3)
    files.update(table_files("app", "b", ['{"id":2}']))
    archive = write_archive(tmp_path / "two.tar.gz", files)
    assert cli("import-dump", str(archive), "--table", "app.a").exit_code == 0
    manifest = latest_manifest(deployment.path)
    assert [str(t.name) for t in manifest.tables] == ["app.a"]
    assert manifest.tables[0].meta.shards == 3 and manifest.tables[0].meta.replicas == 1

    missing = cli("import-dump", str(archive), "--table", "app.zz")
    assert missing.exit_code == 2
    assert "table app.zz is not in the archive (it has app.a, app.b)" in missing.stderr


def _truncated(tmp_path: Path, texts: list[str]) -> Path:
    path = _archive(tmp_path, texts)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _corrupt(tmp_path: Path, texts: list[str]) -> Path:
    path = _archive(tmp_path, texts)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


BAD = {
    "not gzip": (lambda p, t: (p / "x.tar.gz").write_text("plain text") and p / "x.tar.gz",
                 "not a gzip-compressed tar archive"),
    "gzip but not tar": (lambda p, t: (p / "x.tar.gz").write_bytes(gzip.compress(b"hello" * 200))
                         and p / "x.tar.gz", "not a gzip-compressed tar archive"),
    "truncated": (_truncated, "truncated or corrupt archive"),
    "corrupt": (_corrupt, "truncated or corrupt archive"),
    "no primary key": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.json": json_file(t[:3]), "app/t.info": info(None)}),
        "app/t.info has no primary_key"),
    "table file missing": (lambda p, t: write_archive(p / "x.tar.gz", {"app/t.info": info()}),
                           "has no data file t.json beside it"),
    "info missing": (lambda p, t: write_archive(p / "x.tar.gz", {"app/t.json": json_file(t[:3])}),
                     "has no t.info beside it"),
    "info not json": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.json": json_file(t[:3]), "app/t.info": b"{nope"}), "app/t.info is not valid JSON"),
    "csv table": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.csv": b"id\n1\n", "app/t.info": info()}), "CSV tables cannot be imported"),
    "empty archive": (lambda p, t: write_archive(p / "x.tar.gz", {}), "no table found"),
    "wrong layout": (lambda p, t: write_archive(p / "x.tar.gz", {"t.json": b"[]"}),
                     "unexpected member"),
    "data truncated inside": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": json_file(t[:50])[:-300]}),
        "invalid or truncated JSON"),
    "no closing bracket": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": json_file(t[:5])[:-3]}),
        "ends before the closing ']'"),
    "document without key": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 1},\n{"x": 2}\n]\n'}),
        "document 2 has no primary key field 'id'"),
    "not an object": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 1},\n[2]\n]\n'}),
        "document 2 is not a JSON object"),
    "out of key order": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 2},\n{"id": 1}\n]\n'}),
        "document 2 (key 1) is out of primary-key order: rethinkdb dump writes each table in "
        "key order; for other archives use --via primary|standby"),
    "duplicate key": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 1},\n{"id": 1.0}\n]\n'}),
        "document 2 (key 1) is a duplicate"),
    "NaN": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": 1, "v": NaN}\n]\n'}),
        "NaN and infinities are not allowed"),
    "object key": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.info": info(), "app/t.json": b'[\n{"id": {"a": 1}}\n]\n'}),
        'id = {"a":1} cannot be a primary key'),
    "bad index blob": (lambda p, t: write_archive(p / "x.tar.gz", {
        "app/t.json": json_file(t[:3]),
        "app/t.info": {**info(), "indexes": [{"index": "by_n", "function": "f"}]}}),
        "index by_n has no function blob"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_archive_is_one_line_exit_2_and_no_snapshot(case, deployment, cli, tmp_path):
    make, message = BAD[case]
    texts = [f'{{"id":{i},"pad":"{"x" * 100}"}}' for i in range(2000)]
    archive = make(tmp_path, texts)
    result = cli("import-dump", str(archive))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert str(archive) in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drtool: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert json.loads(cli("snapshots", "--json").stdout) == []


def test_missing_archive_file(deployment, cli, tmp_path):
    result = cli("import-dump", str(tmp_path / "nope.tar.gz"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.tar.gz'}: no such file" in result.stderr


def test_values_split_across_read_chunks(monkeypatch):
    """Documents that span the reader's chunks (and a number at a chunk's end) parse whole."""
    import io

    monkeypatch.setattr(dump_archive, "READ_CHUNK", 7)
    text = '[\n{"id": 1, "s": "' + "é" * 40 + '"},\n{"id": 2, "n": 12345678901234567890}\n]\n'
    values = list(dump_archive.json_values(io.StringIO(text), "x"))
    assert [canonical.dumps(v) for v in values] == [
        '{"id":1,"s":"' + "é" * 40 + '"}', '{"id":2,"n":12345678901234567000.0}']
    ndjson = '{"id": 1}\n{"id": 2}\n'
    assert [canonical.dumps(v) for v in dump_archive.json_values(io.StringIO(ndjson), "x")] == [
        '{"id":1}', '{"id":2}']


def test_import_memory_does_not_hold_the_table(deployment, tmp_path):
    """A 40 MB archive is imported with a small bounded peak (segments in flight, not the
    table)."""
    from drtool.dumps.importer import import_dump
    from drtool.wiring.open import open_repository
    from drtool.config.policy import load_policy

    texts = [f'{{"id":"k{i:07d}","pad":"{"y" * 1000}"}}' for i in range(40_000)]
    archive = write_archive(tmp_path / "big.tar.gz", {
        "app/big.info": info(table="big"), "app/big.json": json_file(texts)})
    del texts

    async def go():
        repo = await open_repository(load_policy(deployment.path))
        try:
            tracemalloc.start()
            manifest = await import_dump(repo, archive, policy_name="test")
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return manifest, peak
        finally:
            await repo.close()

    manifest, peak = asyncio.run(go())
    assert manifest.doc_count == 40_000
    assert peak < 30e6, f"peak {peak / 1e6:.1f} MB while importing 40 MB"
