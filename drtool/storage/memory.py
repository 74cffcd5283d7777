"""In-memory storage, for tests and benches. Implements the Storage contract exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator

from drtool.errors import ObjectExists, ObjectNotFound
from drtool.storage.base import ObjectInfo, Storage, check_name


class MemoryStorage(Storage):
    def __init__(self, location: str = "memory://") -> None:
        self.location = location
        self.objects: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        check_name(name)
        existing = self.objects.get(name)
        if existing is not None:
            if existing != data:
                raise ObjectExists(name, self.location)
            return
        self.objects[name] = bytes(data)

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.objects[name]
        except KeyError:
            raise ObjectNotFound(name, self.location) from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    async def stat(self, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(name, len(self.objects[name]))
        except KeyError:
            raise ObjectNotFound(name, self.location) from None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for name, data in list(self.objects.items()):
            if name.startswith(prefix):
                yield ObjectInfo(name, len(data))

    async def delete(self, name: str) -> None:
        self.objects.pop(name, None)
