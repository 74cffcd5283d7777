"""canonical.py and grisu.py reproduce every value the real server printed (reql-golden.json)."""

from __future__ import annotations

import json
import random
import struct

import pytest

from drtool.reql import canonical
from drtool.reql.grisu import format_double

from tests.golden import GOLDEN  # noqa: E402

DOCS = GOLDEN["documents"]


@pytest.mark.parametrize("doc", DOCS, ids=[json.loads(d["input"])["id"] for d in DOCS])
def test_golden_document_canonical(doc):
    assert canonical.canonical_text(doc["input"]) == doc["canonical"]


def test_golden_table_texts_are_fixed_points():
    for text in GOLDEN["table_in_key_order"]:
        assert canonical.canonical_text(text) == text


def test_facts_examples():
    text = ('{"ts":{"timezone":"+00:00","epoch_time":1700000000,"$reql_type$":"TIME"},"n":1.0,'
            '"id":1,"bin":{"$reql_type$":"BINARY","data":"AAE="},"b":"x","a":{"z":1,"y":[1,2.5,null]}}')
    assert canonical.canonical_text(text) == (
        '{"a":{"y":[1,2.5,null],"z":1},"b":"x","bin":{"$reql_type$":"BINARY","data":"AAE="},'
        '"id":1,"n":1,"ts":{"$reql_type$":"TIME","epoch_time":1700000000,"timezone":"+00:00"}}'
    )
    out = canonical.canonical_text('{"v":"\\u00e9\\u2028\\n\\"\\\\","neg":-0.0,"big":12345678901234567}')
    assert out.encode() == b'{"big":12345678901234568.0,"neg":-0.0,"v":"\xc3\xa9\xe2\x80\xa8\\n\\"\\\\"}'


@pytest.mark.parametrize("value,text", [
    (1e16, "10000000000000000.0"), (18014398509481984.0, "18014398509481985.0"),
    (123456789012345678.0, "123456789012345680.0"), (1e21, "1e21"), (1e-6, "0.000001"),
    (1e-7, "1e-7"), (-0.0, "-0.0"), (9007199254740993.0, "9007199254740992"),
    (2.0**53, "9007199254740992"), (2.0**53 + 2, "9007199254740994.0"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e308"), (0.1, "0.1"), (-1.5, "-1.5"),
])
def test_number_text(value, text):
    assert canonical.number_text(value) == text


def test_grisu_output_reads_back_to_the_same_double():
    rng = random.Random(7)
    for _ in range(20000):
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x != x or x in (float("inf"), float("-inf")):
            continue
        assert float(format_double(x)) == x


@pytest.mark.parametrize("char,escaped", [
    ("\x00", "\\u0000"), ("\x1f", "\\u001F"), ("\x0b", "\\u000B"), ("\b", "\\b"),
    ("\f", "\\f"), ("\r", "\\r"), ("\t", "\\t"), ("\x7f", "\x7f"), ("/", "/"),
])
def test_string_escapes(char, escaped):
    assert canonical.dumps(char) == '"' + escaped + '"'


def test_escaped_backslash_before_u_is_not_rewritten():
    assert canonical.canonical_text('["\\\\u001f"]') == '["\\\\u001f"]'


@pytest.mark.parametrize("bad", [
    '{"a":NaN}', '{"a":Infinity}', '{"a":1e400}', '{"a":"\\ud800"}', '{"a":"\\udfff\\ud800"}',
    '{"a":', '{"b":{"$reql_type$":"BINARY","data":"!!"}}', '{"t":{"$reql_type$":"NOPE"}}',
    '{"t":{"$reql_type$":"TIME","epoch_time":"x","timezone":"+00:00"}}',
])
def test_refused_input(bad):
    with pytest.raises(canonical.CanonicalError):
        canonical.canonical_text(bad)


def test_pretty_matches_server_error_format():
    assert canonical.pretty(canonical.parse('{"a":1}')) == '{\n\t"a":\t1\n}'
    assert canonical.pretty(canonical.parse('{"id":"a"}')) == '{\n\t"id":\t"a"\n}'
    assert canonical.pretty(canonical.parse('null')) == "null"
    assert canonical.pretty(canonical.parse('{"a":[1,{}],"b":[]}')) == (
        '{\n\t"a":\t[\n\t\t1,\n\t\t{}\n\t],\n\t"b":\t[]\n}'
    )
