"""Integration-test plumbing: the okt sandbox's first converge (`make sandbox-okt`, ~5-10 minutes mostly spent
waiting on apt, image loads and health gates inside the sandbox) starts in the background as soon as the session
has collected tests/integration/test_sandbox_okt.py, so it overlaps the other integration tests instead of adding
to the run. The okt tests then wait for it (wait_early) and get its output and wall time."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool_env

EARLY: dict[str, dict] = {}


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: start it only when an okt test really runs
def pytest_collection_modifyitems(session, config, items):
    if EARLY or not any(item.nodeid.startswith("tests/integration/test_sandbox_okt.py") for item in items):
        return
    name = f"shp-it-okt-{secrets.token_hex(3)}"
    state = Path(tempfile.mkdtemp(prefix="shp-it-okt-state-"))
    log = state.parent / f"{state.name}.log"
    handle = log.open("w")
    proc = subprocess.Popen(["make", "--no-print-directory", "sandbox-okt", f"OKT_SANDBOX_NAME={name}",
                             f"OKT_SANDBOX_STATE={state}"], cwd=ROOT, env=tool_env(), stdout=handle,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    EARLY["okt"] = {"name": name, "state": state, "proc": proc, "log": log, "handle": handle,
                    "start": time.time()}


def wait_early(key: str, timeout: float = 2400) -> tuple[subprocess.CompletedProcess, float]:
    early = EARLY[key]
    proc = early["proc"]
    rc = proc.wait(timeout=timeout)
    early["handle"].close()
    # Its own wall time: until it last wrote its log (it may have finished long before the okt tests began).
    took = early.setdefault("took", early["log"].stat().st_mtime - early["start"])
    out = early["log"].read_text()
    return subprocess.CompletedProcess(proc.args, rc, out, ""), took


def pytest_sessionfinish(session, exitstatus):
    early = EARLY.get("okt")
    if not early:
        return
    if early["proc"].poll() is None:
        early["proc"].kill()
        early["proc"].wait()
    subprocess.run(["python3", str(ROOT / "tests/tools/sandbox.py"), "destroy", "--name", early["name"],
                   "--state-dir", str(early["state"]), "--purge-state"], capture_output=True, check=False)
    early["handle"].close()
    early["log"].unlink(missing_ok=True)
