"""End to end through the CLI against two real RethinkDB servers (see README.md here).

A table with awkward data (non-ASCII, escapes, number forms, TIME/BINARY values, keys of every
type), secondary indexes and a write hook that would alter every written document is made on
the primary with the driver; then ``drtool`` runs as a subprocess: init, snapshot, snapshots,
verify --read-data, restore to the standby (also renamed, and again with --conflict replace),
and the standby is compared with the primary by the server's own ``to_json_string()`` texts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

r = RethinkDB()  # the default (blocking) loop type
TABLE = "t"


def drtool(*args: str, policy: Path | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "drtool", *(["-p", str(policy)] if policy else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, (
        f"drtool {' '.join(args)} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def documents() -> list[dict]:
    docs = [{"id": i, "n": i % 97, "s": "x" * (i % 40), "tags": [i % 3, "t"]} for i in range(3000)]
    docs += [
        {"id": "ü-ключ", "v": "é\u2028\n\"\\", "f": 0.1, "neg": -0.0, "e": 1e300,
         "big": 12345678901234568.0, "n": 1},
        {"id": "", "empty": ""}, {"id": "a a"}, {"id": "é"}, {"id": "10"}, {"id": "9"},
        {"id": -7.5}, {"id": 1e16}, {"id": True}, {"id": False},
        {"id": []}, {"id": [[1]]}, {"id": [1, "a"]}, {"id": ["a"]}, {"id": [0, [True, "b"]]},
        {"id": r.epoch_time(1700000000), "kind": "time key"},
        {"id": r.binary(b"\x00\x01"), "kind": "binary key"},
        {"id": "nested", "a": {"y": [1, 2.5, None], "z": 1}, "b": "x",
         "ts": r.iso8601("2020-02-29T23:59:59.125+05:30"), "bin": r.binary(bytes(range(256))),
         "geo": r.point(-122.4, 37.7)},
    ]
    return docs


def table_state(server, db: str, table: str) -> dict:
    """What must survive a restore, as the server shows it."""
    with server.connect() as conn:
        tbl = r.db(db).table(table)
        texts = list(tbl.order_by(index="id").map(lambda d: d.to_json_string()).run(conn))
        indexes = {row["index"]: (row["query"], row["multi"], row["geo"])
                   for row in tbl.index_status().run(conn)}
        hook = tbl.get_write_hook().run(conn)
        return {"texts": texts, "indexes": indexes, "hook": hook and hook["query"],
                "primary_key": tbl.config()["primary_key"].run(conn)}


@pytest.fixture(scope="module")
def setup(primary, standby, db_name: str, password_env: str | None,
          tmp_path_factory) -> dict:
    """Data, indexes and hook on the primary; a policy, an identity and a repository."""
    with primary.connect() as conn:
        r.db_create(db_name).run(conn)
        r.db(db_name).table_create(TABLE).run(conn)
        tbl = r.db(db_name).table(TABLE)
        docs = documents()
        for start in range(0, len(docs), 500):
            res = tbl.insert(docs[start:start + 500]).run(conn)
            assert res["errors"] == 0, res["first_error"]
        tbl.index_create("by_n", lambda d: d["n"]).run(conn)
        tbl.index_create("by_s_n", lambda d: [d["s"], d["n"]]).run(conn)
        tbl.index_create("tags", lambda d: d["tags"], multi=True).run(conn)
        tbl.index_create("where", lambda d: d["geo"], geo=True).run(conn)
        tbl.index_wait().run(conn)
        # A hook that marks every write: a restore that let it run would be visible.
        tbl.set_write_hook(
            lambda ctx, old, new: r.branch(new.eq(None), new, new.merge({"hooked": True}))
        ).run(conn)
    work = tmp_path_factory.mktemp("e2e")
    identity = work / "identity.txt"
    drtool("keygen", "--out", str(identity))
    password = f'password_env = "{password_env}"\n' if password_env else ""
    policy = work / "policy.toml"
    policy.write_text(
        f'name = "e2e"\n\n'
        f'[primary]\nhosts = ["{primary.address}"]\nuser = "admin"\n{password}\n'
        f'[standby]\nhosts = ["{standby.address}"]\nuser = "admin"\n{password}\n'
        f'[repository]\nurl = "file://{work / "repo"}"\n\n'
        f'[encryption]\nidentity_file = "{identity}"\n\n'
        f'[tables]\ninclude = ["{db_name}.*"]\n\n'
        f'[schedule]\nsnapshot_from = "primary"\n',
        encoding="utf-8")
    drtool("init", policy=policy)
    return {"policy": policy, "db": db_name, "expected": table_state(primary, db_name, TABLE)}


def test_snapshot_verify_and_restore_to_standby(setup: dict, standby):
    policy, db, expected = setup["policy"], setup["db"], setup["expected"]
    assert len(expected["texts"]) == len(documents())
    assert not any('"hooked"' in text for text in expected["texts"])

    snap = json.loads(drtool("snapshot", "--json", policy=policy).stdout)
    [table] = snap["tables"]
    assert table["table"] == f"{db}.{TABLE}" and table["documents"] == len(expected["texts"])
    listed = json.loads(drtool("snapshots", "--json", policy=policy).stdout)
    assert [s["id"] for s in listed] == [snap["id"]]

    drtool("verify", "--read-data", policy=policy)
    drtool("restore", "latest", "--to", "standby", policy=policy)

    restored = table_state(standby, db, TABLE)
    assert restored["texts"] == expected["texts"]  # byte-identical, hook not applied
    assert restored["indexes"] == expected["indexes"]
    assert restored["hook"] is not None and restored["hook"] == expected["hook"]
    assert restored["primary_key"] == expected["primary_key"]


def test_restore_renamed_then_again_with_conflict_replace(setup: dict, standby):
    policy, db, expected = setup["policy"], setup["db"], setup["expected"]
    if not json.loads(drtool("snapshots", "--json", policy=policy).stdout):
        drtool("snapshot", policy=policy)
    rename = f"{db}.{TABLE}={db}.{TABLE}2"

    drtool("restore", "latest", "--to", "standby", "--rename", rename, "--conflict", "replace",
           policy=policy)
    first = table_state(standby, db, TABLE + "2")
    assert first["texts"] == expected["texts"]
    assert first["indexes"] == expected["indexes"] and first["hook"] == expected["hook"]

    with standby.connect() as conn:  # damage the restored copy (through its hook, too)
        tbl = r.db(db).table(TABLE + "2")
        assert tbl.get("ü-ключ").update({"v": "changed"}).run(conn)["replaced"] == 1
        assert tbl.get(5).replace({"id": 5, "other": True}).run(conn)["replaced"] == 1
    assert table_state(standby, db, TABLE + "2")["texts"] != expected["texts"]

    drtool("restore", "latest", "--to", "standby", "--rename", rename, "--conflict", "replace",
           policy=policy)
    assert table_state(standby, db, TABLE + "2")["texts"] == expected["texts"]
