"""The README's main command, `make sandbox`, end to end on a server of its own.

Creates a sandbox under a test-only name and state directory, converges playbooks/site.yml on it
twice (the second run must report changed=0), then runs `--check --diff` and proves it reported
no change and altered nothing on the server, and finally destroys it. Wall times are printed for
the closing notes (pytest -s shows them; they are also written to tests/output/sandbox-times.txt).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# What a converge may touch, fingerprinted from inside the server.
SNAPSHOT = r"""
set -e
sha256sum /etc/docker/daemon.json /usr/local/lib/docker/cli-plugins/docker-compose
stat -c '%n %a %U %Y' /etc/docker/daemon.json /mnt/data /usr/local/lib/docker/cli-plugins/docker-compose
dpkg-query -W -f '${Package} ${Version} ${Status}\n' | sort | sha256sum
systemctl show docker -p ActiveEnterTimestampMonotonic -p MainPID
docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort
find /etc /mnt/data /var/cache/selfhosted -newer /etc/hostname -xdev 2>/dev/null | grep -v '^/etc/ssh' | sort \
  | xargs -r stat -c '%n %Y' || true
"""


def recap(output: str) -> dict[str, int]:
    m = RECAP.search(output)
    assert m, f"no PLAY RECAP in:\n{output[-4000:]}"
    return {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    name = f"shp-it-sandbox-{secrets.token_hex(3)}"
    state = tmp_path_factory.mktemp("sandbox-state")
    yield name, state
    subprocess.run(["python3", str(ROOT / "tests/tools/sandbox.py"), "destroy", "--name", name,
                    "--state-dir", str(state), "--purge-state"], capture_output=True, check=False)


def make_sandbox(name: str, state: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    res = run_tool(["make", "--no-print-directory", *extra, f"SANDBOX_NAME={name}", f"SANDBOX_STATE={state}"],
                   timeout=1800)
    return res, time.monotonic() - start


def server(state: Path, script: str) -> str:
    port = (state / "ssh_port").read_text().strip()
    res = subprocess.run(
        ["ssh", "-i", str(state / "id_ed25519"), "-p", port, "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
         "root@127.0.0.1", "bash", "-s"], input=script, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_make_sandbox_converges_then_is_idempotent_and_check_is_honest(sandbox):
    name, state = sandbox
    times = {}

    first, times["first"] = make_sandbox(name, state, "sandbox")
    assert first.returncode == 0, explain(first)
    r1 = recap(first.stdout)
    assert r1["failed"] == 0 and r1["unreachable"] == 0
    assert r1["changed"] > 0, "a fresh server must have been changed by the first converge"

    # The server really has what site.yml promises so far: engine, Compose v2, the stand-ins.
    out = server(state, "docker compose version --short; docker info --format '{{.LiveRestoreEnabled}}';"
                        " docker image ls --format '{{.Repository}}' | sort")
    assert out.splitlines()[0].startswith("2.")
    assert out.splitlines()[1] == "true"
    for image in ("shp-test/httpapp", "shp-test/mariadb", "shp-test/nginx", "shp-test/postgres", "shp-test/redis"):
        assert image in out.splitlines()
    # A stand-in actually runs on the server's own Docker.
    out = server(state, "docker run --rm --name shp-it-probe shp-test/redis:latest redis-server --version")
    assert "Redis server" in out

    second, times["second"] = make_sandbox(name, state, "sandbox")
    assert second.returncode == 0, explain(second)
    assert recap(second.stdout)["changed"] == 0, explain(second)

    before = server(state, SNAPSHOT)
    check, times["check"] = make_sandbox(name, state, "sandbox-check")
    assert check.returncode == 0, explain(check)
    assert recap(check.stdout)["changed"] == 0, explain(check)
    after = server(state, SNAPSHOT)
    assert before == after, "--check changed the server"

    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    report = (f"make sandbox first run: {times['first']:.1f}s (changed={r1['changed']}); "
              f"second run: {times['second']:.1f}s (changed=0); --check --diff: {times['check']:.1f}s (changed=0)\n")
    (out / "sandbox-times.txt").write_text(report)
    print(report)
