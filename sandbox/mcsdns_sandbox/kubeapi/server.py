"""HTTP transport of the emulator: a ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive)
whose handler reads a request, passes it to ``handlers.ApiApp`` and writes the answer, streaming watches with
chunked transfer encoding as the real server does. Tracks open connections so that the emulator can cut them
(``pause(mode="refuse")``, shutdown). Only sockets and HTTP framing live here.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from .handlers import ApiApp, Request, Response, WatchStream

log = logging.getLogger(__name__)

_JSON: Final = "application/json"


class ApiHTTPServer(ThreadingHTTPServer):
    """Tracks open connections so that the emulator can cut them (``pause(mode="refuse")``, stop)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: ApiApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets its connection (a killed process, a closed keep-alive socket with unread
        data, ``mcsdns demo`` stopping) is no error of the server's: one debug line, as werkzeug says it,
        instead of socketserver's traceback on stderr. Any other exception still prints that traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("connection from %s dropped: %s", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def drop_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiHTTPServer
    server_version = "mcsdns-kubeapi"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(method, split.path, query, headers, self._read_body())
        outcome = self.server.app.handle(request)
        try:
            if isinstance(outcome, WatchStream):
                self._stream(outcome)
            else:
                self._send(outcome)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if not isinstance(outcome, WatchStream) and outcome.after is not None:
                outcome.after()

    def _send(self, response: Response) -> None:
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _stream(self, stream: WatchStream) -> None:
        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        try:
            self.send_response(200)
            self.send_header("Content-Type", _JSON)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            stream.stream(write, self._client_gone)
            self.wfile.write(b"0\r\n\r\n")  # the last chunk: a clean end of the watch
        except OSError:
            self.close_connection = True
        finally:
            stream.close()
        if stream.closed_by_server:
            # Closed by a fault hook or shutdown: drop the connection too, as a restarting server would.
            self.close_connection = True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
