"""End to end on s3://: the real RethinkDB servers (see README.md here) and moto's S3 server on
loopback (started here; skipped without moto[server]). The same awkward table as
test_cli_e2e.py goes through ``drtool`` subprocesses: init, snapshot, verify --read-data,
restore to the standby, compared by the server's own ``to_json_string()`` texts."""

from __future__ import annotations

import json

import pytest

from integration.test_cli_e2e import TABLE, documents, drtool, r, table_state

S3_ENV = {"AWS_ACCESS_KEY_ID": "drtool-e2e", "AWS_SECRET_ACCESS_KEY": "drtool-e2e",
          "AWS_CONFIG_FILE": "/nonexistent/drtool-e2e", "AWS_EC2_METADATA_DISABLED": "true",
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/drtool-e2e"}


@pytest.fixture(scope="module")
def s3(primary, standby):
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from tests.s3server import MotoServer, new_bucket

    with pytest.MonkeyPatch.context() as mp:
        for name, value in S3_ENV.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        server = MotoServer().start()
        try:
            yield server.endpoint, new_bucket(server.endpoint)
        finally:
            server.stop()


def test_snapshot_then_restore_through_s3(primary, standby, db_name, password_env, s3,
                                          tmp_path):
    endpoint, bucket = s3
    with primary.connect() as conn:
        r.db_create(db_name).run(conn)
        r.db(db_name).table_create(TABLE).run(conn)
        tbl = r.db(db_name).table(TABLE)
        docs = documents()
        for start in range(0, len(docs), 500):
            assert tbl.insert(docs[start:start + 500]).run(conn)["errors"] == 0
        tbl.index_create("by_n", lambda d: d["n"]).run(conn)
        tbl.index_wait().run(conn)
    expected = table_state(primary, db_name, TABLE)
    identity = tmp_path / "identity.txt"
    drtool("keygen", "--out", str(identity))
    password = f'password_env = "{password_env}"\n' if password_env else ""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'name = "e2e-s3"\n\n'
        f'[primary]\nhosts = ["{primary.address}"]\nuser = "admin"\n{password}\n'
        f'[standby]\nhosts = ["{standby.address}"]\nuser = "admin"\n{password}\n'
        f'[repository]\nurl = "s3://{bucket}/e2e"\nendpoint = "{endpoint}"\n\n'
        f'[encryption]\nidentity_file = "{identity}"\n\n'
        f'[tables]\ninclude = ["{db_name}.*"]\n', encoding="utf-8")
    assert f"s3://{bucket}/e2e" in drtool("init", policy=policy).stdout

    snap = json.loads(drtool("snapshot", "--json", policy=policy).stdout)
    assert snap["tables"][0]["documents"] == len(expected["texts"])
    drtool("verify", "--read-data", policy=policy)
    drtool("restore", "latest", "--to", "standby", policy=policy)
    restored = table_state(standby, db_name, TABLE)
    assert restored["texts"] == expected["texts"]  # byte-identical
    assert restored["indexes"] == expected["indexes"]
    assert restored["primary_key"] == expected["primary_key"]
