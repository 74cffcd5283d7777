"""The facts recorded on a real RethinkDB 2.4.4: ``shared/reql-golden.json`` from the directory
named by ``DRTOOL_SHARED``, else ``shared/`` beside the checkout (where CI places it), else
inside it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _golden_path() -> Path:
    candidates = [Path(os.environ["DRTOOL_SHARED"])] if os.environ.get("DRTOOL_SHARED") else []
    checkout = Path(__file__).resolve().parents[1]
    candidates += [checkout.parent / "shared", checkout / "shared"]
    for directory in candidates:
        if (directory / "reql-golden.json").exists():
            return directory / "reql-golden.json"
    raise FileNotFoundError(
        "reql-golden.json not found in " + ", ".join(map(str, candidates))
        + ": put the project's shared/ directory beside the checkout or set DRTOOL_SHARED"
    )


GOLDEN = json.loads(_golden_path().read_text(encoding="utf-8"))
