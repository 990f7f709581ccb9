"""A recording pass-through in front of OpenBao: which paths did a client ask for?

OpenBao refuses to enable audit devices through its API, so a test that must
prove "no secret was read" puts this forwarder between the agent and the
server. It passes every request through unchanged and notes its method and
path (never its headers, which carry the token).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True
    target: tuple[str, int]
    seen: list[tuple[str, str]]


class _Forward(BaseHTTPRequestHandler):
    server: _Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it
        """Quiet: the test reads ``seen``."""

    def _forward(self) -> None:
        self.server.seen.append((self.command, self.path.split("?")[0]))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}

        upstream = http.client.HTTPConnection(*self.server.target, timeout=10)
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()

        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
            ):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _forward


@contextmanager
def vault_recorder(addr: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Yield the recorder's address and the list of (method, path) it forwards."""
    parts = urlsplit(addr)
    server = _Recorder(("127.0.0.1", 0), _Forward)
    server.target = (parts.hostname or "127.0.0.1", parts.port or 8200)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()
