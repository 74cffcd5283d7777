"""The Cluster contract: one suite run unchanged against the fake and a real RethinkDB.

Use it by subclassing ``ClusterContract`` in a test module and defining a ``cluster`` fixture
that yields a ``ContractTarget``: a connected Cluster, a fresh uniquely named database the
fixture created (and drops afterwards), and two blob makers. Only the Cluster interface is
used here; blobs for indexes and write hooks come from the fixture because only a real
server can compile a ReQL function (the real fixture makes them with the driver on a scratch
table, the fake one with ``FakeServer.index_blob``/``hook_blob``). Expected values come from
shared/reql-golden.json, recorded on RethinkDB 2.4.4.

The tests live in one module per part of the interface, each a class mixed in here:
``cluster_contract_reads`` (texts, key order, scans, digests), ``cluster_contract_writes``
(insert results, conflicts, deletes, changefeeds), ``cluster_contract_schema``,
``cluster_contract_users`` (users, permissions, fences), ``cluster_contract_state``
(``write_state``); ``cluster_contract_target`` holds ContractTarget and the shared helpers.
"""

from __future__ import annotations

from tests.cluster_contract_reads import ReadsContract
from tests.cluster_contract_schema import SchemaContract
from tests.cluster_contract_state import StateContract
from tests.cluster_contract_users import UsersContract
from tests.cluster_contract_writes import WritesContract


class ClusterContract(ReadsContract, WritesContract, SchemaContract, UsersContract,
                      StateContract):
    """The whole contract; every test takes the ``cluster`` fixture (a ContractTarget)."""
