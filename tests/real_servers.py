"""A pytest plugin (loaded by ``-p tests.real_servers`` in pyproject's addopts, for every run):
the closing summary says how the tests that need real RethinkDB servers fared, so a CI log
shows whether they ran or were skipped; and with pytest-xdist (``-n``) those tests all run in
one worker, one at a time (``xdist_group``), since they share the two servers and some kill
servers or change users, while the fake-cluster tests spread over the other workers.

A test needs real servers when it is marked ``real_server`` (the contract suite's real-server
module, fault tests that start their own servers), is the ``real`` case of a test
parametrized over ``["fake", "real"]``, or lives under ``integration/``.
"""

from __future__ import annotations

import os

import pytest

MARKER = "real_server"
_ENV = ("DRTOOL_TEST_RETHINKDB", "DRTOOL_IT_PRIMARY", "DRTOOL_IT_STANDBY", "DRTOOL_RETHINKDB_BIN")


GROUP = "real-servers"


def needs_real_servers(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return bool(item.get_closest_marker(MARKER) or item.nodeid.startswith("integration/")
                or (callspec is not None and "real" in callspec.params.values()))


class RealServerSummary:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}  # nodeid -> passed | failed | skipped | not run

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        real = [item for item in items if needs_real_servers(item)]
        for item in real:
            item.add_marker(pytest.mark.xdist_group(GROUP))
        self.outcomes = {item.nodeid: "not run" for item in real}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # under xdist the controller collects nothing: the workers' reports carry the group
        if report.nodeid not in self.outcomes and f"@{GROUP}" in report.nodeid:
            self.outcomes[report.nodeid] = "not run"
        if report.nodeid in self.outcomes and (report.when == "call" or report.outcome != "passed"):
            if self.outcomes[report.nodeid] in ("not run", "passed"):
                self.outcomes[report.nodeid] = report.outcome

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.outcomes:
            return
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        shown = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped", "not run")
                          if k in counts)
        where = " ".join(f"{name}={os.environ[name]}" for name in _ENV if os.environ.get(name))
        terminalreporter.write_line(f"tests against real RethinkDB servers ({where or 'none set'}): "
                                    f"{shown} of {len(self.outcomes)}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: needs a real RethinkDB server (skips without one)")
    config.pluginmanager.register(RealServerSummary(), "drtool-real-server-summary")
