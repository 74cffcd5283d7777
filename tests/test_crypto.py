"""drtool.repo.crypto: identity files, recipients, stanzas, AEAD, passphrase KDF."""

from __future__ import annotations

import os
import stat

import pytest

from drtool.repo import crypto
from drtool.errors import EncryptionKeyError, IntegrityError, UsageError


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- identity files --------------------------------------------------------------------------------
def test_keygen_writes_0600_file_with_comments_and_one_key_line(tmp_path):
    path = tmp_path / "id.txt"
    recipient = crypto.write_identity_file(path)
    assert mode_of(path) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: 20")
    assert lines[1] == f"# public key: {recipient}"
    assert len(lines) == 3 and lines[2].startswith("DRTOOL-IDENTITY-1")
    assert len(lines[2]) == len("DRTOOL-IDENTITY-1") + 43
    assert recipient.startswith("drtool1") and len(recipient) == 7 + 43
    identity = crypto.load_identity(path)
    assert crypto.recipient_of(identity) == recipient


def test_keygen_creates_missing_directories_private(tmp_path):
    path = tmp_path / "a" / "b" / "id.txt"
    crypto.write_identity_file(path)
    assert mode_of(path) == 0o600 and mode_of(path.parent) == 0o700


def test_keygen_refuses_to_overwrite(tmp_path):
    path = tmp_path / "id.txt"
    crypto.write_identity_file(path)
    before = path.read_text()
    with pytest.raises(UsageError, match=f"{path} already exists; refusing to overwrite"):
        crypto.write_identity_file(path)
    assert path.read_text() == before


def test_keygen_mode_is_0600_despite_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        crypto.write_identity_file(tmp_path / "id")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "id") == 0o600


def test_two_identities_differ():
    (t1, r1), (t2, r2) = crypto.generate_identity(), crypto.generate_identity()
    assert r1 != r2 and t1 != t2


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_identity_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "id.txt"
    crypto.write_identity_file(path)
    os.chmod(path, mode)
    with pytest.raises(EncryptionKeyError) as err:
        crypto.load_identity(path)
    assert str(err.value) == (
        f"identity file {path} is readable by others (mode {mode:04o}): run chmod 600 {path}"
    )


def test_missing_identity_names_the_file(tmp_path):
    with pytest.raises(EncryptionKeyError, match=f"identity file {tmp_path / 'nope'} does not exist"):
        crypto.load_identity(tmp_path / "nope")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "DRTOOL-IDENTITY-1" + "A" * 42 + "\n",  # too short
        "DRTOOL-IDENTITY-1" + "A" * 43 + "=\n",  # padding
        "DRTOOL-IDENTITY-1" + "A" * 42 + "B\n",  # non-canonical last character
        "DRTOOL-IDENTITY-2" + "A" * 43 + "\n",
        "DRTOOL-IDENTITY-1" + "A" * 43 + "\nDRTOOL-IDENTITY-1" + "A" * 43 + "\n",
    ],
)
def test_malformed_identity_is_refused(tmp_path, text):
    path = tmp_path / "id"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(EncryptionKeyError, match=f"identity file {path} is malformed"):
        crypto.load_identity(path)


def test_identity_message_never_contains_the_key(tmp_path):
    path = tmp_path / "id"
    crypto.write_identity_file(path)
    secret = path.read_text().splitlines()[2]
    os.chmod(path, 0o644)
    with pytest.raises(EncryptionKeyError) as err:
        crypto.load_identity(path)
    assert secret[17:] not in str(err.value)


# --- recipients --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    ["", "drtool1", "age1" + "A" * 43, "drtool1" + "A" * 42, "drtool1" + "A" * 44,
     "drtool1" + "A" * 42 + "B", "drtool1" + "A" * 42 + "+", "Drtool1" + "A" * 43],
)
def test_bad_recipient_is_a_usage_error_naming_it(bad):
    with pytest.raises(UsageError) as err:
        crypto.parse_recipient(bad)
    assert repr(bad) in str(err.value)


def test_recipient_parses_to_the_public_key():
    _, recipient = crypto.generate_identity()
    assert len(crypto.parse_recipient(recipient)) == 32


# --- stanzas -------------------------------------------------------------------------------------------
def test_wrap_unwrap_roundtrip_only_for_the_recipient():
    alice, bob = crypto.new_identity(), crypto.new_identity()
    key = os.urandom(32)
    stanzas = [crypto.wrap_key(key, alice.recipient)]
    assert crypto.unwrap_key(stanzas, alice) == key
    assert crypto.unwrap_key(stanzas, bob) is None
    stanzas.append(crypto.wrap_key(key, bob.recipient))
    assert crypto.unwrap_key(stanzas, bob) == key


def test_wrapping_twice_gives_different_stanzas():
    alice = crypto.new_identity()
    key = os.urandom(32)
    assert crypto.wrap_key(key, alice.recipient) != crypto.wrap_key(key, alice.recipient)


def test_tampered_stanza_does_not_open():
    alice = crypto.new_identity()
    stanza = crypto.wrap_key(os.urandom(32), alice.recipient)
    body = bytearray(crypto.b64decode(stanza["body"]))
    body[0] ^= 1
    assert crypto.unwrap_key([{**stanza, "body": crypto.b64encode(bytes(body))}], alice) is None


def test_low_order_keys_are_refused():
    zero = crypto.b64encode(bytes(32))
    with pytest.raises(UsageError, match="not a usable X25519 public key"):
        crypto.wrap_key(os.urandom(32), "drtool1" + zero)
    stanza = {"type": "X25519", "epk": zero, "body": crypto.b64encode(bytes(48))}
    with pytest.raises(IntegrityError, match="low-order"):
        crypto.unwrap_key([stanza], crypto.new_identity())


def test_malformed_stanza_is_an_integrity_error():
    with pytest.raises(IntegrityError):
        crypto.unwrap_key([{"type": "X25519", "epk": "x", "body": ""}], crypto.new_identity())
    with pytest.raises(IntegrityError):
        crypto.unwrap_key("not a list", crypto.new_identity())


# --- AEAD, KDF, encodings ------------------------------------------------------------------------------
def test_aead_roundtrip_and_tamper_detection():
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = crypto.aead_encrypt(key, nonce, b"secret", b"aad")
    assert b"secret" not in sealed
    assert crypto.aead_decrypt(key, nonce, sealed, b"aad") == b"secret"
    with pytest.raises(IntegrityError):
        crypto.aead_decrypt(key, nonce, sealed, b"other aad")
    with pytest.raises(IntegrityError):
        crypto.aead_decrypt(key, nonce, sealed[:-1], b"aad")
    flipped = bytes([sealed[0] ^ 0x80]) + sealed[1:]
    with pytest.raises(IntegrityError):
        crypto.aead_decrypt(key, nonce, flipped, b"aad")


def test_passphrase_kek_depends_on_passphrase_and_salt():
    params = crypto.new_scrypt_params()
    assert params["n"] == 2**15 and params["r"] == 8 and params["p"] == 1
    k1 = crypto.passphrase_kek("correct horse", params)
    assert len(k1) == 32 and crypto.passphrase_kek("correct horse", params) == k1
    assert crypto.passphrase_kek("correct horsf", params) != k1
    assert crypto.passphrase_kek("correct horse", crypto.new_scrypt_params()) != k1
    with pytest.raises(ValueError):
        crypto.passphrase_kek("x", {**params, "n": 2**40})


def test_hkdf_labels_separate_keys():
    secret = os.urandom(32)
    assert crypto.hkdf(secret, b"s", b"a") != crypto.hkdf(secret, b"s", b"b")
    assert crypto.hkdf(secret, b"s", b"a") == crypto.hkdf(secret, b"s", b"a")


@pytest.mark.parametrize("bad", ["A", "AB=", "AB+/", "AC", "a b"])
def test_b64decode_is_strict(bad):
    with pytest.raises(ValueError):
        crypto.b64decode(bad)


def test_b64_roundtrip():
    for n in range(0, 40):
        data = os.urandom(n)
        assert crypto.b64decode(crypto.b64encode(data)) == data
