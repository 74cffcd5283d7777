"""The runner's Prometheus metrics: served over HTTP, and every metric the shipped Grafana
dashboard queries is one the runner exports; log lines in JSON."""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from drtool.errors import UsageError
from drtool.standby.events import Events
from drtool.standby.metrics import PrometheusMetrics

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exercised() -> PrometheusMetrics:
    m = PrometheusMetrics()
    m.lag(0.25)
    m.applied("app.t", 10, 500)
    m.batch_latency(0.01)
    m.repair("app.t", "feed-overflow")
    m.repaired("app.t", 3, 4)
    m.copied("app.t", 100, 5000)
    m.error("unreachable")
    m.table_state("app.t", "streaming")
    m.snapshot(1700000000.0, True)
    m.runner("host-1-4242-abcdef", "spare")
    m.backlog("host-1-4242-abcdef", 0.5)
    m.log_break("app.t", "feed-overflow")
    m.slice_sealed("app.t", 12, 3000)
    m.slice_uploaded(3000)
    m.archive(10.5, 4096)
    m.restorable_from("app.t", 1700000000.0)
    return m


def test_metrics_served_and_closed():
    m = exercised()
    port = free_port()
    m.serve(port, addr="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        m.close()
    assert "drtool_replication_lag_seconds 0.25" in text
    assert 'drtool_changes_applied_total{table="app.t"} 10.0' in text
    assert 'drtool_table_state{state="streaming",table="app.t"} 1.0' in text
    assert 'drtool_gap_repairs_total{reason="feed-overflow",table="app.t"} 1.0' in text
    assert "drtool_last_snapshot_success 1.0" in text
    assert 'drtool_runner_role{role="spare",runner="host-1-4242-abcdef"} 1.0' in text
    assert 'drtool_runner_role{role="active",runner="host-1-4242-abcdef"} 0.0' in text
    assert 'drtool_runner_backlog_seconds{runner="host-1-4242-abcdef"} 0.5' in text
    assert "drtool_archive_lag_seconds 10.5" in text
    assert 'drtool_archive_breaks_total{cause="feed-overflow",table="app.t"} 1.0' in text
    assert "drtool_archive_bytes_uploaded_total 3000.0" in text
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_port_in_use_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UsageError, match=r"--metrics-port \d+: cannot listen"):
            PrometheusMetrics().serve(busy.getsockname()[1], addr="127.0.0.1")


def test_dashboard_queries_only_exported_metrics():
    from prometheus_client import generate_latest

    exported = set(re.findall(r"^(drtool_\w+?)(?:\{| )", generate_latest(exercised().registry)
                              .decode(), re.MULTILINE))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for p in dashboard["panels"] for t in p["targets"]
               for name in re.findall(r"drtool_\w+", t["expr"])}
    assert queried and queried <= exported, queried - exported


def test_json_log_lines(caplog):
    events = Events("json", logger=logging.getLogger("drtool_test_events"))
    with caplog.at_level(logging.INFO, logger="drtool_test_events"):
        events.emit("table-copied", "app.t: copied 3 documents", table="app.t", documents=3)
    (line,) = [r.getMessage() for r in caplog.records]
    record = json.loads(line)
    assert (record["event"], record["table"], record["documents"], record["level"]) == (
        "table-copied", "app.t", 3, "info")
    with pytest.raises(ValueError):
        Events("xml")
