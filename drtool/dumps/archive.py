"""The archive format of ``rethinkdb dump`` (the official driver's ``python -m rethinkdb dump``).

A gzip-compressed tar of ``<top>/<db>/<table>.info`` and ``<top>/<db>/<table>.json`` files,
``<top>`` being ``rethinkdb_dump_<local time>``. As written by driver 2.4.10 (observed on a
real dump, shared/reql-facts.md):

* ``.info``: ``json.dumps`` of ``table.info()`` with ``indexes`` replaced by the rows of
  ``index_status()`` (``{"index": name, "function": {"$reql_type$": "BINARY", "data": base64
  with \\r\\n line breaks}, "multi", "geo", "query", ...}``) and ``write_hook`` set to
  ``get_write_hook()`` (``{"function": BINARY, "query"}`` or null). It records the primary key
  and one ``doc_count_estimates`` entry per shard; replica counts, ``write_acks`` and
  ``durability`` are NOT recorded.
* ``.json``: ``"["``, then ``"\\n" + json.dumps(doc)`` joined by ``","``, then ``"\\n]\\n"``;
  documents in primary-key order, read with ``time_format``/``binary_format`` ``raw`` (TIME
  and BINARY stay ``$reql_type$`` objects). This is Python's JSON (``\\u`` escapes, ``repr`` of
  floats, keys unsorted), not the server's text: ``rows`` turns each document into the
  server's canonical text with ``drtool.reql.canonical`` (why that is exact: README,
  "Moving from rethinkdb dump").
* Members are in ``os.walk`` order: a table's ``.info`` may come after its ``.json``.

Reading never extracts anything and never holds a table in memory: ``read_catalog`` streams
the archive once for the ``.info`` files (and checks it is complete), ``rows`` streams it again
for the documents. Writing the same layout for ``rethinkdb restore``: dumps.writer.
Every problem with an archive raises ``ArchiveError`` (exit code 2) naming the archive, the
member and what to do.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import gzip
import json
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from drtool.reql import canonical
from drtool.cluster.base import Row
from drtool.errors import UsageError
from drtool.model import IndexDef, TableMeta, TableName
from drtool.reql.ordering import InvalidKey, key_order

DATA_SUFFIXES = (".json", ".ndjson")
READ_CHUNK = 1 << 20  # characters of a data file decoded at a time
BATCH = 1000  # rows per yielded batch
MAX_VALUE = 256 << 20  # characters of one document at most (a bound on memory)


class ArchiveError(UsageError):
    """A dump archive is unreadable, incomplete or not in the format ``rethinkdb dump`` writes."""


@dataclass(frozen=True)
class DumpTable:
    """One table of an archive: its metadata (from ``.info``) and where its documents are."""

    meta: TableMeta
    data_member: str
    info_member: str

    @property
    def name(self) -> TableName:
        return self.meta.name


@dataclass
class DumpCatalog:
    """What pass one over an archive found."""

    path: Path
    top: str  # the archive's top directory, e.g. rethinkdb_dump_2026-12-01T08:59:57
    time: str  # ISO 8601 UTC: the newest member's modification time (when the dump ended)
    tables: list[DumpTable] = field(default_factory=list)

    def table(self, name: TableName) -> DumpTable | None:
        return next((t for t in self.tables if t.name == name), None)


def _not_an_archive(path: Path) -> ArchiveError:
    return ArchiveError(
        f"{path}: not a gzip-compressed tar archive (rethinkdb dump writes .tar.gz files)")


def _damaged(path: Path, err: BaseException) -> ArchiveError:
    return ArchiveError(f"{path}: truncated or corrupt archive ({err or type(err).__name__}): "
                        "it is incomplete; make a new dump")


def _members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every regular file of the archive, streamed. At the end the gzip stream is read to its
    end, so its CRC and length are checked (tarfile alone stops silently at a damaged header).
    Translates every kind of damage into ArchiveError."""
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArchiveError(f"{path}: is a directory, expected a .tar.gz written by rethinkdb dump") from None
    except PermissionError:
        raise ArchiveError(f"{path}: permission denied") from None
    with raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        try:
            archive = tarfile.open(fileobj=unzipped, mode="r|")
        except gzip.BadGzipFile:
            raise _not_an_archive(path) from None
        except tarfile.ReadError as err:
            if "empty" in str(err):
                raise ArchiveError(f"{path}: the archive holds no files") from None
            raise (_damaged(path, err) if "truncated" in str(err) else _not_an_archive(path)) from None
        except (EOFError, zlib.error, OSError) as err:
            raise _damaged(path, err) from None
        try:
            for member in archive:
                if member.isfile():
                    yield archive, member
            while unzipped.read(READ_CHUNK):
                pass
        except (tarfile.ReadError, EOFError, zlib.error, OSError) as err:
            raise _damaged(path, err) from None
        finally:
            archive.close()


def _split(path: Path, name: str) -> tuple[str, TableName, str] | None:
    """``top/db/table.ext`` -> (top, table name, ext); None for files rethinkdb restore skips."""
    stem, ext = os.path.splitext(posixpath.normpath(name).lstrip("/"))
    if ext not in (".info", ".csv") + DATA_SUFFIXES:
        return None
    parts = stem.split("/")
    if len(parts) != 3 or not all(parts) or ".." in parts:
        raise ArchiveError(f"{path}: unexpected member {name!r}: a rethinkdb dump archive holds "
                           "<dump>/<db>/<table>.info and .json files")
    return parts[0], TableName(parts[1], parts[2]), ext


def read_catalog(path: Path) -> DumpCatalog:
    """Pass one: every table's metadata, and a check that the whole archive reads (a truncated
    or corrupt archive fails here, before anything is stored). Raises ArchiveError."""
    infos: dict[TableName, tuple[str, dict]] = {}
    data: dict[TableName, str] = {}
    tops: set[str] = set()
    newest = 0.0
    for archive, member in _members(path):
        split = _split(path, member.name)
        if split is None:
            continue
        top, table, ext = split
        tops.add(top)
        newest = max(newest, member.mtime)
        if ext == ".csv":
            raise ArchiveError(f"{path}: {member.name}: CSV tables cannot be imported (they lose "
                               "types); make the archive with rethinkdb dump (JSON)")
        if ext == ".info":
            infos[table] = (member.name, _read_info(path, member.name, archive.extractfile(member)))
        elif table in data:
            raise ArchiveError(f"{path}: table {table} has two data files")
        else:
            data[table] = member.name
    if not infos and not data:
        raise ArchiveError(f"{path}: no table found (expected <dump>/<db>/<table>.info and .json files)")
    if len(tops) > 1:
        raise ArchiveError(f"{path}: files under several top directories ({', '.join(sorted(tops))})")
    for table in sorted(set(data) - set(infos)):
        raise ArchiveError(f"{path}: {data[table]} has no {table.table}.info beside it (primary "
                           "key and indexes unknown): the archive is incomplete")
    for table in sorted(set(infos) - set(data)):
        raise ArchiveError(f"{path}: {infos[table][0]} has no data file {table.table}.json "
                           "beside it: the archive is incomplete")
    catalog = DumpCatalog(path, tops.pop(), datetime.fromtimestamp(newest, UTC)
                          .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    for table in sorted(infos):
        member, info = infos[table]
        catalog.tables.append(DumpTable(table_meta(path, member, table, info), data[table], member))
    return catalog


def _read_info(path: Path, name: str, stream: IO[bytes] | None) -> dict:
    try:
        info = json.loads((stream.read() if stream else b"").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError(f"{path}: {name} is not valid JSON") from None
    if not isinstance(info, dict):
        raise ArchiveError(f"{path}: {name}: expected a JSON object")
    return info


def _blob(path: Path, name: str, what: str, value: Any) -> bytes:
    if not (isinstance(value, dict) and value.get("$reql_type$") == "BINARY"
            and isinstance(value.get("data"), str)):
        raise ArchiveError(f"{path}: {name}: {what} has no function blob (BINARY)")
    try:
        return base64.b64decode(value["data"])  # the server breaks lines with \r\n
    except (binascii.Error, ValueError):
        raise ArchiveError(f"{path}: {name}: {what}: invalid base64 in the function blob") from None


def table_meta(path: Path, name: str, table: TableName, info: dict) -> TableMeta:
    """The TableMeta an ``.info`` object describes. Shards: one per ``doc_count_estimates``
    entry; replicas, write_acks and durability are not recorded (1, majority, hard)."""
    pk = info.get("primary_key")
    if not isinstance(pk, str) or not pk:
        raise ArchiveError(f"{path}: {name} has no primary_key: cannot know how the table is keyed")
    indexes = []
    for row in info.get("indexes") or []:
        if not isinstance(row, dict) or not isinstance(row.get("index"), str):
            raise ArchiveError(f"{path}: {name}: an entry of indexes has no index name")
        indexes.append(IndexDef(row["index"], _blob(path, name, f"index {row['index']}",
                                                     row.get("function"))))
    hook = info.get("write_hook")
    estimates = info.get("doc_count_estimates")
    shards = len(estimates) if isinstance(estimates, list) and estimates else 1
    return TableMeta(
        name=table, primary_key=pk, shards=shards, replicas=1,
        indexes=tuple(sorted(indexes, key=lambda i: i.name)),
        write_hook=None if not hook else _blob(path, name, "write_hook",
                                                hook.get("function") if isinstance(hook, dict) else None),
    )


def rows(catalog: DumpCatalog, *, ordered: bool = True) -> Iterator[tuple[DumpTable, Iterator[list[Row]]]]:
    """Pass two: each table (archive order) with its documents as ``(key, canonical text)``
    batches in file order. Consume each table's batches before moving on. Raises ArchiveError
    for a document that is not valid, not an object, or has no primary key, with ``ordered``
    also for one out of key order or a duplicate key (and for an archive changed since
    ``read_catalog``)."""
    by_member = {t.data_member: t for t in catalog.tables}
    seen = 0
    for archive, member in _members(catalog.path):
        table = by_member.get(member.name)
        if table is None:
            continue
        stream = archive.extractfile(member)
        assert stream is not None
        seen += 1
        yield table, _table_rows(catalog.path, table, stream, ordered)
    if seen != len(by_member):
        raise ArchiveError(f"{catalog.path}: the archive changed while it was read")


def _table_rows(path: Path, table: DumpTable, stream: IO[bytes], ordered: bool) -> Iterator[list[Row]]:
    where = f"{path}: {table.data_member}"
    pk = table.meta.primary_key
    previous: bytes | None = None
    batch: list[Row] = []
    for n, value in enumerate(json_values(_Utf8Reader(stream), where), 1):
        if not isinstance(value, dict):
            raise ArchiveError(f"{where}: document {n} is not a JSON object")
        if pk not in value:
            raise ArchiveError(f"{where}: document {n} has no primary key field {pk!r}")
        try:
            key, text = canonical.dumps(value[pk]), canonical.dumps(value)
            order = key_order(key)
        except canonical.CanonicalError as err:
            raise ArchiveError(f"{where}: document {n}: {err}") from None
        except InvalidKey:
            raise ArchiveError(f"{where}: document {n}: {pk} = {canonical.dumps(value[pk])[:60]} "
                               "cannot be a primary key") from None
        if ordered and previous is not None and order <= previous:
            raise ArchiveError(
                f"{where}: document {n} (key {key[:60]}) is "
                f"{'a duplicate' if order == previous else 'out of primary-key order'}: "
                "rethinkdb dump writes each table in key order; for other archives use "
                "--via primary|standby (sorted by the server)")
        previous = order
        batch.append((key, text))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class _Utf8Reader:
    """``read(n)`` of decoded text from a binary stream that cannot seek (a tar member read in
    stream mode, which ``io.TextIOWrapper`` refuses)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def read(self, size: int) -> str:
        data = self._stream.read(size)
        return self._decoder.decode(data, final=not data)


def json_values(text: Any, where: str) -> Iterator[Any]:
    """The values of a JSON array (``rethinkdb dump``) or of a whitespace-separated sequence
    (ndjson), parsed as ``r.json`` would, read ``READ_CHUNK`` characters at a time."""
    buf, pos, eof = "", 0, False
    array: bool | None = None

    def fill(size: int = READ_CHUNK) -> bool:
        nonlocal buf, pos, eof
        if len(buf) - pos > MAX_VALUE:
            raise ArchiveError(f"{where}: a document longer than {MAX_VALUE >> 20} MiB, or "
                               "malformed JSON")
        try:
            more = text.read(size)
        except UnicodeDecodeError:
            raise ArchiveError(f"{where}: not UTF-8 text") from None
        except (EOFError, zlib.error, tarfile.ReadError, OSError) as err:
            raise ArchiveError(f"{where}: truncated or corrupt archive ({err}); make a new dump") from None
        buf, pos, eof = buf[pos:] + more, 0, not more
        return bool(more)

    def skip_space() -> str:
        """The next non-blank character ('' at the end), loading more text as needed."""
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not fill():
                return buf[pos] if pos < len(buf) else ""

    first = skip_space()
    if first == "":
        raise ArchiveError(f"{where}: empty file (rethinkdb dump writes at least [ ])")
    array = first == "["
    if array:
        pos += 1
    expect_value = True
    while True:
        c = skip_space()
        if c == "":
            if array:
                raise ArchiveError(f"{where}: ends before the closing ']': the file is truncated")
            return
        if array and c == "]":
            pos += 1
            if skip_space() != "":
                raise ArchiveError(f"{where}: unexpected text after the closing ']'")
            return
        if array and c == ",":
            if expect_value:
                raise ArchiveError(f"{where}: malformed JSON array (',' without a value)")
            pos += 1
            expect_value = True
            continue
        if array and not expect_value:
            raise ArchiveError(f"{where}: malformed JSON array (values without ',' between them)")
        while True:
            try:
                value, end = canonical.parse_prefix(buf, pos)
            except canonical.CanonicalError as err:
                raise ArchiveError(f"{where}: {err}") from None
            except json.JSONDecodeError as err:
                incomplete = err.pos >= len(buf) - 16 or err.msg.startswith("Unterminated")
                if incomplete and not eof and fill(max(READ_CHUNK, len(buf) - pos)):
                    continue  # the value goes on: read as much again, then parse again
                raise ArchiveError(f"{where}: invalid or truncated JSON ({err.msg})") from None
            if end == len(buf) and not eof and not isinstance(value, (dict, list, str)):
                fill()  # a number at the end of the buffer may go on
                continue
            break
        pos = end
        expect_value = False
        yield value
