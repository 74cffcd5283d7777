"""Document and range digests, identical to what the server computes.

``r.uuid(s)`` is UUIDv5 in namespace ``NS`` of the UTF-8 bytes of ``s``; the server-side range
digest is ``fold('', lambda acc, d: r.uuid(acc + d.to_json_string()))`` over the documents in
key order (shared/reql-facts.md). These functions compute the same values client-side.

This runs once per document on the snapshot hot path, so the UUIDv5 is built by hand from
``hashlib.sha1`` (about 3x faster than ``str(uuid.uuid5(...))``, 1.5 us vs 5 us for 400 bytes; ``tests/test_ordering.py`` checks both
agree).

Public: ``NS``, ``r_uuid(text)``, ``doc_hash(text)``, ``fold(texts, acc='')``,
``fold_digests(digests)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from hashlib import sha1

NS = uuid.UUID("91461c99-f89d-49d2-af96-d8e2e14e9b58")
_NS_BYTES = NS.bytes
_VARIANT = "89ab89ab89ab89ab"  # RFC 4122 variant: top two bits of byte 8 set to 10
_VARIANT_OF = {c: _VARIANT[int(c, 16)] for c in "0123456789abcdef"}  # hex digit -> variant digit


def r_uuid(text: str) -> str:
    """``r.uuid(text)``: UUIDv5(NS, UTF-8 of text) as the 36-character string."""
    h = sha1(_NS_BYTES + text.encode("utf-8")).hexdigest()
    return (
        f"{h[0:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_OF[h[16]]}{h[17:20]}-{h[20:32]}"
    )


def doc_hash(text: str) -> str:
    """Per-document hash: ``r.uuid(doc.to_json_string())``."""
    return r_uuid(text)


def fold(texts: Iterable[str], acc: str = "") -> str:
    """Chain ``acc = r.uuid(acc + text)`` over ``texts``; ``''`` for no texts.

    Pass the previous result as ``acc`` to continue a fold across batches."""
    ns = _NS_BYTES
    variant = _VARIANT_OF
    for text in texts:
        h = sha1(ns + (acc + text).encode("utf-8")).hexdigest()
        acc = f"{h[0:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"
    return acc


def fold_digests(digests: Iterable[str]) -> str:
    """Combine already computed digests (e.g. of consecutive ranges) by folding them as texts.

    This is a client-side combination, not something the server computes: the fold of a
    whole range is NOT the fold of its sub-range digests. Use it to summarise a list of range
    digests into one value (empty digests included as they are)."""
    return fold(digests)


def short_hash(text: str) -> str:
    """The first 16 hex digits of ``r.uuid(text)`` without dashes: the per-document hash kept
    in index objects (64 bits: collisions between two versions of one document are not a
    practical concern). ``short_of_uuid`` derives it from the server's ``hash_scan`` output."""
    return short_of_uuid(r_uuid(text))


def short_of_uuid(uuid_text: str) -> str:
    """``short_hash`` of a document, from its ``r.uuid(text)`` (36-character form)."""
    return uuid_text.replace("-", "")[:16]


def fold_and_hash(encoded: list[bytes]) -> tuple[str, list[str]]:
    """For UTF-8 encoded texts: their fold (as ``fold``) and each one's ``short_hash``, in one
    pass over the bytes (the segment writer's hot path: each text is encoded once)."""
    ns = _NS_BYTES
    variant = _VARIANT_OF
    acc = b""
    shorts = []
    for tb in encoded:
        h = sha1(ns + acc + tb).hexdigest()
        acc = f"{h[0:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}".encode()
        d = sha1(ns + tb).hexdigest()
        shorts.append(f"{d[0:12]}5{d[13:16]}")
    return acc.decode(), shorts
