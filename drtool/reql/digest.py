"""Document and range digests, identical to what the server computes.

``r.uuid(s)`` is UUIDv5 in namespace ``NS`` of the UTF-8 bytes of ``s``. Two range digests:
the server's fold ``fold('', lambda acc, d: r.uuid(acc + d.to_json_string()))`` over the
documents in key order (shared/reql-facts.md; ``diff`` between clusters), and the *segment
digest* a snapshot records, ``r.uuid`` of the JSON array of the documents' ``r.uuid``
(docs/FORMAT.md §6.2). These functions compute the same values client-side.

``r_uuid`` runs per document (incremental snapshots, verify), so the UUIDv5 is built by hand
from ``hashlib.sha1`` (about 3x faster than ``str(uuid.uuid5(...))``;
``tests/test_ordering.py`` checks both agree); the snapshot's own path uses ``hashes_json``.

Public: ``NS``, ``r_uuid(text)``, ``doc_hash(text)``, ``fold(texts, acc='')`` (the server's
fold, used by ``diff`` between clusters), ``fold_digests(digests)``, and the digest of a
snapshot's ranges: ``hashes_json(docs)``, ``digest_of_hashes(uuids)``,
``digest_of_texts(texts)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
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


def uuid_of_bytes(data: bytes) -> str:
    """``r.uuid(s)`` for ``s`` given as its UTF-8 bytes."""
    h = sha1(_NS_BYTES + data).hexdigest()
    return f"{h[0:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_OF[h[16]]}{h[17:20]}-{h[20:32]}"


# --- segment digests (docs/FORMAT.md §6.2) ----------------------------------------------------
# A range's digest is r.uuid of the JSON text of the array of its documents' r.uuid values in
# key order: ``["<uuid>","<uuid>",...]`` (``[]`` for no documents). The server computes it in
# one pass (``Cluster.segment_digests``); the snapshot computes the array text with a fixed
# number of C-level operations per segment, whatever its number of documents.
_RECORD = b'"________-____-____-____-____________",'  # 39 bytes per document
_HEX_TO_RECORD = [(1 + i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20), i) for i in range(32)]
_SET_VERSION = bytes((b & 0x0F) | 0x50 for b in range(256))  # byte 6: version 5
_SET_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: RFC 4122 variant


def hashes_json(docs: Sequence) -> bytes:
    """The JSON array text of ``r.uuid(doc)`` for UTF-8 encoded ``docs`` (any bytes-like
    objects), compact: ``b'["5bd38358-4de1-5f15-a528-ee46f08dd20b",...]'``."""
    if not docs:
        return b"[]"
    ns = _NS_BYTES
    raw = bytearray(b"".join([sha1(ns + d).digest() for d in docs]))  # 20 bytes each
    raw[6::20] = bytes(raw[6::20]).translate(_SET_VERSION)
    raw[8::20] = bytes(raw[8::20]).translate(_SET_VARIANT)
    hexed = raw.hex().encode()  # 40 hex digits per document
    out = bytearray(_RECORD * len(docs))
    for dst, src in _HEX_TO_RECORD:
        out[dst::39] = hexed[src::40]
    out[-1] = 0x5D  # the last "," becomes "]"
    return b"[" + bytes(out)


def hashes_json_of(uuids: Iterable[str]) -> str:
    """The same array text from ``r.uuid`` values already computed."""
    return "[" + ",".join(f'"{u}"' for u in uuids) + "]"


def digest_of_hashes(uuids: Iterable[str]) -> str:
    """A range's digest from its documents' ``r.uuid`` values in key order."""
    return r_uuid(hashes_json_of(uuids))


def digest_of_texts(texts: Iterable[str]) -> str:
    """A range's digest from its document texts in key order."""
    return digest_of_hashes(r_uuid(t) for t in texts)
