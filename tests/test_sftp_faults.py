"""SFTP storage against a real sshd when things go wrong: cut connections, refused keys,
unknown or changed host keys, read-only and full remote filesystems."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from drtool.errors import AuthError, StorageError, StorageUnreachable
from drtool.storage import open_storage
from drtool.storage.retry import RetryingStorage
from drtool.storage.sftp import SFTPStorage
from tests.sshd import fingerprint, free_port, keygen
from tests.storage_contract import names
from tests.tcp_proxy import Connection, TcpProxy


class CuttingProxy(TcpProxy):
    """A loopback TCP proxy to sshd that aborts the first connection after ``cut_after``
    bytes went from client to server (a network drop in the middle of an upload)."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        super().__init__(target_port)
        self.cut_after, self.cuts = cut_after, 0
        self.first: Connection | None = None

    async def __aenter__(self) -> "CuttingProxy":
        await self.listen()
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    def upstream(self, conn: Connection) -> bool:
        self.first = self.first or conn
        if conn is self.first and conn.sent >= self.cut_after and not self.cuts:
            self.cuts += 1
            conn.abort()
            return True
        return False


def no_wait_retry(inner, attempts=5):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    return RetryingStorage(inner, attempts=attempts, sleep=record), waits


# --- connection cut in the middle of an upload ----------------------------------------------
async def test_cut_upload_is_retried_and_no_partial_object_is_visible(sshd_server, sftp_dir):
    data = os.urandom(8 * 1024 * 1024)
    async with CuttingProxy(sshd_server.port, cut_after=2 * 1024 * 1024) as proxy:
        known = sftp_dir.parent / f"known_hosts_{proxy.port}"
        known.write_text(sshd_server.known_hosts_line(proxy.port))
        inner = SFTPStorage(**sshd_server.storage_args(sftp_dir, port=proxy.port,
                                                       known_hosts=known))
        storage, waits = no_wait_retry(inner)
        try:
            await storage.put("data/ab/big", data)
            assert proxy.cuts == 1 and proxy.connections == 2 and len(waits) == 1
            assert await names(storage) == {"data/ab/big": len(data)}
            assert await storage.get("data/ab/big") == data
        finally:
            await storage.close()
    leftovers = [p for p in (sftp_dir / "data" / "ab").iterdir() if p.name != "big"]
    assert [p.name[:5] for p in leftovers] == [".tmp-"]  # the cut upload, never listed
    assert leftovers[0].stat().st_size < len(data)


async def test_cut_without_retry_is_unreachable_then_reconnects(sshd_server, sftp_dir):
    async with CuttingProxy(sshd_server.port, cut_after=1024 * 1024) as proxy:
        known = sftp_dir.parent / f"known_hosts_{proxy.port}"
        known.write_text(sshd_server.known_hosts_line(proxy.port))
        storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, port=proxy.port,
                                                         known_hosts=known))
        try:
            with pytest.raises(StorageUnreachable, match="try again") as info:
                await storage.put("big", os.urandom(4 * 1024 * 1024))
            assert info.value.retryable
            assert await names(storage) == {}  # lazily reconnected
            await storage.put("small", b"after the drop")
            assert await storage.get("small") == b"after the drop"
            assert proxy.connections == 2
        finally:
            await storage.close()


async def test_server_down_is_unreachable(sshd_server, sftp_dir):
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, port=free_port()))
    with pytest.raises(StorageUnreachable, match="cannot connect"):
        await storage.stat("x")


# --- host keys ------------------------------------------------------------------------------
async def test_unknown_host_key_is_refused_with_its_fingerprint(sshd_server, sftp_dir, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, known_hosts=known))
    retrying, waits = no_wait_retry(storage)
    with pytest.raises(AuthError) as info:
        await retrying.put("x", b"1")
    message = str(info.value)
    assert fingerprint(sshd_server.host_key.with_suffix(".pub")) in message
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1 >> {known}" in message
    assert known.read_text() == "" and waits == []  # never added, never retried
    assert not (sftp_dir / "x").exists()


async def test_changed_host_key_is_refused_with_both_fingerprints(sshd_server, sftp_dir,
                                                                  tmp_path):
    other = keygen(tmp_path / "impostor").with_suffix(".pub")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {other.read_text()}")
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, known_hosts=known))
    with pytest.raises(AuthError, match="HOST KEY CHANGED") as info:
        await storage.stat("x")
    assert fingerprint(other) in str(info.value)
    assert fingerprint(sshd_server.host_key.with_suffix(".pub")) in str(info.value)


# --- client keys ----------------------------------------------------------------------------
async def test_wrong_client_key_is_refused(sshd_server, sftp_dir, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, identity_file=stranger))
    retrying, waits = no_wait_retry(storage)
    with pytest.raises(AuthError, match=f"refused key {stranger}") as info:
        await retrying.put("x", b"1")
    assert info.value.exit_code == 4 and waits == []


async def test_identity_file_readable_by_others_is_refused(sshd_server, sftp_dir, tmp_path):
    loose = tmp_path / "loose"
    shutil.copy(sshd_server.client_key, loose)
    loose.chmod(0o644)
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, identity_file=loose))
    with pytest.raises(AuthError, match=f"mode 0644.*run chmod 600 {loose}$"):
        await storage.stat("x")


async def test_no_identity_file_and_no_agent(sshd_server, sftp_dir, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, identity_file=None))
    with pytest.raises(AuthError, match="no key in the SSH agent"):
        await storage.stat("x")


@pytest.fixture
def ssh_agent(tmp_path, sshd_server, monkeypatch):
    """An ssh-agent holding the client key, as SSH_AUTH_SOCK."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent/ssh-add missing: install openssh-client")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists() or agent.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(sshd_server.client_key)], env=env, check=True,
                       capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        agent.terminate()
        agent.wait()


async def test_agent_key_is_used_without_identity_file(sshd_server, sftp_dir, ssh_agent):
    storage = open_storage(sshd_server.policy(sftp_dir, identity_file=None))
    try:
        await storage.put("via-agent", b"ok")
        assert (sftp_dir / "via-agent").read_bytes() == b"ok"
    finally:
        await storage.close()


# --- remote filesystem ----------------------------------------------------------------------
async def test_read_only_remote_is_permission_denied_and_not_retried(sshd_server, sftp_dir):
    (sftp_dir / "existing").write_bytes(b"readable")
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir, port=sshd_server.ro_port))
    retrying, waits = no_wait_retry(storage)
    try:
        assert await retrying.get("existing") == b"readable"
        with pytest.raises(StorageError, match="permission denied writing data/x") as info:
            await retrying.put("data/x", b"1")
        assert not info.value.retryable and waits == []
        with pytest.raises(StorageError, match="permission denied deleting existing"):
            await retrying.delete("existing")
    finally:
        await retrying.close()
    assert sorted(os.listdir(sftp_dir)) == ["existing"]


async def test_remote_disk_full_is_a_permanent_error_without_leftovers(sshd_server,
                                                                       tiny_filesystem):
    storage = SFTPStorage(**sshd_server.storage_args(tiny_filesystem))
    try:
        await storage.put("small", b"fits")
        with pytest.raises(StorageError, match="writing big failed on the server") as info:
            await storage.put("big", os.urandom(1024 * 1024))
        assert not info.value.retryable
        assert await names(storage) == {"small": 4}
    finally:
        await storage.close()
    assert os.listdir(tiny_filesystem) == ["small"]


async def test_missing_remote_directory(sshd_server, sftp_dir):
    storage = SFTPStorage(**sshd_server.storage_args(sftp_dir / "nope"))
    with pytest.raises(StorageError, match="directory does not exist"):
        await storage.stat("x")
    created = open_storage(sshd_server.policy(sftp_dir / "new"), create=True)
    try:
        await created.put("config", b"1")
    finally:
        await created.close()
    assert (sftp_dir / "new" / "config").read_bytes() == b"1"
    deep = SFTPStorage(**sshd_server.storage_args(sftp_dir / "a" / "b"), create=True)
    with pytest.raises(StorageError, match="its parent directory does not exist"):
        await deep.stat("x")
