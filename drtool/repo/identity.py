"""Identity management for the CLI: creating an identity file."""

from __future__ import annotations

from pathlib import Path

from drtool.repo import crypto
def keygen(path: Path) -> str:
    """Write a new identity to ``path`` (``~`` expanded; mode 0600, never overwriting; missing
    parent directories are created with mode 0700) and return its public recipient string."""
    return crypto.write_identity_file(path.expanduser())
