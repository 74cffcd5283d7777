"""Building archives exactly as ``rethinkdb dump`` (driver 2.4.10) writes them, for tests.

``rethinkdb dump`` reads each document with the driver (``time_format``/``binary_format``
``raw``) and writes ``json.dumps`` of the decoded value (``ensure_ascii``, keys in the server's
order, floats by ``repr``): ``as_dump_text`` reproduces that from a server text. Its ``.info``
is ``json.dumps`` of ``table.info()`` with the ``index_status()`` rows and the write hook.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path


def as_dump_text(server_text: str) -> str:
    """What rethinkdb dump writes for a document the server prints as ``server_text``."""
    return json.dumps(json.loads(server_text))


def info(primary_key: str | None = "id", *, indexes: dict[str, bytes] | None = None,
         hook: bytes | None = None, shards: int = 1, db: str = "app", table: str = "t") -> dict:
    def blob(data: bytes) -> dict:  # the server's base64 has \r\n line breaks
        text = base64.encodebytes(data).decode().replace("\n", "\r\n").rstrip("\r\n")
        return {"$reql_type$": "BINARY", "data": text}

    out = {"db": {"id": "b0259678-0f7f-4e61-a6cc-29699562ef4f", "name": db, "type": "DB"},
           "doc_count_estimates": [0] * shards, "id": "493d6823-5d80-48fa-8f9a-f73447a14280",
           "indexes": [{"function": blob(b), "geo": False, "index": n, "multi": False,
                        "outdated": False, "query": f"indexCreate('{n}', ...)", "ready": True}
                       for n, b in (indexes or {}).items()],
           "name": table, "type": "TABLE",
           "write_hook": None if hook is None else {"function": blob(hook), "query": "setWriteHook(...)"}}
    if primary_key is not None:
        out["primary_key"] = primary_key
    return out


def json_file(server_texts: list[str]) -> bytes:
    """A table's ``.json`` as rethinkdb dump writes it."""
    body = "[" + ",".join("\n" + as_dump_text(t) for t in server_texts) + "\n]\n"
    return body.encode()


def write_archive(path: Path, files: dict[str, bytes | dict], *,
                  top: str = "rethinkdb_dump_2026-12-01T08:59:57", mtime: int = 1796115598) -> Path:
    """A .tar.gz of ``top/<name>`` members in the given order (dict values become JSON)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = (json.dumps(content) + "\n").encode() if isinstance(content, dict) else content
            member = tarfile.TarInfo(f"{top}/{name}")
            member.size, member.mtime = len(data), mtime
            tar.addfile(member, io.BytesIO(data))
    return path


def table_files(db: str, table: str, server_texts: list[str], **info_args) -> dict[str, bytes | dict]:
    """The two members of one table, the data file first (os.walk order varies)."""
    return {f"{db}/{table}.json": json_file(server_texts),
            f"{db}/{table}.info": info(db=db, table=table, **info_args)}
