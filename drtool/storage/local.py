"""Local directory storage (``file://``): object ``a/b/c`` is the file ``<root>/a/b/c``.

Write-once atomicity without a lock: ``put`` writes ``.tmp-<random>`` in the target directory,
fsyncs it, then publishes it with ``os.link(tmp, final)``. ``link`` creates the final name
atomically and fails if it already exists (unlike ``rename``, which would silently replace
it), so two writers racing on one name cannot overwrite each other: the loser compares its
bytes with the winner's. The directory is fsynced afterwards so the new name survives a
crash. Readers never see a partial object: a name exists only once its content is complete.

Requires a filesystem with hard links (ext4, xfs, btrfs, zfs, NFS); on one without (FAT,
some FUSE mounts) ``put`` reports a StorageError saying so.

Blocking file I/O runs in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat as stat_mod
import time
from collections.abc import AsyncIterator
from pathlib import Path

from drtool.errors import ObjectExists, ObjectNotFound, StorageError, StorageUnreachable
from drtool.storage.base import ObjectInfo, Storage, check_name

TMP_PREFIX = ".tmp-"
#: Temporary files older than this are leftovers of an interrupted put; ``list`` removes them.
STALE_TMP_SECONDS = 3600
_CHUNK = 1 << 20
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


class LocalStorage(Storage):
    """Objects as files below ``root``, which must be an existing directory.

    Raises StorageError at construction if ``root`` is not a directory. Every method follows
    the ``Storage`` contract; OS errors are translated: permission denied and disk full are
    StorageError (not retryable), a timed-out network filesystem is StorageUnreachable.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self.location = f"file://{self.root}"
        if not self.root.is_dir():
            raise StorageError(f"{self.location}: directory does not exist")

    # --- helpers ------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def _error(self, exc: OSError, name: str, doing: str) -> Exception:
        """Translate an OSError raised while ``doing`` (a verb) object ``name``."""
        code = exc.errno
        if isinstance(exc, PermissionError):
            return StorageError(
                f"{self.location}: permission denied {doing} {name}: "
                "check the directory's owner and mode"
            )
        if code in (errno.ENOSPC, errno.EDQUOT):
            return StorageError(f"{self.location}: disk full {doing} {name}: free some space")
        if code == errno.EROFS:
            return StorageError(f"{self.location}: read-only filesystem {doing} {name}")
        if code in (errno.ETIMEDOUT, errno.ESTALE, errno.ENOTCONN):
            return StorageUnreachable(
                f"{self.location}: {doing} {name} failed ({exc.strerror}): "
                "check the mount and try again"
            )
        if isinstance(exc, (NotADirectoryError, FileExistsError)):
            return StorageError(
                f"{self.location}: cannot create the directory for {name}: "
                "a file is in the way of its path"
            )
        return StorageError(f"{self.location}: {doing} {name} failed: {exc.strerror or exc}")

    # --- put ----------------------------------------------------------------------------
    async def put(self, name: str, data: bytes) -> None:
        """Atomic, write-once; equal content is a no-op, different content ObjectExists."""
        path = self._path(name)
        await asyncio.to_thread(self._put, name, path, data)

    def _put(self, name: str, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, name, "writing") from None
        tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            try:
                self._write_tmp(tmp, data)
            except OSError as exc:
                raise self._error(exc, name, "writing") from None
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not self._same_content(name, path, data):
                    raise ObjectExists(name, self.location) from None
                return
            except OSError as exc:
                if exc.errno in _NO_LINKS and not isinstance(exc, PermissionError):
                    raise StorageError(
                        f"{self.location}: the filesystem does not support hard links, "
                        "needed for write-once objects: use another filesystem"
                    ) from None
                raise self._error(exc, name, "writing") from None
            self._fsync_dir(path.parent, name)
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass  # never created, or already gone; a leftover is cleaned by list()

    @staticmethod
    def _write_tmp(tmp: Path, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view[:_CHUNK])
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _same_content(self, name: str, path: Path, data: bytes) -> bool:
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size != len(data):
                    return False
                return f.read() == data
        except OSError as exc:
            raise self._error(exc, name, "reading") from None

    def _fsync_dir(self, directory: Path, name: str) -> None:
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError as exc:
            raise self._error(exc, name, "writing") from None
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # some filesystems cannot fsync a directory
                raise self._error(exc, name, "writing") from None
        finally:
            os.close(fd)

    # --- reads --------------------------------------------------------------------------
    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Whole object or a byte range (fewer bytes at the end). Raises ObjectNotFound."""
        path = self._path(name)
        return await asyncio.to_thread(self._get, name, path, offset, length)

    def _get(self, name: str, path: Path, offset: int, length: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read(-1 if length is None else length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(name, self.location) from None
        except OSError as exc:
            raise self._error(exc, name, "reading") from None

    async def stat(self, name: str) -> ObjectInfo:
        """Return the object's size. Raises ObjectNotFound."""
        path = self._path(name)
        return await asyncio.to_thread(self._stat, name, path)

    def _stat(self, name: str, path: Path) -> ObjectInfo:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(name, self.location) from None
        except OSError as exc:
            raise self._error(exc, name, "reading") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(name, self.location)
        return ObjectInfo(name, st.st_size)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every complete object under ``prefix``; removes temp files older than an hour."""
        for info in await asyncio.to_thread(self._list, prefix):
            yield info

    def _list(self, prefix: str) -> list[ObjectInfo]:
        # Start the walk at the deepest directory the prefix names, when it is a valid one.
        head = prefix.rpartition("/")[0]
        try:
            start = self._path(head) if head else self.root
        except Exception:  # not a valid name, so nothing can match below it
            return []
        found: list[ObjectInfo] = []
        stale_before = time.time() - STALE_TMP_SECONDS
        pending = [(start, head + "/" if head else "")]
        while pending:
            directory, rel = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise self._error(exc, rel or "/", "listing") from None
            for entry in entries:
                if entry.name.startswith("."):
                    self._clean_stale(entry, stale_before)
                    continue
                name = rel + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if name.startswith(prefix) or prefix.startswith(name + "/"):
                            pending.append((Path(entry.path), name + "/"))
                    elif entry.is_file(follow_symlinks=False) and name.startswith(prefix):
                        found.append(ObjectInfo(name, entry.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:
                    continue  # deleted while listing
        return found

    @staticmethod
    def _clean_stale(entry: os.DirEntry, stale_before: float) -> None:
        if not entry.name.startswith(TMP_PREFIX):
            return
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < stale_before:
                os.unlink(entry.path)
        except OSError:
            pass  # best effort: another process may be cleaning too

    # --- delete -------------------------------------------------------------------------
    async def delete(self, name: str) -> None:
        """Remove the object; a missing one is not an error (idempotent)."""
        path = self._path(name)
        await asyncio.to_thread(self._delete, name, path)

    def _delete(self, name: str, path: Path) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a directory is not an object: nothing of that name to delete
        except OSError as exc:
            raise self._error(exc, name, "deleting") from None
