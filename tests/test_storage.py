"""The storage contract against every backend and wrapper, plus backend-specific failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from drtool.errors import (
    AuthError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageUnreachable,
    UsageError,
)
from drtool.storage import open_storage
from drtool.storage.local import STALE_TMP_SECONDS, LocalStorage
from drtool.storage.memory import MemoryStorage
from drtool.storage.retry import RetryingStorage
from tests.storage_contract import StorageContract, names

REPO_ROOT = Path(__file__).resolve().parent.parent


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        return MemoryStorage()


class TestLocalStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        return LocalStorage(tmp_path)


class TestSFTPStorage(StorageContract):
    @pytest.fixture
    async def storage(self, sshd_server, sftp_dir):
        from drtool.storage.sftp import SFTPStorage

        storage = SFTPStorage(**sshd_server.storage_args(sftp_dir))
        yield storage
        await storage.close()


class TestOpenedSFTPStorage(StorageContract):
    """What open_storage builds for sftp:// (retry around SFTP), against a real sshd."""

    @pytest.fixture
    async def storage(self, sshd_server, sftp_dir):
        storage = open_storage(sshd_server.policy(sftp_dir))
        assert isinstance(storage, RetryingStorage)
        yield storage
        await storage.close()


class TestRetryingStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        return RetryingStorage(LocalStorage(tmp_path))


# --- local: what only a directory can show ------------------------------------------------
def local_policy(path: Path) -> SimpleNamespace:
    return SimpleNamespace(url=f"file://{path}", scheme="file", path=str(path), user=None,
                           host=None, port=None, identity_file=None, known_hosts=None)


async def test_local_temp_files_are_never_listed_or_gettable(tmp_path):
    storage = LocalStorage(tmp_path)
    await storage.put("data/ab/obj", b"complete")
    partial = tmp_path / "data" / "ab" / ".tmp-0123456789abcdef"
    partial.write_bytes(b"half of an upl")
    assert await names(storage) == {"data/ab/obj": 8}
    with pytest.raises(UsageError):
        await storage.get("data/ab/.tmp-0123456789abcdef")
    assert partial.exists()  # young: may belong to an upload in progress


async def test_local_list_removes_stale_temp_files_only(tmp_path):
    storage = LocalStorage(tmp_path)
    await storage.put("data/obj", b"x")
    stale = tmp_path / "data" / ".tmp-stale"
    fresh = tmp_path / "data" / ".tmp-fresh"
    other = tmp_path / "data" / ".keep"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert await names(storage) == {"data/obj": 1}
    assert not stale.exists()
    assert fresh.exists() and other.exists()


async def test_local_put_leaves_no_temp_file(tmp_path):
    storage = LocalStorage(tmp_path)
    await storage.put("a/b", b"1")
    await storage.put("a/b", b"1")
    with pytest.raises(ObjectExists):
        await storage.put("a/b", b"2")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


async def test_local_detects_different_content_of_equal_size(tmp_path):
    storage = LocalStorage(tmp_path)
    await storage.put("k", b"aaaa")
    with pytest.raises(ObjectExists):
        await storage.put("k", b"bbbb")
    assert (tmp_path / "k").read_bytes() == b"aaaa"


def test_local_root_missing(tmp_path):
    with pytest.raises(StorageError, match="directory does not exist") as info:
        LocalStorage(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


async def test_local_file_in_the_way_of_a_directory(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "data").write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="a file is in the way") as info:
        await storage.put("data/ab/obj", b"x")
    assert "data/ab/obj" in str(info.value)
    with pytest.raises(ObjectNotFound):
        await storage.get("data/ab/obj")


_PUT_AS_NOBODY = """
import asyncio, os, sys
from drtool.storage.local import LocalStorage
from drtool.errors import DrtoolError
async def main(root):
    try:
        await LocalStorage(root).put("data/x", b"1")
    except DrtoolError as exc:
        print(type(exc).__name__, exc.retryable, exc, sep="|")
    else:
        print("no error")
asyncio.run(main(sys.argv[1]))  # warm up every lazy import before dropping privileges
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
asyncio.run(main(sys.argv[2]))
"""


def test_local_permission_denied_is_a_clear_permanent_error():
    # Root ignores directory modes, so the child drops to uid 65534 after importing drtool.
    base = Path(tempfile.mkdtemp(prefix="drtool-perm-"))
    try:
        base.chmod(0o755)
        (base / "warm").mkdir()
        readonly = base / "readonly"
        readonly.mkdir(mode=0o555)
        readonly.chmod(0o555)
        out = subprocess.run(
            [sys.executable, "-c", _PUT_AS_NOBODY, str(base / "warm"), str(readonly)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        assert out.returncode == 0, out.stderr
        warm, denied = out.stdout.splitlines()
        assert warm == "no error"
        kind, retryable, message = denied.split("|")
        assert (kind, retryable) == ("StorageError", "False")
        assert "permission denied writing data/x" in message
        assert str(readonly) in message and "owner and mode" in message
    finally:
        shutil.rmtree(base)


async def test_local_disk_full_leaves_no_partial_object(tiny_filesystem):
    storage = LocalStorage(tiny_filesystem)
    await storage.put("small", b"fits")
    with pytest.raises(StorageError, match="disk full writing data/big") as info:
        await storage.put("data/big", os.urandom(1024 * 1024))
    assert not info.value.retryable
    assert await names(storage) == {"small": 4}
    assert os.listdir(tiny_filesystem / "data") == []  # the temp file is gone too


# --- open_storage ---------------------------------------------------------------------------
async def test_open_storage_file(tmp_path):
    storage = open_storage(local_policy(tmp_path))
    assert isinstance(storage, LocalStorage)
    assert storage.location == f"file://{tmp_path}"
    await storage.put("x", b"1")
    assert (tmp_path / "x").read_bytes() == b"1"


def test_open_storage_file_missing_without_create(tmp_path):
    with pytest.raises(StorageError, match="directory does not exist"):
        open_storage(local_policy(tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_open_storage_file_create(tmp_path):
    storage = open_storage(local_policy(tmp_path / "repo"), create=True)
    assert (tmp_path / "repo").is_dir()
    assert storage.location == f"file://{tmp_path / 'repo'}"


def test_open_storage_file_create_needs_the_parent(tmp_path):
    with pytest.raises(StorageError, match="parent directory .* does not exist"):
        open_storage(local_policy(tmp_path / "no" / "repo"), create=True)


def test_open_storage_unknown_scheme():
    policy = SimpleNamespace(url="ftp://host/x", scheme="ftp", path="/x")
    with pytest.raises(UsageError, match="unsupported repository scheme"):
        open_storage(policy)


# --- retry ----------------------------------------------------------------------------------
class Flaky(MemoryStorage):
    """A memory storage whose next ``failures`` calls raise ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures, self.error, self.calls = failures, error, 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error

    async def put(self, name, data):
        self._maybe_fail()
        await super().put(name, data)

    async def get(self, name, offset=0, length=None):
        self._maybe_fail()
        return await super().get(name, offset, length)

    async def list(self, prefix=""):
        async for info in super().list(prefix):
            yield info
            self._maybe_fail()  # fails after yielding the first object


def retrying(inner, attempts=5):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    return RetryingStorage(inner, attempts=attempts, base_delay=1, max_delay=3, sleep=record), waits


async def test_retry_repeats_unreachable_until_success():
    inner = Flaky(3, StorageUnreachable("sftp://h/r: connection lost"))
    storage, waits = retrying(inner)
    await storage.put("a", b"1")
    assert inner.calls == 4 and inner.objects == {"a": b"1"}
    assert len(waits) == 3
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2 and 1.5 <= waits[2] <= 3  # capped


@pytest.mark.parametrize("error", [StorageError("permission denied"), AuthError("key refused"),
                                   ObjectNotFound("a")])
async def test_retry_never_repeats_permanent_errors(error):
    inner = Flaky(1, error)
    storage, waits = retrying(inner)
    with pytest.raises(type(error)):
        await storage.get("a")
    assert inner.calls == 1 and waits == []


async def test_retry_gives_up_after_attempts():
    inner = Flaky(10, StorageUnreachable("sftp://h/r: timed out"))
    storage, waits = retrying(inner, attempts=3)
    with pytest.raises(StorageUnreachable, match="timed out .gave up after 3 tries.$"):
        await storage.put("a", b"1")
    assert inner.calls == 3 and len(waits) == 2


async def test_retry_restarts_list_without_duplicates():
    inner = Flaky(0, StorageUnreachable("sftp://h/r: connection lost"))
    for i in range(3):
        await inner.put(f"o{i}", b"x")
    inner.failures = 2
    storage, waits = retrying(inner)
    assert await names(storage) == {"o0": 1, "o1": 1, "o2": 1}
    assert len(waits) == 2


async def test_retry_after_a_put_that_completed_is_a_noop():
    # The first try stores the object then loses the reply: the retry must succeed.
    class LostReply(MemoryStorage):
        lost = False

        async def put(self, name, data):
            await super().put(name, data)
            if not self.lost:
                self.lost = True
                raise StorageUnreachable("connection lost after the write")

    storage, waits = retrying(LostReply())
    await storage.put("a", b"payload")
    assert storage.inner.objects == {"a": b"payload"} and len(waits) == 1
