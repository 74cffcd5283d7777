"""drtool.repo.Repository over MemoryStorage: keys, data objects, manifests, tampering."""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest

from drtool.repo import crypto
from drtool.errors import (
    EncryptionKeyError,
    IntegrityError,
    NotFound,
    ObjectNotFound,
    RepositoryError,
    UsageError,
)
from drtool.repo.manifest import Layer, Manifest, Range, SegmentRef, TableEntry
from drtool.model import IndexDef, TableMeta, TableName
from drtool.repo.objects import data_name, new_snapshot_id
from drtool.repo.repository import KeySources, Repository
from drtool.util.workers import SMALL as THREAD_THRESHOLD
from drtool.storage.memory import MemoryStorage

DOCS = b'{"id":1,"v":"a"}\n{"id":2,"v":"\xc3\xa9"}\n'


class CountingStorage(MemoryStorage):
    """A real in-memory storage that also records every put."""

    def __init__(self) -> None:
        super().__init__("memory://test")
        self.puts: list[str] = []

    async def put(self, name: str, data: bytes) -> None:
        self.puts.append(name)
        await super().put(name, data)


@pytest.fixture
def storage():
    return CountingStorage()


@pytest.fixture
def ident(tmp_path):
    path = tmp_path / "identity"
    crypto.write_identity_file(path)
    return path


@pytest.fixture
async def repo(storage, ident):
    return await Repository.create(storage, KeySources(identity_file=ident))


def manifest(sid: str, upto: str | None = None) -> Manifest:
    seg = SegmentRef("ab" * 32, upto, 2, "6f1c2a4e-0000-5000-8000-000000000000", 40, 90)
    entry = TableEntry(
        meta=TableMeta(TableName("db", "tbl"), indexes=(IndexDef("by_v", b"$reql_index_function$x"),)),
        doc_count=2, digest="d", ranges=(Range(upto, 2, "d"),), layers=(Layer((seg,)),),
        started="2026-11-24T04:00:00Z", finished="2026-11-24T04:00:05Z",
    )
    return Manifest(sid, "2026-11-24T04:00:05Z", "nightly", "primary rdb1", (entry,))


# --- creating and opening -----------------------------------------------------------------------------
async def test_create_on_existing_repository_is_refused(storage, repo, ident):
    with pytest.raises(RepositoryError, match="memory://test: a repository already exists here"):
        await Repository.create(storage, KeySources(identity_file=ident))


async def test_open_without_config(ident):
    with pytest.raises(RepositoryError, match=re.escape("memory://x: no repository here (run drtool init)")):
        await Repository.open(MemoryStorage("memory://x"), KeySources(identity_file=ident))


async def test_create_needs_a_recipient_or_passphrase():
    with pytest.raises(UsageError, match="without a recipient or a passphrase"):
        await Repository.create(MemoryStorage(), KeySources())


async def test_bad_recipient_is_named():
    with pytest.raises(UsageError, match="invalid recipient 'drtool1nope'"):
        await Repository.create(MemoryStorage(), KeySources(recipients=("drtool1nope",)))


async def test_unknown_version_is_refused(storage, repo, ident):
    cfg = json.loads(storage.objects["config"])
    storage.objects["config"] = json.dumps({**cfg, "version": 3}).encode()
    with pytest.raises(RepositoryError) as err:
        await Repository.open(storage, KeySources(identity_file=ident))
    assert str(err.value) == (
        "memory://test: repository format version 3 is not supported by this drtool "
        "(supports 2); use a newer drtool"
    )


async def test_repository_of_the_older_format_is_refused_with_what_to_do(storage, repo, ident):
    cfg = json.loads(storage.objects["config"])
    storage.objects["config"] = json.dumps({**cfg, "version": 1}).encode()
    with pytest.raises(RepositoryError) as err:
        await Repository.open(storage, KeySources(identity_file=ident))
    assert err.value.exit_code == 6
    assert str(err.value) == (
        "memory://test: repository format version 1 is not supported by this drtool "
        "(supports 2); create a new repository with drtool init (this drtool cannot read "
        "snapshots written by older versions)"
    )


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe", b"[1,2]", b'{"version":2}', b"{not json"])
async def test_garbled_config_is_a_repository_error(storage, repo, ident, garbage):
    storage.objects["config"] = garbage
    with pytest.raises(RepositoryError, match="memory://test: repository config is damaged"):
        await Repository.open(storage, KeySources(identity_file=ident))


async def test_config_is_plaintext_json_without_secrets(storage, ident):
    text, recipient = crypto.generate_identity()
    r = await Repository.create(storage, KeySources(recipients=(recipient,), passphrase="pw"))
    cfg = json.loads(storage.objects["config"])
    assert (cfg["format"], cfg["version"], cfg["id"]) == ("drtool-repository", 2, r.id)
    assert cfg["kdf"]["name"] == "scrypt" and cfg["kdf"]["n"] == 2**15
    assert recipient not in storage.objects["config"].decode()  # recipients are sealed
    assert len(cfg["writer_key"]["stanzas"]) == 2  # the recipient and the passphrase


async def test_wrong_passphrase(storage):
    await Repository.create(storage, KeySources(passphrase="right"))
    with pytest.raises(EncryptionKeyError, match="wrong passphrase"):
        await Repository.open(storage, KeySources(passphrase="wrong"))


async def test_identity_that_is_not_a_recipient(storage, repo, tmp_path):
    other = tmp_path / "other"
    crypto.write_identity_file(other)
    with pytest.raises(EncryptionKeyError) as err:
        await Repository.open(storage, KeySources(identity_file=other))
    assert str(err.value) == (
        f"no identity, passphrase or writer key in the policy can open repository {repo.id} "
        f"(tried identity {other}: not a recipient of this repository)"
    )


async def test_open_with_no_key_at_all(storage, repo):
    with pytest.raises(EncryptionKeyError, match=f"no identity, passphrase or writer key given to open repository {repo.id}"):
        await Repository.open(storage, KeySources())


async def test_group_readable_identity_refused_on_open(storage, repo, ident):
    os.chmod(ident, 0o640)
    with pytest.raises(EncryptionKeyError, match=re.escape(f"run chmod 600 {ident}")):
        await Repository.open(storage, KeySources(identity_file=ident))


async def test_writer_key_file_of_another_repository(tmp_path, ident):
    s1, s2 = MemoryStorage(), MemoryStorage()
    await Repository.create(s1, KeySources(identity_file=ident, writer_key_file=tmp_path / "w1"))
    r2 = await Repository.create(s2, KeySources(identity_file=ident, writer_key_file=tmp_path / "w2"))
    assert oct(os.stat(tmp_path / "w1").st_mode & 0o777) == "0o600"
    with pytest.raises(EncryptionKeyError) as err:
        await Repository.open(s2, KeySources(writer_key_file=tmp_path / "w1"))
    assert str(err.value) == f"writer key file {tmp_path / 'w1'} does not belong to repository {r2.id}"


async def test_existing_writer_key_file_is_reused_not_overwritten(tmp_path, ident):
    wfile = tmp_path / "w"
    await Repository.create(MemoryStorage(), KeySources(identity_file=ident, writer_key_file=wfile))
    before = wfile.read_text()
    s = MemoryStorage()
    r = await Repository.create(s, KeySources(identity_file=ident, writer_key_file=wfile))
    assert wfile.read_text() == before
    w = await Repository.open(s, KeySources(writer_key_file=wfile))
    assert w.id == r.id and not w.can_read_data


# --- data objects -----------------------------------------------------------------------------------------
async def test_roundtrip_with_identity(storage, repo, ident):
    stored = await repo.put_data(DOCS)
    assert stored.new and re.fullmatch(r"[0-9a-f]{64}", stored.id)
    blob = storage.objects[data_name(stored.id)]
    assert blob.startswith(b"DRTD\x01") and DOCS not in blob and b'"id"' not in blob
    assert stored.stored_size == len(blob) == await repo.data_size(stored.id)
    assert await repo.get_data(stored.id) == DOCS
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    assert reader.can_read_data and await reader.get_data(stored.id) == DOCS
    assert await reader.list_data() == {stored.id: len(blob)}


async def test_roundtrip_with_passphrase(storage):
    writer = await Repository.create(storage, KeySources(passphrase="pw"))
    stored = await writer.put_data(DOCS)
    reader = await Repository.open(storage, KeySources(passphrase="pw"))
    assert reader.can_read_data and await reader.get_data(stored.id) == DOCS


async def test_big_object_roundtrip(repo, storage):
    big = os.urandom(THREAD_THRESHOLD) + b"x" * THREAD_THRESHOLD
    stored = await repo.put_data(big)
    assert await repo.get_data(stored.id) == big


async def test_writer_only_process(storage, ident, tmp_path):
    wfile = tmp_path / "writer.key"
    first = await Repository.create(storage, KeySources(identity_file=ident, writer_key_file=wfile))
    old = await first.put_data(b"old data\n")
    await first.put_manifest(manifest("20261124T040000Z-00000001"))

    writer = await Repository.open(storage, KeySources(writer_key_file=wfile))
    assert not writer.can_read_data
    new = await writer.put_data(b"new data\n")
    assert await writer.get_data(new.id) == b"new data\n"  # its own session's data
    with pytest.raises(EncryptionKeyError, match=f"cannot read data object {old.id}: this process holds only the writer key"):
        await writer.get_data(old.id)
    assert set(await writer.list_data()) == {old.id, new.id}
    assert (await writer.load_manifest("20261124T040000Z-00000001")).policy == "nightly"
    await writer.put_manifest(manifest("20261124T050000Z-00000002"))
    assert await writer.list_snapshots() == ["20261124T040000Z-00000001", "20261124T050000Z-00000002"]
    # The writer wrapped its data key to the recipients recorded at create time.
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    assert await reader.get_data(new.id) == b"new data\n"


async def test_writer_only_session_data_is_readable_with_the_passphrase(storage, tmp_path):
    wfile = tmp_path / "w"
    await Repository.create(storage, KeySources(passphrase="pw", writer_key_file=wfile))
    writer = await Repository.open(storage, KeySources(writer_key_file=wfile))
    stored = await writer.put_data(DOCS)
    reader = await Repository.open(storage, KeySources(passphrase="pw"))
    assert await reader.get_data(stored.id) == DOCS


async def test_data_key_not_wrapped_to_this_identity(storage, repo, ident):
    assert repo.can_read_data
    _, stranger = crypto.generate_identity()
    # A later session whose policy lists only another recipient: it still opens W through the
    # config (via ident), but its data key is not wrapped to ident.
    other = await Repository.open(storage, KeySources(recipients=(stranger,), identity_file=ident))
    stored = await other.put_data(DOCS)
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    with pytest.raises(EncryptionKeyError, match=f"is not wrapped to {ident}: cannot read data object {stored.id}"):
        await reader.get_data(stored.id)


async def test_recipients_only_creator_cannot_read_but_reads_its_own_session(storage):
    _, recipient = crypto.generate_identity()
    r = await Repository.create(storage, KeySources(recipients=(recipient,)))
    assert not r.can_read_data
    stored = await r.put_data(DOCS)
    assert await r.get_data(stored.id) == DOCS


async def test_dedup_same_plaintext_is_not_uploaded_again(storage, repo, ident):
    a = await repo.put_data(DOCS)
    puts = list(storage.puts)
    b = await repo.put_data(DOCS)
    assert (b.id, b.stored_size, b.new) == (a.id, a.stored_size, False)
    again = await Repository.open(storage, KeySources(identity_file=ident))
    c = await again.put_data(DOCS)
    assert (c.id, c.new) == (a.id, False)
    assert storage.puts == puts  # nothing uploaded, not even a key object
    assert (await repo.put_data(DOCS + b"x")).id != a.id


async def test_concurrent_puts_of_one_object_upload_once(storage, repo):
    results = await asyncio.gather(*(repo.put_data(DOCS) for _ in range(5)))
    assert sorted(r.new for r in results) == [False] * 4 + [True]
    assert storage.puts.count(data_name(results[0].id)) == 1


async def test_object_ids_and_boundaries_are_keyed_per_repository(repo, ident):
    other = await Repository.create(MemoryStorage(), KeySources(identity_file=ident))
    assert (await repo.put_data(DOCS)).id != (await other.put_data(DOCS)).id
    assert repo.boundary_hash('"a"') != other.boundary_hash('"a"')
    assert repo.boundary_hash('"a"') == repo.boundary_hash('"a"')
    assert 0 <= repo.boundary_hash("5") < 2**64


async def test_get_missing_object(repo):
    with pytest.raises(ObjectNotFound):
        await repo.get_data("0" * 64)


def damaged(object_id: str) -> str:
    return re.escape(f"data object {object_id} failed authentication (truncated, corrupted or swapped)")


@pytest.mark.parametrize("position", [0, 4, 5, 20, 25, 40, -1])
async def test_flipped_byte_is_detected(storage, repo, ident, position):
    stored = await repo.put_data(DOCS)
    name = data_name(stored.id)
    blob = bytearray(storage.objects[name])
    blob[position] ^= 0x01
    storage.objects[name] = bytes(blob)
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    with pytest.raises(IntegrityError, match=damaged(stored.id)):
        await reader.get_data(stored.id)


@pytest.mark.parametrize("keep", [0, 10, 33, 48, -1])
async def test_truncated_object_is_detected(storage, repo, keep):
    stored = await repo.put_data(DOCS)
    name = data_name(stored.id)
    storage.objects[name] = storage.objects[name][:keep]
    with pytest.raises(IntegrityError, match=damaged(stored.id)):
        await repo.get_data(stored.id)


async def test_swapped_objects_are_detected(storage, repo):
    a, b = await repo.put_data(b"alpha\n"), await repo.put_data(b"beta\n")
    storage.objects[data_name(b.id)] = storage.objects[data_name(a.id)]
    assert await repo.get_data(a.id) == b"alpha\n"
    with pytest.raises(IntegrityError, match=damaged(b.id)):
        await repo.get_data(b.id)


async def test_replaced_key_object_is_detected(storage, repo, ident):
    stored = await repo.put_data(DOCS)
    (keyname,) = [n for n in storage.objects if n.startswith("keys/")]
    forged = json.loads(storage.objects[keyname])
    recipient = crypto.load_identity(ident).recipient
    forged["stanzas"] = [crypto.wrap_key(os.urandom(32), recipient)]
    storage.objects[keyname] = json.dumps(forged).encode()
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    with pytest.raises(IntegrityError, match=damaged(stored.id)):
        await reader.get_data(stored.id)
    del storage.objects[keyname]
    with pytest.raises(IntegrityError, match=damaged(stored.id) + ": its data key [0-9a-f]{32} does not exist"):
        await (await Repository.open(storage, KeySources(identity_file=ident))).get_data(stored.id)


# --- manifests ----------------------------------------------------------------------------------------------
async def test_manifest_roundtrip_and_resolve(storage, repo, ident):
    ids = ["20261124T040000Z-0a0b0c0d", "20261124T050000Z-1a2b3c4d", "20261125T040000Z-1a2b3c4e"]
    for sid in reversed(ids):
        await repo.put_manifest(manifest(sid, upto='"é"'))
    reader = await Repository.open(storage, KeySources(identity_file=ident))
    assert await reader.list_snapshots() == ids
    loaded = await reader.load_manifest(ids[1])
    assert loaded == manifest(ids[1], upto='"é"')
    assert (await reader.resolve("latest")).id == ids[2]
    assert (await reader.resolve(ids[0])).id == ids[0]
    assert (await reader.resolve("20261124T04")).id == ids[0]
    with pytest.raises(UsageError, match="snapshot prefix 20261124 is ambiguous"):
        await reader.resolve("20261124")
    with pytest.raises(NotFound, match="snapshot 2027 does not exist"):
        await reader.resolve("2027")
    with pytest.raises(NotFound, match="snapshot 20261124T040000Z-ffffffff does not exist"):
        await reader.load_manifest("20261124T040000Z-ffffffff")
    await reader.delete_manifest(ids[2])
    assert (await reader.resolve("latest")).id == ids[1]


async def test_resolve_latest_in_empty_repository(repo):
    with pytest.raises(NotFound, match="has no snapshots"):
        await repo.resolve("latest")


async def test_tampered_and_swapped_manifests_are_detected(storage, repo):
    s1, s2 = "20261124T040000Z-00000001", "20261124T050000Z-00000002"
    await repo.put_manifest(manifest(s1))
    await repo.put_manifest(manifest(s2))
    assert b"nightly" not in storage.objects[f"snapshots/{s1}"]
    storage.objects[f"snapshots/{s2}"] = storage.objects[f"snapshots/{s1}"]
    with pytest.raises(IntegrityError, match=f"snapshot {s2}: manifest failed authentication"):
        await repo.load_manifest(s2)
    blob = bytearray(storage.objects[f"snapshots/{s1}"])
    blob[-5] ^= 0x40
    storage.objects[f"snapshots/{s1}"] = bytes(blob)
    with pytest.raises(IntegrityError, match=f"snapshot {s1}: manifest failed authentication"):
        await repo.load_manifest(s1)


async def test_put_manifest_rejects_a_bad_id(repo):
    with pytest.raises(UsageError, match="invalid snapshot id 'nope'"):
        await repo.put_manifest(manifest("nope"))


def test_new_snapshot_id_format_and_order():
    from datetime import datetime, timezone

    a = new_snapshot_id(datetime(2026, 11, 24, 4, 32, 0, tzinfo=timezone.utc))
    assert re.fullmatch(r"20261124T043200Z-[0-9a-f]{8}", a)
    assert new_snapshot_id() > a
