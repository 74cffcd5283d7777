"""The facts recorded on a real RethinkDB 2.4.4: ``shared/reql-golden.json`` beside the checkout
(CI places ``shared/`` next to the clone), or the directory named by ``DRTOOL_SHARED``."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _golden_path() -> Path:
    candidates = [Path(os.environ["DRTOOL_SHARED"])] if os.environ.get("DRTOOL_SHARED") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for directory in candidates:
        if (directory / "reql-golden.json").exists():
            return directory / "reql-golden.json"
    raise FileNotFoundError(
        "reql-golden.json not found in " + ", ".join(map(str, candidates))
        + ": put the project's shared/ directory beside the checkout or set DRTOOL_SHARED"
    )


GOLDEN = json.loads(_golden_path().read_text(encoding="utf-8"))
