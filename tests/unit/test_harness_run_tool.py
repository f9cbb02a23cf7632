"""run_tool (tests/conftest.py), the harness's way to run a tool: a timeout ends the tool's whole process group -
grandchildren such as the ansible-playbook that molecule or make started included - and returns the output so far
with exit code 124 instead of raising and leaving them running."""

from __future__ import annotations

import os
import time

import tests.conftest
from tests.conftest import run_tool


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, parent gone to init which has not reaped it yet) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_timeout_ends_the_grandchildren_and_keeps_the_output(tmp_path):
    pidfile = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pidfile}; echo started; wait"
    start = time.monotonic()
    res = run_tool(["bash", "-c", script], timeout=2)
    assert time.monotonic() - start < 60
    assert res.returncode == 124
    assert "started" in res.stdout
    assert "timed out after 2s" in res.stderr
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild), "the tool's background child outlived the timeout"


def test_a_tool_that_ignores_sigterm_is_killed(monkeypatch):
    monkeypatch.setattr(tests.conftest, "TERM_GRACE", 1.0)
    start = time.monotonic()
    res = run_tool(["bash", "-c", "trap '' TERM; echo up; while :; do sleep 1; done"], timeout=1)
    assert res.returncode == 124 and "up" in res.stdout
    assert time.monotonic() - start < 30


def test_a_normal_run_returns_its_exit_code_and_output():
    res = run_tool(["bash", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
