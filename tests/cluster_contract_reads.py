"""Cluster contract, reads: documents as the server's text, key order, scans and digests.

Part of the contract suite (``tests.cluster_contract``), run against the fake and a real
server: documents written as JSON text come back as the server's ``to_json_string()`` texts
(shared/reql-golden.json), in the server's primary-key order, from ``scan``/``scan_texts``/
``hash_scan`` over ``(after, upto]`` ranges in batches; ``range_digest``,
``segment_digests`` and ``chunk_digests`` fold those texts exactly as drtool.reql.digest does.
"""

from __future__ import annotations

import base64
import json
import random

import pytest

from drtool.reql.digest import r_uuid
from drtool.errors import ClusterError

from tests.cluster_contract_target import ContractTarget, collect, expected_chunks
from tests.golden import GOLDEN


class ReadsContract:
    """Reads: every test takes the ``cluster`` fixture (a ContractTarget)."""

    async def test_golden_documents_round_trip(self, cluster: ContractTarget):
        t = await cluster.new_table()
        inputs = [d["input"] for d in GOLDEN["documents"]]
        res = await cluster.cluster.insert_texts(t, inputs)
        assert (res.inserted, res.errors, res.first_error) == (len(inputs), 0, None)
        rows = await collect(cluster.cluster.scan(t))
        assert [doc for _, doc in rows] == GOLDEN["table_in_key_order"]
        assert [k for k, _ in rows] == [json.dumps(json.loads(d)["id"]) for d in GOLDEN["table_in_key_order"]]
        golden_uuid = {json.loads(d["canonical"])["id"]: d["uuid"] for d in GOLDEN["documents"]}
        pairs = await collect(cluster.cluster.hash_scan(t, batch_size=7))
        assert [h for _, h in pairs] == [golden_uuid[json.loads(k)] for k, _ in pairs]
        assert [k for k, _ in pairs] == [k for k, _ in rows]

    async def test_binary_text_has_crlf_lines_and_lenient_input(self, cluster: ContractTarget):
        """BINARY data prints as base64 in lines of 76 characters joined by CRLF; r.json reads
        blanks anywhere and missing or doubled padding; data after padding is refused."""
        t = await cluster.new_table()
        data = base64.b64encode(bytes(range(200))).decode()
        lines = "\\r\\n".join(data[i:i + 76] for i in range(0, len(data), 76))
        inputs = ['{"id":1,"b":{"$reql_type$":"BINARY","data":"%s"}}' % data,
                  '{"id":2,"b":{"$reql_type$":"BINARY","data":"AA\\r\\nE"}}',
                  '{"id":3,"b":{"$reql_type$":"BINARY","data":" AAE=="}}']
        res = await cluster.cluster.insert_texts(t, inputs)
        assert (res.inserted, res.errors) == (3, 0), res.first_error
        assert [doc for _, doc in await collect(cluster.cluster.scan(t))] == [
            '{"b":{"$reql_type$":"BINARY","data":"%s"},"id":1}' % lines,
            '{"b":{"$reql_type$":"BINARY","data":"AAE="},"id":2}',
            '{"b":{"$reql_type$":"BINARY","data":"AAE="},"id":3}']
        with pytest.raises(ClusterError, match="data found after padding"):  # the whole batch
            await cluster.cluster.insert_texts(
                t, ['{"id":4,"b":{"$reql_type$":"BINARY","data":"AAE=AAE="}}'])

    async def test_golden_range_digests(self, cluster: ContractTarget):
        t = await cluster.new_table()
        await cluster.cluster.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        assert await cluster.cluster.range_digest(t) == GOLDEN["fold_digest_whole_table"]
        between = GOLDEN["fold_digest_between"]  # [lo, hi): after the key before lo, upto the last key
        ids = [json.loads(d)["id"] for d in GOLDEN["table_in_key_order"]]
        before = ids[ids.index(between["lower"]) - 1]
        got = await cluster.cluster.range_digest(t, after=json.dumps(before), upto=json.dumps(between["keys"][-1]))
        assert got == between["digest"]
        assert await cluster.cluster.range_digest(t, after='"n05"', upto='"n05"') == ""
        assert await cluster.cluster.range_digest(t, after='"zzz"') == ""

    async def test_scan_texts_are_the_canonical_texts_of_documents_and_keys(self, cluster: ContractTarget):
        """On the real server the adapter takes these bytes from a scan of whole documents:
        this checks that the server writes documents into a response exactly as
        ``to_json_string()`` prints them (numbers, TIME, BINARY, GEOMETRY, escapes)."""
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        batches = [b async for b in c.scan_texts(t, batch_size=7)]
        assert all(1 <= len(b) <= 7 for b in batches)
        docs = [bytes(d).decode() for b in batches for d in b.docs]
        keys = [bytes(k).decode() for b in batches for k in b.keys]
        assert docs == GOLDEN["table_in_key_order"]
        assert keys == [json.dumps(json.loads(d)["id"]) for d in GOLDEN["table_in_key_order"]]
        assert [b.last_key() for b in batches] == [bytes(b.keys[-1]).decode() for b in batches]
        part = [bytes(d).decode() async for b in c.scan_texts(t, after=keys[3], upto=keys[10])
                for d in b.docs]
        assert part == docs[4:11]

    async def test_scan_texts_key_is_the_top_level_primary_key(self, cluster: ContractTarget):
        t = await cluster.new_table(primary_key="k")
        texts = ['{"a":{"k":"nested"},"b":[{"k":1},{"k":2}],"k":"top"}',
                 '{"k":5,"z":{"k":"x","y":"\\"k\\":7"}}', '{"k":[1,"a"]}']
        res = await cluster.cluster.insert_texts(t, texts)
        assert res.inserted == 3
        batches = [b async for b in cluster.cluster.scan_texts(t)]
        rows = [(bytes(k).decode(), bytes(d).decode()) for b in batches for k, d in zip(b.keys, b.docs)]
        assert rows == [('[1,"a"]', texts[2]), ("5", texts[1]), ('"top"', texts[0])]
        assert [row async for b in cluster.cluster.scan(t) for row in b] == rows

    async def test_key_bounds_are_the_first_and_last_keys(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        assert await c.key_bounds(t) is None
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        keys = [k for k, _ in await collect(c.scan(t))]
        assert await c.key_bounds(t) == (keys[0], keys[-1])

    async def test_segment_digests_are_r_uuid_of_the_json_array_of_document_hashes(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        rows = await collect(c.scan(t))
        keys, texts = [k for k, _ in rows], [d for _, d in rows]
        golden_uuid = {d["canonical"]: d["uuid"] for d in GOLDEN["documents"]}

        def expected(part: list[str]) -> tuple[int, str]:
            hashes = [golden_uuid[text] for text in part]
            return len(part), r_uuid(json.dumps(hashes, separators=(",", ":")))

        ranges = [(None, keys[9]), (keys[9], keys[30]), (keys[30], None), (keys[5], keys[5]),
                  (None, None)]
        got = await c.segment_digests(t, ranges)
        assert got == [expected(texts[:10]), expected(texts[10:31]), expected(texts[31:]),
                       (0, r_uuid("[]")), expected(texts)]
        assert await c.segment_digests(t, []) == []

    async def test_chunk_digests(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        rows = await collect(c.scan(t))
        keys = [k for k, _ in rows]
        mid = keys[len(keys) // 2]
        whole, low, high, empty = await c.chunk_digests(
            t, [(None, None), (None, mid), (mid, None), (mid, mid)], threshold="")
        assert whole == [(None, len(rows), GOLDEN["fold_digest_whole_table"])]
        assert low == [(mid, len(keys) // 2 + 1, await c.range_digest(t, upto=mid))]
        assert high == [(None, len(keys) - len(keys) // 2 - 1, await c.range_digest(t, after=mid))]
        assert empty == [(mid, 0, "")]
        (per_doc,) = await c.chunk_digests(t, [(None, None)], threshold="g")
        assert per_doc[:-1] == [(k, 1, h) for k, h in await collect(c.hash_scan(t))]
        assert per_doc[-1] == (None, 0, "")
        # Content-defined: a chunk ends after each key whose r.uuid is below the threshold.
        threshold = "%08x" % (2**32 // 4)
        (chunks,) = await c.chunk_digests(t, [(keys[0], None)], threshold=threshold)
        cuts = [k for k in keys[1:] if r_uuid(k) < threshold]
        assert 1 < len(cuts) < len(keys) - 1
        assert [u for u, _, _ in chunks] == cuts + [None]
        assert sum(n for _, n, _ in chunks) == len(keys) - 1
        # Each chunk after a cut folds from the cutting key's hash (the first from '').
        assert chunks == expected_chunks(rows[1:], threshold, None)
        # Keys left out; digests cut to their last 16 characters.
        (short,) = await c.chunk_digests(t, [(keys[0], None)], threshold=threshold, keys=False,
                                         digest_chars=16)
        assert short == [(None, n, d[20:]) for _, n, d in chunks]
        # Windows: positions after `after` (upto not used), chunked the same way.
        skip, limit = 3, len(keys) // 2
        (windowed, _) = await c.chunk_digests(
            t, [(keys[0], keys[1]), (keys[1], None)], threshold=threshold,
            windows=[(skip, limit), (0, 5)], keys=False)
        want = expected_chunks(rows[1 + skip:1 + skip + limit], threshold, None)
        assert windowed == [(None, n, d) for _, n, d in want]
        assert sum(n for _, n, _ in windowed) == limit
        (docs,) = await c.chunk_digests(t, [(keys[1], None)], threshold="g", windows=[(2, 4)],
                                        digest_chars=16)
        text = dict(rows)
        assert docs == [(k, 1, r_uuid(text[k])[20:]) for k in keys[4:8]] + [(None, 0, "")]

    async def test_mixed_key_types_in_server_order(self, cluster: ContractTarget):
        t = await cluster.new_table()
        order = GOLDEN["primary_key_order"]
        docs = ['{"id":%s}' % k for k in order["inserted"]]
        res = await cluster.cluster.insert_texts(t, docs)
        assert (res.inserted, res.errors) == (len(docs), 0)
        assert [k for k, _ in await collect(cluster.cluster.scan(t))] == order["order_by_index_id"]

    async def test_scan_bounds_batches_and_resume(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        keys = list(range(25))
        random.Random(1).shuffle(keys)
        await c.insert_texts(t, ['{"id":%d}' % i for i in keys])
        batches = [b async for b in c.scan(t, batch_size=7)]
        assert all(1 <= len(b) <= 7 for b in batches)
        assert [k for b in batches for k, _ in b] == [str(i) for i in range(25)]
        assert [k for k, _ in await collect(c.scan(t, after="9"))] == [str(i) for i in range(10, 25)]
        assert [k for k, _ in await collect(c.scan(t, after="3", upto="7"))] == ["4", "5", "6", "7"]
        assert [k for k, _ in await collect(c.scan(t, upto="2"))] == ["0", "1", "2"]
        assert [k for k, _ in await collect(c.scan(t, after="3.5", upto="5.5"))] == ["4", "5"]
        assert await collect(c.scan(t, after="24")) == []
        pairs = await collect(c.hash_scan(t, after="20"))
        assert pairs == [(str(i), r_uuid('{"id":%d}' % i)) for i in range(21, 25)]
