"""A loopback TCP proxy for fault tests: subclasses decide what happens as bytes go upstream
(cut one connection, stop the whole server, ...)."""

from __future__ import annotations

import asyncio


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

    async def _handle(self, c_reader, c_writer) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.connections += 1
        conn = Connection(c_writer, s_writer)
        self.open.add(conn)

        async def pump(reader, writer, upstream: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    writer.write(data)
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
