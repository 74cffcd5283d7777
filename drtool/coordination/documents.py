"""How the state database's documents are written and read: canonical JSON text, key literals,
and the server's TIME values (every time in the state database comes from a server's clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def doc_text(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def key_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def epoch(value: Any) -> float | None:
    """A TIME read from a state document (``{"$reql_type$": "TIME", "epoch_time": ...}``)
    as epoch seconds; None for anything else."""
    if isinstance(value, dict) and value.get("$reql_type$") == "TIME":
        return float(value["epoch_time"])
    return None


def format_time(seconds: float | None) -> str:
    """Epoch seconds as ``2026-12-01 09:00:00 UTC`` for messages ("never" for None)."""
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
