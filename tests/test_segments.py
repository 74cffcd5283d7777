"""Content-defined segments: boundaries depend on keys, changes fold into their range, ranges
tile the key space."""

from __future__ import annotations

import hashlib
import json

from drtool.snapshots.segments import (
    Chunker,
    ChunkParams,
    PendingChanges,
    SegmentWriter,
    decode_index,
    decode_segment,
    encode_deletions,
    encode_rows,
    encode_segment,
    merge_changes,
)
from drtool.reql.digest import digest_of_hashes, digest_of_texts, hashes_json, r_uuid
from drtool.repo.repository import KeySources, Repository
from drtool.storage.memory import MemoryStorage

SMALL = ChunkParams(min_bytes=2_000, target=4_000, max_bytes=20_000)


def _hash(key: str | bytes) -> int:
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _rows(keys, size=200):
    return [(json.dumps(k), json.dumps({"id": k, "pad": "y" * size}, separators=(",", ":")))
            for k in keys]


def test_encode_decode_roundtrip_keeps_special_characters():
    texts = ['{"id":1,"v":"a\\nb"}', '{"id":2,"v":"\u2028 é"}']
    plaintext, digest, index = encode_segment(*encode_rows([(str(i), t) for i, t in enumerate(texts)]))
    assert decode_segment(plaintext) == texts and digest == digest_of_texts(texts)
    assert decode_index(index) == [("0", r_uuid(texts[0])), ("1", r_uuid(texts[1]))]
    assert encode_segment([], []) == (b"", r_uuid("[]"), b"[]\n") and decode_segment(b"") == []
    assert decode_index(b"[]\n") == []


def test_segment_digest_is_r_uuid_of_the_json_array_of_document_hashes():
    texts = ['{"id":"é"}', '{"id":"\u2028"}', "{}"]
    hashes = [r_uuid(t) for t in texts]
    expected = r_uuid(json.dumps(hashes, separators=(",", ":")))
    assert digest_of_texts(texts) == expected == digest_of_hashes(hashes)
    assert hashes_json([t.encode() for t in texts]).decode() == json.dumps(hashes, separators=(",", ":"))
    assert encode_segment(*encode_rows([("1", t) for t in texts]))[1] == expected


def test_deletion_lists_decode_with_empty_hashes():
    assert decode_index(encode_deletions(['"a"', "5"])) == [('"a"', ""), ("5", "")]


def test_boundaries_depend_on_keys_not_positions():
    chunker = Chunker(_hash, SMALL)

    def cuts(rows):
        size, out = 0, []
        for key, doc in rows:
            size += len(doc) + 1
            if chunker.cut_after(key, len(doc) + 1, size):
                out.append(key)
                size = 0
        return out

    rows = _rows([f"k{i:05d}" for i in range(2000)])
    base = cuts(rows)
    assert len(base) > 10
    # One document inserted in the middle: boundaries before it stay, and after it the
    # boundaries fall on the same keys again (only the segment holding it changes).
    inserted = rows[:1000] + _rows(["k00999x"]) + rows[1000:]
    moved = cuts(inserted)
    assert [c for c in moved if c < rows[1000][0]] == [c for c in base if c < rows[1000][0]]
    assert moved[-5:] == base[-5:]


def test_merge_changes_applies_upserts_and_deletes_in_key_order():
    rows = _rows(["a", "c", "e"], size=1)
    changes = [('"b"', '{"id":"b"}'), ('"c"', None), ('"e"', '{"id":"e","v":2}')]
    merged = merge_changes(rows, changes)
    assert [k for k, _ in merged] == ['"a"', '"b"', '"e"']
    assert merged[-1][1] == '{"id":"e","v":2}'


def test_pending_changes_route_late_keys():
    pending = PendingChanges()
    pending.record('"m"', "{}")
    pending.record("5", "{}")  # numbers sort before strings
    taken = pending.take_upto('"c"')
    assert [k for k, _ in taken] == ["5"]
    pending.record('"b"', "{}")  # at or below the sealed frontier: late
    pending.record('"z"', None)
    assert pending.late == {'"b"'}
    rest = pending.take_upto(None)
    assert [k for k, _ in rest] == ['"m"', '"z"']
    pending.record('"zz"', "{}")
    assert '"zz"' in pending.late


async def _writer_repo():
    storage = MemoryStorage()
    repo = await Repository.create(storage, KeySources(passphrase="pw for tests"))
    return repo


async def test_segment_writer_tiles_the_range_and_records_digests():
    repo = await _writer_repo()
    rows = _rows([f"k{i:05d}" for i in range(800)])
    writer = SegmentWriter(repo, Chunker(repo.boundary_hash, SMALL))
    for start in range(0, len(rows), 97):
        await writer.add(rows[start:start + 97])
    refs = await writer.finish()
    assert len(refs) > 3
    assert refs[-1].upto is None
    assert sum(r.count for r in refs) == 800
    texts = []
    for ref in refs:
        segment = decode_segment(await repo.get_data(ref.id))
        assert digest_of_texts(segment) == ref.digest and len(segment) == ref.count
        texts.extend(segment)
    assert texts == [doc for _, doc in rows]
    # Each segment's last document is its upper bound, except the open-ended last one.
    for ref in refs[:-1]:
        last = decode_segment(await repo.get_data(ref.id))[-1]
        assert json.dumps(json.loads(last)["id"]) == ref.upto


async def test_empty_range_is_one_empty_segment_with_the_range_end():
    repo = await _writer_repo()
    writer = SegmentWriter(repo, Chunker(repo.boundary_hash, SMALL))
    refs = await writer.finish('"q"')
    assert len(refs) == 1 and refs[0].count == 0 and refs[0].upto == '"q"'
    assert refs[0].digest == digest_of_texts([]) == r_uuid("[]")


async def test_pending_changes_fold_into_their_segment_and_split_when_large():
    repo = await _writer_repo()
    pending = PendingChanges()
    writer = SegmentWriter(repo, Chunker(repo.boundary_hash, SMALL), pending=pending)
    # Many inserts past the scan position arrive before the scan gets there.
    for i in range(300):
        pending.record(json.dumps(f"z{i:04d}"), json.dumps({"id": f"z{i:04d}", "p": "q" * 200}))
    await writer.add(_rows([f"k{i:05d}" for i in range(50)]))
    refs = await writer.finish()
    assert sum(r.count for r in refs) == 350
    assert max(r.plain_size for r in refs) <= SMALL.max_bytes + 300
    assert refs[-1].upto is None
