"""A real OpenBao dev server for the tests, on a free loopback port.

OpenBao speaks Vault's API, so the code under test talks to it exactly as it
would to a production Vault. The dev server keeps everything in memory and
mounts KV version 2 at ``secret/``, as the runbook's Vault does. With
``tls=True`` it serves HTTPS with a certificate from a CA of its own making,
as a site with a private CA does; ``ca_cert`` is that CA's file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hvac

ROOT_TOKEN = "root"  # the dev server's own token, for tests only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OpenBao:
    """A running dev server: its address, root token and process."""

    addr: str
    root_token: str
    process: subprocess.Popen[bytes]
    log: Path
    ca_cert: Path | None = None

    def client(
        self, token: str | None = None, namespace: str | None = None
    ) -> hvac.Client:
        """An hvac client, trusting exactly the server's CA when it serves TLS."""
        return hvac.Client(
            url=self.addr,
            token=token or self.root_token,
            timeout=10,
            verify=str(self.ca_cert) if self.ca_cert else True,
            namespace=namespace,
        )


@contextmanager
def openbao_server(binary: Path, tls: bool = False) -> Iterator[OpenBao]:
    """Start ``bao server -dev`` and stop it when the block ends.

    The server's output goes to a log file rather than a pipe, so that a
    chatty server can never block on a full pipe during a long test session.
    """
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="openbao-"))
    log = workdir / "server.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "BAO_DEV_ROOT_TOKEN_ID": ROOT_TOKEN,
    }
    command = [
        str(binary),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    if tls:
        (workdir / "tls").mkdir()
        command += ["-dev-tls", f"-dev-tls-cert-dir={workdir / 'tls'}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    scheme, ca_cert = (
        ("https", workdir / "tls" / "vault-ca.pem") if tls else ("http", None)
    )
    server = OpenBao(f"{scheme}://127.0.0.1:{port}", ROOT_TOKEN, process, log, ca_cert)
    try:
        _wait_ready(server)
        if ca_cert is not None:
            # The CA is public; the agent's users must read it, as on a site.
            for path, mode in ((workdir, 0o711), (ca_cert.parent, 0o711)):
                path.chmod(mode)
            ca_cert.chmod(0o644)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(server: OpenBao, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"OpenBao exited with {server.process.returncode}; "
                f"its log:\n{server.log.read_text(errors='replace')[-4000:]}"
            )
        try:
            # A new client each time: the TLS server writes its CA file
            # only as it starts listening.
            client = server.client()
            if client.sys.is_initialized() and not client.sys.is_sealed():
                return
        except Exception:  # not listening yet: keep polling
            time.sleep(0.1)
    raise RuntimeError(f"OpenBao did not become ready within {timeout:.0f} s")
