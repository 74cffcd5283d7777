"""Scan responses cut into document texts without decoding them (part of the real-server adapter).

The only module that imports ``msgspec``: ``text_decoder`` gives the driver a
``json_decoder`` that turns each server batch of a whole-document scan into one
``drtool.cluster.base.TextBatch`` of the response's exact bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from drtool.cluster.base import TextBatch
from drtool.cluster.rethink.driver import ReQLDecoder, ql2_pb2

_SUCCESS = (ql2_pb2.Response.ResponseType.SUCCESS_SEQUENCE,
            ql2_pb2.Response.ResponseType.SUCCESS_PARTIAL)


@functools.lru_cache(maxsize=64)
def text_decoder(pk: str) -> type:
    """A driver ``json_decoder`` class for scans of whole documents (``run(conn,
    json_decoder=...)``): each server batch becomes ONE ``TextBatch`` whose documents are the
    exact bytes of the response (the server writes a document in a response exactly as
    ``to_json_string()`` prints it: tests/cluster_contract.py checks this) and whose keys are
    the bytes of each document's top-level field ``pk``. msgspec only finds where values
    begin and end (``msgspec.Raw``); nothing is decoded into Python objects, and each text
    is copied out as ``bytes``. Any other
    response (errors) goes to the driver's own decoder."""
    key = msgspec.defstruct("Key", [("key", msgspec.Raw)], rename={"key": pk})
    docs_of = msgspec.json.Decoder(msgspec.defstruct("Docs", [("t", int), ("r", list[msgspec.Raw])])).decode
    keys_of = msgspec.json.Decoder(msgspec.defstruct("Keys", [("r", list[key])])).decode

    class TextDecoder:
        def __init__(self, reql_format_opts: Any = None) -> None:
            self._fallback = ReQLDecoder(reql_format_opts)

        def decode(self, text: str) -> dict:
            try:
                docs = docs_of(text)
                if docs.t in _SUCCESS:
                    keys = keys_of(text).r
                    # Copies: a Raw keeps the whole response alive (as str and its UTF-8),
                    # and segments hold documents from several responses.
                    batch = [TextBatch([bytes(k.key) for k in keys],
                                       [bytes(d) for d in docs.r])] if keys else []
                    return {"t": docs.t, "r": batch}
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            return self._fallback.decode(text)

    return TextDecoder
