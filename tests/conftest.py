"""Shared pytest fixtures: where the checkout, its tools and its Ansible configuration are."""

from __future__ import annotations

import contextlib
import os
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
    /dev/null of its own (see stdin_blocking)."""
    return subprocess.run(args, cwd=cwd, env=tool_env(**env), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


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
