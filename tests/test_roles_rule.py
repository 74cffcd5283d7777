"""The one rule for the current roles record (drtool.coordination.roles.newest_roles), used by
the runner, ``status``, the write guard and a failover run alike.

Two rules used to exist: the runner/status/guard took the highest generation only (the first
record given among equal ones), a failover run the highest generation, then the latest write
of a run (``seq``), then one with a step. A failover killed between writing the two clusters
leaves two records with one generation and different steps; the two rules then picked
different records. Here both clusters hold such records, on the fake and on the real servers
(DRTOOL_IT_PRIMARY/DRTOOL_IT_STANDBY), and every reader must pick the same one whatever the
order it reads the clusters in."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from drtool.coordination.guard import check_write
from drtool.coordination.roles import STOP_REPLICATION, Roles, newest_roles
from drtool.coordination.state import current_roles, state_store
from drtool.cluster.fake import NETWORK
from drtool.config.policy import load_policy
from drtool.errors import StaleGeneration
from drtool.failover.run import FailoverRun
from drtool.wiring.open import connect_role

from tests.conftest import PRIMARY_HOST, STANDBY_HOST

#: the record the failover run wrote last (seq 5) with the step it started
STEPPED = Roles(3, "primary", step=STOP_REPLICATION, extra={"seq": 5, "failover": {
    "step": STOP_REPLICATION, "from": "primary", "to": "standby", "generation": 3}})
#: the other cluster, written before (seq 4), without a step
PLAIN = Roles(3, "primary", extra={"seq": 4})


def test_the_rule_on_records():
    assert newest_roles(PLAIN, STEPPED) == STEPPED == newest_roles(STEPPED, PLAIN)
    older = Roles(2, "standby", step="promote", extra={"seq": 9})
    assert newest_roles(older, PLAIN) == PLAIN  # the generation decides first
    assert newest_roles(Roles(3, "primary"), PLAIN) == PLAIN  # then the run's seq
    assert newest_roles() == Roles()


@pytest.fixture(params=["fake", "real"])
def policy(request, tmp_path: Path):
    """(the policy, the connector reaching its clusters: the fake network or the real servers)"""
    connector = None
    if request.param == "fake":
        request.getfixturevalue("primary_server")
        request.getfixturevalue("standby_server")
        hosts, connector = (PRIMARY_HOST, STANDBY_HOST), NETWORK
    else:
        hosts = os.environ.get("DRTOOL_IT_PRIMARY", ""), os.environ.get("DRTOOL_IT_STANDBY", "")
        if not all(hosts):
            pytest.skip("set DRTOOL_IT_PRIMARY and DRTOOL_IT_STANDBY to run on real servers")
    path = tmp_path / "policy.toml"
    path.write_text("\n".join([
        'name = "roles_rule"',
        "[primary]", f'hosts = ["{hosts[0]}"]',
        "[standby]", f'hosts = ["{hosts[1]}"]',
        "[repository]", f'url = "file://{tmp_path / "repo"}"',
        "[encryption]", f'identity_file = "{tmp_path / "identity.txt"}"',
        "[replication]", f'state_db = "drtool_roles_{uuid.uuid4().hex[:8]}"',
    ]) + "\n")
    return load_policy(path), connector


async def test_every_reader_picks_the_same_record(policy):
    policy, connector = policy
    clusters = {role: await connect_role(policy, role, connector)
                for role in ("primary", "standby")}
    try:
        for role, roles in (("primary", PLAIN), ("standby", STEPPED)):
            store = state_store(clusters[role], policy)
            await store.ensure()
            assert (await store.write_roles(roles, expected_generation=0))[0]
        # the runner and status (current_roles), in either order
        for order in (("primary", "standby"), ("standby", "primary")):
            found = await current_roles(policy, *(clusters[r] for r in order))
            assert (found.generation, found.step, found.extra["seq"]) == (3, STOP_REPLICATION, 5)
        # the write guard: a failover step is in progress, whichever cluster is asked first
        with pytest.raises(StaleGeneration, match="stop-replication"):
            await check_write(policy, "standby", clusters["standby"],
                              source_role="primary", source=clusters["primary"])
        # a failover run reading the clusters one after the other
        async with FailoverRun(policy, lambda line: None, connector) as run:
            await run.connect("primary")
            assert run.newest.step is None  # only the plain record read so far
            await run.connect("standby")
            assert (run.newest.step, run.reached) == (STOP_REPLICATION, STOP_REPLICATION)
    finally:
        for cluster in clusters.values():
            await cluster.drop_db(policy.replication.state_db)
            await cluster.close()
