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
import os
import random
import signal
import struct
import subprocess
import sys
import time
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



BIG = 40_000  # documents of ~1 KB: the delta restore below writes half of them, in 20 batches


def _big_table(primary, db: str, name: str) -> list[dict]:
    docs = [{"id": i, "n": i, "pad": "p" * 1000} for i in range(BIG)]
    with primary.connect() as conn:
        r.db(db).table_create(name).run(conn)
        for start in range(0, BIG, 2000):
            res = r.db(db).table(name).insert(docs[start:start + 2000]).run(conn)
            assert res["errors"] == 0, res["first_error"]
    return docs


def _half_copy(server, db: str, name: str, docs: list[dict]) -> None:
    """``db.name`` on ``server`` with every other thousand of ``docs`` (half of them)."""
    with server.connect() as conn:
        if db not in r.db_list().run(conn):
            r.db_create(db).run(conn)
        r.db(db).table_create(name).run(conn)
        kept = [d for d in docs if d["id"] // 1000 % 2 == 0]
        for start in range(0, len(kept), 2000):
            assert r.db(db).table(name).insert(kept[start:start + 2000]).run(conn)["errors"] == 0


def _count(server, db: str, name: str) -> int:
    with server.connect() as conn:
        return r.db(db).table(name).count().run(conn)


def _delta_until_written(policy: Path, args: list[str], server, db: str, name: str
                         ) -> tuple[subprocess.Popen, int]:
    """Start ``drtool restore ... --delta`` and return once it has written into db.name
    (its count grew), with that count."""
    with server.connect() as conn:
        count = r.db(db).table(name).count()
        start = count.run(conn)
        proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(policy), "restore",
                                 *args, "--delta", "-q"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        deadline = time.monotonic() + 300
        while (now := count.run(conn)) == start:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the delta restore wrote nothing"
            time.sleep(0.02)
    return proc, now


def _rerun_hint(table: str, snapshot_id: str) -> str:
    return (f"table {table} may be partly restored from snapshot {snapshot_id}: run the same "
            f"restore {snapshot_id} --delta again to finish (it is idempotent: it writes only "
            "what still differs)")


def _finish(policy: Path, args: list[str], expected: list[str], server, db: str, name: str):
    done = json.loads(drtool("restore", *args, "--delta", "--json", policy=policy).stdout)
    [report] = done["tables"]
    assert report["digest_ok"] and report["ranges_differing"] == 0
    assert table_state(server, db, name)["texts"] == expected
    return report


def test_delta_restore_interrupted_then_killed_then_run_again(setup: dict, primary, standby):
    """Ctrl-C (SIGINT) half-way: exit 130 and the advice to run the same restore --delta
    again; kill -9 half-way; then the same command finishes the job."""
    policy, db = setup["policy"], setup["db"]
    docs = _big_table(primary, db, "big")
    snap = json.loads(drtool("snapshot", "--table", f"{db}.big", "--json", policy=policy).stdout)
    expected = table_state(primary, db, "big")["texts"]
    _half_copy(standby, db, "big_copy", docs)
    args = [snap["id"], "--to", "standby", "--rename", f"{db}.big={db}.big_copy"]

    proc, seen = _delta_until_written(policy, args, standby, db, "big_copy")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "drtool: error: interrupted: " + _rerun_hint(
        f"{db}.big_copy", snap["id"])
    assert seen <= _count(standby, db, "big_copy") < BIG  # partly restored

    proc, _ = _delta_until_written(policy, args, standby, db, "big_copy")
    proc.kill()
    proc.communicate(timeout=120)
    assert _count(standby, db, "big_copy") < BIG

    report = _finish(policy, args, expected, standby, db, "big_copy")
    assert 0 < report["written_count"] < BIG // 2 and report["deleted_count"] == 0

    # Equal now: nothing written, and the traffic is the two segment-digest passes alone.
    from drtool.cluster.base import segment_digest_groups

    same = _finish(policy, args, expected, standby, db, "big_copy")
    assert same["ranges_changed"] == same["written_count"] == same["bytes_written"] == 0
    assert same["traffic"]["queries"] == 2 * len(segment_digest_groups(same["ranges"]))
    assert same["traffic"]["bytes"] > 1500 * same["traffic"]["queries"]  # QUERY_OVERHEAD each


@pytest.mark.skipif(not os.environ.get("DRTOOL_RETHINKDB_BIN"),
                    reason="set DRTOOL_RETHINKDB_BIN to start a throw-away target server")
def test_delta_restore_target_killed_half_way_then_run_again(setup: dict, primary, standby,
                                                            tmp_path):
    """The target server is killed (-9) while the delta restore writes: exit 3, the advice to
    run the same restore --delta again; after a restart the same command finishes."""
    from conftest import Server, ThrowawayServer

    policy, db = setup["policy"], setup["db"]
    docs = _big_table(primary, db, "big_t")
    snap = json.loads(drtool("snapshot", "--table", f"{db}.big_t", "--json", policy=policy).stdout)
    expected = table_state(primary, db, "big_t")["texts"]
    target = ThrowawayServer(tmp_path / "target-data", "drtool_delta_target").start()
    try:
        deadline = time.monotonic() + 60
        while not target.answering():
            assert time.monotonic() < deadline, "the throw-away server did not start"
            time.sleep(0.2)
        server = Server("standby", target.address)
        _half_copy(server, db, "big_t", docs)
        own = tmp_path / "policy.toml"  # the same repository and key; the standby is ours
        own.write_text(policy.read_text(encoding="utf-8").replace(
            f'[standby]\nhosts = ["{standby.address}"]',
            f'[standby]\nhosts = ["{target.address}"]'), encoding="utf-8")
        assert target.address in own.read_text(encoding="utf-8")
        args = [snap["id"], "--to", "standby", "--table", f"{db}.big_t"]

        proc, _ = _delta_until_written(own, args, server, db, "big_t")
        target.kill()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, (out, err)
        *notes, line = err.strip().splitlines()  # started again 4 times (drtool.util.retry)
        assert len(notes) == 4 and all(": starting again in " in n for n in notes), err
        assert "connection lost" in notes[0], err
        assert line.startswith("drtool: error: standby"), line
        assert line.endswith(_rerun_hint(f"{db}.big_t", snap["id"])), line

        target.start()
        deadline = time.monotonic() + 60
        while not target.answering():
            assert time.monotonic() < deadline, "the throw-away server did not restart"
            time.sleep(0.2)
        _wait_ready(server, db, "big_t")
        assert _count(server, db, "big_t") < BIG
        _finish(own, args, expected, server, db, "big_t")
    finally:
        target.kill()


def _wait_ready(server, db: str, name: str) -> None:
    with server.connect() as conn:
        r.db(db).table(name).wait(wait_for="all_replicas_ready", timeout=60).run(conn)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
