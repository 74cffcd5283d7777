"""ordering.py sorts keys like the server; digest.py reproduces the server's hashes."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from drtool.reql import digest
from drtool.reql import canonical
from drtool.reql.ordering import InvalidKey, key_bytes, key_order, parse_key

from tests.golden import GOLDEN

ORDER = GOLDEN["primary_key_order"]


def test_golden_mixed_keys_sort_into_server_order():
    keys = [canonical.canonical_text(k) for k in ORDER["accepted"]]
    assert sorted(keys, key=key_order) == ORDER["order_by_index_id"]
    shuffled = list(ORDER["order_by_index_id"])
    random.Random(3).shuffle(shuffled)
    assert sorted(shuffled, key=key_order) == ORDER["order_by_index_id"]


def test_facts_orders():
    arrays = ['[]', '[[1]]', '[true]', '[0]', '[1]', '[1,2]', '[1,"a"]', '["a"]']
    assert sorted(reversed(arrays), key=key_order) == arrays
    strings = ['""', '"10"', '"9"', '"B"', '"a"', '"a a"', '"aa"', '"é"']
    assert sorted(reversed(strings), key=key_order) == strings


def test_binary_keys_order_by_bytes_and_times_by_epoch():
    b = lambda raw: json.dumps({"$reql_type$": "BINARY", "data": __import__("base64").b64encode(raw).decode()})
    bins = [b(x) for x in (b"", b"\x00", b"\x00\x00", b"\x01", b"\x01\x00", b"\x02", b"\xff")]
    assert sorted(reversed(bins), key=key_order) == bins
    t = lambda e: json.dumps({"$reql_type$": "TIME", "epoch_time": e, "timezone": "+00:00"})
    times = [t(-5.5), t(0), t(1), t(1700000000.123)]
    assert sorted(reversed(times), key=key_order) == times
    assert key_order(bins[-1]) < key_order(times[0]) < key_order('""')


def test_numbers_order_numerically_and_negative_zero_is_zero():
    nums = [-1e300, -2.5, -1.0, -5e-324, 0.0, 5e-324, 1.0, 1.5, 1e20, 1.7976931348623157e308]
    assert sorted(reversed(nums), key=key_bytes) == nums
    assert key_order("-0.0") == key_order("0")
    assert key_order("1") == key_order("1.0")


@pytest.mark.parametrize("text,kind", [
    ("null", "type"), ('{"a":1}', "type"), ("[null]", "array_item"), ('[{"a":1}]', "array_item"),
    ('"' + "x" * 128 + '"', "too_long"), ('"a\\u0000b"', "null_byte"),
    ('{"$reql_type$":"GEOMETRY","type":"Point","coordinates":[1,2]}', "geometry"),
])
def test_refused_keys(text, kind):
    with pytest.raises(InvalidKey) as err:
        key_order(text)
    assert err.value.kind == kind


def test_key_length_limit_is_127_string_bytes():
    key_order('"' + "x" * 127 + '"')
    key_order('"' + "é" * 63 + 'x"')  # 127 bytes
    with pytest.raises(InvalidKey):
        key_order('"' + "é" * 64 + '"')  # 128 bytes


def test_parse_key_numbers_are_doubles():
    assert parse_key("[1,2.5]") == [1.0, 2.5]
    assert isinstance(parse_key("1"), float)


def test_r_uuid_matches_golden_and_uuid5():
    for text, expected in GOLDEN["r_uuid"].items():
        assert digest.r_uuid(text) == expected
    for doc in GOLDEN["documents"]:
        assert digest.doc_hash(doc["canonical"]) == doc["uuid"]
    rng = random.Random(5)
    for _ in range(500):
        s = "".join(chr(rng.randint(1, 0x3000)) for _ in range(rng.randint(0, 40)))
        assert digest.r_uuid(s) == str(uuid.uuid5(digest.NS, s))


def test_fold_matches_golden_digests():
    texts = GOLDEN["table_in_key_order"]
    assert digest.fold(texts) == GOLDEN["fold_digest_whole_table"]
    between = GOLDEN["fold_digest_between"]
    by_id = {json.loads(t)["id"]: t for t in texts}
    assert digest.fold(by_id[k] for k in between["keys"]) == between["digest"]
    assert digest.fold([]) == ""
    # continuing a fold across batches gives the same result
    assert digest.fold(texts[20:], acc=digest.fold(texts[:20])) == GOLDEN["fold_digest_whole_table"]


def test_golden_table_is_in_key_order():
    texts = GOLDEN["table_in_key_order"]
    keys = [canonical.dumps(canonical.parse(t)["id"]) for t in texts]
    assert sorted(keys, key=key_order) == keys


def test_fold_digests_is_fold_of_digest_texts():
    a, b = digest.r_uuid("x"), digest.r_uuid("y")
    assert digest.fold_digests([a, b]) == digest.r_uuid(digest.r_uuid(a) + b)
