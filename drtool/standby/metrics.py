"""Prometheus metrics of the runner: the ONLY module that imports prometheus-client.

Every instance has its own registry (no global state, so tests and a long-running process
with restarts do not collide); ``serve(port)`` exposes it over HTTP on ``/metrics`` and
``close()`` stops that server. See docs/grafana-dashboard.json for a dashboard.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from drtool.errors import UsageError
from drtool.standby.events import Metrics

STATES = ("copying", "streaming", "repairing", "error", "stopped")
RUNNER_ROLES = ("active", "spare", "idle")


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self._lag = Gauge("drtool_replication_lag_seconds", "Heartbeat lag of the standby "
                          "(primary r.now() minus the newest heartbeat on the standby)", registry=reg)
        self._heartbeat_seen = Gauge("drtool_replication_heartbeat_visible",
                                     "1 when a heartbeat is visible on the standby", registry=reg)
        self._applied = Counter("drtool_changes_applied", "Feed changes applied to the target",
                                ["table"], registry=reg)
        self._bytes = Counter("drtool_replication_bytes", "Document bytes written to the target",
                              ["table", "kind"], registry=reg)
        self._latency = Histogram("drtool_apply_batch_seconds", "Time to write one apply batch",
                                  buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                  registry=reg)
        self._repairs = Counter("drtool_gap_repairs", "Gap repairs started", ["table", "reason"],
                                registry=reg)
        self._repaired = Counter("drtool_gap_repair_documents", "Documents a gap repair read "
                                 "from the source or wrote on the target", ["table", "kind"],
                                 registry=reg)
        self._copied = Counter("drtool_initial_copy_documents", "Documents copied by initial "
                               "copies", ["table"], registry=reg)
        self._errors = Counter("drtool_errors", "Errors by kind", ["kind"], registry=reg)
        self._state = Gauge("drtool_table_state", "1 for the state each table is in",
                            ["table", "state"], registry=reg)
        self._snap_time = Gauge("drtool_last_snapshot_timestamp_seconds",
                                "When the last scheduled snapshot finished", registry=reg)
        self._snap_ok = Gauge("drtool_last_snapshot_success",
                              "1 if the last scheduled snapshot succeeded, 0 if it failed",
                              registry=reg)
        self._runner = Gauge("drtool_runner_role", "1 for the role this runner process has "
                             "now (active, spare, idle), by its runner id", ["runner", "role"],
                             registry=reg)
        self._backlog = Gauge("drtool_runner_backlog_seconds", "How long the oldest change "
                              "this runner has read waits to be applied (its share of the lag, "
                              "with share_tables)", ["runner"], registry=reg)
        self._archive_lag = Gauge("drtool_archive_lag_seconds", "Primary time now minus the "
                                  "end of the newest slice in the repository, oldest table "
                                  "first: the repository's RPO", registry=reg)
        self._spool = Gauge("drtool_archive_spool_bytes", "Sealed slices waiting in the spool",
                            registry=reg)
        self._sealed = Counter("drtool_archive_slices_sealed", "Slices sealed into the spool",
                               ["table"], registry=reg)
        self._changes = Counter("drtool_archive_changes", "Changes in sealed slices", ["table"],
                                registry=reg)
        self._uploaded = Counter("drtool_archive_slices_uploaded", "Slices uploaded",
                                 registry=reg)
        self._uploaded_bytes = Counter("drtool_archive_bytes_uploaded", "Slice bytes uploaded",
                                       registry=reg)
        self._breaks = Counter("drtool_archive_breaks", "Breaks of a table's change log",
                               ["table", "cause"], registry=reg)
        self._window = Gauge("drtool_archive_restorable_from_timestamp_seconds", "Start of the "
                             "current timeline's restorable window, per table", ["table"],
                             registry=reg)
        self._server: Any = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` on ``port``. Raises UsageError when the port is taken."""
        try:
            self._server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as err:
            raise UsageError(f"--metrics-port {port}: cannot listen ({err.strerror or err}); "
                             "choose a free port") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def lag(self, seconds: float | None) -> None:
        self._heartbeat_seen.set(0 if seconds is None else 1)
        if seconds is not None:
            self._lag.set(seconds)

    def applied(self, table: str, changes: int, nbytes: int) -> None:
        self._applied.labels(table).inc(changes)
        self._bytes.labels(table, "stream").inc(nbytes)

    def batch_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def repair(self, table: str, reason: str) -> None:
        self._repairs.labels(table, reason).inc()

    def repaired(self, table: str, read: int, written: int) -> None:
        self._repaired.labels(table, "read").inc(read)
        self._repaired.labels(table, "written").inc(written)

    def copied(self, table: str, docs: int, nbytes: int) -> None:
        self._copied.labels(table).inc(docs)
        self._bytes.labels(table, "copy").inc(nbytes)

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def table_state(self, table: str, state: str) -> None:
        for name in STATES:
            self._state.labels(table, name).set(1 if name == state else 0)

    def snapshot(self, finished: float, ok: bool) -> None:
        self._snap_time.set(finished)
        self._snap_ok.set(1 if ok else 0)

    def runner(self, runner: str, role: str) -> None:
        for name in RUNNER_ROLES:
            self._runner.labels(runner, name).set(1 if name == role else 0)

    def backlog(self, runner: str, seconds: float) -> None:
        self._backlog.labels(runner).set(seconds)

    def log_break(self, table: str, cause: str) -> None:
        self._breaks.labels(table, cause).inc()

    def slice_sealed(self, table: str, entries: int, nbytes: int) -> None:
        self._sealed.labels(table).inc()
        self._changes.labels(table).inc(entries)

    def slice_uploaded(self, nbytes: int) -> None:
        self._uploaded.inc()
        self._uploaded_bytes.inc(nbytes)

    def archive(self, lag: float | None, spool_bytes: int) -> None:
        if lag is not None:
            self._archive_lag.set(lag)
        self._spool.set(spool_bytes)

    def restorable_from(self, table: str, seconds: float) -> None:
        self._window.labels(table).set(seconds)
