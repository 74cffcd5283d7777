"""A small shared thread pool for CPU work off the event loop (encoding, hashing, zstd, AEAD).

zstd and AES release the GIL, so two threads keep both cores busy next to the event loop.
A dedicated, small pool matters for memory: every thread that handles multi-megabyte buffers
gets its own glibc malloc arena, and with asyncio's default pool (up to cpu + 4 threads)
resident memory crept up with table size (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

CPU_THREADS = 2
_pool = ThreadPoolExecutor(max_workers=CPU_THREADS, thread_name_prefix="drtool-cpu")


async def run_cpu(fn: Callable[..., T], *args) -> T:
    """Run ``fn(*args)`` in the shared CPU pool and wait for it."""
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args))


SMALL = 64 * 1024  # inputs smaller than this are processed inline: a thread hop costs more


async def run_sized(fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` inline when the last argument is small, else in the CPU pool."""
    if len(args[-1]) >= SMALL:
        return await run_cpu(fn, *args)
    return fn(*args)
