"""Repository key material: the writer key W and what derives from it, writer key files, data
key objects (``keys/<keyid>``) and the passphrase identity. Formats: docs/FORMAT.md "Keys".

Internal to drtool.repo. Functions that parse stored JSON raise ``ValueError`` on malformed
input; the repository turns that into IntegrityError/RepositoryError naming the object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from drtool.repo import crypto
from drtool.errors import EncryptionKeyError, IntegrityError, RepositoryError

WRITER_KEY_PREFIX = "DRTOOL-WRITER-KEY-1"
WRITER_CHECK_LABEL = b"drtool writer key check"
INFO_NAME = b"drtool/v1/object-id"
INFO_CHUNK = b"drtool/v1/chunk-boundary"
INFO_META = b"drtool/v1/metadata"
AAD_RECIPIENTS = b"drtool/v1/config-recipients"
AAD_PASSPHRASE = b"drtool/v1/passphrase-identity"
KEY_OBJECT_FORMAT = "drtool-data-key"


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class WriterKeys:
    """W and the keys derived from it (HKDF-SHA256, salt = the 16 repository id bytes)."""

    writer: bytes = field(repr=False)
    name: bytes = field(repr=False)  # K_name: HMAC-SHA256 key of object ids
    chunk: bytes = field(repr=False)  # K_chunk: keyed BLAKE2b of segment boundaries
    meta: bytes = field(repr=False)  # K_meta: AES-256-GCM key of manifests and config secrets

    @classmethod
    def derive(cls, writer: bytes, repo_id: str) -> "WriterKeys":
        salt = bytes.fromhex(repo_id)
        return cls(
            writer,
            crypto.hkdf(writer, salt, INFO_NAME),
            crypto.hkdf(writer, salt, INFO_CHUNK),
            crypto.hkdf(writer, salt, INFO_META),
        )

    def object_id(self, plaintext: bytes) -> str:
        return hmac.new(self.name, plaintext, hashlib.sha256).hexdigest()

    def boundary_hasher(self):
        """``key text -> int``: keyed BLAKE2b-64 under K_chunk; the key text as str or as its
        UTF-8 bytes (any bytes-like object). The keyed state is set up once and copied per
        call (about 30% faster than keying every call: this runs per document)."""
        base = hashlib.blake2b(key=self.chunk, digest_size=8)
        from_bytes = int.from_bytes

        def boundary_hash(key_text: str | bytes) -> int:
            h = base.copy()
            h.update(key_text.encode("utf-8") if isinstance(key_text, str) else key_text)
            return from_bytes(h.digest(), "big")

        return boundary_hash


def writer_check(writer: bytes, repo_id: str) -> str:
    """HMAC-SHA256(W, b"drtool writer key check" || repo id as ASCII hex), hex."""
    return hmac.new(writer, WRITER_CHECK_LABEL + repo_id.encode("ascii"), hashlib.sha256).hexdigest()


# --- writer key files ------------------------------------------------------------------------------
def load_writer_key(path: Path) -> bytes:
    """W from a writer key file (same 0600 rule and errors as identity files)."""
    text = crypto.read_private_file(path, "writer key file")
    return crypto.parse_key_line(text, WRITER_KEY_PREFIX, path, "writer key file")


def create_writer_key_file(path: Path, writer: bytes) -> None:
    """Write W to a new file (0600, O_EXCL). UsageError if it exists."""
    text = (
        f"# created: {now_iso()}\n"
        "# drtool writer key: writes snapshots and reads metadata, cannot read data\n"
        f"{WRITER_KEY_PREFIX}{crypto.b64encode(writer)}\n"
    )
    crypto.create_private_file(path, text, "writer key file")


# --- small sealed values (AES-256-GCM, JSON {"nonce", "body"}) ---------------------------------------
def seal_value(key: bytes, plaintext: bytes, aad: bytes) -> dict:
    nonce = os.urandom(crypto.NONCE_SIZE)
    body = crypto.aead_encrypt(key, nonce, plaintext, aad)
    return {"nonce": crypto.b64encode(nonce), "body": crypto.b64encode(body)}


def open_value(key: bytes, sealed: dict, aad: bytes) -> bytes:
    """Raises ValueError when malformed, IntegrityError when authentication fails."""
    if not isinstance(sealed, dict):
        raise ValueError("expected an object")
    nonce = crypto.b64decode(sealed.get("nonce"))
    if len(nonce) != crypto.NONCE_SIZE:
        raise ValueError("bad nonce")
    return crypto.aead_decrypt(key, nonce, crypto.b64decode(sealed.get("body")), aad)


def seal_recipients(keys: WriterKeys, repo_id: str, recipients: list[str], passphrase_recipient: str | None) -> dict:
    plain = json.dumps({"recipients": recipients, "passphrase_recipient": passphrase_recipient})
    return seal_value(keys.meta, plain.encode(), AAD_RECIPIENTS + repo_id.encode("ascii"))


def open_recipients(keys: WriterKeys, repo_id: str, sealed: dict) -> tuple[list[str], str | None]:
    """(recipients, passphrase recipient). ValueError/IntegrityError as ``open_value``."""
    data = json.loads(open_value(keys.meta, sealed, AAD_RECIPIENTS + repo_id.encode("ascii")))
    recipients, prec = data["recipients"], data["passphrase_recipient"]
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ValueError("bad recipients")
    if prec is not None and not isinstance(prec, str):
        raise ValueError("bad passphrase recipient")
    return recipients, prec


def seal_passphrase_identity(kek: bytes, repo_id: str, identity: crypto.Identity) -> dict:
    return seal_value(kek, identity.private_bytes(), AAD_PASSPHRASE + repo_id.encode("ascii"))


def open_passphrase_identity(kek: bytes, repo_id: str, sealed: dict) -> crypto.Identity | None:
    """The passphrase identity, or None when the passphrase is wrong. ValueError if malformed."""
    try:
        private = open_value(kek, sealed, AAD_PASSPHRASE + repo_id.encode("ascii"))
    except IntegrityError:
        return None
    if len(private) != crypto.KEY_SIZE:
        raise ValueError("bad passphrase identity")
    return crypto.Identity(private, "passphrase")


# --- data key objects --------------------------------------------------------------------------------
def encode_key_object(repo_id: str, keyid: str, data_key: bytes, recipients: list[str]) -> bytes:
    """``keys/<keyid>``: JSON wrapping the data key to every recipient."""
    obj = {
        "format": KEY_OBJECT_FORMAT,
        "version": 1,
        "repository": repo_id,
        "keyid": keyid,
        "created": now_iso(),
        "stanzas": [crypto.wrap_key(data_key, r) for r in recipients],
    }
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def decode_key_object(blob: bytes, repo_id: str, keyid: str) -> list:
    """The stanzas of a key object. ValueError when malformed or not this repository's/key's."""
    try:
        obj = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != KEY_OBJECT_FORMAT or obj.get("version") != 1:
        raise ValueError("not a version 1 data key object")
    if obj.get("repository") != repo_id or obj.get("keyid") != keyid:
        raise ValueError("belongs to another repository or key")
    if not isinstance(obj.get("stanzas"), list):
        raise ValueError("no stanzas")
    return obj["stanzas"]


def unwrap_with(stanzas: list, identities: list[crypto.Identity]) -> bytes | None:
    """The key wrapped in ``stanzas`` to any of ``identities``, or None."""
    for ident in identities:
        key = crypto.unwrap_key(stanzas, ident)
        if key is not None:
            return key
    return None


def require_writer_check(writer: bytes, repo_id: str, expected: str, path: Path | None, where: str = "") -> None:
    """EncryptionKeyError (W from file ``path``) or RepositoryError (W from the config) when
    ``writer`` is not this repository's writer key."""
    if hmac.compare_digest(writer_check(writer, repo_id), expected):
        return
    if path is not None:
        raise EncryptionKeyError(f"writer key file {path} does not belong to repository {repo_id}")
    raise RepositoryError(f"{where}: repository config is damaged (writer key check failed)")


# --- opening -----------------------------------------------------------------------------------------
async def unlock(cfg: dict, where: str, identity_file: Path | None, passphrase: str | None,
                 writer_key_file: Path | None) -> tuple[bytes, list[crypto.Identity], list[str]]:
    """Find W for the parsed config ``cfg``: ``(W, identities able to read, failures)``.

    Identity and passphrase failures are collected (one working source is enough); problems of
    the files themselves (missing, unsafe mode, malformed, another repository's writer key)
    raise at once. EncryptionKeyError when no source yields W, listing what was tried and why."""
    repo_id, check = cfg["id"], cfg["writer_key"]["check"]
    writer: bytes | None = None
    identities: list[crypto.Identity] = []
    tried: list[str] = []
    if writer_key_file is not None:
        writer = load_writer_key(writer_key_file)
        require_writer_check(writer, repo_id, check, writer_key_file)
    candidates: list[tuple[crypto.Identity, str]] = []
    if identity_file is not None:
        candidates.append((crypto.load_identity(identity_file), f"identity {identity_file}"))
    if passphrase is not None:
        pid = await _passphrase_identity(cfg, passphrase, where, tried)
        if pid is not None:
            candidates.append((pid, "passphrase"))
    for ident, label in candidates:
        try:
            w = crypto.unwrap_key(cfg["writer_key"]["stanzas"], ident)
        except IntegrityError:
            raise RepositoryError(f"{where}: repository config is damaged (bad stanza)") from None
        if w is None:
            tried.append(f"{label}: not a recipient of this repository")
            continue
        require_writer_check(w, repo_id, check, None, where)
        writer = w
        identities.append(ident)
    if writer is None:
        if identity_file is None and passphrase is None:
            raise EncryptionKeyError(
                f"no identity, passphrase or writer key given to open repository {repo_id}"
            )
        raise EncryptionKeyError(
            f"no identity, passphrase or writer key in the policy can open repository "
            f"{repo_id} (tried {'; '.join(tried)})"
        )
    return writer, identities, tried


async def _passphrase_identity(cfg: dict, passphrase: str, where: str,
                               tried: list[str]) -> crypto.Identity | None:
    if cfg["kdf"] is None:
        tried.append("passphrase: this repository has no passphrase")
        return None
    try:
        kek = await asyncio.to_thread(crypto.passphrase_kek, passphrase, cfg["kdf"])
        pid = open_passphrase_identity(kek, cfg["id"], cfg["passphrase_identity"])
    except (ValueError, KeyError, TypeError):
        raise RepositoryError(f"{where}: repository config is damaged (kdf)") from None
    if pid is None:
        tried.append("passphrase: wrong passphrase")
    return pid
