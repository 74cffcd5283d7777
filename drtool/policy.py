"""Policy files: one TOML file describes one deployment (see policies/example.toml).

``load_policy(path)`` reads and validates the whole file and returns a frozen ``Policy``. Every
key is checked; unknown keys are errors that suggest the closest known key, so a typo never
passes silently. Secrets never appear in a policy: passwords and passphrases are named by the
environment variable that holds them (``password_env``, ``passphrase_env``) and are read only
when ``ClusterPolicy.config()`` / ``EncryptionPolicy.key_sources()`` are called.

Every error is a ``drtool.errors.PolicyError`` (exit code 2) with a one-line message:
``<file as given>: <key.path>: expected <what>, got <value>``, or ``<file>: no such policy
file``, ``<file>: line N: invalid TOML: ...``, ``<file>: <key.path>: required key is missing``.

All paths (tls_ca, identity_file, known_hosts, writer_key_file, relative file:// URLs) expand
``~`` and are resolved relative to the policy file's directory. Loading reads only the policy
file itself: whether the other files exist is checked by whoever opens them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from drtool.errors import PolicyError
from drtool.model import ClusterConfig, TableName
from drtool.policy_failover import KEYS as FAILOVER_KEYS
from drtool.policy_failover import FailoverPolicy, parse_failover
from drtool.policy_fields import Section, parse_host, read_env, resolve_path, show
from drtool.policy_replication import KEYS as REPLICATION_KEYS
from drtool.policy_replication import ReplicationPolicy, parse_replication
from drtool.repo.repository import KeySources
from drtool.units import (
    BANDWIDTH_EXPECTED,
    DOC_RATE_EXPECTED,
    DURATION_EXPECTED,
    PERCENT_EXPECTED,
    BandwidthSchedule,
)
from drtool.units import parse_doc_rate, parse_duration, parse_percent

DEFAULT_RETHINKDB_PORT = 28015
DEFAULT_SFTP_PORT = 22
_CLUSTER_KEYS = ("hosts", "user", "password_env", "tls_ca")
SCHEMA: dict[str, tuple[str, ...]] = {
    "": ("name", "primary", "standby", "repository", "encryption", "tables", "throttle",
         "schedule", "retention", "failover", "replication"),
    "primary": _CLUSTER_KEYS,
    "standby": _CLUSTER_KEYS,
    "repository": ("url", "identity_file", "known_hosts"),
    "encryption": ("recipients", "identity_file", "passphrase_env", "writer_key_file"),
    "tables": ("include", "exclude"),
    "throttle": ("bandwidth", "primary_reads"),
    "schedule": ("snapshot_every", "snapshot_from", "full_after_layers", "full_after_delta",
                 "prune"),
    "retention": ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"),
    "failover": FAILOVER_KEYS,
    "replication": REPLICATION_KEYS,
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RECIPIENT_RE = re.compile(r"drtool1[A-Za-z0-9_-]{43}")


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


@dataclass(frozen=True)
class RepositoryPolicy:
    """Where the repository lives.

    ``file``: ``path`` is absolute (``file:///abs``, ``file://~/home-relative``, or
    ``file://relative`` resolved against the policy's directory); user/host/port are None.
    ``sftp``: ``sftp://[user@]host[:port]/abs/path``; ``sftp://host/~/dir`` gives the relative
    path ``dir`` (relative to the login directory). ``host`` has no brackets (IPv6 "::1");
    ``user`` is None when the URL names none; ``port`` defaults to 22. URLs are taken literally
    (no percent-decoding). identity_file and known_hosts are only allowed with sftp."""

    url: str
    scheme: Literal["file", "sftp"]
    path: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None


@dataclass(frozen=True)
class EncryptionPolicy:
    """Key material: recipients (public keys from ``drtool keygen``, "drtool1" + 43
    characters), an identity file (private key: can read data back), the name of an
    environment variable holding a passphrase, a writer key file (lets a snapshot host write
    without a private identity). At least one of recipients/identity_file/passphrase_env."""

    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None
    passphrase_env: str | None = None
    writer_key_file: Path | None = None
    origin: str = field(default="encryption", repr=False, compare=False)

    def key_sources(self) -> KeySources:
        """KeySources with the passphrase read from the environment now.

        Raises PolicyError ``<file>: encryption.passphrase_env: environment variable NAME is
        not set`` (or ``is empty``) when a variable is named but has no value."""
        passphrase = read_env(self.origin, "passphrase_env", self.passphrase_env, allow_empty=False)
        return KeySources(
            recipients=self.recipients, identity_file=self.identity_file,
            passphrase=passphrase, writer_key_file=self.writer_key_file,
        )


@dataclass(frozen=True)
class TablesPolicy:
    """Which tables a snapshot or replication covers: ``fnmatchcase`` globs over "db.table".
    ``state_db`` is drtool's own database (``[replication] state_db``)."""

    include: tuple[str, ...] = ("*.*",)
    exclude: tuple[str, ...] = ()
    state_db: str = "drtool"

    def selects(self, name: TableName) -> bool:
        """True when ``name`` matches an include glob and no exclude glob. Tables of the
        ``rethinkdb`` system database and of drtool's state database are never selected,
        whatever the globs say."""
        text = str(name)
        return (
            name.db not in ("rethinkdb", self.state_db)
            and any(fnmatchcase(text, p) for p in self.include)
            and not any(fnmatchcase(text, p) for p in self.exclude)
        )


@dataclass(frozen=True)
class ThrottlePolicy:
    """``bandwidth``: byte-rate limits over time (None: unlimited). ``primary_reads``:
    documents per second read from the primary (None: unlimited)."""

    bandwidth: BandwidthSchedule | None = None
    primary_reads: float | None = None


@dataclass(frozen=True)
class SchedulePolicy:
    """``snapshot_every``: seconds between scheduled snapshots (None: no schedule);
    ``snapshot_from``: which cluster snapshots read ("standby" needs [standby]; when not
    given, ``drtool snapshot`` reads the primary and the runner's scheduled snapshots the
    standby: see ``scheduled_from``);
    a table is copied in full instead of incrementally once its chain has
    ``full_after_layers`` layers or its deltas exceed ``full_after_delta`` of its base.
    ``prune``: after each scheduled snapshot the runner applies [retention] (forget) and,
    when true, prunes the data no snapshot references any more."""

    snapshot_every: float | None = None
    snapshot_from: Literal["primary", "standby"] = "primary"
    full_after_layers: int = 7
    full_after_delta: float = 0.3
    prune: bool = False
    snapshot_from_given: bool = False

    @property
    def scheduled_from(self) -> Literal["primary", "standby"]:
        """The cluster the runner's scheduled snapshots read: ``snapshot_from`` when the
        policy names one, else the standby (to spare the primary)."""
        return self.snapshot_from if self.snapshot_from_given else "standby"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many snapshots to keep, restic style; None = rule not used. All None = keep all."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None


@dataclass(frozen=True)
class Policy:
    """One deployment. ``path`` is the policy file as given; ``name`` is recorded in every
    snapshot."""

    path: Path
    name: str
    primary: ClusterPolicy
    standby: ClusterPolicy | None
    repository: RepositoryPolicy | None  # None: no [repository] section (see ``require``)
    encryption: EncryptionPolicy | None  # None: no [encryption] section
    tables: TablesPolicy
    throttle: ThrottlePolicy
    schedule: SchedulePolicy
    retention: RetentionPolicy
    failover: FailoverPolicy
    replication: ReplicationPolicy = ReplicationPolicy()
    #: The drtool command the policy was loaded for, named in "section missing" errors.
    command: str | None = field(default=None, compare=False)

    def require(self, *sections: str) -> None:
        """Check that the optional sections a command uses are present.

        Each command needs only the sections it uses (``diff`` and ``reconcile`` need no
        repository or keys; ``snapshot`` needs both). Raises PolicyError ``<file>: no
        [<section>] section: 'drtool <command>' needs it (...)`` for the first missing one."""
        for name in sections:
            if getattr(self, name) is None:
                who = f"'drtool {self.command}'" if self.command else "this command"
                raise PolicyError(f"{self.path}: no [{name}] section: {who} needs it "
                                  f"({_SECTION_HINTS[name]})")


_SECTION_HINTS = {
    "repository": 'add [repository] with url = "file:///path" or "sftp://user@host/path"',
    "encryption": "add [encryption] with recipients, identity_file or passphrase_env",
    "standby": "add [standby] with the standby cluster's hosts",
}


def load_policy(path: str | Path, *, command: str | None = None) -> Policy:
    """Read and validate the policy file at ``path`` (for ``command``, named in errors about
    sections it needs: see ``Policy.require``).

    Raises PolicyError (and no other exception) for a missing or unreadable file, invalid
    TOML, unknown keys, wrong types or values, missing required keys, and literal secrets.
    ``[standby]``, ``[repository]`` and ``[encryption]`` may be left out; a section that is
    present must be valid. Environment variables are not read here (see
    ``config``/``key_sources``)."""
    file = os.fspath(path)
    data = _read_toml(file)
    base = Path(file).expanduser().absolute().parent
    top = Section(file, "", data, SCHEMA[""], SCHEMA)

    def section(key: str) -> Section | None:
        return top.section(key, SCHEMA[key], SCHEMA)

    name = top.string("name", required=True)
    if _NAME_RE.fullmatch(name) is None:
        raise top.error("name", "a name of letters, digits, '.', '_' or '-' (at most 64)", name)
    primary = _cluster(section("primary"), file, "primary", base)
    standby_section = section("standby")
    standby = None if standby_section is None else _cluster(standby_section, file, "standby", base)
    schedule_section = section("schedule")
    schedule = _schedule(schedule_section)
    replication = parse_replication(section("replication"))
    if schedule.snapshot_from == "standby" and standby is None:
        raise schedule_section.error(
            "snapshot_from", '"primary" when there is no [standby] section', "standby")
    return Policy(
        path=Path(file), name=name, primary=primary, standby=standby,
        repository=_optional(_repository, section("repository"), file, base),
        encryption=_optional(_encryption, section("encryption"), file, base),
        tables=_tables(section("tables"), replication.state_db),
        throttle=_throttle(section("throttle")),
        schedule=schedule,
        retention=_retention(section("retention")),
        failover=parse_failover(section("failover"), file, base),
        replication=replication,
        command=command,
    )


def _optional(parse, sec: Section | None, file: str, base: Path):
    return None if sec is None else parse(sec, file, base)


def _read_toml(file: str) -> dict:
    try:
        raw = Path(file).expanduser().read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{file}: no such policy file") from None
    except OSError as err:
        raise PolicyError(f"{file}: cannot read policy file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise PolicyError(f"{file}: line {line}: invalid TOML: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if m:
            message = f"{message[: m.start()]} (column {m.group(2)})"
            line = int(m.group(1))
        else:
            message = re.sub(r"\s*\(at end of document\)$", " at end of file", message)
            line = text.count("\n") + 1
        raise PolicyError(f"{file}: line {line}: invalid TOML: {message}") from None


def _cluster(sec: Section | None, file: str, role: str, base: Path) -> ClusterPolicy:
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


def _repository(sec: Section, file: str, base: Path) -> RepositoryPolicy:
    url = sec.string("url", required=True)
    sftp_only = {k: sec.path(k, base) for k in ("identity_file", "known_hosts")}
    if url.startswith("file://"):
        for key, value in sftp_only.items():
            if value is not None:
                raise sec.error(key, f"no {key} with a file:// repository (only sftp:// uses one)",
                                sec.data[key])
        rest = url[len("file://"):]
        if not rest:
            raise sec.error("url", 'a file:// URL with a path like "file:///srv/drtool"', url)
        return RepositoryPolicy(url=url, scheme="file", path=str(resolve_path(rest, base)))
    if not url.startswith("sftp://"):
        raise sec.error("url", "a file:// or sftp:// URL", url)
    what = 'an sftp:// URL like "sftp://user@host:22/srv/drtool"'
    split = urlsplit(url)
    if split.password is not None:
        raise PolicyError(f"{file}: repository.url: secrets never go in a policy file: "
                          "authenticate with identity_file instead of a password in the URL")
    try:
        port = DEFAULT_SFTP_PORT if split.port is None else split.port
        host = split.hostname or ""
        parse_host(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", port)
    except ValueError:
        raise sec.error("url", what, url) from None
    if split.query or split.fragment or split.path in ("", "/", "/~", "/~/"):
        raise sec.error("url", what, url)
    path = split.path[3:] if split.path.startswith("/~/") else split.path
    return RepositoryPolicy(
        url=url, scheme="sftp", path=path, user=split.username or None, host=host, port=port,
        identity_file=sftp_only["identity_file"], known_hosts=sftp_only["known_hosts"],
    )


def _encryption(sec: Section, file: str, base: Path) -> EncryptionPolicy:
    none = PolicyError(f"{file}: encryption: expected at least one of recipients, identity_file "
                       "or passphrase_env, got none")
    recipients = sec.strings("recipients")
    for i, key in enumerate(recipients):
        if _RECIPIENT_RE.fullmatch(key) is None:
            shown = show(key) if len(key) <= 16 else show(key[:12]) + " (cut)"
            raise sec.error(f"recipients[{i}]", 'a public key from "drtool keygen" (drtool1 and '
                            "43 more characters)", key, shown=shown)
    policy = EncryptionPolicy(
        recipients=recipients,
        identity_file=sec.path("identity_file", base),
        passphrase_env=sec.env_name("passphrase_env", "DRTOOL_PASSPHRASE"),
        writer_key_file=sec.path("writer_key_file", base),
        origin=f"{file}: encryption",
    )
    if not (policy.recipients or policy.identity_file or policy.passphrase_env):
        raise none
    return policy


def _tables(sec: Section | None, state_db: str) -> TablesPolicy:
    if sec is None:
        return TablesPolicy(state_db=state_db)
    include = sec.strings("include") if sec.has("include") else TablesPolicy.include
    if not include:
        raise sec.error("include", 'at least one "db.table" glob like "app.*"', [])
    for key, patterns in (("include", include), ("exclude", sec.strings("exclude"))):
        for i, pattern in enumerate(patterns):
            if "." not in pattern and pattern != "*":
                raise sec.error(f"{key}[{i}]", f'a "db.table" glob like "{pattern}.*"', pattern)
    return TablesPolicy(include=include, exclude=sec.strings("exclude"), state_db=state_db)


def _throttle(sec: Section | None) -> ThrottlePolicy:
    if sec is None:
        return ThrottlePolicy()
    return ThrottlePolicy(
        bandwidth=sec.parsed("bandwidth", BandwidthSchedule.parse, BANDWIDTH_EXPECTED)
        if sec.has("bandwidth") else None,
        primary_reads=sec.parsed("primary_reads", parse_doc_rate, DOC_RATE_EXPECTED)
        if sec.has("primary_reads") else None,
    )


def _schedule(sec: Section | None) -> SchedulePolicy:
    if sec is None:
        return SchedulePolicy()
    every = None
    if sec.has("snapshot_every"):
        every = sec.parsed("snapshot_every", parse_duration, DURATION_EXPECTED)
        if every <= 0:
            raise sec.error("snapshot_every", f"a positive {DURATION_EXPECTED[2:]}", sec.data["snapshot_every"])
    defaults = SchedulePolicy()
    layers = sec.integer("full_after_layers", minimum=1)
    delta = (sec.parsed("full_after_delta", parse_percent, PERCENT_EXPECTED)
             if sec.has("full_after_delta") else defaults.full_after_delta)
    return SchedulePolicy(
        snapshot_every=every, snapshot_from=sec.choice("snapshot_from", ("primary", "standby")),
        full_after_layers=defaults.full_after_layers if layers is None else layers,
        full_after_delta=delta, prune=sec.boolean("prune"), snapshot_from_given=sec.has("snapshot_from"),
    )


def _retention(sec: Section | None) -> RetentionPolicy:
    if sec is None:
        return RetentionPolicy()
    return RetentionPolicy(**{key: sec.integer(key) for key in SCHEMA["retention"]})

