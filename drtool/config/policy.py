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

This module holds the loader (``load_policy``, ``SCHEMA``, ``Policy``); each section's
dataclass and parser live in a helper module named after it: ``policy_clusters``
([primary], [standby]), ``policy_repository`` ([repository], [encryption]),
``policy_tables`` ([tables], [throttle]), ``policy_schedule`` ([schedule], [retention]),
``policy_failover``, ``policy_replication``; ``policy_fields`` reads and checks the values.
The section dataclasses are importable from here too.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from drtool.errors import NotFound, PolicyError
from drtool.config.archive import KEYS as ARCHIVE_KEYS
from drtool.config.archive import ArchivePolicy, parse_archive
from drtool.config.clusters import KEYS as CLUSTER_KEYS
from drtool.config.clusters import ClusterPolicy, parse_cluster
from drtool.config.failover import KEYS as FAILOVER_KEYS
from drtool.config.failover import FailoverPolicy, parse_failover
from drtool.config.fields import Section
from drtool.config.replication import KEYS as REPLICATION_KEYS
from drtool.config.replication import ReplicationPolicy, parse_replication
from drtool.config.repository import ENCRYPTION_KEYS, REPOSITORY_KEYS
from drtool.config.repository import EncryptionPolicy, RepositoryPolicy
from drtool.config.repository import parse_encryption, parse_repository
from drtool.config.schedule import RETENTION_KEYS, SCHEDULE_KEYS
from drtool.config.schedule import RetentionPolicy, SchedulePolicy, parse_retention, parse_schedule
from drtool.config.tables import TABLES_KEYS, THROTTLE_KEYS
from drtool.config.tables import TablesPolicy, ThrottlePolicy, parse_tables, parse_throttle
from drtool.model import TableName

__all__ = [
    "SCHEMA", "ClusterPolicy", "EncryptionPolicy", "FailoverPolicy", "Policy",
    "ArchivePolicy", "ReplicationPolicy", "RepositoryPolicy", "RetentionPolicy", "SchedulePolicy",
    "TablesPolicy", "ThrottlePolicy", "load_policy",
]

SCHEMA: dict[str, tuple[str, ...]] = {
    "": ("name", "primary", "standby", "repository", "encryption", "tables", "throttle",
         "schedule", "retention", "failover", "replication", "archive"),
    "primary": CLUSTER_KEYS,
    "standby": CLUSTER_KEYS,
    "repository": REPOSITORY_KEYS,
    "encryption": ENCRYPTION_KEYS,
    "tables": TABLES_KEYS,
    "throttle": THROTTLE_KEYS,
    "schedule": SCHEDULE_KEYS,
    "retention": RETENTION_KEYS,
    "failover": FAILOVER_KEYS,
    "replication": REPLICATION_KEYS,
    "archive": ARCHIVE_KEYS,
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    archive: ArchivePolicy | None = None  # None: no [archive] section (no change log)
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
    "archive": "add [archive] (slice_every, spool) and run drtool replicate to keep a change log",
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
    primary = parse_cluster(section("primary"), file, "primary", base)
    standby_section = section("standby")
    standby = None if standby_section is None else parse_cluster(standby_section, file, "standby", base)
    schedule_section = section("schedule")
    schedule = parse_schedule(schedule_section)
    replication = parse_replication(section("replication"))
    if schedule.snapshot_from == "standby" and standby is None:
        raise schedule_section.error(
            "snapshot_from", '"primary" when there is no [standby] section', "standby")
    return Policy(
        path=Path(file), name=name, primary=primary, standby=standby,
        repository=_optional(parse_repository, section("repository"), file, base),
        encryption=_optional(parse_encryption, section("encryption"), file, base),
        tables=parse_tables(section("tables"), replication.state_db),
        throttle=parse_throttle(section("throttle")),
        schedule=schedule,
        retention=parse_retention(section("retention")),
        failover=parse_failover(section("failover"), file, base),
        replication=replication,
        archive=parse_archive(section("archive"), base, name),
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


def select_tables(
    policy: Policy, available: list[TableName], requested: list[TableName], *, where: str
) -> list[TableName]:
    """Tables to work on: the ``requested`` ones (each must exist), else the policy's selection."""
    if requested:
        present = set(available)
        for name in requested:
            if name not in present:
                raise NotFound(f"table {name} does not exist on {where}")
        return sorted(set(requested))
    return policy.tables.selected(available)
