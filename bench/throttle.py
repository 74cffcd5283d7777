"""Bench: achieved upload rate against the bandwidth limit.

For each limit, ``--writers`` concurrent tasks upload objects of ``--object-size`` bytes to a
local file:// storage in a temporary directory, through ``BandwidthLimitedStorage`` with one
shared ``ByteRateLimiter``, for ``--seconds`` seconds (each object is deleted once written, to
keep the disk use small). Two rates are reported:

* steady: the bytes of every completed put after the first, divided by the time between the
  first and the last completion (the rate the limiter sustains, independent of start-up);
* overall: all bytes completed divided by the time from the start to the last completion
  (includes the start-up burst of one period's budget, so it reads a little high on short runs).

The target is steady within +-5% of the limit.

    python bench/throttle.py                 # 30 s per limit: 1, 5, 20 MiB/s
    python bench/throttle.py --seconds 5     # quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drtool.storage.limiter import BandwidthLimitedStorage  # noqa: E402
from drtool.storage.local import LocalStorage  # noqa: E402
from drtool.util.throttle import LATENESS, PERIOD, ByteRateLimiter  # noqa: E402
from drtool.util.units import format_rate, parse_rate, parse_size  # noqa: E402


async def run_one(
    limit: float, seconds: float, writers: int, size: int, root: Path, lateness: float,
) -> dict:
    limiter = ByteRateLimiter(limit, lateness=lateness)
    storage = BandwidthLimitedStorage(LocalStorage(root), upload=limiter)
    payload = os.urandom(size)
    completions: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + seconds

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            name = f"bench/w{w}-{i}"
            await storage.put(name, payload)
            completions.append((time.monotonic(), size))
            await storage.delete(name)
            i += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))
    await storage.close()
    first, last = completions[0][0], completions[-1][0]
    after_first = sum(n for _, n in completions[1:])
    steady = after_first / (last - first) if last > first else float("nan")
    overall = sum(n for _, n in completions) / (last - start)
    return {
        "limit": limit, "steady": steady, "overall": overall, "puts": len(completions),
        "permits": limiter.permits_taken, "chunk": limiter.window.chunk,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="per limit (default 30; 5 is a quick run)")
    ap.add_argument("--limits", default="1MiB/s,5MiB/s,20MiB/s", help="comma-separated rates")
    ap.add_argument("--writers", type=int, default=4, help="concurrent writers (default 4)")
    ap.add_argument("--object-size", default="256KiB", help="bytes per put (default 256KiB)")
    ap.add_argument("--lateness", type=float, default=LATENESS,
                    help=f"throttler window shortening, for calibration (default {LATENESS})")
    args = ap.parse_args()
    limits = [parse_rate(t) for t in args.limits.split(",")]
    size = parse_size(args.object_size)
    print(f"# {args.seconds:g} s per limit, {args.writers} writers, {size} B objects, "
          f"period {PERIOD} s, lateness {args.lateness}, python {sys.version.split()[0]}")
    print(f"{'limit':>14} {'steady':>14} {'error':>8} {'overall':>14} {'error':>8} {'puts':>6}")
    worst = 0.0
    for limit in limits:
        if limit is None:
            continue
        with tempfile.TemporaryDirectory(prefix="drtool-bench-") as tmp:
            r = asyncio.run(run_one(limit, args.seconds, args.writers, size, Path(tmp),
                                     args.lateness))
        err_s = (r["steady"] / limit - 1) * 100
        err_o = (r["overall"] / limit - 1) * 100
        worst = max(worst, abs(err_s))
        print(f"{format_rate(limit):>14} {format_rate(r['steady']):>14} {err_s:>+7.2f}% "
              f"{format_rate(r['overall']):>14} {err_o:>+7.2f}% {r['puts']:>6}")
    print(f"# worst steady error {worst:.2f}% (target 5%): {'PASS' if worst <= 5 else 'FAIL'}")


if __name__ == "__main__":
    main()
