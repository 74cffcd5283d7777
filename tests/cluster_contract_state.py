"""Cluster contract, drtool's own state: compare-and-set on the server's clock (``write_state``).

Part of the contract suite (``tests.cluster_contract``), run against the fake and a real
server: ``server_time`` is the server's clock, ``now_fields`` are stamped with it, and a
Guard is evaluated in the same atomic step as the write (lease and generation patterns).
"""

from __future__ import annotations

import json

import pytest

from drtool.cluster.base import ALWAYS, Guard
from drtool.errors import NotFound
from drtool.model import TableName

from tests.cluster_contract_target import ContractTarget


class StateContract:
    """State writes: every test takes the ``cluster`` fixture (a ContractTarget)."""

    async def test_server_time_is_the_servers_clock(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        first = await c.server_time()
        written = await c.write_state(t, '"hb"', '{"id":"hb","seq":1}', ALWAYS,
                                      now_fields={"time": 0})
        assert written.applied and first <= written.now <= await c.server_time()
        stored = json.loads(written.doc)
        assert stored["time"]["$reql_type$"] == "TIME"
        assert abs(stored["time"]["epoch_time"] - written.now) < 0.002
        assert await c.get_docs(t, ['"hb"']) == [('"hb"', written.doc)]

    async def test_write_state_guards_lease_style(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        key = '"p:runner"'

        def holder(name: str) -> str:
            return '{"holder":"%s","id":"p:runner"}' % name

        def acquire(name: str) -> Guard:  # absent, mine, or expired
            return Guard(fields=(("holder", json.dumps(name)),), expired="expires")

        a = await c.write_state(t, key, holder("a"), acquire("a"), now_fields={"expires": 30})
        assert a.applied and json.loads(a.doc)["holder"] == "a"
        b = await c.write_state(t, key, holder("b"), acquire("b"), now_fields={"expires": 30})
        assert (b.applied, b.doc) == (False, a.doc)  # held and not expired: refused, shown
        renew = Guard(if_absent=False, fields=(("holder", '"a"'),))
        expired = await c.write_state(t, key, holder("a"), renew, now_fields={"expires": -1})
        assert expired.applied
        taken = await c.write_state(t, key, holder("b"), acquire("b"), now_fields={"expires": 30})
        assert taken.applied and json.loads(taken.doc)["holder"] == "b"
        assert not (await c.write_state(t, key, holder("a"), renew)).applied
        release_a = await c.write_state(t, key, None, Guard(fields=(("holder", '"a"'),)))
        assert (release_a.applied, release_a.doc) == (False, taken.doc)
        release_b = await c.write_state(t, key, None, Guard(fields=(("holder", '"b"'),)))
        assert (release_b.applied, release_b.doc) == (True, None)
        assert await c.get_docs(t, [key]) == []
        again = await c.write_state(t, key, None, Guard(fields=(("holder", '"b"'),)))
        assert again.applied  # releasing what is not there: nothing to do

    async def test_write_state_compare_and_set_on_a_number(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        key = '"p"'

        def cas(expected: int) -> Guard:  # generation 0 also means "no document yet"
            return Guard(if_absent=expected == 0, fields=(("generation", str(expected)),))

        first = await c.write_state(t, key, '{"generation":1,"id":"p"}', cas(0))
        assert first.applied
        stale = await c.write_state(t, key, '{"generation":2,"id":"p","by":"x"}', cas(0))
        assert (stale.applied, stale.doc) == (False, '{"generation":1,"id":"p"}')
        assert (await c.write_state(t, key, '{"generation":2,"id":"p"}', cas(1))).applied
        missing_field = Guard(if_absent=False, fields=(("step", "null"),))
        assert (await c.write_state(t, key, '{"generation":2,"id":"p","step":"x"}',
                                    missing_field)).applied
        with pytest.raises(NotFound):
            await c.write_state(TableName(cluster.db, "nope"), key, '{"id":"p"}', ALWAYS)
