"""What the runner reports: one log line per event, and metrics.

``Events`` is handed to every part of the runner. ``emit`` writes one line per event (text or
JSON, for log shippers) through the standard ``logging`` module to the logger named
``drtool.standby`` (the CLI attaches a stderr handler); the metric methods update a
``Metrics`` (``NullMetrics`` by default; ``drtool.standby.metrics.PrometheusMetrics`` is the
only module that imports prometheus-client). Never contains document text or secrets.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

LOGGER = "drtool.standby"


class Metrics:
    """The runner's metrics; this base records nothing (tests, no --metrics-port)."""

    def lag(self, seconds: float | None) -> None:
        """The heartbeat lag now (None: no heartbeat visible yet)."""

    def applied(self, table: str, changes: int, nbytes: int) -> None:
        """``changes`` feed changes (``nbytes`` of document text) applied to the target."""

    def batch_latency(self, seconds: float) -> None:
        """How long one apply batch took to write."""

    def repair(self, table: str, reason: str) -> None:
        """A gap repair of ``table`` started (reason: start, overflow, disconnect, ...)."""

    def repaired(self, table: str, read: int, written: int) -> None:
        """A gap repair finished: documents read from the source, written/deleted on target."""

    def copied(self, table: str, docs: int, nbytes: int) -> None:
        """Documents copied by an initial copy."""

    def error(self, kind: str) -> None:
        """An error of ``kind`` (unreachable, cluster, schema, snapshot, ...)."""

    def table_state(self, table: str, state: str) -> None:
        """A table entered ``state`` (copying, streaming, repairing, error, stopped)."""

    def snapshot(self, finished: float, ok: bool) -> None:
        """A scheduled snapshot finished at ``finished`` (epoch seconds), ok or failed."""

    def runner(self, runner: str, role: str) -> None:
        """This process is runner ``runner`` (its lease holder id), now ``role``: "active"
        (holds the runner lease), "spare" (waits for it) or "idle"."""

    def backlog(self, runner: str, seconds: float) -> None:
        """Runner ``runner``'s oldest change read and not yet applied waits ``seconds``
        (sharing runners; see ``TableShare.note``)."""

    def log_break(self, table: str, cause: str) -> None:
        """The change log of ``table`` broke (cause: feed-overflow, connection-lost, ...)."""

    def slice_sealed(self, table: str, entries: int, nbytes: int) -> None:
        """A slice of ``entries`` changes (``nbytes`` sealed) entered the spool."""

    def slice_uploaded(self, nbytes: int) -> None:
        """A sealed slice of ``nbytes`` reached the repository."""

    def restorable_from(self, table: str, seconds: float) -> None:
        """The current timeline of ``table`` is restorable from ``seconds`` (epoch, the
        primary's clock)."""

    def archive(self, lag: float | None, spool_bytes: int) -> None:
        """The archive's lag (the repository's RPO, seconds; None: not known yet) and the
        spool's size now."""


class Events:
    """One line per event plus metrics. ``fmt`` is "text" or "json"."""

    def __init__(self, fmt: str = "text", metrics: Metrics | None = None,
                 logger: logging.Logger | None = None) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be text or json, got {fmt!r}")
        self.fmt = fmt
        self.metrics = metrics or Metrics()
        self.log = logger or logging.getLogger(LOGGER)

    def emit(self, event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """Log ``event`` (a short name like "table-copied") with a human ``message`` and
        machine fields (table, documents, ...)."""
        if self.fmt == "json":
            record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                      "level": logging.getLevelName(level).lower(), "event": event,
                      "message": message, **fields}
            line = json.dumps(record, ensure_ascii=False, default=str)
        else:
            line = f"{event}: {message}"
        self.log.log(level, line)

    def warn(self, event: str, message: str, **fields: Any) -> None:
        self.emit(event, message, level=logging.WARNING, **fields)
