"""The server's primary-key order, computed client-side from a key's canonical text.

RethinkDB stores a document under the byte string ``datum_t::print_primary()`` of its key and
``order_by(index=pk)`` / ``between`` walk the B-tree in byte order of those strings. This
module reproduces that encoding, so ``key_order`` is exact rather than an imitation:

* number ``N`` + 16 lowercase hex digits of the IEEE bits (negatives: all bits flipped,
  non-negatives: sign bit flipped, so byte order == numeric order; ``-0.0`` sorts as ``0``)
  + ``#`` + ``%.20g`` of the value;
* string ``S`` + its UTF-8 bytes (a NUL byte is refused);
* boolean ``Bf`` / ``Bt``;
* array ``A`` + each element's encoding followed by a ``\\x00`` byte (so a prefix sorts first);
* BINARY ``PBINARY:`` + its bytes with ``\\x00`` -> ``\\x01\\x01`` and ``\\x01`` -> ``\\x01\\x02``
  (BINARY keys therefore order by their bytes);
* TIME ``PTIME:`` + the number encoding of ``epoch_time`` (TIME keys order by epoch time).

Resulting type order: arrays < booleans < numbers < BINARY < TIME < strings. An encoding
longer than 128 bytes is refused ("max 127 characters": a string key may have 127 bytes).
Objects, null and GEOMETRY are not keys. Source: RethinkDB 2.4 ``src/rdb_protocol/datum.cc``
(``print_primary``, ``*_to_str_key``), consistent with shared/reql-golden.json.

Public: ``key_order(key_text) -> bytes`` (a sort key), ``parse_key(key_text)``,
``key_bytes(value)`` for an already parsed value, ``InvalidKey``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

MAX_PRIMARY_KEY_SIZE = 128  # bytes of the encoding; the server says "max 127 characters"


class InvalidKey(ValueError):
    """A value the server refuses as a primary key.

    ``kind``: "type" (null/object; ``type_name`` is NULL or OBJECT), "array_item" (an array
    element that is null or an object), "geometry", "null_byte" (string with U+0000),
    "too_long"."""

    def __init__(self, kind: str, value: Any, type_name: str = "") -> None:
        super().__init__(f"invalid primary key ({kind}): {value!r}")
        self.kind = kind
        self.value = value
        self.type_name = type_name


def _parse_number(s: str) -> float:
    return float(s)


def parse_key(key_text: str) -> Any:
    """The key value of a canonical key text; numbers as floats, pseudotypes as dicts."""
    return json.loads(key_text, parse_int=_parse_number)


def _num(x: float, out: list[bytes]) -> None:
    if x == 0.0:
        x = 0.0  # -0.0 sorts (and is stored) as 0
    (u,) = struct.unpack("<Q", struct.pack("<d", x))
    u = u ^ 0xFFFFFFFFFFFFFFFF if u >> 63 else u ^ (1 << 63)
    out.append(b"N%016x#%s" % (u, (b"%.20g" % x)))


def _encode(value: Any, out: list[bytes]) -> None:
    if value is True or value is False:
        out.append(b"Bt" if value else b"Bf")
    elif isinstance(value, (int, float)):
        _num(float(value), out)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if b"\x00" in raw:
            raise InvalidKey("null_byte", value)
        out.append(b"S" + raw)
    elif isinstance(value, list):
        out.append(b"A")
        for item in value:
            if item is None or (isinstance(item, dict) and "$reql_type$" not in item):
                raise InvalidKey("array_item", item, "NULL" if item is None else "OBJECT")
            _encode(item, out)
            out.append(b"\x00")
    elif isinstance(value, dict) and "$reql_type$" in value:
        kind = value["$reql_type$"]
        if kind == "BINARY":
            data = base64.b64decode(value["data"])
            out.append(b"PBINARY:" + data.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01"))
        elif kind == "TIME":
            out.append(b"PTIME:")
            _num(float(value["epoch_time"]), out)
        else:
            raise InvalidKey("geometry", value, f"PTYPE<{kind}>")
    else:
        raise InvalidKey("type", value, "NULL" if value is None else "OBJECT")


def key_bytes(value: Any) -> bytes:
    """The server's B-tree key (``print_primary``) of a key value; raises InvalidKey."""
    out: list[bytes] = []
    _encode(value, out)
    encoded = b"".join(out)
    if len(encoded) > MAX_PRIMARY_KEY_SIZE:
        raise InvalidKey("too_long", value)
    return encoded


def key_order(key_text: str) -> bytes:
    """Sort key reproducing ``order_by(index=pk)`` for a canonical key text.

    ``sorted(keys, key=key_order)`` is the server's order; compare results of two keys with
    ``<``. Raises InvalidKey for texts the server would not accept as a key."""
    return key_bytes(parse_key(key_text))
