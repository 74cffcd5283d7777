"""The ``config`` object: plaintext JSON describing a repository (docs/FORMAT.md "config").

Readers check ``version`` before anything else, so a future format fails with a clear
"not supported" message instead of a confusing parse error.
"""

from __future__ import annotations

import json
import re

from drtool.errors import RepositoryError

FORMAT_NAME = "drtool-repository"
CONFIG_VERSION = 2  # 1: segment digests were folds over the texts (drtool 0.1)
FIXED_FIELDS = {"cipher": "AES-256-GCM", "compression": "zstd", "object_id": "HMAC-SHA256"}
_REPO_ID = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def build_config(
    repo_id: str,
    created: str,
    kdf: dict | None,
    passphrase_identity: dict | None,
    recipients: dict,
    writer_stanzas: list,
    check: str,
) -> bytes:
    """The config object's bytes (UTF-8 JSON, sorted keys, two-space indent, final newline)."""
    cfg = {
        "format": FORMAT_NAME,
        "version": CONFIG_VERSION,
        "id": repo_id,
        "created": created,
        **FIXED_FIELDS,
        "kdf": kdf,
        "passphrase_identity": passphrase_identity,
        "recipients": recipients,
        "writer_key": {"stanzas": writer_stanzas, "check": check},
    }
    return (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()


def parse_config(blob: bytes, location: str) -> dict:
    """Validate a config object's structure; RepositoryError naming ``location`` otherwise.

    Cryptographic checks (writer key check, sealed fields) are the repository's job."""

    def damaged(why: str) -> RepositoryError:
        return RepositoryError(f"{location}: repository config is damaged ({why})")

    try:
        cfg = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise damaged("not valid JSON") from None
    if not isinstance(cfg, dict):
        raise damaged("not a JSON object")
    version = cfg.get("version")
    if version != CONFIG_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            todo = ("; create a new repository with drtool init (this drtool cannot read "
                    "snapshots written by older versions)") if version < CONFIG_VERSION else \
                "; use a newer drtool"
            raise RepositoryError(
                f"{location}: repository format version {version} is not supported by this "
                f"drtool (supports {CONFIG_VERSION}){todo}"
            )
        raise damaged("no format version")
    if cfg.get("format") != FORMAT_NAME:
        raise damaged(f"format is {cfg.get('format')!r}, expected {FORMAT_NAME!r}")
    for key, value in FIXED_FIELDS.items():
        if cfg.get(key) != value:
            raise RepositoryError(
                f"{location}: repository {key} {cfg.get(key)!r} is not supported (supports {value})"
            )
    if not isinstance(cfg.get("id"), str) or not _REPO_ID.match(cfg["id"]):
        raise damaged("bad repository id")
    writer = cfg.get("writer_key")
    if (
        not isinstance(writer, dict)
        or not isinstance(writer.get("stanzas"), list)
        or not isinstance(writer.get("check"), str)
        or not _HEX64.match(writer["check"])
    ):
        raise damaged("bad writer_key")
    if not isinstance(cfg.get("recipients"), dict):
        raise damaged("bad recipients")
    kdf, pid = cfg.get("kdf"), cfg.get("passphrase_identity")
    if (kdf is None) != (pid is None) or not isinstance(kdf, (dict, type(None))):
        raise damaged("bad kdf / passphrase_identity")
    return cfg
