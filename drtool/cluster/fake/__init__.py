"""The in-memory fake cluster (tests and benches): ``FakeServer`` in ``server``, each part of
the Cluster interface in a mixin module of its own (reads, writes, feeds, schema, users), the
tables in ``store``."""

from drtool.cluster.fake.server import (
    NETWORK, FakeCluster, FakeNetwork, FakeServer, lookup, register, unregister,
)

__all__ = ["NETWORK", "FakeCluster", "FakeNetwork", "FakeServer", "lookup", "register",
           "unregister"]
