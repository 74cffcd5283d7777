"""Byte formats of sealed objects, object names and snapshot ids (docs/FORMAT.md).

Pure, synchronous functions: the repository runs the costly ones in worker threads. Every
sealed object is ``header || AES-256-GCM(key, nonce, zstd(plaintext), aad = header || name)``:

* data object ``data/<id[:2]>/<id>``: header ``b"DRTD" || 0x01 || keyid (16) || nonce (12)``
* manifest ``snapshots/<snapshot id>``: header ``b"DRTM" || 0x01 || nonce (12)``
* index object ``index/<id[:2]>/<id>``: header ``b"DRTI" || 0x01 || nonce (12)``, sealed like a
  manifest with the metadata key (a writer can read it back: it holds keys and hashes only)

Binding the object name into the associated data makes a copy of one object's bytes under
another name fail authentication.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from drtool.repo import crypto
from drtool.errors import IntegrityError, UsageError
from drtool.repo.compression import DecompressionError, compress, decompress

OBJECT_VERSION = 1
DATA_MAGIC = b"DRTD"
MANIFEST_MAGIC = b"DRTM"
INDEX_MAGIC = b"DRTI"
KEYID_SIZE = 16
DATA_HEADER_SIZE = 4 + 1 + KEYID_SIZE + crypto.NONCE_SIZE  # 33
MANIFEST_HEADER_SIZE = 4 + 1 + crypto.NONCE_SIZE  # 17
TAG_SIZE = 16

CONFIG_NAME = "config"
DATA_PREFIX = "data/"
KEYS_PREFIX = "keys/"
SNAPSHOTS_PREFIX = "snapshots/"
INDEX_PREFIX = "index/"
LOCKS_PREFIX = "locks/"

_OBJECT_ID = re.compile(r"^[0-9a-f]{64}$")
_KEYID = re.compile(r"^[0-9a-f]{32}$")
_SNAPSHOT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


class SealedObjectError(Exception):
    """A sealed object is malformed or fails authentication. Internal: the repository
    re-raises it as IntegrityError naming the object."""


# --- names ---------------------------------------------------------------------------------------
def is_object_id(text: str) -> bool:
    return bool(_OBJECT_ID.match(text))


def is_keyid(text: str) -> bool:
    return bool(_KEYID.match(text))


def is_snapshot_id(text: str) -> bool:
    return bool(_SNAPSHOT_ID.match(text))


def data_name(object_id: str) -> str:
    """``data/<first 2 hex>/<id>``; UsageError for anything but 64 lowercase hex digits."""
    if not is_object_id(object_id):
        raise UsageError(f"invalid object id {object_id!r}: expected 64 hex digits")
    return f"{DATA_PREFIX}{object_id[:2]}/{object_id}"


def index_name(object_id: str) -> str:
    """``index/<first 2 hex>/<id>``; UsageError for anything but 64 lowercase hex digits."""
    return INDEX_PREFIX + data_name(object_id)[len(DATA_PREFIX):]


def key_name(keyid: str) -> str:
    return f"{KEYS_PREFIX}{keyid}"


def snapshot_name(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}"


def new_snapshot_id(now: datetime | None = None, *, after: str | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<8 random hex>`` for ``now`` (default: the current UTC time).

    Lexicographic order of ids is time order. ``after`` (the newest existing id) makes the new
    id sort after it even within the same second (the suffix is drawn above its suffix, or
    the time moves on a second), so "latest" is always the snapshot written last."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = f"{now:%Y%m%dT%H%M%SZ}"
    if after is None or stamp > after[:16]:
        return f"{stamp}-{os.urandom(4).hex()}"
    floor = int(after[17:], 16) if stamp == after[:16] else 0xFFFFFFFF
    if floor >= 0xFFFFFFFF:
        return new_snapshot_id(datetime.strptime(after[:16], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=timezone.utc) + timedelta(seconds=1))
    suffix = floor + 1 + int.from_bytes(os.urandom(4), "big") % (0xFFFFFFFF - floor)
    return f"{after[:16]}-{suffix:08x}"


# --- sealing -------------------------------------------------------------------------------------
def _seal(header: bytes, key: bytes, nonce: bytes, name: str, plaintext: bytes) -> bytes:
    body = crypto.aead_encrypt(key, nonce, compress(plaintext), header + name.encode("utf-8"))
    return header + body


def _open(header: bytes, key: bytes, nonce: bytes, name: str, blob: bytes) -> bytes:
    try:
        packed = crypto.aead_decrypt(
            key, nonce, blob[len(header):], header + name.encode("utf-8")
        )
        return decompress(packed)
    except (IntegrityError, DecompressionError):
        raise SealedObjectError("authentication failed") from None


def seal_data(key: bytes, keyid: bytes, name: str, plaintext: bytes) -> bytes:
    """A data object: compress, encrypt under data key ``key`` (id ``keyid``)."""
    nonce = os.urandom(crypto.NONCE_SIZE)
    header = DATA_MAGIC + bytes([OBJECT_VERSION]) + keyid + nonce
    return _seal(header, key, nonce, name, plaintext)


def data_keyid(blob: bytes) -> bytes:
    """The data key id in a data object's header. Raises SealedObjectError when the header
    is malformed or the object too short to hold a header and a tag."""
    if (
        len(blob) < DATA_HEADER_SIZE + TAG_SIZE
        or blob[:4] != DATA_MAGIC
        or blob[4] != OBJECT_VERSION
    ):
        raise SealedObjectError("bad header")
    return blob[5:5 + KEYID_SIZE]


def open_data(key: bytes, name: str, blob: bytes) -> bytes:
    """Authenticate, decrypt and decompress a data object. Raises SealedObjectError."""
    data_keyid(blob)
    header = blob[:DATA_HEADER_SIZE]
    return _open(header, key, header[5 + KEYID_SIZE:], name, blob)


def seal_manifest(key: bytes, name: str, plaintext: bytes, magic: bytes = MANIFEST_MAGIC) -> bytes:
    """A manifest (or, with ``magic=INDEX_MAGIC``, an index object) under the metadata key."""
    nonce = os.urandom(crypto.NONCE_SIZE)
    header = magic + bytes([OBJECT_VERSION]) + nonce
    return _seal(header, key, nonce, name, plaintext)


def open_manifest(key: bytes, name: str, blob: bytes, magic: bytes = MANIFEST_MAGIC) -> bytes:
    """Authenticate, decrypt and decompress a manifest (or index object). Raises
    SealedObjectError."""
    if (
        len(blob) < MANIFEST_HEADER_SIZE + TAG_SIZE
        or blob[:4] != magic
        or blob[4] != OBJECT_VERSION
    ):
        raise SealedObjectError("bad header")
    header = blob[:MANIFEST_HEADER_SIZE]
    return _open(header, key, header[5:], name, blob)
