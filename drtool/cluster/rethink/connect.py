"""The real-server adapter: ``Cluster`` over the official ``rethinkdb`` driver in asyncio mode.

Only ``rethink.driver`` imports ``rethinkdb`` (the adapter's other modules take the driver's
pieces from it), only ``rethink.decoder`` imports ``msgspec``. Behaviour relied on is
recorded in shared/reql-facts.md; the rest follows the official ReQL documentation.

``connect_rethinkdb`` (here) opens a ``RethinkSession`` (drtool.cluster.rethink.session: the
connection pool, changefeed connections, the only place queries run) and hands it to a
``RethinkCluster`` (drtool.cluster.rethink.cluster: the ReQL of every operation). Driver
exceptions are translated by drtool.cluster.rethink.errors.translate_error and never escape;
``rethink.decoder`` cuts scan responses into document texts; ``rethink.util`` holds the pure
helpers (no driver).
"""

from __future__ import annotations

from drtool.cluster.base import Cluster
from drtool.cluster.rethink.cluster import RethinkCluster
from drtool.cluster.rethink.driver import new_driver
from drtool.cluster.rethink.session import RethinkSession, open_connection
from drtool.model import ClusterConfig

__all__ = ["RethinkCluster", "RethinkSession", "connect_rethinkdb"]


async def connect_rethinkdb(config: ClusterConfig) -> Cluster:
    """Connect to the first reachable host of ``config`` (in order), with TLS if ``tls_ca``.

    Raises ClusterUnreachable naming every host tried, AuthError for a refused user/password
    or an untrusted TLS certificate, UsageError for a malformed host or a missing CA file."""
    r = new_driver()
    conn, label = await open_connection(r, config)
    return RethinkCluster(RethinkSession(config, r, conn, label), r)
