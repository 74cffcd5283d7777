"""A table scanned as several key ranges at once: split points, and a snapshot whose parts
receive writes while they are read restores to exactly the final table."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

from drtool.snapshots.layers import final_texts
from drtool.snapshots.partition import part_bounds, split_points
from drtool.snapshots.snapshot import SnapshotOptions, take_snapshot
from drtool.reql.digest import digest_of_texts
from drtool.model import TableName
from drtool.reql.ordering import key_order
from drtool.repo.repository import KeySources, Repository
from drtool.storage.memory import MemoryStorage

from tests.conftest import connect_fake, load_table, table_texts


def _in_order(first: str, points: list[str], last: str) -> bool:
    orders = [key_order(k) for k in [first, *points, last]]
    return orders[0] <= orders[1] and all(a < b for a, b in zip(orders[1:-1], orders[2:]))


def test_uuid_keys_split_evenly():
    rng = random.Random(3)
    keys = sorted(json.dumps(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
                  for _ in range(4000))
    points = split_points(keys[0], keys[-1], 4)
    assert len(points) == 3 and _in_order(keys[0], points, keys[-1])
    bounds = [key_order(p) for p in points]
    sizes = [0, 0, 0, 0]
    for key in keys:
        sizes[sum(key_order(key) > b for b in bounds)] += 1
    assert all(800 <= n <= 1200 for n in sizes), sizes


def test_number_and_string_keys_are_interpolated():
    assert split_points("0", "1000", 4) == ["250", "500", "750"]
    assert split_points("-10", "10", 2) == ["0"]
    points = split_points('"apple"', '"zebra"', 3)
    assert len(points) == 2 and _in_order('"apple"', points, '"zebra"')
    assert all(json.loads(p).isprintable() for p in points)


def test_keys_that_cannot_be_interpolated_give_one_part():
    assert split_points("[1]", "[9]", 4) == []
    assert split_points("5", '"a"', 4) == []  # numbers and strings in one table
    assert split_points('"k0001"', '"k0001"', 4) == []
    assert split_points('"k0000000"', '"k0001999"', 4) == []  # no character to interpolate
    assert split_points("0", "1000", 1) == []
    assert part_bounds(None, 4) == [None, None]
    assert part_bounds(("0", "9"), 3) == [None, "3", "6", None]


def _doc(i: int, version: int = 0) -> str:
    return json.dumps({"id": i, "pad": "é" * 150, "v": version}, ensure_ascii=False)


def test_snapshot_in_parts_with_writes_in_every_part_is_the_final_table(primary_server):
    """Four parts read at the same time; while they are read, documents are updated,
    inserted and deleted in every part, ahead of and behind each part's scan position."""
    table: TableName = load_table(primary_server, "app.t", [_doc(i) for i in range(4000)])
    rng = random.Random(11)
    seen = []

    def write_during_scan(scanned_table, key):
        seen.append(key)
        if len(seen) % 200 == 0 and len(seen) < 3600:  # during the scan (it reads >= 4000 rows)
            i = rng.randrange(4000)
            primary_server.put_texts(table, [_doc(i, len(seen)), _doc(4000 + len(seen))])
            primary_server.delete(table, [str(rng.randrange(4000))])

    primary_server.on_scan_row(write_during_scan)

    async def go():
        repo = await Repository.create(MemoryStorage(), KeySources(passphrase="pw"))
        cluster = connect_fake(primary_server)
        try:
            options = SnapshotOptions(scan_parts=4, docs_per_part=100, scan_batch_size=50)
            manifest = await take_snapshot(repo, cluster, [table], policy_name="t",
                                           source="primary", options=options)
            entry = manifest.table(table)
            stored = [t async for _, texts in final_texts(repo, entry) for t in texts]
            bounds = [None] + [r.upto for r in entry.ranges[:-1]]
            live = await cluster.segment_digests(table, list(zip(bounds, (r.upto for r in entry.ranges))))
            return entry, stored, live
        finally:
            await cluster.close()
            await repo.close()

    entry, stored, live = asyncio.run(go())
    primary_server.on_scan_row(None)
    assert len(seen) > 4000
    assert stored == table_texts(primary_server, "app.t")
    uptos = [r.upto for r in entry.ranges]
    assert uptos[-1] is None and all(key_order(a) < key_order(b)
                                     for a, b in zip(uptos[:-2], uptos[1:-1]))
    assert {"999", "1999", "2999"} <= set(uptos)  # the parts' bounds (keys 0..3999) end segments
    assert live == [(r.count, r.digest) for r in entry.ranges]
    assert all(s.digest == digest_of_texts(stored_part) for s, stored_part in
               zip(entry.layers[0].segments, _split(stored, uptos)))


def _split(texts: list[str], uptos: list) -> list[list[str]]:
    out, current, i = [], [], 0
    for text in texts:
        key = json.dumps(json.loads(text)["id"])
        while uptos[i] is not None and key_order(key) > key_order(uptos[i]):
            out.append(current)
            current, i = [], i + 1
        current.append(text)
    out.append(current)
    return out + [[]] * (len(uptos) - len(out))
