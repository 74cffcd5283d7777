"""Identity management for the CLI: creating an identity file."""

from __future__ import annotations

import os
from pathlib import Path

from drtool import crypto


def keygen(path: Path) -> str:
    """Write a new identity to ``path`` (mode 0600, never overwriting; missing parent
    directories are created with mode 0700) and return its public recipient string."""
    path = path.expanduser()
    if not path.parent.exists():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    return crypto.write_identity_file(path)
