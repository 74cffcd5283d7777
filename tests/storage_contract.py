"""The storage contract suite: every Storage backend and wrapper must pass it.

Use: subclass ``StorageContract`` in a ``test_*.py`` module as ``Test<Backend>`` and define a
``storage`` fixture returning a fresh, empty storage. The contract is in
drtool/storage/base.py; each test below checks one clause of it.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from drtool.errors import ObjectExists, ObjectNotFound, UsageError
from drtool.storage.base import ObjectInfo, Storage


async def names(storage: Storage, prefix: str = "") -> dict[str, int]:
    """The listing as {name: size}; fails if a name is listed twice."""
    found: dict[str, int] = {}
    async for info in storage.list(prefix):
        assert isinstance(info, ObjectInfo)
        assert info.name not in found, f"{info.name} listed twice"
        found[info.name] = info.size
    return found


class StorageContract:
    # --- put / get ----------------------------------------------------------------------
    async def test_roundtrip_small(self, storage: Storage) -> None:
        await storage.put("config", b"hello")
        assert await storage.get("config") == b"hello"

    async def test_roundtrip_empty_object(self, storage: Storage) -> None:
        await storage.put("empty", b"")
        assert await storage.get("empty") == b""
        assert (await storage.stat("empty")).size == 0
        assert await names(storage) == {"empty": 0}

    async def test_roundtrip_5_mib(self, storage: Storage) -> None:
        data = os.urandom(5 * 1024 * 1024 + 7)
        await storage.put("data/ab/big", data)
        assert await storage.get("data/ab/big") == data
        assert (await storage.stat("data/ab/big")).size == len(data)

    async def test_ranges_of_a_large_object(self, storage: Storage) -> None:
        # Larger than the read windows and blocks backends use (SFTP: 32 KiB blocks, 8 MiB).
        data = os.urandom(9 * 1024 * 1024 + 3)
        await storage.put("big", data)
        assert await storage.get("big") == data
        mib = 1024 * 1024
        for offset, length in [(8 * mib - 10, 20), (12345, 8 * mib + 100), (32767, 32770),
                               (9 * mib - 7, 100)]:
            assert await storage.get("big", offset, length) == data[offset:offset + length]
        assert await storage.get("big", 4 * mib + 1) == data[4 * mib + 1:]

    async def test_byte_ranges(self, storage: Storage) -> None:
        data = bytes(range(256)) * 4
        await storage.put("r", data)
        assert await storage.get("r", 0, 10) == data[:10]
        assert await storage.get("r", 100, 50) == data[100:150]
        assert await storage.get("r", 1000) == data[1000:]
        assert await storage.get("r", 1020, 100) == data[1020:]  # fewer bytes at the end
        assert await storage.get("r", 1024, 10) == b""  # exactly at the end
        assert await storage.get("r", 5000, 10) == b""  # past the end
        assert await storage.get("r", 5, 0) == b""

    async def test_stat_size(self, storage: Storage) -> None:
        await storage.put("a/b", b"x" * 1234)
        info = await storage.stat("a/b")
        assert info == ObjectInfo("a/b", 1234)
        assert await storage.exists("a/b")

    # --- write-once ---------------------------------------------------------------------
    async def test_put_same_content_is_a_noop(self, storage: Storage) -> None:
        await storage.put("k", b"same")
        await storage.put("k", b"same")
        assert await storage.get("k") == b"same"
        assert await names(storage) == {"k": 4}

    async def test_put_different_content_raises_and_keeps_original(self, storage: Storage) -> None:
        await storage.put("k", b"original")
        with pytest.raises(ObjectExists) as info:
            await storage.put("k", b"a different and longer content")
        assert "k" in str(info.value)
        assert await storage.get("k") == b"original"
        assert await names(storage) == {"k": 8}

    async def test_concurrent_puts_of_one_name_with_equal_content(self, storage: Storage) -> None:
        data = os.urandom(100_000)
        await asyncio.gather(*(storage.put("same/name", data) for _ in range(8)))
        assert await storage.get("same/name") == data
        assert await names(storage) == {"same/name": len(data)}

    # --- missing objects ----------------------------------------------------------------
    async def test_get_missing_raises_object_not_found(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound) as info:
            await storage.get("nope/missing")
        assert info.value.name == "nope/missing"

    async def test_stat_missing_raises_object_not_found(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.stat("missing")
        assert not await storage.exists("missing")

    async def test_a_directory_level_is_not_an_object(self, storage: Storage) -> None:
        await storage.put("dir/obj", b"x")
        with pytest.raises(ObjectNotFound):
            await storage.get("dir")
        with pytest.raises(ObjectNotFound):
            await storage.stat("dir")

    # --- delete -------------------------------------------------------------------------
    async def test_delete_is_idempotent(self, storage: Storage) -> None:
        await storage.put("d/x", b"1")
        await storage.delete("d/x")
        await storage.delete("d/x")
        await storage.delete("never/existed")
        with pytest.raises(ObjectNotFound):
            await storage.get("d/x")
        assert await names(storage) == {}

    async def test_put_after_delete_accepts_new_content(self, storage: Storage) -> None:
        await storage.put("lock", b"first")
        await storage.delete("lock")
        await storage.put("lock", b"second, longer")
        assert await storage.get("lock") == b"second, longer"

    # --- list ---------------------------------------------------------------------------
    async def test_list_with_prefixes(self, storage: Storage) -> None:
        objects = {
            "config": b"c",
            "data/aa/1111": b"11",
            "data/aa/1122": b"222",
            "data/ab/2222": b"4444",
            "data2/x": b"55555",
            "index/deep/er/still/x.json": b"666666",
        }
        for name, data in objects.items():
            await storage.put(name, data)
        sizes = {name: len(data) for name, data in objects.items()}

        def under(prefix: str) -> dict[str, int]:
            return {n: s for n, s in sizes.items() if n.startswith(prefix)}

        assert await names(storage) == sizes
        for prefix in ["data", "data/", "data/a", "data/aa/", "data/aa/11", "data/aa/1122",
                       "index/deep/", "conf", "config", "zzz", "data/zz/", "index/deep/er/still/x"]:
            assert await names(storage, prefix) == under(prefix), prefix

    async def test_list_empty_storage(self, storage: Storage) -> None:
        assert await names(storage) == {}
        assert await names(storage, "data/") == {}

    # --- concurrency --------------------------------------------------------------------
    async def test_concurrent_puts_of_many_objects(self, storage: Storage) -> None:
        objects = {f"data/{i % 7:02x}/obj{i:03d}": os.urandom(i * 97) for i in range(60)}
        await asyncio.gather(*(storage.put(n, d) for n, d in objects.items()))
        assert await names(storage) == {n: len(d) for n, d in objects.items()}
        got = await asyncio.gather(*(storage.get(n) for n in objects))
        assert dict(zip(objects, got)) == objects

    # --- names --------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "bad", ["", "/abs", "a//b", "a/", "../x", "a/../b", ".hidden", "a/.tmp-1", "a b", "é"]
    )
    async def test_invalid_names_are_rejected(self, storage: Storage, bad: str) -> None:
        with pytest.raises(UsageError):
            await storage.put(bad, b"x")
        assert await names(storage) == {}
