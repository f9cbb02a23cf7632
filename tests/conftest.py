"""Shared pytest fixtures: where the checkout, its tools and its Ansible configuration are."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / ".build" / "collections"


def _install_collection_loader() -> None:
    """Make `ansible_collections.selfhosted.platform` importable in unit tests, the way
    ansible-test does: Ansible's collection finder over the checkout's collection link plus
    the collections bundled with the `ansible` package."""
    link = COLLECTIONS / "ansible_collections" / "selfhosted" / "platform"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    _AnsibleCollectionFinder(paths=[str(COLLECTIONS)])._install()


_install_collection_loader()


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for running the project's tools: the venv first on PATH, the checkout's
    ansible.cfg, and the collection link under .build/collections."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".build" / "collections")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def run_tool(args: list[str], *, timeout: float = 1800, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """Run a command from the checkout and return it; output is captured for the assertion message. Its stdin is a
    /dev/null of its own (see stdin_blocking).

    The tool runs in a process group of its own, and a timeout (or an interrupt) ends the whole group - molecule's
    or make's ansible-playbook children included, which a plain subprocess.run timeout leaves running (an orphaned
    converge went on for half an hour after its test had failed). A timeout returns exit code 124, as timeout(1)
    does, with the output so far and a last line saying so."""
    proc = subprocess.Popen(args, cwd=cwd, env=tool_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = end_group(proc)
        return subprocess.CompletedProcess(args, 124, out, f"{err}\n[run_tool] timed out after {timeout:.0f}s")
    except BaseException:
        end_group(proc)
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


TERM_GRACE = 30.0  # seconds a timed-out tool's process group has between SIGTERM and SIGKILL


def end_group(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM to the process group of run_tool's tool, SIGKILL after TERM_GRACE seconds; what it wrote so far."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; members that ignored SIGTERM are not.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return out or "", err or ""
    return "", ""


@pytest.fixture(autouse=True)
def stdin_blocking():
    """ansible-core refuses to start on a non-blocking stdin ("Ansible requires blocking IO on stdin/stdout/stderr").
    Every process of a test session shares one stdin open file description (the lanes of scripts/test_lanes.py one
    each), and a child that sets O_NONBLOCK on it - ssh does for its session, and keeps it when it is killed - sets it
    for all later ones: each test starts with it blocking again (run_tool also gives each tool a fresh /dev/null)."""
    with contextlib.suppress(OSError):  # no stdin at all
        os.set_blocking(0, True)
    yield


def explain(res: subprocess.CompletedProcess, tail: int = 12000) -> str:
    out = (res.stdout or "") + "\n--- stderr ---\n" + (res.stderr or "")
    return f"{' '.join(map(str, res.args))} exited {res.returncode}\n{out[-tail:]}"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def swarm_sandbox_state(path: Path) -> Path:
    """PATH made a stand-in state directory of the swarm sandbox, for runs that only template its inventories
    (inventories/sandbox-swarm, inventories/sandbox-nmt): each node's SSH port and address (documentation addresses),
    and the nmt twin's certificates from a local CA (tests/tools/local_ca.sh)."""
    for n, host in enumerate(("swarm-1", "swarm-2", "swarm-3"), start=1):
        (path / host).mkdir(parents=True, exist_ok=True)
        (path / host / "ssh_port").write_text(f"{2222 + n}\n")
        (path / host / "address").write_text(f"192.0.2.{10 + n}\n")
    ca = run_tool([str(ROOT / "tests/tools/local_ca.sh"), str(path / "nmt-tls"), "backend.nmt-sandbox.example.test",
                   "backend.stage.nmt-sandbox.example.test"], timeout=60)
    assert ca.returncode == 0, explain(ca)
    return path
