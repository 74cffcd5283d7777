"""Cluster access. ``connect`` is the one way drtool obtains a ``Cluster``.

Who reaches the hosts is the caller's choice, a ``Connector``: None (everywhere drtool runs
for real) is the RethinkDB adapter; tests and benches pass the in-memory fake's network
(``drtool.cluster.fake.FakeNetwork``). Nothing is looked up behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from drtool.cluster.base import Cluster
from drtool.model import ClusterConfig

#: connects to the first reachable host of a ClusterConfig (the same errors as ``connect``)
Connector = Callable[[ClusterConfig], Awaitable[Cluster]]


async def connect(config: ClusterConfig, connector: Connector | None = None) -> Cluster:
    """Connect to the first reachable host of ``config``, through ``connector`` when given,
    else the RethinkDB adapter.

    Raises ClusterUnreachable naming the hosts tried, AuthError for a refused user/password."""
    if connector is not None:
        return await connector(config)
    from drtool.cluster.rethink.connect import connect_rethinkdb

    return await connect_rethinkdb(config)
