"""The values the Cluster interface (``drtool.cluster.base``) passes around: rows, key ranges,
chunk digests, state-write guards, and the client-side folds both adapters share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Literal

from drtool.model import DocText, KeyText
from drtool.reql.digest import NS, fold, r_uuid

ConflictMode = Literal["error", "replace", "skip"]
Row = tuple[KeyText, DocText]
KeyRange = tuple[KeyText | None, KeyText | None]  # (after, upto]
ChunkDigest = tuple[KeyText | None, int, str]  # (upto, document count, fold digest)
Window = tuple[int, int]  # (skip, limit): positions within a range, in key order
PER_DOC = "g"  # chunk_digests threshold: one chunk per document (above any hex digit)
DEFAULT_FEED_QUEUE = 100_000  # the server's default changefeed_queue_size
SEGMENT_DIGEST_QUERIES = 4  # a server-side segment_digests runs at most this many queries


def segment_digest_groups(count: int) -> list[range]:
    """How a server-side ``segment_digests`` of ``count`` ranges splits them: consecutive
    groups, one query each, run in parallel (the server folds them on several cores at once).
    The real adapter queries so and the traffic count (compare.diff_ranges.Side) follows it."""
    size = max(1, -(-count // SEGMENT_DIGEST_QUERIES))
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


@dataclass(frozen=True)
class Guard:
    """A condition on a document's current value, evaluated by the server in the same atomic
    step as the write it guards (``write_state``). It passes when ANY of these holds:

    * ``always``;
    * the document is absent and ``if_absent``;
    * the document is present, ``fields`` is not empty and every ``(field, value)`` pair
      matches: the field exists and equals the canonical JSON text ``value`` (``'3'``,
      ``'"runner-a"'``, ``'null'`` matches a missing field too);
    * the document is present and ``expired`` names one of its TIME fields that is earlier
      than the server's ``r.now()`` (the server's clock decides, never the client's).

    ``Guard()`` passes only for an absent document (create-if-absent)."""

    always: bool = False
    if_absent: bool = True
    fields: tuple[tuple[str, str], ...] = ()
    expired: str | None = None


ALWAYS = Guard(always=True)


@dataclass(frozen=True)
class StateWrite:
    """The outcome of ``write_state``: whether the guard passed (and so the write happened),
    the document stored now (the new one, or the unchanged existing one when the guard
    failed, None when absent), and the server's ``r.now()`` of that write (epoch seconds)."""

    applied: bool
    doc: DocText | None
    now: float


class TextBatch:
    """Documents of a scan as UTF-8 texts: ``keys[i]`` is the canonical key text of the
    document whose canonical text is ``docs[i]``; both are bytes-like objects (``bytes``,
    or zero-copy views into the server's response)."""

    __slots__ = ("keys", "docs")

    def __init__(self, keys: Sequence, docs: Sequence) -> None:
        self.keys, self.docs = keys, docs

    def __len__(self) -> int:
        return len(self.docs)

    def last_key(self) -> KeyText:
        return bytes(self.keys[-1]).decode()

    def rows(self) -> list[Row]:
        return [(bytes(k).decode(), bytes(d).decode()) for k, d in zip(self.keys, self.docs)]


def chunk_spec(ranges: Sequence[KeyRange], windows: Sequence[Window] | None) -> str:
    """The JSON text a server-side ``chunk_digests`` sends (``r.json(spec)``): one
    ``[index, after or null, upto or null]`` per range, or with windows ``[index, after or
    null, skip, limit]``."""
    parts = []
    for i, (after, upto) in enumerate(ranges):
        tail = upto or "null" if windows is None else "%d,%d" % tuple(windows[i])
        parts.append(f"[{i},{after or 'null'},{tail}]")
    return "[" + ",".join(parts) + "]"


def fold_chunks(rows: Sequence[Row], upto: KeyText | None, threshold: str, keys: bool,
                digest_chars: int) -> list[ChunkDigest]:
    """``chunk_digests`` of one range or window from its ``(key, doc)`` rows, client-side
    (the default implementation and the in-memory fake)."""
    if not threshold:
        return [(upto if keys else None, len(rows), fold(doc for _, doc in rows)[36 - digest_chars:])]
    # r.uuid(key) < an 8-hex-digit threshold compares its first 8 digits (then comes a '-').
    short = len(threshold) == 8
    ns = NS.bytes
    chunks: list[ChunkDigest] = []
    seed, docs = "", []
    for key, doc in rows:
        docs.append(doc)
        if (sha1(ns + key.encode()).hexdigest()[:8] < threshold if short
                else r_uuid(key) < threshold):
            chunks.append((key if keys else None, len(docs), fold(docs, seed)[36 - digest_chars:]))
            seed, docs = r_uuid(key) if threshold != PER_DOC else "", []
    chunks.append((upto if keys else None, len(docs), fold(docs, seed)[36 - digest_chars:]))
    return chunks
