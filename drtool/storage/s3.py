"""S3 storage (``s3://bucket/prefix``): AWS S3 and S3-compatible servers (MinIO, Ceph RGW, R2,
B2, ...). Object ``a/b`` is the key ``prefix/a/b``. boto3 is used only through
``drtool.storage.s3_client``; its blocking calls run in a small bounded thread pool.

Write-once ``put``: a PUT with ``If-None-Match: *`` (the server refuses it with 412 when the
key exists; then equal size is a no-op, another size ObjectExists). Whether the server honours
that header is probed once per process, on the first write (a throw-away ``.drtool-probe-*``
key, never listed). Where it does not, drtool does HEAD then PUT: two writers racing on one
name between the HEAD and the PUT both succeed and the later one wins. drtool's names make
that harmless (data and index names are hashes of their content; manifests, keys and locks
have random names), except two ``drtool init`` racing on one empty prefix. Objects over
``MULTIPART_THRESHOLD`` go up in parts: nothing is visible before the completion, a failed
upload is aborted, and the first ``list`` of a process aborts uploads older than an hour.

Object Lock (``retention`` seconds, the policy's ``object_lock``): every object is written in
COMPLIANCE mode, retained until now + retention, except names under ``unretained`` (the
repository's lock objects, rewritten every few minutes). ``delete`` then HEADs first: an
object still retained raises ObjectRetained without any DELETE being sent; else the exact
version is deleted (no delete marker is left in the versioned bucket).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from drtool.errors import DrtoolError, ObjectExists, ObjectNotFound, ObjectRetained
from drtool.storage.base import ObjectInfo, Storage, check_name
from drtool.storage.local import STALE_TMP_SECONDS
from drtool.storage.s3_client import PreconditionFailed, S3Client

log = logging.getLogger("drtool.storage")
T = TypeVar("T")
MULTIPART_THRESHOLD = 8 << 20  # objects above this size go up in parts of PART_SIZE
PART_SIZE = 8 << 20  # S3 requires >= 5 MiB for every part but the last
PROBE_PREFIX = ".drtool-probe-"


class S3Storage(Storage):
    """Objects under ``prefix`` in ``bucket`` (see the module docstring).

    Nothing is contacted until the first operation. Errors: AuthError (credentials refused or
    missing, access denied), RepositoryError (bucket missing: names it and how to create it;
    Object Lock off while ``retention`` is set), StorageUnreachable (network, server 5xx;
    retryable), StorageError (clock skew and the rest), ObjectNotFound, ObjectExists,
    ObjectRetained."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, addressing: str = "virtual",
                 storage_class: str | None = None, retention: float | None = None,
                 unretained: tuple[str, ...] = (), connections: int = 8,
                 timeout: float = 60.0, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        prefix = prefix.strip("/")
        self.root = prefix + "/" if prefix else ""
        self.location = f"s3://{bucket}/{prefix}"
        self.retention = retention
        self.storage_class = storage_class
        self.unretained = unretained
        self.part_size, self.multipart_threshold = part_size, multipart_threshold
        self.client = S3Client(bucket, self.location, endpoint=endpoint, region=region,
                               addressing=addressing, connections=connections, timeout=timeout)
        self._connections = connections
        self._slots = asyncio.Semaphore(connections)
        self._pool: ThreadPoolExecutor | None = None
        self._conditional: bool | None = None  # does the server honour If-None-Match: *?
        self._probe_lock = asyncio.Lock()
        self._stale_checked = False

    # --- running blocking calls -------------------------------------------------------------
    async def _run(self, op: Callable[..., T], *args) -> T:
        async with self._slots:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._connections, thread_name_prefix="drtool-s3")
            return await asyncio.get_running_loop().run_in_executor(self._pool, op, *args)

    def _key(self, name: str) -> str:
        return self.root + check_name(name)

    async def conditional_writes(self) -> bool:
        """Whether the server refuses ``If-None-Match: *`` on an existing key (probed once)."""
        async with self._probe_lock:
            if self._conditional is None:
                probe = self.root + PROBE_PREFIX + secrets.token_hex(8)
                self._conditional = await self._run(self.client.supports_if_none_match, probe)
                if not self._conditional:
                    log.info("%s: %s", self.location, NO_CONDITIONAL_NOTE)
            return self._conditional

    # --- put --------------------------------------------------------------------------------
    async def put(self, name: str, data: bytes) -> None:
        """Atomic, write-once; an existing name of equal size is a no-op (module docstring)."""
        key = self._key(name)
        conditional = await self.conditional_writes()
        multipart = len(data) > self.multipart_threshold
        if (not conditional or multipart) and await self._same_or_exists(name, key, len(data)):
            return
        retain = None
        if self.retention and not name.startswith(self.unretained):
            retain = datetime.now(UTC) + timedelta(seconds=self.retention)
        try:
            if multipart:
                await self._run(lambda: self.client.put_multipart(
                    key, name, data, self.part_size, if_none_match=conditional,
                    retain_until=retain, storage_class=self.storage_class))
            else:
                await self._run(lambda: self.client.put(
                    key, name, data, if_none_match=conditional, retain_until=retain,
                    storage_class=self.storage_class))
        except PreconditionFailed:
            if not await self._same_or_exists(name, key, len(data)):
                raise ObjectExists(name, self.location) from None  # gone again meanwhile

    async def _same_or_exists(self, name: str, key: str, size: int) -> bool:
        """True if ``name`` holds ``size`` bytes; ObjectExists for another size; else False."""
        try:
            head = await self._run(self.client.head, key, name)
        except ObjectNotFound:
            return False
        if head.size != size:
            raise ObjectExists(name, self.location)
        return True

    # --- reads ------------------------------------------------------------------------------
    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Whole object or a byte range (fewer bytes at the end). Raises ObjectNotFound."""
        key = self._key(name)
        if length == 0:
            await self.stat(name)  # still ObjectNotFound for a missing name
            return b""
        return await self._run(self.client.get, key, name, offset, length)

    async def stat(self, name: str) -> ObjectInfo:
        """Size, time written and Object Lock date. Raises ObjectNotFound."""
        head = await self._run(self.client.head, self._key(name), name)
        return ObjectInfo(name, head.size, head.modified, head.retain_until)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every complete object under ``prefix``, a page (up to 1000) at a time; never probe
        keys nor uploads in progress. The first call aborts stale multipart uploads."""
        if not self._stale_checked:
            self._stale_checked = True
            await self._abort_stale()
        token: str | None = None
        while True:
            page, token = await self._run(self.client.list_page, self.root + prefix, token)
            for key, size, modified in page:
                name = key[len(self.root):]
                try:
                    check_name(name)
                except DrtoolError:
                    continue  # not drtool's: a probe, a console's "folder/" marker
                yield ObjectInfo(name, size, modified)
            if token is None:
                return

    async def _abort_stale(self) -> None:
        before = datetime.now(UTC) - timedelta(seconds=STALE_TMP_SECONDS)
        try:
            aborted = await self._run(self.client.abort_stale_uploads, self.root, before)
        except DrtoolError as exc:  # e.g. no s3:ListBucketMultipartUploads: not needed to go on
            log.warning("%s: could not look for interrupted uploads: %s", self.location, exc)
            return
        if aborted:
            log.info("%s: aborted %d interrupted multipart uploads", self.location, aborted)

    # --- delete -----------------------------------------------------------------------------
    async def delete(self, name: str) -> None:
        """Remove the object; a missing one is not an error (idempotent). With Object Lock:
        ObjectRetained while retained (no DELETE is sent), else its version is deleted."""
        key = self._key(name)
        if not self.retention:
            await self._run(self.client.delete, key, name)
            return
        try:
            head = await self._run(self.client.head, key, name)
        except ObjectNotFound:
            return
        if head.retain_until is not None and head.retain_until > datetime.now(UTC):
            until = head.retain_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise ObjectRetained(name, until, self.location)
        await self._run(self.client.delete, key, name, head.version_id)

    async def extend_retention(self, name: str) -> bool:
        """Object Lock: when the object's retention ends within half of ``retention`` from now,
        move it to now + ``retention`` (one HEAD, and one PutObjectRetention when extended)."""
        if not self.retention:
            return False
        head = await self._run(self.client.head, self._key(name), name)
        now = datetime.now(UTC)
        if head.retain_until is not None and \
                head.retain_until > now + timedelta(seconds=self.retention / 2):
            return False
        until = now + timedelta(seconds=self.retention)
        await self._run(self.client.put_retention, self._key(name), name, head.version_id, until)
        return True

    # --- the bucket -------------------------------------------------------------------------
    async def check(self) -> list[str]:
        """The bucket exists (else RepositoryError naming it and how to create it), has Object
        Lock enabled when ``retention`` is set, and honours If-None-Match (else a note)."""
        await self._run(self.client.check_bucket)
        if self.retention and not await self._run(self.client.object_lock_enabled):
            raise self.client.lock_disabled()
        return [] if await self.conditional_writes() else [NO_CONDITIONAL_NOTE]

    async def close(self) -> None:
        """Shut the thread pool and the client's connections. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        self.client.close()


NO_CONDITIONAL_NOTE = (
    "this server ignores conditional writes (If-None-Match: *): drtool checks with a HEAD "
    "before each PUT instead; harmless for drtool's content-hashed and random names, but two "
    "drtool init racing on one prefix could both succeed")
