"""rethinkdb dump archives in and out, and restore --delta, through the CLI against two real
servers (see README.md here).

The table of test_cli_e2e.py (every awkward type, four kinds of index, a write hook) is dumped
with ``python -m rethinkdb dump``, imported with ``drtool import-dump`` and restored by drtool
and by ``rethinkdb restore``: both copies must be byte-identical to the source (its
``to_json_string()`` texts), with the same indexes and hook. The other way, a drtool snapshot
exported with ``drtool export-dump`` is restored by ``rethinkdb restore``. A table of random
doubles and strings checks the client-side canonicalisation against the server's printer.
"""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from test_cli_e2e import TABLE, drtool, setup, table_state  # noqa: F401  (setup: a fixture)

r = RethinkDB()


def rethinkdb_tool(verb: str, server, *args: str) -> None:
    cmd = [sys.executable, "-m", "rethinkdb", verb, "-c", server.address, "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rethinkdb {verb}: {proc.stdout}\n{proc.stderr}"


def drop_table(server, db: str, table: str) -> None:
    with server.connect() as conn:
        if db in r.db_list().run(conn) and table in r.db(db).table_list().run(conn):
            r.db(db).table_drop(table).run(conn)


def test_dump_import_restore_equals_rethinkdb_restore(setup: dict, primary, standby,
                                                      tmp_path: Path):
    policy, db, expected = setup["policy"], setup["db"], setup["expected"]
    archive = tmp_path / "dump.tar.gz"
    rethinkdb_tool("dump", primary, "-e", f"{db}.{TABLE}", "-f", str(archive))

    imported = json.loads(drtool("import-dump", str(archive), "--json", policy=policy).stdout)
    [table] = imported["tables"]
    assert table["documents"] == len(expected["texts"])
    assert table["indexes"] == sorted(expected["indexes"]) and table["write_hook"]
    assert imported["source"] == "rethinkdb dump archive dump.tar.gz"
    drtool("verify", "--read-data", policy=policy)
    drtool("diff", "--against", imported["id"], "--table", f"{db}.{TABLE}", policy=policy)

    # Canonicalised by the server instead (--via): the very same table, scratch database gone.
    via = json.loads(drtool("import-dump", str(archive), "--via", "standby", "--json",
                            policy=policy).stdout)
    assert via["tables"][0]["digest"] == table["digest"] and via["bytes_new"] == 0
    assert via["imported"]["via"].startswith("standby ")
    with standby.connect() as conn:
        assert not [d for d in r.db_list().run(conn) if d.startswith("drtool_import_")]

    drtool("restore", imported["id"], "--to", "standby", "--rename",
           f"{db}.{TABLE}={db}.{TABLE}_drtool", policy=policy)
    drop_table(standby, db, TABLE)
    rethinkdb_tool("restore", standby, str(archive))
    ours = table_state(standby, db, TABLE + "_drtool")
    theirs = table_state(standby, db, TABLE)
    assert ours["texts"] == expected["texts"] == theirs["texts"]  # byte-identical
    assert ours["indexes"] == expected["indexes"] == theirs["indexes"]
    assert ours["hook"] == expected["hook"] == theirs["hook"] is not None
    assert ours["primary_key"] == theirs["primary_key"] == expected["primary_key"]

    # A snapshot of the live table builds on the imported one: nothing new is stored.
    later = json.loads(drtool("snapshot", "--table", f"{db}.{TABLE}", "--json", policy=policy).stdout)
    assert later["bytes_new"] == 0
    assert later["tables"][0]["digest"] == table["digest"]


def test_snapshot_export_then_rethinkdb_restore(setup: dict, standby, tmp_path: Path):
    policy, db, expected = setup["policy"], setup["db"], setup["expected"]
    snap = json.loads(drtool("snapshot", "--table", f"{db}.{TABLE}", "--json", policy=policy).stdout)
    out = tmp_path / "export.tar.gz"
    drtool("export-dump", snap["id"], "--out", str(out), "--table", f"{db}.{TABLE}", policy=policy)
    drop_table(standby, db, TABLE)
    rethinkdb_tool("restore", standby, str(out))
    restored = table_state(standby, db, TABLE)
    assert restored["texts"] == expected["texts"]
    assert restored["indexes"] == expected["indexes"]
    assert restored["hook"] == expected["hook"] is not None


def _random_documents(n: int, seed: int = 11) -> list[dict]:
    """Doubles from random bit patterns and everyday ranges, strings of random code points
    (astral, control, U+2028 and escapes included), nested."""
    rng = random.Random(seed)

    def double() -> float:
        while True:
            kind = rng.random()
            if kind < 0.5:
                x = struct.unpack("<d", rng.randbytes(8))[0]
            elif kind < 0.7:
                x = rng.uniform(-1e6, 1e6)
            elif kind < 0.85:
                x = round(rng.uniform(0, 1000), rng.randint(0, 6))
            else:
                x = rng.randint(-2**62, 2**62) * 1.0
            if math.isfinite(x):
                return x

    def string() -> str:
        pool = [0x0, 0x1f, 0x22, 0x5c, 0x7f, 0xe9, 0x2028, 0x2029, 0xfeff, 0x1f600, 0x10ffff]
        chars = [chr(rng.choice(pool)) if rng.random() < 0.3 else
                 chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0xd7ff),
                                 rng.randint(0xe000, 0xfffd), rng.randint(0x10000, 0x10ffff)]))
                 for _ in range(rng.randint(0, 12))]
        return "".join(chars)

    return [{"id": i, "d": double(), "ds": [double() for _ in range(3)], "s": string(),
             "o": {"s" + string(): double(), "k": [string(), {"x": double()}]}} for i in range(n)]


def test_random_doubles_and_strings_canonicalise_like_the_server(setup: dict, primary,
                                                                  tmp_path: Path):
    """import-dump of a dumped table whose digests (server-side folds of to_json_string())
    equal the live table's: the client-side canonical text is the server's for every value."""
    policy, db = setup["policy"], setup["db"]
    with primary.connect() as conn:
        r.db(db).table_create("rnd").run(conn)
        docs = _random_documents(20_000)
        for start in range(0, len(docs), 1000):
            res = r.db(db).table("rnd").insert(docs[start:start + 1000]).run(conn)
            assert res["errors"] == 0, res["first_error"]
    archive = tmp_path / "rnd.tar.gz"
    rethinkdb_tool("dump", primary, "-e", f"{db}.rnd", "-f", str(archive))
    imported = json.loads(drtool("import-dump", str(archive), "--json", policy=policy).stdout)
    assert imported["documents"] == 20_000
    result = subprocess.run(
        [sys.executable, "-m", "drtool", "-p", str(policy), "diff", "--against", imported["id"],
         "--table", f"{db}.rnd", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[:3000] + result.stderr
    [report] = json.loads(result.stdout)["tables"]
    assert report["equal"] and report["documents"]["primary"] == 20_000


def test_delta_restore_repairs_a_damaged_copy(setup: dict, primary, standby):
    policy, db, expected = setup["policy"], setup["db"], setup["expected"]
    snap = json.loads(drtool("snapshot", "--table", f"{db}.{TABLE}", "--json", policy=policy).stdout)
    copy = f"{db}.{TABLE}_delta"
    drop_table(standby, db, TABLE + "_delta")
    drtool("restore", snap["id"], "--to", "standby", "--rename", f"{db}.{TABLE}={copy}", policy=policy)
    with standby.connect() as conn:  # damage the copy: changed, deleted and new documents
        tbl = r.db(db).table(TABLE + "_delta")
        assert tbl.get(7).update({"n": -1}).run(conn)["replaced"] == 1
        assert tbl.get("ü-ключ").delete().run(conn)["deleted"] == 1
        assert tbl.insert({"id": "extra", "x": 1}).run(conn)["inserted"] == 1
    assert table_state(standby, db, TABLE + "_delta")["texts"] != expected["texts"]

    planned = json.loads(drtool("restore", snap["id"], "--delta", "--dry-run", "--to", "standby",
                                "--rename", f"{db}.{TABLE}={copy}", "--json", policy=policy).stdout)
    [plan] = planned["tables"]
    assert sorted(plan["written"]) == sorted(['7', '"ü-ключ"']) and plan["deleted"] == ['"extra"']
    done = json.loads(drtool("restore", snap["id"], "--delta", "--to", "standby", "--rename",
                             f"{db}.{TABLE}={copy}", "--json", policy=policy).stdout)
    [report] = done["tables"]
    assert report["digest_ok"] and report["written_count"] == 2 and report["deleted_count"] == 1
    repaired = table_state(standby, db, TABLE + "_delta")
    assert repaired["texts"] == expected["texts"]  # the hook was bypassed
    assert repaired["indexes"] == expected["indexes"]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
