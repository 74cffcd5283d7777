"""The facts recorded on a real RethinkDB 2.4.4 server: exact input -> output pairs of
``to_json_string()``, ``r.uuid``, primary-key order and fold digests.

``tests/data/reql-golden.json`` is the project's own copy of these observed values (the
tests need nothing outside the repository). When a real-server run records new facts, the file
is extended here and a contract test runs them against both the fake and the real server.
"""

from __future__ import annotations

import json
from pathlib import Path

GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "reql-golden.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
