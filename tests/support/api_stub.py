"""A local stand-in for the Anthropic Messages API, for the real Claude CLI.

The real CLI, pointed here by ``ANTHROPIC_BASE_URL``, sends its inference as
``POST /v1/messages?beta=true`` with ``Authorization: Bearer <accessToken>``.
The stub answers in the Messages API's own format: a JSON message, or
server-sent events when the request asked for ``"stream": true``. Each test
says which bearer tokens are accepted, which are rate limited, and that every
other one gets the API's 401 error. The stub can also go down (connection
refused) or hang (accept and never answer), and it records what it saw.
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

from tests.support.openbao import free_port

ANSWER = "AUTH_OK"


@dataclass(frozen=True)
class SeenRequest:
    """One request as the stub received it."""

    method: str
    path: str
    bearer: str | None
    beta: str
    body: dict[str, Any]


@dataclass
class Behaviour:
    """What the stub does with each bearer token; changeable while it runs."""

    accepted: set[str] = field(default_factory=set)
    rate_limited: set[str] = field(default_factory=set)
    hang: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour
    seen: list[SeenRequest]
    lock: threading.Lock
    released: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it
        """Stay quiet: the tests read ``seen`` instead."""

    def do_GET(self) -> None:
        self._record({})
        self._send_json(404, _error("not_found_error", "Not found"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        bearer = self._record(body)

        if not self.path.startswith("/v1/messages"):
            self._send_json(404, _error("not_found_error", "Not found"))
            return
        behaviour = self.server.behaviour
        if behaviour.hang:
            self.server.released.wait(120)
            return
        if bearer in behaviour.rate_limited:
            self._send_json(
                429,
                _error(
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit",
                ),
                {
                    "x-should-retry": "false",
                    "anthropic-ratelimit-unified-status": "rejected",
                    "anthropic-ratelimit-unified-reset": str(int(time.time()) + 3600),
                },
            )
        elif bearer not in behaviour.accepted:
            self._send_json(401, _error("authentication_error", "Invalid bearer token"))
        elif body.get("stream"):
            self._send_stream(str(body.get("model", "claude-haiku")))
        else:
            self._send_json(200, _message(str(body.get("model", "claude-haiku"))))

    def _record(self, body: dict[str, Any]) -> str | None:
        header = self.headers.get("Authorization", "")
        bearer = (
            header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        )
        seen = SeenRequest(
            self.command,
            self.path,
            bearer,
            self.headers.get("anthropic-beta", ""),
            body,
        )
        with self.server.lock:
            self.server.seen.append(seen)
        return bearer

    def _send_json(
        self,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_stub")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, model: str) -> None:
        message = _message(model)
        text = message["content"][0]["text"]
        start = {**message, "content": [], "stop_reason": None}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        data = "".join(
            f"event: {name}\ndata: {json.dumps(payload)}\n\n"
            for name, payload in events
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_stub",
    }


def _message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 2},
    }


class ApiStub:
    """A running stub: its base URL, what it does, and what it saw."""

    def __init__(self) -> None:
        self.port = free_port()
        self.behaviour = Behaviour()
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accept(self, *tokens: str) -> None:
        self.behaviour.accepted.update(tokens)

    def reject(self, *tokens: str) -> None:
        """Turn a token away with 401 from now on, as a revoked login would be."""
        self.behaviour.accepted.difference_update(tokens)
        self.behaviour.rate_limited.difference_update(tokens)

    def rate_limit(self, *tokens: str) -> None:
        self.behaviour.rate_limited.update(tokens)

    def up(self) -> None:
        """Start listening (again, on the same port after ``down``)."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.behaviour = self.behaviour
        server.seen = self.seen
        server.lock = self._lock
        server.released = self._released
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: the CLI then sees its connection refused."""
        if self._server is None:
            return
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = None
        self._released = threading.Event()

    def inference_bearers(self) -> list[str | None]:
        """The bearer token of every inference request, in order."""
        with self._lock:
            return [r.bearer for r in self.seen if r.path.startswith("/v1/messages")]


@contextmanager
def api_stub() -> Iterator[ApiStub]:
    """A stub listening on a free loopback port for the length of the block."""
    stub = ApiStub()
    stub.up()
    try:
        yield stub
    finally:
        stub.down()
