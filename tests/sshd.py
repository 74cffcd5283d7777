"""Fixtures for the storage tests: a real OpenSSH sshd on loopback, and a tiny filesystem.

``sshd_server`` (module scope) starts ``/usr/sbin/sshd -D`` with its own ed25519 host key and a
client key in authorized_keys; it listens on two ports: ``port`` (read-write internal-sftp)
and ``ro_port`` (``internal-sftp -R``, read-only, for permission-denied tests: root ignores
file modes). Skipped with the reason when sshd or ssh-keygen is missing. Test modules use
the fixtures by name: tests/conftest.py registers this module as a pytest plugin.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    """Make an unencrypted ed25519 key pair ``path`` / ``path.pub``; return ``path``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def fingerprint(pub: Path) -> str:
    """The SHA256 fingerprint as ssh-keygen prints it, e.g. ``SHA256:abc...``."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[1]


@dataclass
class SSHServer:
    dir: Path
    port: int
    ro_port: int
    host_key: Path
    client_key: Path
    known_hosts: Path
    user: str
    sftp_root: Path  # a directory for test repositories, served by this sshd
    host: str = "127.0.0.1"

    def known_hosts_line(self, port: int) -> str:
        return f"[{self.host}]:{port} {self.host_key.with_suffix('.pub').read_text().strip()}\n"

    def policy(self, path: Path | str, *, port: int | None = None, **changes) -> SimpleNamespace:
        """A repository-policy-like object for ``open_storage``/``SFTPStorage``."""
        port = port or self.port
        fields = dict(url=f"sftp://{self.user}@{self.host}:{port}{path}", scheme="sftp",
                      path=str(path), user=self.user, host=self.host, port=port,
                      identity_file=self.client_key, known_hosts=self.known_hosts)
        fields.update(changes)
        return SimpleNamespace(**fields)

    def storage_args(self, path: Path | str, **changes) -> dict:
        p = vars(self.policy(path, **changes))
        return {k: p[k] for k in ("host", "path", "user", "port", "identity_file", "known_hosts")}


def _wait_for_port(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not accept connections on port {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory):
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is missing: install openssh-server to run the SFTP tests")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing: install openssh-client to run the SFTP tests")
    d = tmp_path_factory.mktemp("sshd")
    port, ro_port = free_port(), free_port()
    host_key, client_key = keygen(d / "host"), keygen(d / "client")
    (d / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    sftp_root = d / "srv"
    sftp_root.mkdir()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nPort {ro_port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
        f"Match LocalPort {ro_port}\n  ForceCommand internal-sftp -R\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"sshd rejects the test config: {check.stderr.strip()}")
    log = d / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for_port(proc, port, log)
        _wait_for_port(proc, ro_port, log)
        server = SSHServer(d, port, ro_port, host_key, client_key, d / "known_hosts",
                           getpass.getuser(), sftp_root)
        server.known_hosts.write_text(server.known_hosts_line(port)
                                      + server.known_hosts_line(ro_port))
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def sftp_dir(sshd_server):
    """A fresh, empty directory served by ``sshd_server``."""
    return Path(tempfile.mkdtemp(prefix="repo-", dir=sshd_server.sftp_root))


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs, to run out of space for real; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small filesystem")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
