"""A recording pass-through in front of OpenBao: which paths did a client ask for?

OpenBao refuses to enable audit devices through its API, so a test that must
prove "no secret was read" puts this forwarder between the agent and the
server. It passes every request through unchanged and notes its method and
path (never its headers, which carry the token).

The same forwarder injects faults: a test may answer chosen requests with an
error status instead of forwarding them, or hold them back until it lets
them go, and it times every request, labelled by whose token sent it (the
test maps tokens to labels; the token itself is never kept).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: What a test decides for each request, from its method, path and token label:
#: an HTTP status to answer instead of Vault, or None to forward it. It may
#: block, to hold a request back until the test lets it go.
Intercept = Callable[[str, str, str], int | None]

#: Vault's own words for the statuses a test injects.
_WORDS = {
    403: "permission denied",
    429: "request rate limit exceeded",
    500: "internal error",
    502: "bad gateway",
    503: "Vault is sealed",
}


@dataclass(frozen=True)
class Call:
    """One request as the forwarder handled it (no header, no body)."""

    method: str
    path: str
    who: str
    started: float
    seconds: float
    status: int


@dataclass
class VaultProxy:
    """A running forwarder: its address and what went through it."""

    addr: str
    seen: list[tuple[str, str]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True
    target: tuple[str, int]
    proxy: VaultProxy
    intercept: Intercept | None
    who: Callable[[str], str]
    lock: threading.Lock


class _Forward(BaseHTTPRequestHandler):
    server: _Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it
        """Quiet: the test reads ``seen``."""

    def _forward(self) -> None:
        started = time.monotonic()
        path = self.path.split("?")[0]
        who = self.server.who(self.headers.get("X-Vault-Token", ""))
        with self.server.lock:
            self.server.proxy.seen.append((self.command, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None

        injected = self.server.intercept and self.server.intercept(
            self.command, path, who
        )
        if injected:
            status, headers, data = _vault_error(injected)
        else:
            status, headers, data = self._upstream(body)
        self._answer(status, headers, data)

        call = Call(self.command, path, who, started, time.monotonic() - started,
                    status)  # fmt: skip
        with self.server.lock:
            self.server.proxy.calls.append(call)

    def _upstream(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream = http.client.HTTPConnection(*self.server.target, timeout=10)
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        return answer.status, answer.getheaders(), data

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
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


def _vault_error(status: int) -> tuple[int, list[tuple[str, str]], bytes]:
    """An error answer shaped as Vault's: a JSON object with ``errors``."""
    words = _WORDS.get(status, "error")
    data = json.dumps({"errors": [words]}).encode()
    return status, [("Content-Type", "application/json")], data


@contextmanager
def vault_proxy(
    addr: str,
    intercept: Intercept | None = None,
    who: Callable[[str], str] | None = None,
) -> Iterator[VaultProxy]:
    """A forwarder to ``addr`` for the length of the block.

    ``intercept`` injects faults (see ``Intercept``); ``who`` labels a
    request by its token (say, ``{token: user}.get``), for timing per user.
    """
    parts = urlsplit(addr)
    server = _Recorder(("127.0.0.1", 0), _Forward)
    server.target = (parts.hostname or "127.0.0.1", parts.port or 8200)
    server.proxy = VaultProxy(f"http://127.0.0.1:{server.server_address[1]}")
    server.intercept = intercept
    server.who = lambda token: (who(token) if who else None) or ""
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.proxy
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def vault_recorder(addr: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Yield the recorder's address and the list of (method, path) it forwards."""
    with vault_proxy(addr) as proxy:
        yield proxy.addr, proxy.seen


@contextmanager
def silent_listener() -> Iterator[str]:
    """An address that takes connections and never answers: a hung Vault.

    The kernel completes each connection from the listening socket's backlog,
    so a client sends its request and waits for an answer that never comes;
    closing the socket at the end resets them all.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
