"""A loopback TCP proxy for fault tests: subclasses decide what happens as bytes go upstream
(cut one connection, stop the whole server, ...)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Connection:
    """One proxied connection: both writers, and the bytes sent upstream so far."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client, self.server, self.sent = client, server, 0

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``. ``upstream(conn)`` runs after
    each chunk the client sent; returning True stops forwarding on that connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port, self.connections = target_port, 0, 0
        self.sent = 0  # bytes sent upstream over every connection
        self.open: set[Connection] = set()

    async def listen(self) -> None:
        """Listen (again, on the same port after the first time)."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    def upstream(self, conn: Connection) -> bool:
        return False

    def rewrite(self, data: bytes) -> bytes:
        """What of a chunk from the client goes upstream (default: all of it, unchanged)."""
        return data

    async def _handle(self, c_reader, c_writer) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.connections += 1
        conn = Connection(c_writer, s_writer)
        self.open.add(conn)

        async def pump(reader, writer, upstream: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    writer.write(self.rewrite(data) if upstream else data)
                    await writer.drain()
                    if upstream:
                        conn.sent += len(data)
                        self.sent += len(data)
                        if self.upstream(conn):
                            return
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(c_reader, s_writer, True), pump(s_reader, c_writer, False))
        self.open.discard(conn)


@contextmanager
def in_a_thread(proxy: TcpProxy) -> Iterator[TcpProxy]:
    """Serve ``proxy`` from a thread of its own (for code that runs its own event loop, like
    the in-process CLI)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(proxy.listen())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(proxy.server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
