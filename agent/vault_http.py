"""Vault's HTTP API over the standard library: how the agent reaches Vault.

A run asks Vault five small questions. hvac, with requests, urllib3 and
charset_normalizer behind it, took about 120 ms to import, most of a run;
``http.client`` and ``json`` do the same work in a fraction of that. This
module knows only the mechanics: the address, TLS, the headers, JSON, and
what a failed exchange means. Which endpoint says what is ``agent.vault``'s
business, and only that module uses this one.

The token is always the one passed in, never ``VAULT_TOKEN`` or a token
helper's file, so a scoped agent can never act with an administrator's
token by accident. Errors name the address, the method and the path (which
hold no secret), never a header or a body.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.errors import ConfigError, VaultError, VaultTLSError, VaultUnavailable
from agent.layout import ENV_FILE

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
#: A standby that does not forward requests redirects to the active node.
MAX_REDIRECTS = 2
MAX_ERROR_WORDS = 200
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_REDIRECTS = frozenset({307, 308})
#: Failures of a kept-alive connection that the server closed while idle.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class VaultHTTPError(VaultError):
    """Vault answered with an error status.

    ``status`` is the HTTP status, ``errors`` Vault's own words and ``body``
    the decoded answer (a deleted KV version still carries its metadata).
    """

    def __init__(
        self, where: str, status: int, errors: list[str], body: dict[str, Any]
    ) -> None:
        self.status = status
        self.errors = errors
        self.body = body
        super().__init__(
            f"Vault at {where} answered {self.words}.",
            "Check Vault's own log for the request; the next run retries.",
        )

    @property
    def words(self) -> str:
        """The status and Vault's reasons, short enough for one log line."""
        # Vault wraps several errors over lines ("1 error occurred:\n\t* ...");
        # a log line and the journal need them on one.
        reasons = " ".join("; ".join(self.errors).split())[:MAX_ERROR_WORDS]
        return f"{self.status} ({reasons})" if reasons else str(self.status)


class VaultNoAnswer(VaultUnavailable):
    """Nothing usable came back: refused, reset, timed out, or not Vault."""

    def __init__(self, addr: str, why: str) -> None:
        self.why = why
        super().__init__(
            f"Vault at {addr} gave no answer ({why}).",
            "Nothing to do on this host: the next run retries. If it persists, "
            "check that Vault is up and reachable from here.",
        )


class VaultTransport:
    """One Vault address and one token; ``request`` makes one API call.

    The connection is kept open between calls, so a run pays for one TCP and
    TLS handshake rather than five.
    """

    def __init__(
        self,
        addr: str,
        token: str = "",
        *,
        cafile: str = "",
        capath: str = "",
        skip_verify: bool = False,
        namespace: str = "",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"VAULT_ADDR={addr!r} is not an http:// or https:// address.",
                f"Set VAULT_ADDR in {ENV_FILE}, such as "
                "VAULT_ADDR=https://vault.example.com",
            )
        self.addr = addr.rstrip("/")
        self.token = token
        self.cafile = cafile
        self.capath = capath
        self.skip_verify = skip_verify
        self.namespace = namespace.strip("/")
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_origin = ("", "", 0)

    @classmethod
    def from_env(
        cls, addr: str, token: str, environ: Mapping[str, str]
    ) -> VaultTransport:
        """A transport configured as the Vault CLI would be by the environment.

        ``VAULT_CACERT`` and ``VAULT_CAPATH`` name the only CAs trusted (the
        system's store otherwise), ``VAULT_NAMESPACE`` the namespace, and
        ``VAULT_SKIP_VERIFY`` turns checking off only when set to a true
        word; anything else there raises ``ConfigError``. ``VAULT_TOKEN`` is
        ignored on purpose.
        """
        skip = environ.get("VAULT_SKIP_VERIFY", "").strip().lower()
        if skip not in _TRUE | _FALSE:
            raise ConfigError(
                f"VAULT_SKIP_VERIFY={skip!r} is neither true nor false.",
                f"Remove VAULT_SKIP_VERIFY from {ENV_FILE}, and set VAULT_CACERT "
                "to the CA that signed Vault's certificate instead.",
            )
        if _plain_http_off_host(addr):
            log.warning(
                "VAULT_ADDR=%s is plain http to another host: tokens and logins "
                "cross the network unencrypted; use https://",
                addr,
            )
        return cls(
            addr,
            token,
            cafile=environ.get("VAULT_CACERT", "").strip(),
            capath=environ.get("VAULT_CAPATH", "").strip(),
            skip_verify=skip in _TRUE,
            namespace=environ.get("VAULT_NAMESPACE", "").strip(),
        )

    def with_token(self, token: str) -> VaultTransport:
        """The same address, trust and namespace, speaking with another token."""
        other = VaultTransport(
            self.addr,
            token,
            cafile=self.cafile,
            capath=self.capath,
            skip_verify=self.skip_verify,
            namespace=self.namespace,
            timeout=self.timeout,
        )
        other._context = self._context
        return other

    def request(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Call ``/v1/<path>``; Vault's decoded answer, or None when it has none.

        Raises ``VaultHTTPError`` for an error status, ``VaultNoAnswer`` when
        nothing usable came back, ``VaultTLSError`` when TLS failed, and
        ``ConfigError`` for a CA file that cannot be loaded.
        """
        body = None if json_body is None else json.dumps(json_body).encode()
        sent = {"X-Vault-Request": "true", **(headers or {})}
        if self.token:
            sent["X-Vault-Token"] = self.token  # never logged, never in an error
        if self.namespace:
            sent["X-Vault-Namespace"] = self.namespace
        if body is not None:
            sent["Content-Type"] = "application/json"

        url = f"{self.addr}/v1/{path.lstrip('/')}"
        for _ in range(MAX_REDIRECTS + 1):
            status, location, data = self._exchange(method, url, body, sent)
            if status not in _REDIRECTS or not location:
                return self._decode(f"{self.addr} ({method} /v1/{path})", status, data)
            url = self._follow(url, location)
        raise VaultNoAnswer(self.addr, f"more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        """Close the kept-alive connection; the next request opens another."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        # A transport dropped without close() still closes its socket, so a
        # run never leaks a descriptor (nor a ResourceWarning in the tests).
        if getattr(self, "_conn", None) is not None:
            self.close()

    # -- one exchange ----------------------------------------------------------

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        """Send once (again once on a kept-alive connection Vault had closed)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection(parts.scheme, parts.hostname or "", parts.port)
            try:
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
                return answer.status, answer.getheader("Location") or "", answer.read()
            except _STALE as err:
                self.close()
                if not reused or attempt == 2:
                    raise VaultNoAnswer(self.addr, _why(err)) from None
            except ssl.SSLError as err:
                self.close()
                raise self._tls_error(err) from None
            except (OSError, http.client.HTTPException) as err:
                self.close()
                raise VaultNoAnswer(self.addr, _why(err)) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _connection(
        self, scheme: str, host: str, port: int | None
    ) -> http.client.HTTPConnection:
        origin = (scheme, host, port or (443 if scheme == "https" else 80))
        if self._conn is not None and self._conn_origin == origin:
            return self._conn
        self.close()
        if scheme == "https":
            self._conn = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._tls_context()
            )
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self._conn_origin = origin
        return self._conn

    def _follow(self, url: str, location: str) -> str:
        """Where a standby redirects to; never from https down to plain http."""
        old, new = urlsplit(url), urlsplit(location)
        if not new.scheme:
            return f"{old.scheme}://{old.netloc}{location}"
        if old.scheme == "https" and new.scheme != "https":
            raise VaultTLSError(
                f"Vault at {self.addr} redirected to a plain http:// address; the "
                "token was not sent there.",
                "Set the cluster's api_addr to an https:// address.",
            )
        return location

    def _decode(self, where: str, status: int, data: bytes) -> dict[str, Any] | None:
        """Vault's JSON answer; an error status becomes ``VaultHTTPError``."""
        if status == 204 or (not data.strip() and status < 300):
            return None
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if status < 300:
                raise VaultNoAnswer(self.addr, f"status {status}, but not Vault's JSON")
            # Plain text, such as "Client sent an HTTP request to an HTTPS
            # server": one short line of it says what went wrong.
            text = data.decode("utf-8", "replace").strip().splitlines()
            answer = {"errors": text[:1] if text and text[0].isprintable() else []}
        if status >= 300:
            errors = answer.get("errors")
            words = [str(e) for e in errors] if isinstance(errors, list) else []
            raise VaultHTTPError(where, status, words, answer)
        return answer

    # -- TLS -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        """Trust exactly VAULT_CACERT / VAULT_CAPATH when set, else the system's.

        Raises ``ConfigError`` for a CA file or directory that cannot be used.
        """
        if self._context is not None:
            return self._context
        context = ssl.create_default_context()
        if self.cafile or self.capath:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.cafile:
                _load_cas(context, "VAULT_CACERT", self.cafile)
            if self.capath:
                _load_cas(context, "VAULT_CAPATH", self.capath)
        if self.skip_verify:
            log.warning(
                "VAULT_SKIP_VERIFY is set: the certificate of Vault at %s is not "
                "checked, so anyone on the network path can read the token",
                self.addr,
            )
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._context = context
        return context

    def _tls_error(self, err: ssl.SSLError) -> VaultTLSError:
        """One line that names the address, the CA trusted, and the fix."""
        reason = getattr(err, "verify_message", "") or err.reason or type(err).__name__
        trusted = (
            f"VAULT_CACERT={self.cafile}"
            if self.cafile
            else f"VAULT_CAPATH={self.capath}"
            if self.capath
            else "the system's CAs (VAULT_CACERT is not set)"
        )
        return VaultTLSError(
            f"The TLS connection to Vault at {self.addr} failed ({reason}) while "
            f"trusting {trusted}.",
            "Set VAULT_CACERT to the CA file that signed Vault's certificate, in "
            f"{ENV_FILE}, and check that VAULT_ADDR names the host the certificate "
            "was issued for.",
        )


def _load_cas(context: ssl.SSLContext, name: str, where: str) -> None:
    """Load a CA file, or every file of a CA directory as the Vault CLI does.

    Raises ``ConfigError`` naming the variable and the file that failed.
    """
    path = Path(where)
    try:
        files = (
            sorted(p for p in path.iterdir() if p.is_file())
            if path.is_dir()
            else [path]
        )
        for file in files:
            context.load_verify_locations(cafile=os.fspath(file))
    except (OSError, ssl.SSLError) as err:
        cause = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise ConfigError(
            f"{name}={where} cannot be loaded as CA certificates ({cause}).",
            f"Point {name} in {ENV_FILE} at a PEM file, readable by every "
            "user, of the CA that signed Vault's certificate.",
        ) from None


def _plain_http_off_host(addr: str) -> bool:
    """Whether ``addr`` is http:// to anything but this machine's loopback."""
    parts = urlsplit(addr)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True


def _why(err: BaseException) -> str:
    """A short cause for a failed exchange, free of anything sent."""
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return "host name not found"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return type(err).__name__
