"""A seeded random history through the CLI: writes on the primary between incremental
snapshots, forget/prune along the way; at the end every remaining snapshot must restore to
exactly the state recorded when it was taken, and verify --read-data must pass."""

from __future__ import annotations

import json
import random

import pytest

from drtool.model import TableName
from tests.conftest import load_table, sample_docs, table_texts

TABLES = {"app.s": TableName("app", "s"), "app.n": TableName("app", "n")}


def _numeric_docs(keys, rng: random.Random) -> list[str]:
    return [json.dumps({"id": k, "v": rng.random(), "pad": "n" * rng.randrange(200, 3000)})
            for k in keys]


def _mutate(server, rng: random.Random, live: dict[str, set]) -> None:
    """Random inserts, updates and deletes on both tables."""
    strings, numbers = live["app.s"], live["app.n"]
    for _ in range(rng.randrange(1, 40)):
        k = f"k{rng.randrange(4000):07d}"
        strings.add(k)
        server.put_texts(TABLES["app.s"], [json.dumps({"id": k, "round": rng.random(),
                                                       "pad": "s" * rng.randrange(0, 4000)})])
    gone = rng.sample(sorted(strings), min(len(strings), rng.randrange(0, 25)))
    server.delete(TABLES["app.s"], [json.dumps(k) for k in gone])
    strings.difference_update(gone)
    new = [rng.randrange(-500, 5000) for _ in range(rng.randrange(0, 30))]
    server.put_texts(TABLES["app.n"], _numeric_docs(new, rng))
    numbers.update(new)
    gone_n = rng.sample(sorted(numbers), min(len(numbers), rng.randrange(0, 20)))
    server.delete(TABLES["app.n"], [json.dumps(k) for k in gone_n])
    numbers.difference_update(gone_n)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_history_restores_every_kept_snapshot(seed, deployment, cli, primary_server,
                                                     standby_server):
    rng = random.Random(seed)
    docs = sample_docs(2500, pad=2500)  # > 6 MiB: several ranges
    load_table(primary_server, "app.s", docs)
    numbers = list(range(0, 2000, 3))
    load_table(primary_server, "app.n", _numeric_docs(numbers, rng))
    live = {"app.s": {json.loads(d)["id"] for d in docs}, "app.n": set(numbers)}
    states: dict[str, dict[str, list[str]]] = {}
    for round_ in range(7):
        if round_:
            _mutate(primary_server, rng, live)
        args = ("--full",) if round_ == 4 else ()
        result = cli("snapshot", "--json", *args)
        assert result.exit_code == 0, result.stderr
        snap = json.loads(result.stdout)
        states[snap["id"]] = {name: table_texts(primary_server, name) for name in TABLES}
        if round_ == 5:
            forgot = cli("forget", "--keep-last", "3", "--prune")
            assert forgot.exit_code == 0, forgot.stderr

    kept = [s["id"] for s in json.loads(cli("snapshots", "--json").stdout)]
    assert kept == list(states)[3:]  # keep-last 3 after round 5, then round 6's snapshot
    verified = cli("verify", "--read-data")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    for n, sid in enumerate(kept):
        renames = [arg for name in TABLES for arg in ("--rename", f"{name}=r{n}.{name[4:]}")]
        result = cli("restore", sid, "--to", "standby", *renames, "--json")
        assert result.exit_code == 0, result.stderr
        assert all(t["digest_ok"] for t in json.loads(result.stdout)["tables"])
        for name in TABLES:
            assert table_texts(standby_server, f"r{n}.{name[4:]}") == states[sid][name], (sid, name)
