"""The RethinkDB adapter's translation of driver errors and results into drtool's (no server
needed): one-line messages without queries or secrets, per-document write errors, blobs, table
metadata, feed events."""

from __future__ import annotations

import base64

import pytest
from rethinkdb import errors as rerr

from drtool.cluster.rethink import util
from drtool.cluster.rethink.errors import translate_error
from drtool.cluster.rethink.util import PermissionDenied
from drtool.errors import (
    AuthError,
    ClusterError,
    ClusterUnreachable,
    NotFound,
)
from drtool.model import FeedChange, FeedOverflow, FeedReady, TableName

SECRET = "s3cret-Passw0rd"
T = TableName("d", "t")


# --- translation --------------------------------------------------------------------------
def test_connection_lost_is_said_with_single_punctuation():
    out = translate_error(rerr.ReqlRuntimeError(
        "Connection is closed (0 bytes read on a total of 12 expected bytes)."), "primary h:1")
    assert str(out) == ("primary h:1: connection lost (Connection is closed (0 bytes read on a "
                        "total of 12 expected bytes)); try again later")
    out = translate_error(rerr.ReqlOpFailedError("Cannot perform read: primary replica for "
                                                 "shard not available."), "primary h:1", T)
    assert str(out).endswith("shard not available; try again later")


@pytest.mark.parametrize("err, expected, retryable", [
    (rerr.ReqlDriverError("Connection is closed."), ClusterUnreachable, True),
    (rerr.ReqlTimeoutError(), ClusterUnreachable, True),
    (rerr.ReqlRuntimeError("Connection is closed (boom)."), ClusterUnreachable, True),
    (rerr.ReqlOpFailedError("Cannot perform read: primary replica for shard not available"),
     ClusterUnreachable, True),
    (rerr.ReqlOpIndeterminateError("Cannot perform write: lost contact"), ClusterUnreachable, True),
    (ConnectionResetError("reset"), ClusterUnreachable, True),
    (rerr.ReqlAuthError("Wrong password"), AuthError, False),
    (rerr.ReqlPermissionError("User `app` does not have the required `config` permission"),
     PermissionDenied, False),
    (rerr.ReqlOpFailedError("Table `d.t` does not exist."), NotFound, False),
    (rerr.ReqlOpFailedError("Database `d` does not exist."), NotFound, False),
    (rerr.ReqlOpFailedError("Table `d.t` already exists."), ClusterError, False),
    (rerr.ReqlOpFailedError("Index `ix` already exists on table `d.t`."), ClusterError, False),
    (rerr.ReqlRuntimeError("Changefeed aborted (table unavailable)."), ClusterUnreachable, True),
    # a table whose every replica is on a server that is down (observed on 2.4.4, issue 17)
    (rerr.ReqlNonExistenceError("No attribute `primary_key` in object: {\"error\": \"None of "
                                "the replicas for this table are accessible.\"}"),
     ClusterUnreachable, True),
    (rerr.ReqlInternalError("Unexpected exception: The attempt to read or modify the table's "
                            "configuration failed because none of the servers were accessible. "
                            "If it was an attempt to modify, the modification did not take "
                            "place"), ClusterUnreachable, True),
    (rerr.ReqlOpFailedError("The server(s) hosting table `d.t` are currently unreachable. The "
                            "table was not reconfigured."), ClusterUnreachable, True),
    (rerr.ReqlOpFailedError("Changefeed aborted (unavailable)."), ClusterUnreachable, True),
    (rerr.ReqlQueryLogicError("Expected type STRING but found NUMBER."), ClusterError, False),
    (rerr.ReqlServerCompileError("Unrecognized optional argument `x`."), ClusterError, False),
])
def test_translate_error(err, expected, retryable):
    out = translate_error(err, "standby 10.0.0.5:28015", T)
    assert type(out) is expected and out.retryable is retryable
    assert "standby 10.0.0.5:28015" in str(out)
    if expected is not AuthError:
        assert "d.t" in str(out)


def test_translated_message_is_one_line_without_the_query_or_secret():
    from rethinkdb import RethinkDB

    query = RethinkDB().expr({"card": "4111-1111"})
    err = rerr.ReqlQueryLogicError(f"bad {SECRET}", query, [])
    assert "4111" in str(err)  # the driver prints the query...
    out = str(translate_error(err, "primary h:1", T, secret=SECRET))
    assert "4111" not in out and SECRET not in out and "\n" not in out  # ...we do not


def test_write_result_keeps_per_document_errors():
    res = util.write_result({"deleted": 0, "errors": 1, "first_error": "Duplicate primary key `id`",
                             "inserted": 3, "replaced": 1, "skipped": 0, "unchanged": 2}, "w")
    assert (res.inserted, res.replaced, res.unchanged, res.errors) == (3, 1, 2, 1)
    assert res.first_error.startswith("Duplicate") and res.written == 6
    with pytest.raises(ClusterError):
        util.write_result(None, "w")


def test_blob_with_line_breaks_decodes_and_damage_is_refused():
    blob = b"$reql_write_hook_function$" + bytes(range(256)) * 3
    text = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    assert "\r\n" in text
    assert util.decode_blob({"$reql_type$": "BINARY", "data": text}, "hook") == blob
    assert util.decode_blob(blob, "hook") == blob
    for bad in ({"$reql_type$": "BINARY", "data": "!!!"}, {"data": text}, None):
        with pytest.raises(ClusterError):
            util.decode_blob(bad, "hook")


def test_table_meta_records_counts_not_names():
    config = {"db": "p", "durability": "soft", "indexes": ["by_b"], "name": "t", "primary_key": "k",
              "shards": [{"primary_replica": "a", "replicas": ["a", "b", "c"]},
                         {"primary_replica": "b", "replicas": ["b", "c", "a"]}],
              "write_acks": "single", "write_hook": None}
    fn = {"$reql_type$": "BINARY", "data": base64.b64encode(b"$reql_index_function$x").decode()}
    rows = [{"index": "z", "function": fn}, {"index": "by_b", "function": fn}]
    meta = util.table_meta(TableName("p", "t"), config, rows, None, "w")
    assert (meta.primary_key, meta.shards, meta.replicas) == ("k", 2, 3)
    assert (meta.write_acks, meta.durability, meta.write_hook) == ("single", "soft", None)
    assert [i.name for i in meta.indexes] == ["by_b", "z"]
    assert meta.indexes[0].blob == b"$reql_index_function$x"


def test_feed_events():
    assert util.feed_event({"state": "ready"}) == FeedReady()
    assert util.feed_event({"state": "initializing"}) is None
    assert util.feed_event({"key": "[1,2]", "doc": None}) == FeedChange("[1,2]", None)
    assert util.feed_event({"error": "something else"}) == FeedOverflow("something else", 0)
    with pytest.raises(ClusterError):
        util.feed_event(["not", "a", "dict"])
