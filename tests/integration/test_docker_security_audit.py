"""docker_security_audit against the real Docker Engine of the test host: a container started by hand with the
engine's defaults is reported WARN by name on each CIS item it fails, a container started with the platform's
defaults (cap_drop ALL, no-new-privileges, read-only root with tmpfs, memory/CPU/PIDs limits, a healthcheck, a
user-defined network, a loopback port) passes every container item, a container holding the Docker socket fails
5.32, waivers turn named targets into WAIVED with their reason, and bad waivers fail before anything is read."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration


def audit(tmp: Path, **params) -> dict:
    pb = tmp / f"audit-{secrets.token_hex(3)}.yml"
    task = {"selfhosted.platform.docker_security_audit": params, "ignore_errors": True}
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "vars": {"ansible_python_interpreter": "/usr/bin/python3"}, "tasks": [task]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb)], timeout=300,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    return json.loads(res.stdout[start:])["plays"][0]["tasks"][0]["hosts"]["localhost"]


def targets(result: dict, item: str) -> dict[str, tuple[str, str]]:
    entry = next(i for i in result["checks"] if i["id"] == item)
    return {t["target"]: (t["status"], t["detail"]) for t in entry["targets"]}


@pytest.fixture(scope="module")
def containers():
    dh.require_docker()
    image = dh.require_image("httpapp")
    prefix = dh.unique_name("cis")
    network = f"{prefix}-net"
    names = {"handmade": f"{prefix}-handmade", "hardened": f"{prefix}-hardened", "socket": f"{prefix}-socket"}
    try:
        dh.docker("network", "create", network)
        # what `docker run -d -p` gives: nothing but the engine's defaults
        dh.docker("run", "-d", "--name", names["handmade"], "-p", "127.0.0.1::8080", image)
        dh.docker("run", "-d", "--name", names["hardened"], "--network", network, "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges:true", "--read-only", "--tmpfs", "/tmp",
                  "--memory", "64m", "--cpus", "0.5", "--pids-limit", "64", "--restart", "unless-stopped",
                  "--health-cmd", "true", "--health-interval", "5s", "-p", "127.0.0.1::8080", image)
        dh.docker("run", "-d", "--name", names["socket"], "--network", network, "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges:true", "--read-only", "--memory", "64m", "--cpus", "0.5",
                  "--pids-limit", "64", "--health-cmd", "true", "-v", "/var/run/docker.sock:/var/run/docker.sock:ro",
                  image)
        yield names
    finally:
        dh.docker("rm", "-f", *names.values(), check=False)
        dh.docker("network", "rm", network, check=False)


def test_handmade_container_warns_by_name_and_a_hardened_one_passes(containers, tmp_path):
    result = audit(tmp_path, sections=[5])
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    hand, hard, sock = containers["handmade"], containers["hardened"], containers["socket"]
    assert {hand, hard, sock} <= set(result["containers"])
    for item in ("5.4", "5.11", "5.12", "5.13", "5.27", "5.29", "5.30"):
        assert targets(result, item)[hand][0] == "WARN", item
        assert any(line.startswith(f"{item} {hand}: ") for line in result["findings"]), item
    assert targets(result, "5.13")[hand] == ("WARN", "writable root filesystem")
    assert targets(result, "5.30")[hand] == ("WARN", "networks: bridge")
    hardened = {item["id"]: targets(result, item["id"])[hard] for item in result["checks"] if item["id"] != "5.1"}
    assert {status for status, _detail in hardened.values()} == {"PASS"}, hardened
    assert hardened["5.14"] == ("PASS", "bound to 127.0.0.1")
    assert hardened["5.29"] == ("PASS", "pids limit: 64")
    assert targets(result, "5.32")[sock] == ("WARN", "docker socket mounted: /var/run/docker.sock")
    assert targets(result, "5.32")[hard][0] == "PASS"


def test_waivers_report_waived_with_the_reason_and_unused_ones(containers, tmp_path):
    hand = containers["handmade"]
    waivers = [{"item": "5.13", "target": hand, "reason": "the stand-in writes its pid file in /"},
               {"item": "5.13", "target": "shp-nothing-*", "reason": "stale"}]
    result = audit(tmp_path, sections=[5], waivers=waivers)
    assert targets(result, "5.13")[hand] == ("WAIVED", "writable root filesystem")
    entry = next(t for i in result["checks"] if i["id"] == "5.13" for t in i["targets"] if t["target"] == hand)
    assert entry["reason"] == "the stand-in writes its pid file in /"
    assert not any(line.startswith(f"5.13 {hand}:") for line in result["findings"])
    assert result["unused_waivers"] == [waivers[1]]


def test_daemon_and_files_are_read_from_the_live_host(containers, tmp_path):
    result = audit(tmp_path, sections=[2, 3])
    assert not result.get("failed"), result.get("msg")
    ids = {i["id"] for i in result["checks"]}
    assert {"2.2", "2.14", "2.16", "3.15", "3.16", "3.17", "3.18"} <= ids
    # this test host's daemon keeps Docker's defaults, which the benchmark flags (the platform's hardened defaults
    # are checked on the sandboxes): the audit reads them, it does not assume them
    info = json.loads(dh.docker("info", "--format", "{{json .}}").stdout)
    assert targets(result, "2.15")["live-restore"][0] == ("PASS" if info["LiveRestoreEnabled"] else "WARN")
    sock = targets(result, "3.16")
    assert list(sock) == ["/var/run/docker.sock"]


def test_fail_on_warn_and_bad_waivers_fail_naming_the_cause(containers, tmp_path):
    result = audit(tmp_path, sections=[5], fail_on_warn=True)
    assert result["failed"] and "CIS Docker Benchmark item(s) WARN" in result["msg"]
    assert f"5.13 {containers['handmade']}: writable root filesystem" in result["msg"]
    result = audit(tmp_path, waivers=[{"item": "5.9", "reason": "x"}])
    assert result["failed"] and result["msg"].startswith("waivers: waivers[0]: item '5.9' is not a CIS")
    result = audit(tmp_path, waivers=[{"item": "5.13"}])
    assert result["failed"] and "reason" in result["msg"]
    result = audit(tmp_path, docker_host="tcp://127.0.0.1:2375")
    assert result["failed"] and result["msg"].startswith("docker_host: only a local unix socket")
