"""Cryptographic primitives and key files. The only module that imports ``cryptography``.

Formats are specified in docs/FORMAT.md ("Keys and identities", "Stanzas"). Summary:

* An *identity* is an X25519 private key. Its file is text: ``#`` comment lines and one line
  ``DRTOOL-IDENTITY-1<base64url, no padding, of the 32 private key bytes>``. It must be mode
  0600 (no group/other bits) or it is refused.
* A *recipient* is the public key as ``drtool1<base64url, no padding, of 32 bytes>``.
* A *stanza* wraps a 32-byte file key to one recipient, age-style: an ephemeral X25519 key,
  HKDF-SHA256 of the shared secret, ChaCha20-Poly1305 with a zero nonce.
* Bulk objects use AES-256-GCM with a random 96-bit nonce (``aead_encrypt``/``aead_decrypt``).

Every failure is a ``drtool.errors`` class; no ``cryptography`` exception escapes. Messages
never contain key material or passphrases.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from drtool.errors import EncryptionKeyError, IntegrityError, UsageError

IDENTITY_PREFIX = "DRTOOL-IDENTITY-1"
RECIPIENT_PREFIX = "drtool1"
KEY_SIZE = 32
NONCE_SIZE = 12
X25519_INFO = b"drtool/v1/x25519"
STANZA_X25519 = "X25519"
SCRYPT_DEFAULTS = {"n": 2**15, "r": 8, "p": 1}

_B64_32 = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url without padding
_RAW = serialization.Encoding.Raw


# --- encodings -----------------------------------------------------------------------------
def b64encode(data: bytes) -> str:
    """base64url without padding (the encoding of every binary field drtool writes)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict inverse of ``b64encode``; raises ValueError on anything it would not produce."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if b64encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _decode_key32(text: str) -> bytes:
    if not _B64_32.match(text):
        raise ValueError("bad key encoding")
    return b64decode(text)


# --- identities and recipients ----------------------------------------------------------------
class Identity:
    """An X25519 private key, with the file it came from (for messages) if any."""

    def __init__(self, private: bytes, source: str = "") -> None:
        self._key = X25519PrivateKey.from_private_bytes(private)
        self.source = source
        pub = self._key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
        self.public = pub
        self.recipient = RECIPIENT_PREFIX + b64encode(pub)

    def __repr__(self) -> str:
        return f"Identity({self.recipient}, source={self.source!r})"

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )


def new_identity() -> Identity:
    """A fresh random identity (held in memory only)."""
    return Identity(os.urandom(KEY_SIZE))


def recipient_of(identity: Identity) -> str:
    """The recipient string of an identity."""
    return identity.recipient


def parse_recipient(text: str) -> bytes:
    """Return the 32-byte public key of ``drtool1...``; UsageError naming the text otherwise."""
    body = text[len(RECIPIENT_PREFIX):] if isinstance(text, str) else ""
    try:
        if not text.startswith(RECIPIENT_PREFIX):
            raise ValueError
        return _decode_key32(body)
    except (ValueError, AttributeError):
        raise UsageError(
            f"invalid recipient {text!r}: expected drtool1 followed by 43 base64url characters"
        ) from None


def generate_identity() -> tuple[str, str]:
    """Return ``(identity file text, recipient)`` for a new random identity."""
    ident = new_identity()
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    text = (
        f"# created: {now}\n"
        f"# public key: {ident.recipient}\n"
        f"{IDENTITY_PREFIX}{b64encode(ident.private_bytes())}\n"
    )
    return text, ident.recipient


def write_identity_file(path: Path | str) -> str:
    """Create a new identity file at ``path`` (mode 0600, never overwriting); return its
    recipient. Raises UsageError if the file exists."""
    text, recipient = generate_identity()
    create_private_file(path, text, "identity file")
    return recipient


def load_identity(path: Path | str) -> Identity:
    """Read an identity file. Raises EncryptionKeyError (naming the file) when it is missing,
    readable by group/others, or malformed."""
    text = read_private_file(path, "identity file")
    return Identity(parse_key_line(text, IDENTITY_PREFIX, path, "identity file"), str(path))


def parse_key_line(text: str, prefix: str, path: Path | str, what: str) -> bytes:
    """The 32 bytes on the one ``<prefix><base64url>`` line of a key file (``#`` lines and blank
    lines ignored). EncryptionKeyError naming ``what`` and ``path`` otherwise."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        if len(lines) != 1 or not lines[0].startswith(prefix):
            raise ValueError
        return _decode_key32(lines[0][len(prefix):])
    except ValueError:
        raise EncryptionKeyError(
            f"{what} {path} is malformed: expected one line {prefix}<43 base64url characters>"
        ) from None


# --- private files ------------------------------------------------------------------------------
def create_private_file(path: Path | str, text: str, what: str) -> None:
    """Create ``path`` with mode 0600 (O_CREAT|O_EXCL); UsageError if it already exists.
    Missing parent directories are created with mode 0700."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{what} {path} already exists; refusing to overwrite") from None
    except OSError as e:
        raise UsageError(f"cannot create {what} {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # in case the umask removed bits we want (it cannot add any)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {what} {path}: {e.strerror}") from None


def read_private_file(path: Path | str, what: str) -> str:
    """Read a secret file, refusing it if group or others have any permission on it."""
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise EncryptionKeyError(
                    f"{what} {path} is readable by others (mode {mode:04o}): run chmod 600 {path}"
                )
            return f.read()
    except FileNotFoundError:
        raise EncryptionKeyError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise EncryptionKeyError(f"{what} {path} is malformed: not UTF-8 text") from None
    except OSError as e:
        raise EncryptionKeyError(f"cannot read {what} {path}: {e.strerror}") from None


# --- key derivation -----------------------------------------------------------------------------
def hkdf(secret: bytes, salt: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def new_scrypt_params() -> dict:
    """Fresh scrypt parameters with a random 16-byte salt, as stored in the config."""
    return {"name": "scrypt", **SCRYPT_DEFAULTS, "salt": b64encode(os.urandom(16))}


def passphrase_kek(passphrase: str, params: dict) -> bytes:
    """The 32-byte key-encryption key from a passphrase (scrypt; computed once per process for
    given params). Raises ValueError on unusable params."""
    if params.get("name") != "scrypt":
        raise ValueError("unknown kdf")
    n, r, p = params["n"], params["r"], params["p"]
    if not all(isinstance(v, int) and v > 0 for v in (n, r, p)) or n > 2**22 or r * p > 64:
        raise ValueError("unusable scrypt parameters")
    return _scrypt(passphrase, b64decode(params["salt"]), n, r, p)


@functools.lru_cache(maxsize=8)
def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


# --- AEAD -----------------------------------------------------------------------------------------
def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: ciphertext followed by the 16-byte tag."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM open. Raises IntegrityError("authentication failed"); callers re-raise
    with the name of what failed."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise IntegrityError("authentication failed") from None


# --- stanzas ----------------------------------------------------------------------------------
def wrap_key(file_key: bytes, recipient: str) -> dict:
    """An X25519 stanza wrapping ``file_key`` to ``recipient`` (UsageError if malformed)."""
    pk = parse_recipient(recipient)
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(pk))
    except ValueError:
        raise UsageError(f"invalid recipient {recipient!r}: not a usable X25519 public key") from None
    wrap = hkdf(shared, epk + pk, X25519_INFO)
    body = ChaCha20Poly1305(wrap).encrypt(bytes(NONCE_SIZE), file_key, None)
    return {"type": STANZA_X25519, "epk": b64encode(epk), "body": b64encode(body)}


def unwrap_key(stanzas: list, identity: Identity) -> bytes | None:
    """The file key from the first stanza ``identity`` opens, or None if none is for it.
    Raises IntegrityError when the stanza list itself is malformed."""
    if not isinstance(stanzas, list):
        raise IntegrityError("stanzas: expected a list")
    for st in stanzas:
        if not isinstance(st, dict) or st.get("type") != STANZA_X25519:
            continue  # unknown stanza types are skipped (forward compatibility)
        try:
            epk = _decode_key32(st["epk"])
            body = b64decode(st["body"])
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("stanza: malformed X25519 stanza") from None
        try:
            shared = identity._key.exchange(X25519PublicKey.from_public_bytes(epk))
        except ValueError:
            raise IntegrityError("stanza: low-order ephemeral key") from None
        wrap = hkdf(shared, epk + identity.public, X25519_INFO)
        try:
            key = ChaCha20Poly1305(wrap).decrypt(bytes(NONCE_SIZE), body, None)
        except InvalidTag:
            continue
        if len(key) == KEY_SIZE:
            return key
    return None
