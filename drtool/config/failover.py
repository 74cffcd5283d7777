"""The ``[failover]`` section of a policy file (helper of ``drtool.config.policy``).

Keys (documented in policies/example.toml)::

    [failover]
    app_users = ["app"]            # users whose writes a fence stops
    fence = "permissions"          # or "write-hook" (needed when an app user is admin)
    max_lag = "5s"                 # a planned failover refuses a standby further behind
    drain_timeout = "30s"          # how long to wait for the final heartbeat on the standby
    [failover.users.app]           # where the password to set on the standby comes from:
    password_env = "APP_DB_PASSWORD"   # an environment variable, or
    # password_file = "~/.config/drtool/app.password"   # a file (first line)

Passwords are never in the file; they are read only when ``FailoverPolicy.password`` is called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from drtool.errors import PolicyError
from drtool.config.fields import Section, read_env
from drtool.util.units import DURATION_EXPECTED, parse_duration

KEYS = ("app_users", "fence", "max_lag", "drain_timeout", "users")
USER_KEYS = ("password_env", "password_file")
_USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,127}")


@dataclass(frozen=True)
class PasswordSource:
    """Where one user's password comes from: an environment variable or a file."""

    env: str | None = None
    file: Path | None = None


@dataclass(frozen=True)
class FailoverPolicy:
    """``app_users``: the users fencing stops. ``fence``: how ("permissions": revoke their
    write permission in every selected database; "write-hook": a hook refusing every write on
    every selected table, which also stops admin). ``max_lag`` / ``drain_timeout`` in seconds.
    ``passwords``: per user, where the password to set on the other cluster comes from."""

    app_users: tuple[str, ...] = ()
    fence: Literal["permissions", "write-hook"] = "permissions"
    max_lag: float = 5.0
    drain_timeout: float = 30.0
    passwords: dict[str, PasswordSource] = field(default_factory=dict, hash=False)
    origin: str = field(default="failover", repr=False, compare=False)

    def password(self, user: str) -> str | None:
        """The password for ``user`` read now, or None when the policy names no source.

        Raises PolicyError ``<file>: failover.users.<user>.password_env: environment variable
        X is not set`` or ``... password_file: cannot read <path>: <reason>``."""
        source = self.passwords.get(user)
        if source is None:
            return None
        where = f"{self.origin}.users.{user}"
        if source.env is not None:
            return read_env(where, "password_env", source.env, allow_empty=False)
        try:
            text = source.file.read_text(encoding="utf-8")  # type: ignore[union-attr]
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise PolicyError(f"{where}.password_file: cannot read {source.file}: {reason}") from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise PolicyError(f"{where}.password_file: {source.file} is empty")
        return password


def parse_failover(sec: Section | None, file: str, base: Path) -> FailoverPolicy:
    """Validate ``[failover]``; an admin app user needs ``fence = "write-hook"``."""
    if sec is None:
        return FailoverPolicy(origin=f"{file}: failover")
    defaults = FailoverPolicy()
    app_users = sec.strings("app_users")
    fence = sec.choice("fence", ("permissions", "write-hook"))
    if "admin" in app_users and fence == "permissions":
        raise PolicyError(
            f'{file}: failover.app_users: "admin" cannot be fenced by permissions (its '
            'permissions cannot be changed): set failover.fence = "write-hook" or give the '
            "application its own user")
    durations = {}
    for key in ("max_lag", "drain_timeout"):
        value = getattr(defaults, key)
        if sec.has(key):
            value = sec.parsed(key, parse_duration, DURATION_EXPECTED)
            if value <= 0:
                raise sec.error(key, f"a positive {DURATION_EXPECTED[2:]}", sec.data[key])
        durations[key] = value
    return FailoverPolicy(app_users=app_users, fence=fence, passwords=_users(sec, file, base),
                          origin=f"{file}: failover", **durations)


def _users(sec: Section, file: str, base: Path) -> dict[str, PasswordSource]:
    if not sec.has("users"):
        return {}
    table = sec.data["users"]
    if not isinstance(table, dict):
        raise sec.error("users", "a table ([failover.users.NAME] with password_env or "
                        "password_file)", table)
    out = {}
    for user, body in table.items():
        if _USER_NAME.fullmatch(user) is None:
            raise PolicyError(f"{file}: failover.users: expected user names, got {user!r}")
        if not isinstance(body, dict):
            raise PolicyError(f"{file}: failover.users.{user}: expected a table with "
                              "password_env or password_file (never the password itself)")
        one = Section(file, f"failover.users.{user}", body, USER_KEYS, {})
        env, path = one.env_name("password_env", "APP_DB_PASSWORD"), one.path("password_file", base)
        if (env is None) == (path is None):
            raise PolicyError(f"{file}: failover.users.{user}: expected exactly one of "
                              "password_env or password_file")
        out[user] = PasswordSource(env=env, file=path)
    return out
