"""Helpers of the replication tests: a runner in the background, waiting for convergence."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from drtool.cluster import fake
from drtool.compare.diff import diff_tables, tables_of_both
from drtool.wiring.open import connect_role
from drtool.config.policy import Policy, load_policy
from drtool.standby.events import Events
from drtool.standby.runner import Runner

WAIT = 30.0  # seconds before a wait gives up (a failure bound, never a measured time)


def replication_section(state_db: str | None = None, **keys: str) -> str:
    state_db = state_db or "drtool_state_" + uuid.uuid4().hex[:8]
    lines = ["[replication]", f'state_db = "{state_db}"', 'schema_poll = "1s"',
             'lease_ttl = "5s"']
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


async def wait_until(check, what: str, timeout: float = WAIT):
    """Await ``check()`` (sync or async) until it returns something truthy; AssertionError
    naming ``what`` when it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def diffs(policy: Policy):
    async with await connect_role(policy, "primary", fake.NETWORK) as source, \
            await connect_role(policy, "standby", fake.NETWORK) as target:
        tables = await tables_of_both(policy, source, target, [], where="primary or standby")
        return await diff_tables(source, target, tables)


async def wait_equal(policy: Policy, timeout: float = WAIT):
    """Wait until diff reports every selected table equal (and there is at least one)."""
    async def equal():
        found = await diffs(policy)
        return found if found and all(d.equal for d in found) else None
    return await wait_until(equal, "diff to report the standby equal", timeout)


class Background:
    """A Runner running in a task of the current loop."""

    def __init__(self, policy: Policy | Path, events: Events | None = None) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        self.runner = Runner(self.policy, events or Events(), connector=fake.NETWORK)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "Background":
        self.task = asyncio.create_task(self.runner.run())
        return self

    async def streaming(self, n_tables: int) -> None:
        def ready():
            if self.task.done():
                self.task.result()  # raises the runner's error
            reps = [r for t, r in self.runner.replicators.items()
                    if t.db != self.policy.replication.state_db]
            return len(reps) >= n_tables and all(r.state == "streaming" for r in reps)
        await wait_until(ready, f"{n_tables} tables streaming")

    async def __aexit__(self, *exc) -> None:
        self.runner.stop()
        await asyncio.wait_for(self.task, WAIT)


async def fake_or_real_cluster(kind: str, role: str):
    """A connected cluster for a test parametrized over ["fake", "real"]: a fresh FakeServer,
    or the real server of DRTOOL_TEST_RETHINKDB (the test is skipped when it is unset)."""
    import os

    import pytest

    from drtool.cluster import connect
    from drtool.cluster.fake import FakeServer
    from drtool.model import ClusterConfig

    if kind == "real":
        address = os.environ.get("DRTOOL_TEST_RETHINKDB", "")
        if not address:
            pytest.skip("set DRTOOL_TEST_RETHINKDB=host:port to run against a real RethinkDB")
        return await connect(ClusterConfig(role, (address,)))
    host = f"fake-{role}-{uuid.uuid4().hex[:8]}:28015"
    fake.register(host, FakeServer())
    return await connect(ClusterConfig(role, (host,)), fake.NETWORK)
