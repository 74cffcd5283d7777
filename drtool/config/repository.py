"""The ``[repository]`` and ``[encryption]`` sections of a policy: where snapshots are stored
and the keys that encrypt them.

Helper of ``drtool.config.policy`` (which calls ``parse_repository`` and ``parse_encryption``); every
failure is a one-line PolicyError. Secrets never appear: a password in an sftp:// URL is
refused, and a passphrase is named by its environment variable (``passphrase_env``), read only
by ``EncryptionPolicy.key_sources``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from drtool.errors import PolicyError
from drtool.config.fields import Section, parse_host, read_env, resolve_path, show
from drtool.config.s3 import S3_KEYS, parse_s3, refuse_s3_keys
from drtool.repo.repository import KeySources

DEFAULT_SFTP_PORT = 22
REPOSITORY_KEYS = ("url", "identity_file", "known_hosts") + S3_KEYS
ENCRYPTION_KEYS = ("recipients", "identity_file", "passphrase_env", "writer_key_file")
_RECIPIENT_RE = re.compile(r"drtool1[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class RepositoryPolicy:
    """Where the repository lives.

    ``file``: ``path`` is absolute (``file:///abs``, ``file://~/home-relative``, or
    ``file://relative`` resolved against the policy's directory); user/host/port are None.
    ``sftp``: ``sftp://[user@]host[:port]/abs/path``; ``sftp://host/~/dir`` gives the relative
    path ``dir`` (relative to the login directory). ``host`` has no brackets (IPv6 "::1");
    ``user`` is None when the URL names none; ``port`` defaults to 22. URLs are taken literally
    (no percent-decoding). identity_file and known_hosts are only allowed with sftp.
    ``s3``: ``s3://bucket/prefix``: ``path`` is the prefix ("" for the bucket's root), and the
    s3-only keys (``drtool.config.s3``) fill bucket .. object_lock (seconds)."""

    url: str
    scheme: Literal["file", "sftp", "s3"]
    path: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    addressing: str | None = None
    storage_class: str | None = None
    object_lock: float | None = None


@dataclass(frozen=True)
class EncryptionPolicy:
    """Key material: recipients (public keys from ``drtool keygen``, "drtool1" + 43
    characters), an identity file (private key: can read data back), the name of an
    environment variable holding a passphrase, a writer key file (lets a snapshot host write
    without a private identity). At least one of recipients/identity_file/passphrase_env."""

    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None
    passphrase_env: str | None = None
    writer_key_file: Path | None = None
    origin: str = field(default="encryption", repr=False, compare=False)

    def key_sources(self) -> KeySources:
        """KeySources with the passphrase read from the environment now.

        Raises PolicyError ``<file>: encryption.passphrase_env: environment variable NAME is
        not set`` (or ``is empty``) when a variable is named but has no value."""
        passphrase = read_env(self.origin, "passphrase_env", self.passphrase_env, allow_empty=False)
        return KeySources(
            recipients=self.recipients, identity_file=self.identity_file,
            passphrase=passphrase, writer_key_file=self.writer_key_file,
        )


def parse_repository(sec: Section, file: str, base: Path) -> RepositoryPolicy:
    """The RepositoryPolicy of a present [repository] section (see RepositoryPolicy for the
    URL forms). Raises PolicyError, also for a password in the URL."""
    url = sec.string("url", required=True)
    sftp_only = {k: sec.path(k, base) for k in ("identity_file", "known_hosts")}
    if url.startswith(("file://", "s3://")):
        scheme = url.partition(":")[0]
        for key, value in sftp_only.items():
            if value is not None:
                raise sec.error(key, f"no {key} with a {scheme}:// repository (only sftp:// uses "
                                "one)", sec.data[key])
    if url.startswith("s3://"):
        return RepositoryPolicy(url=url, **parse_s3(sec, file, url))
    if url.startswith("file://"):
        refuse_s3_keys(sec, "file")
        rest = url[len("file://"):]
        if not rest:
            raise sec.error("url", 'a file:// URL with a path like "file:///srv/drtool"', url)
        return RepositoryPolicy(url=url, scheme="file", path=str(resolve_path(rest, base)))
    if not url.startswith("sftp://"):
        raise sec.error("url", "a file://, sftp:// or s3:// URL", url)
    refuse_s3_keys(sec, "sftp")
    what = 'an sftp:// URL like "sftp://user@host:22/srv/drtool"'
    split = urlsplit(url)
    if split.password is not None:
        raise PolicyError(f"{file}: repository.url: secrets never go in a policy file: "
                          "authenticate with identity_file instead of a password in the URL")
    try:
        port = DEFAULT_SFTP_PORT if split.port is None else split.port
        host = split.hostname or ""
        parse_host(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", port)
    except ValueError:
        raise sec.error("url", what, url) from None
    if split.query or split.fragment or split.path in ("", "/", "/~", "/~/"):
        raise sec.error("url", what, url)
    path = split.path[3:] if split.path.startswith("/~/") else split.path
    return RepositoryPolicy(
        url=url, scheme="sftp", path=path, user=split.username or None, host=host, port=port,
        identity_file=sftp_only["identity_file"], known_hosts=sftp_only["known_hosts"],
    )


def parse_encryption(sec: Section, file: str, base: Path) -> EncryptionPolicy:
    """The EncryptionPolicy of a present [encryption] section: recipients must be drtool
    public keys, and at least one of recipients/identity_file/passphrase_env is needed.
    Raises PolicyError."""
    none = PolicyError(f"{file}: encryption: expected at least one of recipients, identity_file "
                       "or passphrase_env, got none")
    recipients = sec.strings("recipients")
    for i, key in enumerate(recipients):
        if _RECIPIENT_RE.fullmatch(key) is None:
            shown = show(key) if len(key) <= 16 else show(key[:12]) + " (cut)"
            raise sec.error(f"recipients[{i}]", 'a public key from "drtool keygen" (drtool1 and '
                            "43 more characters)", key, shown=shown)
    policy = EncryptionPolicy(
        recipients=recipients,
        identity_file=sec.path("identity_file", base),
        passphrase_env=sec.env_name("passphrase_env", "DRTOOL_PASSPHRASE"),
        writer_key_file=sec.path("writer_key_file", base),
        origin=f"{file}: encryption",
    )
    if not (policy.recipients or policy.identity_file or policy.passphrase_env):
        raise none
    return policy
