"""Incremental snapshots: bytes uploaded by a second snapshot after 1% of the documents changed.

    python bench/incremental.py [--docs 200000] [--doc-size 470] [--seed 1]

A table of ``--docs`` documents with random UUID keys is snapshot in full into a local
repository; then 1% of its documents (at random) are updated and a second snapshot is taken;
then 1% new documents are appended and a third one is taken. Printed: the stored bytes each
snapshot uploaded and the ratios to the first; targets (issue 4): at most 5% after the
updates, at most 3% after the appends. Finally the last snapshot is restored into a second
fake cluster and compared with the source, document by document.

Bytes uploaded do not depend on the server, so this runs on the in-memory fake cluster (time
figures are not meaningful here; see bench/snapshot.py for speed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    fake_cluster, fake_load, fake_server, make_docs, new_repository, say,
)
from drtool.snapshots.restore import RestoreOptions, restore_snapshot  # noqa: E402
from drtool.snapshots.snapshot import take_snapshot  # noqa: E402
from drtool.model import TableName  # noqa: E402

PRIMARY, STANDBY = "bench-primary:28015", "bench-standby:28015"
TABLE = TableName("bench", "t")


def updated(doc: str, rng: random.Random) -> str:
    """The same document with one field changed (same key, same size class)."""
    data = json.loads(doc)
    data["score"] = rng.randrange(10**6) + 0.5
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    source, target = fake_server(PRIMARY), fake_server(STANDBY)
    docs = make_docs(args.docs, args.doc_size, args.seed)
    await fake_load(source, PRIMARY, [TABLE], lambda _: docs)
    primary = fake_cluster(source, PRIMARY)
    with tempfile.TemporaryDirectory() as tmp:
        repo = await new_repository(Path(tmp) / "r")
        results = []

        async def snapshot(label: str) -> int:
            start = time.perf_counter()
            manifest = await take_snapshot(repo, primary, [TABLE], policy_name="bench",
                                           source="primary")
            seconds = time.perf_counter() - start
            layers = len(manifest.tables[0].layers)
            say(f"{label}: {manifest.bytes_new:,} bytes uploaded, {layers} layer(s), {seconds:.1f} s")
            results.append(manifest.bytes_new)
            return manifest.bytes_new

        first = await snapshot("first snapshot (full)")
        n = args.docs // 100
        source.put_texts(TABLE, [updated(d, rng) for d in rng.sample(docs, n)])
        second = await snapshot(f"after updating {n:,} documents (1%)")
        source.put_texts(TABLE, make_docs(n, args.doc_size, args.seed + 1))  # new random UUIDs
        third = await snapshot(f"after appending {n:,} documents (1%)")

        await restore_snapshot(repo, fake_cluster(target, STANDBY), await repo.resolve("latest"),
                               RestoreOptions())
        same = target.texts(TABLE) == source.texts(TABLE)
        await repo.close()

    print()
    print(f"{'snapshot':<28}{'uploaded':>14}{'of first':>10}{'target':>10}")
    print(f"{'full':<28}{first:>14,}{'100%':>10}{'':>10}")
    ok_update, ok_append = second <= 0.05 * first, third <= 0.03 * first
    print(f"{'1% updated':<28}{second:>14,}{second / first:>10.2%}{'<= 5%':>10}"
          f"  {'OK' if ok_update else 'MISSED'}")
    print(f"{'1% appended':<28}{third:>14,}{third / first:>10.2%}{'<= 3%':>10}"
          f"  {'OK' if ok_append else 'MISSED'}")
    print(f"restore of the last snapshot equals the source: {'yes' if same else 'NO'}")
    return 0 if (same and ok_update and ok_append) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--doc-size", type=int, default=470)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
