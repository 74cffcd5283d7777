"""The ``[primary]`` and ``[standby]`` sections of a policy: how to reach each cluster.

Helper of ``drtool.config.policy`` (which calls ``parse_cluster``); every failure is a one-line
PolicyError. Keys: ``hosts`` (required, at least one ``"host:port"``, port 28015 by default),
``user`` (default "admin"), ``password_env`` (the environment variable holding the password,
read only by ``ClusterPolicy.config``), ``tls_ca`` (a CA file: TLS to the cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drtool.errors import PolicyError
from drtool.model import ClusterConfig
from drtool.config.fields import Section, parse_host, read_env

DEFAULT_RETHINKDB_PORT = 28015
KEYS = ("hosts", "user", "password_env", "tls_ca")


@dataclass(frozen=True)
class ClusterPolicy:
    """How to reach one cluster ([primary] or [standby]).

    ``hosts`` are normalised ``host:port`` strings (port 28015 when omitted; IPv6 as
    ``[addr]:port``). ``origin`` ("<file>: <section>") only prefixes call-time errors."""

    hosts: tuple[str, ...]
    user: str = "admin"
    password_env: str | None = None
    tls_ca: Path | None = None
    origin: str = field(default="primary", repr=False, compare=False)

    def config(self, role: str) -> ClusterConfig:
        """A ClusterConfig for ``role`` ("primary"/"standby"), password read from the
        environment now (empty when no password_env is named: RethinkDB's default admin).

        Raises PolicyError ``<file>: primary.password_env: environment variable NAME is not
        set`` when the named variable is unset."""
        password = read_env(self.origin, "password_env", self.password_env, allow_empty=True)
        return ClusterConfig(
            role=role, hosts=self.hosts, user=self.user, password=password or "",
            tls_ca=None if self.tls_ca is None else str(self.tls_ca),
        )


def parse_cluster(sec: Section | None, file: str, role: str, base: Path) -> ClusterPolicy:
    """The ClusterPolicy of section ``role`` ("primary"/"standby"); ``sec`` None means the
    section is missing (an error: it names ``<role>.hosts``). Raises PolicyError."""
    if sec is None:
        raise PolicyError(f"{file}: {role}.hosts: required key is missing")
    hosts = sec.strings("hosts", required=True)
    if not hosts:
        raise sec.error("hosts", 'at least one "host:port"', [])
    return ClusterPolicy(
        hosts=tuple(
            sec.parsed(f"hosts[{i}]", lambda h: parse_host(h, DEFAULT_RETHINKDB_PORT), '"host:port"', value=h)
            for i, h in enumerate(hosts)
        ),
        user=sec.string("user", default="admin"),
        password_env=sec.env_name("password_env", f"DRTOOL_{role.upper()}_PASSWORD"),
        tls_ca=sec.path("tls_ca", base),
        origin=f"{file}: {role}",
    )
