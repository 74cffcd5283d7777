"""Splitting a table's key space into parts that are scanned at the same time.

One ordered scan keeps one server thread busy; the server runs several queries in parallel
(also on one connection), so a snapshot reads a table as a few consecutive key ranges at once
(docs/BENCHMARKS.md: 200,000 documents, 2.3 s in one scan, 1.4-2.0 s in 2-4). The split
points only need to be valid keys in order: a poor split costs speed, never correctness.

Without knowing the key distribution, the points are interpolated between the table's first
and last key (``Cluster.key_bounds``, two index lookups): evenly in hexadecimal for keys that
look like UUIDs or hex strings (RethinkDB's generated keys, uniformly distributed), by
character code for other strings, numerically for numbers; other keys (arrays, mixed types,
TIME, BINARY) give one part.
"""

from __future__ import annotations

import json
import re

from drtool.cluster.base import Cluster, KeyRange
from drtool.model import KeyText, TableName
from drtool.reql.ordering import key_order

_HEX = re.compile(r"^[0-9a-f-]*$")
_HEX_DIGITS = 8
_MAX_EXACT = 2 ** 53


def split_points(first: KeyText, last: KeyText, parts: int) -> list[KeyText]:
    """Up to ``parts - 1`` increasing key texts ``p`` with ``first <= p < last`` in key order
    (``[]``: one part)."""
    if parts < 2:
        return []
    try:
        a, b = json.loads(first), json.loads(last)
    except ValueError:
        return []
    if isinstance(a, str) and isinstance(b, str):
        texts = [json.dumps(p, ensure_ascii=False) for p in _string_points(a, b, parts)]
    elif _is_number(a) and _is_number(b) and max(abs(a), abs(b)) < _MAX_EXACT:
        lo, hi = int(a), int(b)
        texts = [str(lo + (hi - lo) * i // parts) for i in range(1, parts)]
    else:
        return []
    points: list[KeyText] = []
    low, high = key_order(first), key_order(last)
    for text in texts:
        order = key_order(text)
        if low <= order < high and (not points or order > key_order(points[-1])):
            points.append(text)
    return points


def part_bounds(first_last: tuple[KeyText, KeyText] | None, parts: int) -> list[KeyText | None]:
    """``[None, p1, ..., None]``: part ``i`` is the range ``(bounds[i], bounds[i+1]]``."""
    points = split_points(*first_last, parts) if first_last else []
    return [None, *points, None]


async def table_parts(cluster: Cluster, table: TableName, *, parts: int, docs_per_part: int,
                      estimate: int | None = None) -> list[KeyRange]:
    """The key ranges ``(after, upto]`` (consecutive, covering every key) to read ``table`` in:
    up to ``parts``, and no more than one per ``docs_per_part`` documents of the estimate."""
    if estimate is None:
        estimate = await cluster.doc_count_estimate(table)
    n = max(1, min(parts, estimate // max(docs_per_part, 1)))
    bounds = part_bounds(await cluster.key_bounds(table), n) if n > 1 else [None, None]
    return list(zip(bounds[:-1], bounds[1:]))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_points(a: str, b: str, parts: int) -> list[str]:
    if _HEX.match(a) and _HEX.match(b):
        lo = int((a.replace("-", "") + "0" * _HEX_DIGITS)[:_HEX_DIGITS], 16)
        hi = int((b.replace("-", "") + "f" * _HEX_DIGITS)[:_HEX_DIGITS], 16)
        return [f"{lo + (hi - lo) * i // parts:0{_HEX_DIGITS}x}" for i in range(1, parts)]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    lo = ord(a[n]) if n < len(a) else 32
    hi = ord(b[n]) if n < len(b) else 32
    lo, hi = max(lo, 32), min(hi, 126)  # printable ASCII: the same text in JSON and UTF-8
    out = []
    for i in range(1, parts):
        code = lo + (hi - lo) * i // parts
        if code in (34, 92):  # '"' and '\\' would be escaped
            code += 1
        out.append(a[:n] + chr(code))
    return out
