"""Slices: the changes of one table during an interval of the primary's clock.

Plaintext of a slice (docs/FORMAT.md §10.2): a first line holding the header JSON (sorted
keys, no spaces), then one line per entry ``<offset>\\t<key text>\\t<document text>`` in
primary-key order, then stamp order; an empty document text is a tombstone (the key was
deleted). A change's stamp is ``t0 + offset`` milliseconds since the epoch in the primary's
clock (offset: a decimal integer), ``t0 <= stamp < t1``. Canonical texts never hold a raw
tab or newline (the server escapes them), so splitting is exact. Per key a slice keeps the last version of each ``GRANULE_MS`` of the primary's
clock, so restoring to a time inside a slice is exact to the granule.

Names: ``log/<table key>/<timeline>/s-<t0>-<t1>`` with t0 and t1 as 13 decimal digits,
``<timeline>`` = ``<ms the timeline's feed became ready, 13 digits>-<8 hex>``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from drtool.errors import IntegrityError
from drtool.model import DocText, KeyText
from drtool.reql.ordering import key_order
from drtool.repo.log_objects import LOG_PREFIX

GRANULE_MS = 500
SLICE_FORMAT = "drtool-slice"
SLICE_VERSION = 1
_TIMELINE = r"[0-9]{13}-[0-9a-f]{8}"
_SLICE_NAME = re.compile(rf"^log/([0-9a-f]{{32}})/({_TIMELINE})/s-([0-9]{{13}})-([0-9]{{13}})$")
_BASE_NAME = re.compile(
    rf"^log/([0-9a-f]{{32}})/({_TIMELINE})/b-([0-9]{{8}}T[0-9]{{6}}Z-[0-9a-f]{{8}})$")

Entry = tuple[int, KeyText, DocText | None]  # (stamp ms, key, text or None = deleted)


def new_timeline(opened_ms: int) -> str:
    return f"{opened_ms:013d}-{os.urandom(4).hex()}"


def timeline_start(timeline: str) -> int:
    return int(timeline[:13])


def slice_name(table_key: str, timeline: str, t0: int, t1: int) -> str:
    return f"{LOG_PREFIX}{table_key}/{timeline}/s-{t0:013d}-{t1:013d}"


def base_name(table_key: str, timeline: str, snapshot_id: str) -> str:
    return f"{LOG_PREFIX}{table_key}/{timeline}/b-{snapshot_id}"


@dataclass(frozen=True, order=True)
class SliceRef:
    """A slice as named in a listing (not yet read: nothing here is proven)."""

    t0: int
    t1: int
    timeline: str
    name: str
    size: int = 0


@dataclass(frozen=True)
class BaseRef:
    timeline: str
    snapshot: str
    name: str


def parse_log_name(name: str, size: int = 0) -> SliceRef | BaseRef | None:
    """A log object name -> SliceRef/BaseRef; None for names of no known pattern."""
    m = _SLICE_NAME.match(name)
    if m:
        return SliceRef(int(m.group(3)), int(m.group(4)), m.group(2), name, size)
    m = _BASE_NAME.match(name)
    if m:
        return BaseRef(m.group(2), m.group(3), name)
    return None


@dataclass(frozen=True)
class SliceHeader:
    table: str  # "db.table"
    timeline: str
    t0: int
    t1: int
    follows: str  # the previous slice's name, or "base" for the first slice of a timeline
    count: int  # entries
    level: int = 0  # 0: sealed by the runner; n: merged from slices of level < n

    def to_json(self) -> dict:
        return {"format": SLICE_FORMAT, "version": SLICE_VERSION, "table": self.table,
                "timeline": self.timeline, "t0": self.t0, "t1": self.t1,
                "follows": self.follows, "count": self.count, "level": self.level}


def encode_slice(header: SliceHeader, entries: list[Entry]) -> bytes:
    """Entries must be sorted (``sort_entries``) and all inside ``[t0, t1)``."""
    head = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    t0 = header.t0
    lines = [head] + [f"{stamp - t0}\t{key}\t{doc or ''}" for stamp, key, doc in entries]
    return ("\n".join(lines) + "\n").encode()


def decode_slice(name: str, plaintext: bytes) -> tuple[SliceHeader, list[Entry]]:
    """Parse and check a slice read as ``name``: the header must agree with the name (table
    key aside, which the caller checks), every stamp must lie in ``[t0, t1)``, the count must
    match. Raises IntegrityError naming the slice."""
    ref = parse_log_name(name)
    try:
        text = plaintext.decode()
        first, _, rest = text.partition("\n")
        data = json.loads(first)
        if data.get("format") != SLICE_FORMAT or data.get("version") != SLICE_VERSION:
            raise ValueError("not a slice")
        header = SliceHeader(data["table"], data["timeline"], int(data["t0"]), int(data["t1"]),
                             data["follows"], int(data["count"]), int(data.get("level", 0)))
        entries: list[Entry] = []
        for line in rest.split("\n")[:-1]:
            stamp, key, doc = line.split("\t")
            entries.append((header.t0 + int(stamp), key, doc or None))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise IntegrityError(f"slice {name} is malformed") from None
    if (not isinstance(ref, SliceRef) or (ref.timeline, ref.t0, ref.t1)
            != (header.timeline, header.t0, header.t1) or header.count != len(entries)
            or any(not header.t0 <= s < header.t1 for s, _, _ in entries)):
        raise IntegrityError(f"slice {name} does not match its name or its count")
    return header, entries


def sort_entries(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (key_order(e[1]), e[0]))


@dataclass
class OpenSlice:
    """The changes received since the last seal, per key the last one of each granule.
    ``nbytes`` approximates the plaintext size (bounds the slice: the runner seals early)."""

    t0: int
    versions: dict[KeyText, list[tuple[int, DocText | None]]] = field(default_factory=dict)
    nbytes: int = 0
    last_stamp: int = 0

    def add(self, stamp: int, key: KeyText, doc: DocText | None) -> None:
        stamp = max(stamp, self.t0, self.last_stamp)  # stamps never go back (clock jumps)
        self.last_stamp = stamp
        versions = self.versions.setdefault(key, [])
        size = len(key) + len(doc or "") + 16
        if versions and versions[-1][0] // GRANULE_MS == stamp // GRANULE_MS:
            old = versions.pop()
            self.nbytes -= len(key) + len(old[1] or "") + 16
        versions.append((stamp, doc))
        self.nbytes += size

    def __len__(self) -> int:
        return sum(len(v) for v in self.versions.values())

    def entries(self) -> list[Entry]:
        return sort_entries([(s, k, d) for k, vs in self.versions.items() for s, d in vs])


def merge_entries(parts: list[list[Entry]]) -> list[Entry]:
    """Entries of adjacent slices (in time order) as one slice's: per key the last version of
    each granule."""
    merged = OpenSlice(t0=0)
    for entries in parts:
        for stamp, key, doc in sorted(entries, key=lambda e: e[0]):
            merged.add(stamp, key, doc)
    return merged.entries()
