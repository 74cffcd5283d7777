"""Canonical JSON text exactly as RethinkDB's ``to_json_string()`` prints it.

What the server does with ``r.json(text)`` then ``to_json_string()`` (shared/reql-facts.md and
shared/reql-golden.json): numbers become doubles; objects print with keys sorted by byte order
at every depth; compact separators; non-ASCII (U+2028 included) and U+007F raw; quote,
backslash and control characters escaped (``\\b \\t \\n \\f \\r`` short, others ``\\u00XX``);
integral doubles with ``|v| <= 2**53`` print as integers, every other double (and ``-0.0``)
through rapidjson's Grisu2 printer (``drtool.reql.grisu``). Pseudotypes stay as their
``$reql_type$`` objects; BINARY data is re-encoded as the server prints it (base64 in lines
of 76 characters joined by CRLF).

Public:
* ``canonical_text(text) -> str``: ``r.json(text).to_json_string()``.
* ``parse(text)``: the server-side value of ``r.json(text)`` in this module's internal form
  (numbers are opaque marker strings holding their canonical text); use ``dumps``/``pretty``
  on it, ``number_value`` to read a number back, ``is_number`` to test for one.
* ``dumps(value) -> str``: canonical text of a parsed value (or of part of one).
* ``parse_prefix(text, start) -> (value, end)``: ``parse`` of the one JSON value starting at
  ``text[start]`` (for reading a stream of values, e.g. a ``rethinkdb dump`` file).
* ``pretty(value) -> str``: the server's ``print()`` form used inside error messages
  (rapidjson PrettyWriter, tab indent, ``"key":\\tvalue``).
* ``number_text(x: float) -> str``: how the server prints one double.

Invalid input (bad JSON, NaN/Infinity, numbers beyond double range, lone surrogates, bad
pseudotypes) raises ``CanonicalError`` (a ValueError) with a message; callers translate it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from drtool.reql.grisu import format_double

_MARK = "\udfff\ud800"  # never in valid text (reversed surrogate pair): marks a number
_MARK_LEN = len(_MARK)
_MARKED_NUMBER = re.compile('"' + _MARK + '([^"]*)"')
_ESCAPE_OR_LOWER_HEX = re.compile(r"\\(?:u00([01][0-9a-f])|.)")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_EXACT = 2.0**53


class CanonicalError(ValueError):
    """The text is not something ``r.json`` accepts."""


def number_text(x: float) -> str:
    """Server text of one double: integers up to 2**53 plainly, the rest via Grisu2."""
    if x.is_integer() and -_MAX_EXACT <= x <= _MAX_EXACT and not (x == 0.0 and math.copysign(1.0, x) < 0):
        return str(int(x))
    return format_double(x)


def _number(s: str) -> str:
    x = float(s)
    if math.isinf(x):
        raise CanonicalError(f"Number too large to be stored as a double: {s[:40]}")
    return _MARK + number_text(x)


def _constant(name: str) -> Any:
    raise CanonicalError(f"Invalid JSON value {name} (NaN and infinities are not allowed)")


_BASE64_BLANKS = re.compile(r"[ \t\r\n]")
_BASE64_LINE = 76


def _canonical_base64(data: str) -> str:
    """BINARY data as the server prints it: standard base64 with padding, in lines of 76
    characters joined by CRLF (no trailing break). It reads blanks anywhere, padding missing
    or doubled, and refuses other characters, data after the padding and a lone last
    character (observed on 2.4.4)."""
    body = _BASE64_BLANKS.sub("", data).rstrip("=")
    if "=" in body:
        raise CanonicalError("Invalid base64 format, data found after padding character '='")
    if len(body) % 4 == 1:
        raise CanonicalError("Invalid base64 length: 1 character remaining, cannot decode a full byte")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CanonicalError("Invalid base64 character found in binary data.") from None
    text = base64.b64encode(raw).decode()
    return "\r\n".join(text[i:i + _BASE64_LINE] for i in range(0, len(text), _BASE64_LINE))


def _pseudotype(obj: dict) -> dict:
    kind = obj.get("$reql_type$")
    if kind is None:
        return obj
    if kind == "BINARY":
        data = obj.get("data")
        if not isinstance(data, str) or set(obj) != {"$reql_type$", "data"}:
            raise CanonicalError("Invalid binary pseudotype: expected exactly `$reql_type$` and a string `data`.")
        return {"$reql_type$": "BINARY", "data": _canonical_base64(data)}
    if kind == "TIME":
        epoch = obj.get("epoch_time")
        if not is_number(epoch) or not isinstance(obj.get("timezone"), str):
            raise CanonicalError("Invalid time pseudotype: `epoch_time` (number) and `timezone` (string) are required.")
        extra = set(obj) - {"$reql_type$", "epoch_time", "timezone"}
        if extra:
            raise CanonicalError(f"Invalid time pseudotype: unrecognized field `{sorted(extra)[0]}`.")
        return obj
    if kind == "GEOMETRY":
        return obj
    if not isinstance(kind, str):
        raise CanonicalError("Error: Field `$reql_type$` must be a string.")
    raise CanonicalError(f"Unknown $reql_type$ `PTYPE<{kind}>`.")


def parse(text: str) -> Any:
    """Parse like ``r.json``: every number a double; pseudotypes validated and normalised."""
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:  # escaped surrogates: only proper pairs are acceptable
            json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError("Invalid UTF-8 in JSON text: unpaired surrogate escape.") from None
        except ValueError as exc:
            raise CanonicalError(f"Failed to parse JSON: {exc}") from None
    try:
        return json.loads(
            text, parse_float=_number, parse_int=_number, parse_constant=_constant,
            object_hook=_pseudotype,
        )
    except CanonicalError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalError(f"Failed to parse JSON: {exc}") from None


_DECODER = json.JSONDecoder(parse_float=_number, parse_int=_number, parse_constant=_constant,
                            object_hook=_pseudotype)


def parse_prefix(text: str, start: int = 0) -> tuple[Any, int]:
    """The value of ``r.json`` for the JSON value at ``text[start:]`` (no leading whitespace)
    and the index just after it. Raises CanonicalError for an invalid value and
    ``json.JSONDecodeError`` when the text there is not (or not yet: a stream reader may
    append more and retry) a whole JSON value. Lone surrogates are refused by ``dumps``."""
    try:
        return _DECODER.raw_decode(text, start)
    except RecursionError:
        raise CanonicalError("Failed to parse JSON: nested too deeply") from None


def is_number(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_MARK)


def number_value(value: str) -> float:
    """The double behind a parsed number marker."""
    return float(value[_MARK_LEN:])


def make_number(x: float) -> str:
    """A parsed-form number from a Python float (for building values in code)."""
    return _MARK + number_text(float(x))


def _upper_hex(match: re.Match) -> str:
    hexpart = match.group(1)
    return "\\u00" + hexpart.upper() if hexpart else match.group(0)


def dumps(value: Any) -> str:
    """Canonical text (``to_json_string``) of a parsed value."""
    out = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if _MARK in out:
        out = _MARKED_NUMBER.sub(r"\1", out)
    if "\\u00" in out:
        out = _ESCAPE_OR_LOWER_HEX.sub(_upper_hex, out)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("Invalid UTF-8 in JSON text: unpaired surrogate.") from None
    return out


def canonical_text(text: str) -> str:
    """``r.json(text).to_json_string()``."""
    return dumps(parse(text))


def pretty(value: Any, depth: int = 0) -> str:
    """The server's ``datum.print()`` (rapidjson PrettyWriter, tab indent), as in errors."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        pad = "\t" * (depth + 1)
        items = [
            pad + dumps(k) + ":\t" + pretty(value[k], depth + 1) for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "\t" * depth + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        pad = "\t" * (depth + 1)
        items = [pad + pretty(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "\t" * depth + "]"
    return dumps(value)
