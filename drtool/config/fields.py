"""Reading and validating one table of a policy file (helper of ``drtool.config.policy``).

Every failure is a one-line ``PolicyError``: ``<file>: <key.path>: expected <what>, got <value>``.
Keys are checked when a ``Section`` is built, before any value: an unknown key is an error that
suggests the closest known key, and a literal password or passphrase is refused without echoing
its value.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from drtool.errors import PolicyError
from drtool.util.units import DURATION_EXPECTED, parse_duration

T = TypeVar("T")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")
_SECRET_KEYS = ("password", "passphrase", "secret", "private_key")


def show(value: Any) -> str:
    """A value as TOML-like text for error messages: ``"fast"``, ``5``, ``true``, ``[1, 2]``."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "a table"
    else:  # TOML dates and times
        text = value.isoformat() if hasattr(value, "isoformat") else repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def parse_host(text: str, default_port: int) -> str:
    """``host[:port]`` or ``[ipv6][:port]`` -> normalised ``host:port``. ValueError otherwise."""
    what = f'expected "host:port" (port 1-65535, default {default_port}; IPv6 in brackets)'
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(what)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(what) from None
        host, port_text = f"[{host}]", rest[1:] if rest else ""
        has_port = bool(rest)
    else:
        host, colon, port_text = text.partition(":")
        has_port = bool(colon)
        if ":" in port_text or _HOSTNAME_RE.fullmatch(host) is None:
            raise ValueError(what)
    if not has_port:
        return f"{host}:{default_port}"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(what)
    return f"{host}:{int(port_text)}"


def resolve_path(text: str, base: Path) -> Path:
    """Expand ``~`` and make ``text`` absolute relative to ``base`` (the policy's directory)."""
    return Path(os.path.normpath(base / Path(text).expanduser()))


def read_env(where: str, key: str, name: str | None, *, allow_empty: bool) -> str | None:
    """The value of environment variable ``name`` (None when ``name`` is None).

    ``where`` is ``"<file>: <section>"``. Raises PolicyError ``<where>.<key>: environment
    variable NAME is not set`` (or ``... is empty`` when ``allow_empty`` is False)."""
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None or (value == "" and not allow_empty):
        state = "is not set" if value is None else "is empty"
        raise PolicyError(f"{where}.{key}: environment variable {name} {state}")
    return value


class Section:
    """One TOML table of a policy file; ``name`` is its key path ("" for the top level).

    Construction refuses secret keys and unknown keys (``known``); ``schema`` maps every
    section name to its keys so that a key put in the wrong section can be pointed to."""

    def __init__(
        self, file: str, name: str, data: Mapping[str, Any], known: tuple[str, ...],
        schema: Mapping[str, tuple[str, ...]],
    ) -> None:
        self.file, self.name, self.data = file, name, data
        for key in data:
            if key in known:
                continue
            lowered = key.lower()
            if any(secret in lowered for secret in _SECRET_KEYS) and not lowered.endswith(("_env", "_file")):
                instead = f"{lowered}_env" if f"{lowered}_env" in known else None
                hint = (f"name an environment variable with {instead} instead" if instead
                        else "keep it in a file or an environment variable")
                raise PolicyError(f"{self._where(key)}: secrets never go in a policy file: {hint}")
            close = difflib.get_close_matches(key, known, n=1)
            elsewhere = [f"{s}.{key}" if s else key for s, keys in schema.items() if key in keys]
            hint = (f'; did you mean "{close[0]}"?' if close
                    else f'; did you mean "{elsewhere[0]}"?' if elsewhere
                    else f" (known keys: {', '.join(known)})")
            raise PolicyError(f"{self._where(key)}: unknown key{hint}")

    def _path(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def _where(self, key: str) -> str:
        return f"{self.file}: {self._path(key)}"

    def error(self, key: str, what: str, value: Any, *, shown: str | None = None) -> PolicyError:
        """``<file>: <section>.<key>: expected <what>, got <value>`` (``shown`` replaces the
        rendered value when it must not be echoed)."""
        return PolicyError(f"{self._where(key)}: expected {what}, got {shown or show(value)}")

    def missing(self, key: str) -> PolicyError:
        return PolicyError(f"{self._where(key)}: required key is missing")

    def has(self, key: str) -> bool:
        return key in self.data

    def section(self, key: str, known: tuple[str, ...], schema: Mapping[str, tuple[str, ...]]) -> "Section | None":
        """The sub-table ``key`` as a Section, or None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error(key, f"a table ([{self._path(key)}])", value)
        return Section(self.file, self._path(key), value, known, schema)

    def string(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        """A non-empty string."""
        if key not in self.data:
            if required:
                raise self.missing(key)
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "a non-empty string", value)
        return value

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        """A list of non-empty strings (``()`` when absent and not required)."""
        if key not in self.data:
            if required:
                raise self.missing(key)
            return ()
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(key, "a list of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{key}[{i}]", "a non-empty string", item)
        return tuple(value)

    def parsed(self, key: str, parse: Callable[[str], T], what: str, *, value: Any = None) -> T:
        """``parse(string)``; a ValueError("expected X") becomes ``expected X, got <value>``.

        ``key`` may name a list item (``hosts[1]``): pass its ``value``."""
        value = self.data[key] if value is None else value
        if not isinstance(value, str):
            raise self.error(key, what, value)
        try:
            return parse(value)
        except ValueError as err:
            text = str(err)
            raise self.error(key, text[9:] if text.startswith("expected ") else what, value) from None

    def positive_duration(self, key: str) -> float | None:
        """A policy duration ("90s", "1h30m") greater than zero, in seconds; None when absent."""
        if not self.has(key):
            return None
        got = self.parsed(key, parse_duration, DURATION_EXPECTED)
        if got <= 0:
            raise self.error(key, f"a positive {DURATION_EXPECTED[2:]}", self.data[key])
        return got

    def integer(self, key: str, *, minimum: int = 0) -> int | None:
        """An integer >= ``minimum`` (booleans refused), None when absent."""
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        """``true`` or ``false``; ``default`` when absent."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        """One of ``choices``; the first one when absent."""
        value = self.data.get(key, choices[0])
        if value not in choices:
            raise self.error(key, " or ".join(f'"{c}"' for c in choices), value)
        return value

    def path(self, key: str, base: Path) -> Path | None:
        """A path string, ``~`` expanded, relative to ``base``; None when absent."""
        text = self.string(key)
        return None if text is None else resolve_path(text, base)

    def env_name(self, key: str, example: str) -> str | None:
        """The name of an environment variable; a value that is not a name is not echoed (it
        may be the secret itself)."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(key, f'an environment variable name like "{example}"', value)
        if _ENV_NAME_RE.fullmatch(value) is None:
            raise self.error(key, f'an environment variable name like "{example}"', None,
                             shown="a value that is not a variable name (not shown: is it the secret itself?)")
        return value
