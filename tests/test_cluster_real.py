"""The contract suite against a real RethinkDB: set DRTOOL_TEST_RETHINKDB=host:port
(and DRTOOL_TEST_RETHINKDB_PASSWORD for the admin password, default empty).

The fixture creates and drops its own uniquely named database. Index and write-hook blobs are
made with the official driver on a scratch table (only a real server compiles ReQL functions).
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from drtool.cluster import connect
from drtool.model import ClusterConfig

from tests.cluster_contract import ClusterContract
from tests.cluster_contract_target import ContractTarget

ADDRESS = os.environ.get("DRTOOL_TEST_RETHINKDB", "")
PASSWORD = os.environ.get("DRTOOL_TEST_RETHINKDB_PASSWORD", "")

pytestmark = [pytest.mark.real_server, pytest.mark.skipif(
    not ADDRESS, reason="set DRTOOL_TEST_RETHINKDB=host:port to run the contract against a real RethinkDB"
)]


@pytest.fixture
async def cluster():
    from rethinkdb import RethinkDB  # only here: drtool itself never imports the driver here

    host, _, port = ADDRESS.rpartition(":")
    c = await connect(ClusterConfig("primary", (ADDRESS,), password=PASSWORD))
    db = "drtool_test_" + uuid.uuid4().hex[:8]
    await c.ensure_db(db)
    r = RethinkDB()
    r.set_loop_type("asyncio")
    conn = await r.connect(host=host, port=int(port), user="admin", password=PASSWORD)
    scratch = r.db(db).table("scratch")
    await r.db(db).table_create("scratch").run(conn)

    async def index_blob(field: str) -> bytes:
        name = "by_" + uuid.uuid4().hex[:6]
        await scratch.index_create(name, lambda d: d[field]).run(conn)
        await scratch.index_wait(name).run(conn)
        status = await scratch.index_status(name).run(conn, binary_format="raw")
        return base64.b64decode(status[0]["function"]["data"])

    async def hook_blob() -> bytes:
        await scratch.set_write_hook(lambda ctx, old, new: new).run(conn)
        hook = await scratch.get_write_hook().run(conn, binary_format="raw")
        return base64.b64decode(hook["function"]["data"])

    async def connect_as(user: str, password: str):
        return await connect(ClusterConfig("primary", (ADDRESS,), user=user, password=password))

    try:
        yield ContractTarget(c, db, index_blob, hook_blob, connect_as=connect_as)
    finally:
        await c.drop_db(db)
        await conn.close()
        await c.close()


class TestRealContract(ClusterContract):
    pass
