"""The local spool: sealed slices waiting to be uploaded, in a directory, bounded in bytes.

A slice is sealed (encrypted) before it enters the spool, so the spool holds ciphertext only.
Each file is written to a temporary name and renamed (a slice in the spool is whole or
absent: a runner killed mid-write leaves a ``.tmp`` file that is removed at the next start).
File names sort in the order the slices were sealed; the uploader takes them in that order.
A slice that would take the spool past its limit is refused (``SpoolFull``): the caller
treats it as a break in the log. Files left by an earlier run are uploaded like new ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from drtool.errors import DrtoolError

SUFFIX = ".slice"


class SpoolFull(DrtoolError):
    """The spool has no room for one more slice."""


def _file_name(object_name: str) -> str:
    return f"{time.time_ns():020d}-{object_name.replace('/', '~')}{SUFFIX}"


def _object_name(file_name: str) -> str:
    return file_name[21:-len(SUFFIX)].replace("~", "/")


class Spool:
    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = Path(directory)
        self.limit = limit
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        self.size = sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}"))
        self._lock = asyncio.Lock()
        self.arrived = asyncio.Event()

    async def put(self, object_name: str, blob: bytes) -> None:
        """Add one sealed slice; raises SpoolFull when it does not fit or cannot be written."""
        async with self._lock:
            if self.size + len(blob) > self.limit:
                raise SpoolFull(f"the spool {self.directory} is full ({self.size} of "
                                f"{self.limit} bytes): the repository is not keeping up")
            try:
                await asyncio.to_thread(self._write, _file_name(object_name), blob)
            except OSError as err:  # a full or failing disk: the slice is not in the spool
                raise SpoolFull(f"cannot write to the spool {self.directory}: "
                                f"{err.strerror or err}") from None
            self.size += len(blob)
        self.arrived.set()

    def _write(self, file_name: str, blob: bytes) -> None:
        tmp = self.directory / (file_name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / file_name)

    def pending(self) -> list[tuple[Path, str]]:
        """(file, object name) of every spooled slice, oldest first."""
        files = sorted(p.name for p in self.directory.glob(f"*{SUFFIX}"))
        return [(self.directory / f, _object_name(f)) for f in files]

    async def remove(self, path: Path) -> None:
        size = path.stat().st_size
        await asyncio.to_thread(path.unlink, missing_ok=True)
        async with self._lock:
            self.size -= size
