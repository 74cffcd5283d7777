"""The real-server adapter without a server: connection failures against loopback sockets,
a scripted server speaking the RethinkDB wire protocol (handshake with SCRAM-SHA-256, then
canned responses) to exercise the driver interplay (pool, cancellation, batching, feeds),
and the pure result/error translation. Behaviour of real queries is covered by integration/.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import struct

import pytest

from drtool.cluster.rethink import util
from drtool.cluster.rethink.connect import connect_rethinkdb
from drtool.errors import (
    EXIT_AUTH,
    EXIT_CLUSTER,
    EXIT_UNREACHABLE,
    AuthError,
    ClusterError,
    ClusterUnreachable,
    NotFound,
    UsageError,
)
from drtool.model import ClusterConfig, FeedChange, FeedOverflow, FeedReady, TableName

SECRET = "s3cret-Passw0rd"
T = TableName("d", "t")
ATOM, SEQUENCE, PARTIAL, RUNTIME_ERROR = 1, 2, 3, 18
START, CONTINUE, STOP = 1, 2, 3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(*hosts: str, timeout: float = 2.0, password: str = SECRET) -> ClusterConfig:
    return ClusterConfig(role="primary", hosts=hosts, password=password, connect_timeout=timeout)


async def listener(handle) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


# --- connecting ---------------------------------------------------------------------------
async def test_closed_port_is_unreachable_and_names_the_host():
    host = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ClusterUnreachable) as info:
        await connect_rethinkdb(config(host))
    assert host in str(info.value) and str(info.value).startswith("primary:")
    assert info.value.exit_code == EXIT_UNREACHABLE and info.value.retryable


async def test_every_host_tried_is_named():
    a, b = f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"
    with pytest.raises(ClusterUnreachable) as info:
        await connect_rethinkdb(config(a, b))
    assert a in str(info.value) and b in str(info.value)


async def test_silent_listener_times_out_as_unreachable():
    async def silent(reader, writer):
        await reader.read()  # accept, never answer
        writer.close()

    server, host = await listener(silent)
    async with server:
        with pytest.raises(ClusterUnreachable) as info:
            await connect_rethinkdb(config(host, timeout=0.5))
    assert host in str(info.value)


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\xff\xfenot json\0", b""])
async def test_garbage_answer_is_unreachable_not_a_driver_error(garbage):
    async def rude(reader, writer):
        writer.write(garbage)
        await writer.drain()
        writer.close()

    server, host = await listener(rude)
    async with server:
        with pytest.raises(ClusterUnreachable) as info:
            await connect_rethinkdb(config(host, timeout=2))
    assert host in str(info.value) and "\n" not in str(info.value)


async def test_refused_password_is_auth_error_without_the_password():
    async def refuse(reader, writer):
        await reader.readuntil(b"\0")
        writer.write(b'{"success":true,"min_protocol_version":0,"max_protocol_version":0}\0')
        writer.write(b'{"success":false,"error_code":12,"error":"Wrong password"}\0')
        await writer.drain()
        writer.close()

    server, host = await listener(refuse)
    cfg = config(f"127.0.0.1:{closed_port()}", host)
    async with server:
        with pytest.raises(AuthError) as info:
            await connect_rethinkdb(cfg)
    text = str(info.value)
    assert host in text and "'admin'" in text and "wrong user or password" in text
    assert info.value.exit_code == EXIT_AUTH and not info.value.retryable
    for shown in (text, repr(info.value), repr(cfg), str(cfg)):
        assert SECRET not in shown


async def test_missing_tls_ca_file_is_a_usage_error(tmp_path):
    cfg = ClusterConfig("standby", ("127.0.0.1:1",), tls_ca=str(tmp_path / "nope.pem"))
    with pytest.raises(UsageError, match="tls_ca"):
        await connect_rethinkdb(cfg)


def self_signed(tmp_path, name: str) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
async def test_untrusted_tls_certificate_is_refused_clearly(tmp_path):
    import ssl

    server_cert, server_key = self_signed(tmp_path, "server")
    other_ca, _ = self_signed(tmp_path, "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)

    async def tls(reader, writer):
        await reader.read()
        writer.close()

    server = await asyncio.start_server(tls, "127.0.0.1", 0, ssl=context)
    host = f"localhost:{server.sockets[0].getsockname()[1]}"
    async with server:
        cfg = ClusterConfig("standby", (host,), tls_ca=other_ca, connect_timeout=5)
        with pytest.raises(AuthError) as info:
            await connect_rethinkdb(cfg)
    assert "TLS certificate not trusted" in str(info.value) and other_ca in str(info.value)


def test_split_host_forms_and_errors():
    assert util.split_host("db1") == ("db1", 28015)
    assert util.split_host("db1:29015") == ("db1", 29015)
    assert util.split_host("[::1]:29015") == ("::1", 29015)
    assert util.split_host("::1") == ("::1", 28015)
    assert util.host_label("::1", 1) == "[::1]:1"
    for bad in ("", "db1:", "db1:x", "db1:70000", "[::1", "[::1]x"):
        with pytest.raises(UsageError):
            util.split_host(bad)


# --- a scripted server speaking the wire protocol -----------------------------------------
class WireServer:
    """Answers the handshake (SCRAM-SHA-256 with the empty password), then hands every
    query ``[type, term?, optargs?]`` to ``script(query)``: a list of (type, data, error_type)
    responses, or None to drop the connection."""

    def __init__(self, script, *, reset: bool = False):
        self.script, self.opened, self.ended = script, 0, asyncio.Event()
        self.starts: list = []
        self.reset = reset  # drop with a TCP reset (a killed server), not a clean close

    @staticmethod
    def _send(writer, obj) -> None:
        writer.write(json.dumps(obj).encode() + b"\0")

    async def handle(self, reader, writer):
        self.opened += 1
        try:
            await reader.readexactly(4)
            first = json.loads((await reader.readuntil(b"\0"))[:-1])["authentication"][3:]
            self._send(writer, {"success": True, "min_protocol_version": 0, "max_protocol_version": 0})
            nonce = dict(p.split("=", 1) for p in first.split(","))["r"] + "srv"
            server_first = f"r={nonce},s={base64.b64encode(b'salt').decode()},i=1"
            self._send(writer, {"success": True, "authentication": server_first})
            final = json.loads((await reader.readuntil(b"\0"))[:-1])["authentication"]
            salted = hashlib.pbkdf2_hmac("sha256", b"", b"salt", 1)
            message = ",".join([first, server_first, final.rsplit(",p=", 1)[0]]).encode()
            key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            signature = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
            self._send(writer, {"success": True, "authentication": "v=" + signature})
            while True:
                token, size = struct.unpack("<qL", await reader.readexactly(12))
                query = json.loads(await reader.readexactly(size))
                if query[0] == START:
                    self.starts.append(query[1])
                replies = [(SEQUENCE, [], None)] if query[0] == STOP else self.script(query)
                if asyncio.iscoroutine(replies):
                    replies = await replies
                if replies is None:
                    break
                for kind, data, error in replies:
                    body = {"t": kind, "r": data, **({"e": error} if error else {})}
                    raw = json.dumps(body).encode()
                    writer.write(struct.pack("<qL", token, len(raw)) + raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self.reset:
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            self.ended.set()


async def wire(script, **options):
    ws = WireServer(script, **options)
    server, host = await listener(ws.handle)
    return ws, server, host


async def test_cancelled_query_does_not_kill_the_shared_connection():
    arrived, release = asyncio.Event(), asyncio.Event()

    async def script(query):  # the first query is answered only after its caller gave up
        if not release.is_set():
            arrived.set()
            await release.wait()
        return [(ATOM, [[2, 3]], None)]

    ws, server, host = await wire(script)
    async with server:
        cluster = await connect_rethinkdb(config(host, password=""))
        task = asyncio.create_task(cluster.doc_count_estimate(T))
        await asyncio.wait_for(arrived.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await cluster.doc_count_estimate(T) == 5
        assert ws.opened == 1  # still the first connection: cancelling did not close it
        await cluster.close()
        await cluster.close()  # idempotent


async def test_scan_yields_buffered_batches_and_reports_a_dropped_connection():
    # The scan reads whole documents; the adapter takes each document's text and its key's
    # text from the response as the server wrote them.
    docs = [{"id": i} for i in range(5)]
    rows = [[str(i), json.dumps({"id": i})] for i in range(5)]
    answers = iter([
        [(ATOM, ["id"], None)],  # primary key
        [(PARTIAL, docs[:3], None)], [(SEQUENCE, docs[3:], None)],  # first scan
        [(PARTIAL, docs[:1], None)], None,  # second scan: the server goes away
        [(ATOM, [[7]], None)],  # after reconnecting
    ])
    ws, server, host = await wire(lambda query: next(answers))
    async with server:
        async with await connect_rethinkdb(config(host, password="")) as cluster:
            batches = [b async for b in cluster.scan(T, batch_size=2)]
            assert all(1 <= len(b) <= 2 for b in batches)
            assert [row for b in batches for row in b] == [tuple(r) for r in rows]
            with pytest.raises(ClusterUnreachable) as info:
                async for _ in cluster.scan(T, after="0"):
                    pass
            assert host in str(info.value) and "d.t" in str(info.value)
            assert await cluster.doc_count_estimate(T) == 7
            assert ws.opened == 2  # the dead connection was replaced


async def test_a_server_reset_mid_query_leaves_no_unretrieved_driver_error():
    """A server killed while it runs a query (the connection reset): ClusterUnreachable, and
    no "Task exception was never retrieved" traceback from the driver's reader task later."""
    import gc

    reported = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(
        context.get("message")))
    ws, server, host = await wire(lambda query: None, reset=True)  # reset on the first query
    async with server:
        cluster = await connect_rethinkdb(config(host, password=""))
        with pytest.raises(ClusterUnreachable):
            await cluster.insert_texts(T, ['{"id":1}'])
        await cluster.close()
    for _ in range(3):
        await asyncio.sleep(0.05)
        gc.collect()
    assert reported == []


async def test_server_errors_are_translated_through_the_driver():
    answers = iter([
        [(RUNTIME_ERROR, ["Table `d.t` does not exist."], 4100000)],
        [(RUNTIME_ERROR, ["User `app` does not have the required `write` permission"], 6000000)],
    ])
    ws, server, host = await wire(lambda query: next(answers))
    async with server:
        async with await connect_rethinkdb(config(host, password="")) as cluster:
            with pytest.raises(NotFound, match="d.t"):
                await cluster.doc_count_estimate(T)
            with pytest.raises(ClusterError, match="permission") as info:
                await cluster.doc_count_estimate(T)
            assert not info.value.retryable and info.value.exit_code == EXIT_CLUSTER


async def test_feed_has_its_own_connection_closed_with_the_feed():
    answers = iter([
        [(ATOM, ["id"], None)],
        [(PARTIAL, [{"state": "ready"}, {"key": "1", "doc": '{"id":1}'}], None)],
        [(PARTIAL, [{"error": "Changefeed cache over array size limit, skipped 44 elements."},
                    {"key": "2", "doc": None}], None)],
    ])
    ws, server, host = await wire(lambda query: next(answers, []))
    async with server:
        async with await connect_rethinkdb(config(host, password="")) as cluster:
            feed = cluster.changes(T)
            events = [await feed.__anext__() for _ in range(4)]
            assert events == [FeedReady(), FeedChange("1", '{"id":1}'),
                              FeedOverflow("Changefeed cache over array size limit, skipped 44 "
                                           "elements.", 44), FeedChange("2", None)]
            assert ws.opened == 2
            ws.ended.clear()
            await feed.aclose()
            await asyncio.wait_for(ws.ended.wait(), 10)  # the feed's connection is gone
