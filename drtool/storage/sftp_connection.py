"""The SSH connection behind SFTP storage: authentication, host keys, a pool of SFTP channels.

Part of the SFTP storage (``drtool.storage.sftp``), and the only module importing paramiko.

Security: key authentication only, from ``identity_file`` (refused if group/other can read it)
or else the SSH agent. The host key must already be in ``known_hosts`` (~/.ssh/known_hosts by
default): unknown or changed keys are AuthErrors showing fingerprints, never added.

Pool: one SSH connection, SFTP channels opened on it as needed and reused; each channel is
used by one thread at a time (``checkout``/``checkin``). After a connection error the whole
connection is dropped; the next ``checkout`` reconnects. Every method is thread-safe.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paramiko

from drtool.errors import AuthError, DrtoolError, StorageUnreachable

#: The paramiko types drtool.storage.sftp works with (it does not import paramiko itself).
SFTPClient, SFTPFile = paramiko.SFTPClient, paramiko.SFTPFile
SFTPAttributes = paramiko.SFTPAttributes

_WINDOW = 16 << 20  # bytes in flight per channel: throughput ~ window / round-trip time
#: What a lost connection raises (socket.timeout is TimeoutError; SFTP status errors are plain
#: OSError and are classified by errno or by whether the transport is still alive).
CONNECTION_LOST = (EOFError, TimeoutError, ConnectionError, paramiko.SSHException)
ANY_FAILURE = (OSError, EOFError, paramiko.SSHException)


def close_quietly(thing: paramiko.SFTPClient | paramiko.SSHClient) -> None:
    try:
        thing.close()
    except ANY_FAILURE:
        pass  # the connection is already gone


class _UnknownHostKey(Exception):
    def __init__(self, key: paramiko.PKey) -> None:
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(key)


class SFTPConnection:
    """The connection of one SFTP storage; ``location`` (its URL) prefixes every message.

    Nothing is contacted until the first ``checkout``. It raises AuthError (identity file,
    agent, known_hosts, host key, refused key) or StorageUnreachable (network; retryable)."""

    def __init__(self, host: str, port: int, user: str, location: str,
                 identity_file: Path | None, known_hosts: Path, timeout: float) -> None:
        self.host, self.port, self.user, self.location = host, port, user, location
        self.identity_file, self.known_hosts, self.timeout = identity_file, known_hosts, timeout
        self._lock = threading.Lock()
        self._ssh: paramiko.SSHClient | None = None
        self._idle: list[paramiko.SFTPClient] = []

    def alive(self) -> bool:
        """Whether the SSH transport is up (as far as paramiko knows)."""
        transport = self._ssh.get_transport() if self._ssh else None
        return bool(transport and transport.is_active())

    def checkout(self) -> paramiko.SFTPClient:
        """An SFTP channel for this thread alone, connecting first if needed."""
        with self._lock:
            if not self.alive():
                self._disconnect()
                self._connect()
            if self._idle:
                return self._idle.pop()
            transport = self._ssh.get_transport()
        sftp = paramiko.SFTPClient.from_transport(transport, window_size=_WINDOW)
        sftp.get_channel().settimeout(self.timeout)
        return sftp

    def checkin(self, sftp: paramiko.SFTPClient, healthy: bool) -> None:
        """Return a channel to the pool; after a connection error drop the whole connection
        (its transport may not have noticed yet) so that the next operation reconnects."""
        with self._lock:
            current = self._ssh is not None and (
                self._ssh.get_transport() is sftp.get_channel().get_transport())
            if healthy and current and self.alive():
                self._idle.append(sftp)
                return
            if not healthy and current:
                self._disconnect()
        close_quietly(sftp)

    def close(self) -> None:
        """Close every channel and the connection. Idempotent; a later checkout reconnects."""
        with self._lock:
            self._disconnect()

    def unreachable(self, exc: BaseException, doing: str = "", name: str = "") -> DrtoolError:
        """The StorageUnreachable for ``exc``, lost while ``doing`` object ``name`` (or while
        connecting, when ``doing`` is empty)."""
        reason = str(exc) or type(exc).__name__
        what = f"connection lost {doing} {name}" if doing else "cannot connect"
        return StorageUnreachable(
            f"{self.location}: {what} ({reason}): check the server and network, then try again"
        )

    def _disconnect(self) -> None:
        idle, self._idle, ssh, self._ssh = self._idle, [], self._ssh, None
        for sftp in idle:
            close_quietly(sftp)
        if ssh is not None:
            close_quietly(ssh)

    def _connect(self) -> None:
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(_RejectUnknown())
        if self.known_hosts.exists():
            try:
                ssh.load_system_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise AuthError(f"{self.location}: cannot read {self.known_hosts}: {exc}") from None
        key = self._load_identity()
        agent = paramiko.Agent() if key is None else None
        if agent is not None and not agent.get_keys():
            agent.close()
            raise AuthError(
                f"{self.location}: no identity_file set and no key in the SSH agent: "
                "set repository.identity_file or run ssh-add"
            )
        try:
            ssh.connect(self.host, port=self.port, username=self.user, pkey=key,
                        allow_agent=agent is not None, look_for_keys=False, timeout=self.timeout,
                        banner_timeout=self.timeout, auth_timeout=self.timeout)
        except Exception as exc:
            ssh.close()
            raise self._connect_error(exc) from None
        finally:
            if agent is not None:
                agent.close()
        ssh.get_transport().set_keepalive(15)
        self._ssh = ssh

    def _load_identity(self) -> paramiko.PKey | None:
        path = self.identity_file
        if path is None:
            return None
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise AuthError(f"{self.location}: identity file {path} does not exist") from None
        if mode & 0o077:
            raise AuthError(
                f"identity file {path} is readable by others (mode {mode & 0o777:04o}): "
                f"run chmod 600 {path}"
            )
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            raise AuthError(
                f"identity file {path} is passphrase-protected: load it with ssh-add and "
                "leave identity_file unset to use the agent"
            ) from None
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise AuthError(f"identity file {path} is not a usable private key: {exc}") from None

    def _connect_error(self, exc: Exception) -> DrtoolError:
        hostport = f"[{self.host}]:{self.port}" if self.port != 22 else self.host
        if isinstance(exc, _UnknownHostKey):
            return AuthError(
                f"{self.location}: host key of {hostport} is not in {self.known_hosts} "
                f"({exc.key.get_name()} {exc.key.fingerprint}): check that fingerprint out of "
                f"band, then run: ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}"
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return AuthError(
                f"{self.location}: HOST KEY CHANGED for {hostport}: {self.known_hosts} has "
                f"{exc.expected_key.fingerprint}, the server offered {exc.key.fingerprint}; "
                "this may be an attack: if the key was really replaced, run "
                f"ssh-keygen -R '{hostport}' -f {self.known_hosts} and add the new key"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            key = f"key {self.identity_file}" if self.identity_file else "the SSH agent's keys"
            return AuthError(
                f"{self.location}: the server refused {key} for user {self.user}: "
                "add the public key to the server's authorized_keys"
            )
        return self.unreachable(exc)
