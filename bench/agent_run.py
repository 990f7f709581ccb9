"""Time one ``claude-auth-sync run`` against OpenBao with an instant fake claude.

What: the whole agent process, as its unit starts it: Python start-up,
imports, the lock, both file checks, lookup-self and renew-self, the probe
(a shell script that prints a success answer at once), reading the latest
copy, and updating the audit metadata: five Vault requests over one
kept-alive connection. Target: median under 150 ms and peak RSS under 35 MiB.

How: a dev OpenBao gets the stack for one user, whose token is minted through
their role; the agent runs as that OS user (created for the bench when
missing) RUNS times in a row, each timed from spawn to exit, with its peak
RSS from ``wait4``. The first run writes the backup and caches the CLI
version; the median covers the steady state that the timer repeats. One more
run under ``python -X importtime`` lists which HTTP libraries a run loads
(the agent speaks to Vault with the standard library: none of hvac,
requests or urllib3 should appear).

Run as root from the repository: ``.venv/bin/python bench/agent_run.py``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.settings import state_dir, token_file  # noqa: E402  # after the path
from tests.support.agent_host import os_account  # noqa: E402
from tests.support.components import bao_binary  # noqa: E402
from tests.support.openbao import openbao_server  # noqa: E402
from tests.support.vault_stack import apply_stack, mint_user_token, synthesize  # noqa: E402

USER = "agent-bench"
RUNS = 21
AGENT = REPO / ".venv" / "bin" / "claude-auth-sync"
ANSWER = {"type": "result", "is_error": False, "api_error_status": None,
          "result": "AUTH_OK"}  # fmt: skip


def prepare_home(home: Path, entry: pwd.struct_passwd, token: str) -> Path:
    """The user's token, a login, and an instant fake claude that accepts it."""
    now_ms = int(time.time() * 1000)
    login = {"accessToken": "bench-access", "refreshToken": "bench-refresh",
             "expiresAt": now_ms + 8 * 3_600_000,
             "refreshTokenExpiresAt": now_ms + 20 * 86_400_000}  # fmt: skip
    files = {
        Path(token_file(home)): (token + "\n", 0o600),
        home / ".claude" / ".credentials.json": (
            json.dumps({"claudeAiOauth": login}),
            0o600,
        ),
        home / "claude": (
            "#!/bin/sh\n"
            'if [ "$1" = --version ]; then echo "2.1.332 (Claude Code)"; exit 0; fi\n'
            f"echo '{json.dumps(ANSWER)}'\n",
            0o755,
        ),
    }
    for path, (text, mode) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    Path(state_dir(home)).mkdir(parents=True, exist_ok=True)
    for root, dirs, names in os.walk(home):
        for name in (*dirs, *names):
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return home / "claude"


def run_once(env: dict[str, str], entry: pwd.struct_passwd) -> tuple[float, float, str]:
    """Seconds to exit, peak RSS in MiB, and the agent's line."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(AGENT), "run"], env=env, user=entry.pw_uid, group=entry.pw_gid,
        extra_groups=[], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the agent failed ({child.returncode}):\n{output}")
    return elapsed, usage.ru_maxrss / 1024, output.strip()


def baseline(code: str, entry: pwd.struct_passwd) -> float:
    """Median milliseconds of the venv's Python running ``code``, for context."""
    python = str(REPO / ".venv" / "bin" / "python")
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([python, "-c", code], user=entry.pw_uid, group=entry.pw_gid,
                       extra_groups=[], check=True, cwd="/")  # fmt: skip
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def third_party_http(env: dict[str, str], entry: pwd.struct_passwd) -> list[str]:
    """The HTTP libraries beyond the standard one that a run imports."""
    python = str(REPO / ".venv" / "bin" / "python")
    done = subprocess.run(
        [python, "-X", "importtime", "-m", "agent.cli", "run"], env=env,
        user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd=env["HOME"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    wanted = ("hvac", "requests", "urllib3", "charset_normalizer")
    return sorted(n for n in names if n.split(".")[0] in wanted)


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("Run as root: the agent runs as its own OS user here.")
    binary = bao_binary()
    if binary is None:
        raise SystemExit("OpenBao was not found: make setup")
    # An installed package has its bytecode compiled by pip; here the run's
    # user could not write __pycache__ in the source tree, so compile it now.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "agent")],
                   check=True)  # fmt: skip
    base = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    base.chmod(0o711)
    try:
        with os_account(USER) as entry:
            roster = f"users:\n  {USER}: {{email: bench@corp.example}}\n"
            tf_json = synthesize(roster, base / "stack")
            with openbao_server(binary) as server:
                apply_stack(server.client(), tf_json)
                token = mint_user_token(server.client(), USER)
                home = base / "home"
                home.mkdir()
                claude = prepare_home(home, entry, token)
                env = {
                    "PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                    "VAULT_ADDR": server.addr, "CLAUDE_BIN": str(claude),
                }  # fmt: skip
                first = run_once(env, entry)
                results = [run_once(env, entry) for _ in range(RUNS)]
                libraries = third_party_http(env, entry)
                empty = baseline("pass", entry)
                vault_layer = baseline("import agent.vault", entry)
                hvac_only = baseline("import hvac", entry)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    times = sorted(r[0] * 1000 for r in results)
    peaks = [r[1] for r in results]
    print(f"first run: {first[0] * 1000:.0f} ms, {first[1]:.1f} MiB: {first[2]}")
    print(f"steady runs: {results[-1][2]}")
    print(
        f"{RUNS} runs: median {statistics.median(times):.0f} ms "
        f"(min {times[0]:.0f}, max {times[-1]:.0f}); "
        f"peak RSS median {statistics.median(peaks):.1f} MiB, max {max(peaks):.1f} MiB"
    )
    print(f"third-party HTTP libraries a run imports: {libraries or 'none'}")
    print(
        f"for context, median of the same Python doing nothing: {empty:.0f} ms; "
        f"only importing the agent's Vault layer: {vault_layer:.0f} ms; "
        f"only importing hvac (used before): {hvac_only:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
