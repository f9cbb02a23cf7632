"""swarm_stack against a real single-node Docker Swarm inside ONE throwaway sandbox server (tests/tools/sandbox.py:
systemd, real sshd; Debian's docker.io 20.10 installed in it with apt, ``docker swarm init`` there - never on the
host's own dockerd, which other tests share). The module runs as a real Ansible task over SSH.

The server's kernel is this machine's: no IPVS, so the stack runs in dnsrr mode with host-mode published ports
(BRIEF section 6), and the test reaches nginx on the server's 127.0.0.1:18080. ``docker`` on the server's PATH is a
wrapper that logs each command line to /root/docker-calls.log before it runs /usr/bin/docker, so "no docker stack
deploy ran" is seen from outside the module.

Scenarios, in order, on one stack: the first deploy (nginx stand-in with a health-gated image and a config as its
index page, a redis stand-in pinned as stateful); the second run (changed=0, no deploy process); --check --diff on
the converged stack (changed=0) and after a change (the per-service update with its fields, nothing touched); the
config change (the config's hashed name rotates, the old one is pruned, the new page is served); a bad release (an
image whose healthcheck fails) rolled back by Swarm, reported, the old release still serving; vip asked for on
this IPVS-less kernel fails before deploying; a ``build:`` key refused naming the service.

Wall times are appended to tests/output/swarm-stack-times.txt.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration import docker_helpers as dh
from tests.integration.sandbox_helpers import append_times

pytestmark = [pytest.mark.integration]

TOOL = ROOT / "tests" / "tools" / "sandbox.py"
PORT = 18080
STACK = "shop"
SECRET = "swarm-S3cret-" + secrets.token_hex(4)
TIMES: dict[str, float] = {}
WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> /root/docker-calls.log
exec /usr/bin/docker "$@"
"""
GOOD = "FROM shp-test/nginx:latest\nHEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD test -f /run/nginx.pid\n"
BAD = "FROM shp-test/nginx:latest\nHEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD false\n"


def record(key: str, seconds: float) -> None:
    TIMES[key] = seconds
    append_times("swarm-stack-times.txt", **{key: f"{seconds:.2f}s"})


class Node:
    """The throwaway server, a single-node swarm manager."""

    def __init__(self, tmp: Path):
        self.name = dh.unique_name("swarm")
        self.state = tmp / self.name
        self.state.mkdir(parents=True)
        self.tmp = tmp
        self.runs = 0

    def create(self) -> Node:
        res = run_tool(["python3", str(TOOL), "create", "--name", self.name, "--state-dir", str(self.state)],
                       timeout=300)
        assert res.returncode == 0, explain(res)
        self.port = int((self.state / "ssh_port").read_text())
        return self

    def destroy(self) -> None:
        subprocess.run(["python3", str(TOOL), "destroy", "--name", self.name, "--state-dir", str(self.state),
                        "--purge-state"], capture_output=True, text=True, timeout=300, check=False)

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> str:
        res = dh.docker("exec", "-i", self.name, "bash", "-euo", "pipefail", "-s", input=script, check=False,
                        timeout=timeout)
        if check:
            assert res.returncode == 0, f"{script}\n--- exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def setup(self) -> None:
        started = time.monotonic()
        self.sh("export DEBIAN_FRONTEND=noninteractive; apt-get update -qq;"
                " apt-get install -y -qq --no-install-recommends docker.io >/dev/null;"
                " systemctl is-active docker || systemctl start docker")
        record("setup: apt-get install docker.io", time.monotonic() - started)
        t = time.monotonic()
        save = subprocess.Popen(["docker", "save", "shp-test/nginx:latest", "shp-test/redis:latest"],
                                stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "exec", "-i", self.name, "docker", "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=600, check=False)
        save.wait(timeout=600)
        assert load.returncode == 0 and save.returncode == 0, load.stderr
        record("setup: images loaded", time.monotonic() - t)
        self.sh(f"""
addr=$(getent hosts "$(hostname)" | awk '{{print $1; exit}}')
docker swarm init --advertise-addr "$addr" >/dev/null
docker node update --label-add selfhosted.data=true "$(docker info --format '{{{{.Swarm.NodeID}}}}')" >/dev/null
printf '%s' '{GOOD}' | docker build -q -t shp-swarm/web:good - >/dev/null
printf '%s' '{BAD}' | docker build -q -t shp-swarm/web:bad - >/dev/null
cat > /usr/local/bin/docker <<'EOF'
{WRAPPER}EOF
chmod 755 /usr/local/bin/docker
""")
        record("setup: total", time.monotonic() - started)

    def calls(self) -> list[str]:
        return [ln for ln in self.sh("cat /root/docker-calls.log 2>/dev/null || true").splitlines() if ln]

    def task(self, args: dict, *flags: str, module: str = "selfhosted.platform.swarm_stack") -> tuple[dict, float]:
        """Run swarm_stack (or MODULE) with ARGS over SSH; (result, wall seconds of ansible-playbook)."""
        self.runs += 1
        inv = self.state / "inventory.yml"
        inv.write_text(
            "all:\n  hosts:\n    node:\n"
            f"      ansible_host: 127.0.0.1\n      ansible_port: {self.port}\n      ansible_user: root\n"
            "      ansible_python_interpreter: /usr/bin/python3\n"
            f"      ansible_ssh_private_key_file: {self.state / 'id_ed25519'}\n"
            f"      ansible_ssh_common_args: -o UserKnownHostsFile={self.state / 'known_hosts'}"
            " -o StrictHostKeyChecking=yes\n")
        play = [{"hosts": "all", "gather_facts": False,
                 "tasks": [{"name": "swarm_stack", module: args, "register": "r",
                            "ignore_errors": True}]}]
        pb = self.state / f"play-{self.runs}.yml"
        pb.write_text(json.dumps(play))
        started = time.monotonic()
        res = run_tool(["ansible-playbook", "-i", str(inv), str(pb), *flags], timeout=600,
                       ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                       ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.state / "cp"))
        seconds = time.monotonic() - started
        assert res.stdout.strip().startswith("{"), explain(res)
        out = json.loads(res.stdout)
        return out["plays"][0]["tasks"][0]["hosts"]["node"], seconds

    def page(self) -> str:
        return self.sh(f"python3 -c 'import urllib.request as u; "
                       f"print(u.urlopen(\"http://127.0.0.1:{PORT}/\", timeout=5).read().decode())'",
                       check=False).strip()

    def services(self) -> dict:
        out = self.sh(f"docker service ls --filter label=com.docker.stack.namespace={STACK} --format '{{{{json .}}}}'")
        return {json.loads(ln)["Name"]: json.loads(ln) for ln in out.splitlines() if ln}

    def objects(self, kind: str) -> list[str]:
        return sorted(self.sh(f"docker {kind} ls --filter label=com.docker.stack.namespace={STACK}"
                              " --format '{{.Name}}'").split())


def args(page: str = "hello v1", image: str = "shp-swarm/web:good", **extra) -> dict:
    definition = {
        "services": {
            "web": {"image": image, "ports": [f"0.0.0.0:{PORT}:80"], "restart": "unless-stopped",
                    "configs": [{"source": "index", "target": "/usr/share/nginx/html/index.html"}],
                    "secrets": ["api_key"], "environment": {"API_URL": "http://app:${API_TOKEN}@api"}},
            "cache": {"image": "shp-test/redis:latest", "volumes": ["cache:/data"],
                      "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "2s", "retries": 3}},
        },
        "volumes": {"cache": {}},
        "configs": {"index": {"content": page + "\n"}},
    }
    a = {"project_name": STACK, "project_dir": f"/opt/stacks/{STACK}", "definition": definition,
         "env": {"API_TOKEN": SECRET}, "secrets": {"api_key": SECRET}, "resolve_image": "never",
         "wait_timeout": 120}
    a.update(extra)
    return a


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    dh.require_image("nginx")
    dh.require_image("redis")
    dh.require_image("server")
    srv = Node(tmp_path_factory.mktemp("swarm-stack"))
    try:
        srv.create()
        srv.setup()
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(scope="module")
def deployed(node):
    res, secs = node.task(args())
    record("first deploy (ansible-playbook)", secs)
    return res


def test_first_deploy_serves_over_the_host_port(node, deployed):
    res = deployed
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] and res["path"] == "deploy"
    assert res["endpoint_mode"] == "dnsrr" and "no IPVS" in res["endpoint_reason"]
    assert {s["service"]: s["action"] for s in res["plan"]} == {"cache": "create", "web": "create"}
    assert res["services"]["web"]["state"] == "converged" and res["services"]["cache"]["state"] == "converged"
    translated = {(t["service"], t["key"]): t["to"] for t in res["translated"]}
    assert translated[("web", "restart")].startswith("deploy.restart_policy")
    assert "stateful" in translated[("cache", "deploy.placement.constraints")]
    assert node.page() == "hello v1"
    svcs = node.services()
    assert svcs[f"{STACK}_web"]["Replicas"] == "1/1" and svcs[f"{STACK}_cache"]["Replicas"] == "1/1"
    spec = json.loads(node.sh(f"docker service inspect {STACK}_cache --format '{{{{json .Spec}}}}'"))
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.selfhosted.data==true"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback" and spec["UpdateConfig"]["Monitor"] > 0
    web = json.loads(node.sh(f"docker service inspect {STACK}_web --format '{{{{json .Spec}}}}'"))
    assert web["EndpointSpec"]["Mode"] == "dnsrr" and web["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert web["UpdateConfig"]["Order"] == "stop-first"
    # the secret value: never on a command line, never in the stack file, never in the result
    calls = "\n".join(node.calls())
    assert SECRET not in calls and "stack deploy" in calls
    assert SECRET not in node.sh(f"cat /opt/stacks/{STACK}/docker-stack.yml")
    assert node.sh(f"stat -c %a /opt/stacks/{STACK}/docker-stack.yml /opt/stacks/{STACK}/.env").split() == [
        "600", "600"]
    assert SECRET not in json.dumps(res)
    env = node.sh(f"docker service inspect {STACK}_web --format '{{{{json .Spec.TaskTemplate.ContainerSpec.Env}}}}'")
    assert f"API_URL=http://app:{SECRET}@api" in env


def test_second_run_changes_nothing_and_runs_no_deploy(node, deployed):
    before = len(node.calls())
    res, secs = node.task(args())
    record("no-op run (ansible-playbook)", secs)
    assert not res.get("failed"), res.get("msg")
    assert not res["changed"] and res["path"] == "fast-noop", res["plan"]
    assert res["cli_calls"] == 0 and node.calls()[before:] == []
    _ping, floor = node.task({}, module="ansible.builtin.ping")
    record("Ansible's dispatch floor (ping, ansible-playbook)", floor)
    res, secs = node.task(args(), "--check", "--diff")
    record("--check --diff on converged", secs)
    assert not res["changed"] and {s["action"] for s in res["plan"]} == {"unchanged"}


def test_check_diff_shows_the_update_and_touches_nothing(node, deployed):
    configs = node.objects("config")
    stack_file = node.sh(f"sha256sum /opt/stacks/{STACK}/docker-stack.yml")
    before = len(node.calls())
    res, _secs = node.task(args(page="hello v2"), "--check", "--diff")
    assert res["changed"] and res["path"] == "check"
    plan = {s["service"]: s for s in res["plan"]}
    assert plan["web"]["action"] == "update" and plan["web"]["fields"] == ["configs"]
    assert plan["cache"]["action"] == "unchanged"
    diff = res["diff"][1]["after"]
    assert "web" in diff and "update: configs" in diff
    assert node.calls()[before:] == [] and node.objects("config") == configs
    assert node.sh(f"sha256sum /opt/stacks/{STACK}/docker-stack.yml") == stack_file
    assert node.page() == "hello v1"


def test_config_change_rotates_and_prunes(node, deployed):
    old = node.objects("config")
    assert len(old) == 1
    res, secs = node.task(args(page="hello v2"))
    record("config rotation deploy (ansible-playbook)", secs)
    assert not res.get("failed"), res.get("msg")
    record("config rotation: the module's wait", res["waited"]["seconds"])
    assert res["changed"] and res["configs"]["pruned"] == old
    new = node.objects("config")
    assert new == res["configs"]["created"] and new != old and new[0].startswith(f"{STACK}_index_")
    assert node.page() == "hello v2"
    again, _secs = node.task(args(page="hello v2"))
    assert not again["changed"]


def test_bad_release_is_rolled_back_and_the_old_one_serves(node, deployed):
    serving = node.page()
    page = serving.removesuffix("\n")
    assert page.startswith("hello v"), serving
    res, secs = node.task(args(page=page, image="shp-swarm/web:bad"))
    record("bad release until rolled back (ansible-playbook)", secs)
    assert res.get("failed"), res
    record("bad release: the module's wait", res["waited"]["seconds"])
    assert res["rolled_back"] is True and res["rolled_back_services"] == ["web"], res["msg"]
    assert "rolled back web" in res["msg"]
    assert res["failed_services"]["web"]["running"] == 1, res["failed_services"]
    assert {f["image"] for f in res["failed_services"]["web"]["failing"]} == {"shp-swarm/web:bad"}
    assert SECRET not in json.dumps(res)
    spec = json.loads(node.sh(f"docker service inspect {STACK}_web --format '{{{{json .Spec.Labels}}}}'"))
    assert spec["com.docker.stack.image"] == "shp-swarm/web:good"
    dh.wait_until(lambda: node.page() == serving, timeout=60, what="the old release serving again")
    # the definition is still the bad one: the next run tries it again rather than calling it converged
    check, _secs = node.task(args(page=page, image="shp-swarm/web:bad"), "--check")
    assert check["changed"] and {s["service"]: s["action"] for s in check["plan"]}["web"] == "update"


def test_vip_without_ipvs_fails_before_deploying(node, deployed):
    before = len(node.calls())
    res, _secs = node.task(args(page="hello v2", endpoint_mode="vip"))
    assert res.get("failed")
    assert "endpoint_mode vip: this node's kernel has no IPVS" in res["msg"]
    assert node.calls()[before:] == []


def test_build_key_is_refused_naming_the_service(node, deployed):
    a = args(page="hello v2")
    a["definition"]["services"]["api"] = {"build": "./api", "image": "shop-api:1"}
    before = len(node.calls())
    res, _secs = node.task(a)
    assert res.get("failed")
    assert "service api: key build: Swarm does not build images" in res["msg"]
    assert node.calls()[before:] == []
    assert node.page() == "hello v2"
