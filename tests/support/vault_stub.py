"""A local HTTP server that answers as Vault would, and keeps what it was sent.

For what a dev OpenBao cannot show on demand: the exact outgoing request
(headers, body), and the answers of a Vault in trouble (sealed, failing,
a standby behind, a redirect). Everything else is tested against OpenBao.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: An answer: the status, the JSON body (bytes as they are, None for none),
#: and extra headers.
Answer = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    client: tuple[str, int]


@dataclass
class VaultStub:
    """The stub's address, the answers it still has to give, what it saw."""

    addr: str
    answers: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0

    def answer(self, status: int, body: Any = None, **headers: str) -> None:
        """Queue the answer to the next request (the default is 200 and {})."""
        self.answers.append((status, body, headers))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: VaultStub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that timed out and left is what some tests want."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it
        """Quiet: the tests read ``seen``."""

    def _reply(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        host, port = self.client_address[:2]
        stub.seen.append(
            Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
                (str(host), int(port)),
            )
        )

        status, body, headers = stub.answers.pop(0) if stub.answers else (200, {}, {})
        data = body if isinstance(body, bytes) else b""
        if body is not None and not isinstance(body, bytes):
            data = json.dumps(body).encode()
        time.sleep(stub.delay)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _reply


@contextmanager
def vault_stub() -> Iterator[VaultStub]:
    """Serve on a free loopback port for the block, then stop."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stub = VaultStub(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield server.stub
    finally:
        server.shutdown()
        server.server_close()
