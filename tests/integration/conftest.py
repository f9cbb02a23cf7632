"""Integration-test plumbing: the sandboxes' first converges (`make sandbox` for the amn site, `make sandbox-okt`
for the okt site, `make sandbox DEBIAN=trixie` for the amn site on Debian 13, `make sandbox-swarm` for a three-node
Docker Swarm; 4-10 minutes each, mostly spent waiting on apt, image loads and health gates inside the sandbox
servers), the Debian 12 ones preceded by `--check --diff` on the fresh server(s) (what the first converge will do),
start in the background as soon as the session has
collected their test module, so they overlap the other tests instead of adding to the run. Their tests then wait
for them (wait_early) and get the output and the wall time."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import ROOT, tool_env


class Background(NamedTuple):
    module: str  # the test module that needs it
    target: str  # make target of the first converge
    name_var: str  # make variables naming the server and its state directory
    state_var: str
    server_target: str  # make target that creates the server only
    check_target: str  # make target of `--check --diff` on the fresh server; "" runs none
    make_args: tuple[str, ...] = ()  # further make variables (the Debian release)
    cluster_hosts: tuple[str, ...] = ()  # a cluster of servers <name>-<host> (sandbox.py cluster-create), not one


BACKGROUND = {
    "amn": Background("tests/integration/test_sandbox.py", "sandbox", "SANDBOX_NAME", "SANDBOX_STATE",
                      "sandbox-server", "sandbox-check"),
    "okt": Background("tests/integration/test_sandbox_okt.py", "sandbox-okt", "OKT_SANDBOX_NAME", "OKT_SANDBOX_STATE",
                      "sandbox-okt-server", "sandbox-okt-check"),
    # The amn site on Debian 13, with Docker's user-namespace remapping on (docker_engine_userns_remap: default,
    # CIS 2.9): the one sandbox run that converges a remapped host, so no server of its own is added for it. No
    # fresh-host check: the amn sandbox runs it on Debian 12 (the same check-mode code), and the module's own budget
    # in CI is 12 minutes.
    "trixie": Background("tests/integration/test_sandbox_trixie.py", "sandbox", "SANDBOX_NAME", "SANDBOX_STATE",
                         "sandbox-server", "", ("DEBIAN=trixie", "SANDBOX_USERNS_REMAP=default")),
    # A three-node Docker Swarm (make sandbox-swarm): its fresh-cluster check predicts the init and the joins; both
    # runs are verbose (-v), so the test can prove no join token reaches the output.
    "swarm": Background("tests/integration/test_swarm_cluster.py", "sandbox-swarm", "SWARM_SANDBOX_NAME",
                        "SWARM_SANDBOX_STATE", "sandbox-swarm-servers", "sandbox-swarm-check", ("PLAYBOOK_ARGS=-v",),
                        ("swarm-1", "swarm-2", "swarm-3")),
}
EARLY: dict[str, dict] = {}

# The background job: the fresh server, then `site.yml --check --diff` on it before anything is converged (its own
# log, exit code and wall time, for the fresh-host check tests), then the first converge. MAKEARGS is split into
# words (VAR=value items without spaces).
EARLY_SCRIPT = """
make --no-print-directory "$SERVER" "$NAMEVAR=$NAME" "$STATEVAR=$STATE" $MAKEARGS || exit $?
if [ -n "$CHECK" ]; then
  start=$(date +%s%N)
  make --no-print-directory "$CHECK" "$NAMEVAR=$NAME" "$STATEVAR=$STATE" $MAKEARGS >"$CHECKLOG" 2>&1
  rc=$?
  echo "$rc $(( ($(date +%s%N) - start) / 1000000 ))" >"$CHECKLOG.rc"
fi
exec make --no-print-directory "$TARGET" "$NAMEVAR=$NAME" "$STATEVAR=$STATE" $MAKEARGS
"""


def start_early(key: str) -> None:
    bg = BACKGROUND[key]
    name = f"shp-it-{key}-{secrets.token_hex(3)}"
    state = Path(tempfile.mkdtemp(prefix=f"shp-it-{key}-state-"))
    log = state.parent / f"{state.name}.log"
    check_log = state.parent / f"{state.name}.check.log"
    handle = log.open("w")
    env = tool_env(SERVER=bg.server_target, CHECK=bg.check_target, TARGET=bg.target, NAMEVAR=bg.name_var,
                   STATEVAR=bg.state_var, NAME=name, STATE=str(state), CHECKLOG=str(check_log),
                   MAKEARGS=" ".join(bg.make_args))
    proc = subprocess.Popen(["bash", "-c", EARLY_SCRIPT], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    EARLY[key] = {"name": name, "state": state, "proc": proc, "log": log, "handle": handle, "start": time.time(),
                  "check_log": check_log}


def fresh_check(key: str) -> tuple[int, str, float] | None:
    """(exit code, output, wall time) of `site.yml --check --diff` on the fresh server, which the background job ran
    before the first converge; None when it did not get that far (wait_early first)."""
    early = EARLY[key]
    rc_file = early["check_log"].with_name(early["check_log"].name + ".rc")
    if not rc_file.exists():
        return None
    rc, took_ms = rc_file.read_text().split()
    return int(rc), early["check_log"].read_text(), int(took_ms) / 1000


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: start one only when a test of its module really runs
def pytest_collection_modifyitems(session, config, items):
    if config.option.collectonly:
        return
    for key, bg in BACKGROUND.items():
        if key not in EARLY and any(item.nodeid.startswith(bg.module) for item in items):
            start_early(key)


def wait_early(key: str, timeout: float = 2400) -> tuple[subprocess.CompletedProcess, float]:
    early = EARLY[key]
    proc = early["proc"]
    rc = proc.wait(timeout=timeout)
    early["handle"].close()
    # Its own wall time: until it last wrote its log (it may have finished long before its tests began).
    took = early.setdefault("took", early["log"].stat().st_mtime - early["start"])
    out = early["log"].read_text()
    return subprocess.CompletedProcess(proc.args, rc, out, ""), took


def early_sandbox(key: str):
    """Body of a module fixture: (name, state dir) of the sandbox whose first converge start_early began,
    destroyed when the module is done."""
    early = EARLY.get(key)
    assert early, f"tests/integration/conftest.py did not start the {key} sandbox"
    yield early["name"], early["state"]
    destroy_early(key)


def destroy_early(key: str) -> None:
    """Stop the background converge if it still runs and remove its sandbox server (idempotent)."""
    early = EARLY.get(key)
    if not early:
        return
    if early["proc"].poll() is None:
        # make and everything it started (ansible-playbook, ssh) share the session it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(early["proc"].pid, signal.SIGKILL)
        early["proc"].wait()
    hosts = BACKGROUND[key].cluster_hosts
    if hosts:
        cmd = ["cluster-destroy", "--prefix", early["name"], "--state-dir", str(early["state"]), "--purge-state",
               *hosts]
    else:
        cmd = ["destroy", "--name", early["name"], "--state-dir", str(early["state"]), "--purge-state"]
    subprocess.run(["python3", str(ROOT / "tests/tools/sandbox.py"), *cmd], capture_output=True, check=False)


def pytest_sessionfinish(session, exitstatus):
    for key in list(EARLY):
        destroy_early(key)
        EARLY[key]["handle"].close()
        EARLY[key]["log"].unlink(missing_ok=True)
        EARLY[key]["check_log"].unlink(missing_ok=True)
        EARLY[key]["check_log"].with_name(EARLY[key]["check_log"].name + ".rc").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def registry():
    """A real registry (Debian's docker-registry) on a free 127.0.0.1 port for the session; stopped, its storage
    and the local images of its repositories removed afterwards (tests/integration/registry_helpers.py)."""
    from tests.integration.registry_helpers import Registry

    reg = Registry()
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def auth_registry():
    """Like ``registry``, behind htpasswd auth: ``auth_registry.auth`` is (user, password)."""
    from tests.integration.registry_helpers import Registry

    reg = Registry(auth=("shp-tester", "Pw-" + secrets.token_hex(8)))
    yield reg
    reg.close()
