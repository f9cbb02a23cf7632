"""The npm-mode parts of the operational playbooks, run as real playbooks on localhost against the fake NPM API
(tests/fakes/npm_api.py, which reproduces NPM's status codes, validation and normalisation) with
``proxy_npm_deploy: false``: add_domain.yml converges exactly the one proxy host that serves the domain (nothing
else created, changed or purged, although the inventory says purge) and refuses a domain the inventory does not
have; verify.yml (proxy section) names the domains that are missing, drifted or undeclared, and passes once NPM
matches the inventory; add_stack.yml deploys a stack on the real Docker Engine and converges exactly the proxy hosts
that forward to its containers. The nginx mode and the other sections run on the sandbox (test_sandbox.py)."""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.fakes.npm_api import FakeNpm
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

PASSWORD = "it-ops-" + secrets.token_hex(8)
HOSTS = [
    {"domain_names": ["app.example.test"], "forward_host": "app-web", "forward_port": 3000, "block_exploits": True},
    {"domain_names": ["admin.example.test", "ops.example.test"], "forward_host": "app-admin", "forward_port": 8080,
     "allow_websocket_upgrade": True},
]


def run(tmp: Path, playbook: str, url: str, *args: str, **more):
    """The playbook on localhost with an inventory declaring the hosts (as a real inventory does, not with -e)."""
    variables = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False,
                 "proxy_mode": "npm", "proxy_npm_deploy": False, "proxy_npm_url": url,
                 "proxy_npm_admin_email": "ops@example.test", "proxy_npm_admin_password": PASSWORD,
                 "proxy_npm_wait_timeout": 9, "proxy_npm_proxy_hosts": HOSTS, "proxy_npm_purge": True, **more}
    (tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": {"localhost": variables}}}))
    return run_tool(["ansible-playbook", "-i", str(tmp / "inventory.json"), f"playbooks/{playbook}", *args],
                    timeout=600, ANSIBLE_LOCALHOST_WARNING="false", XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))


def flat(text: str) -> str:
    return " ".join(text.split())


def rows(res) -> dict[str, tuple[str, str]]:
    """{item: (actual, OK|FAIL)} of the proxy rows of verify.yml's report."""
    out = {}
    for line in res.stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[0] == "proxy":
            out[cells[1]] = (cells[3], cells[4])
    return out


def test_add_domain_converges_one_host_and_verify_names_the_drift(tmp_path):
    with FakeNpm(version="2.13.5", issue_delay=0.01, initial_admin=("ops@example.test", PASSWORD)) as fake:
        stray = fake.add_proxy_host(["old.example.test"], forward_host="old", forward_port=80)

        res = run(tmp_path, "add_domain.yml", fake.url, "-e", "domain=ops.example.test")
        assert res.returncode == 0, explain(res)
        assert PASSWORD not in res.stdout + res.stderr
        assert [h["forward_port"] for h in fake.hosts_with("ops.example.test")] == [8080]
        assert fake.hosts_with("app.example.test") == []  # another declared host: not converged by this run
        assert fake.hosts_with("old.example.test")  # proxy_npm_purge is forced off
        again = run(tmp_path, "add_domain.yml", fake.url, "-e", "domain=ops.example.test")
        assert again.returncode == 0 and re.search(r"localhost\s+:.*changed=0", again.stdout), explain(again)

        # -e outranks the playbook's narrowing: refused before anything is written
        mutations = len(fake.mutations())
        res = run(tmp_path, "add_domain.yml", fake.url, "-e", "domain=ops.example.test", "-e", "proxy_npm_purge=true")
        assert res.returncode != 0 and "is given with -e (extra vars)" in flat(res.stdout), explain(res)
        assert len(fake.mutations()) == mutations and fake.hosts_with("old.example.test")

        res = run(tmp_path, "add_domain.yml", fake.url, "-e", "domain=nope.example.test")
        assert res.returncode != 0, explain(res)
        assert "nope.example.test is not in the inventory: add it first (a proxy_npm_proxy_hosts item" \
            in flat(res.stdout), explain(res)
        assert "'app.example.test', 'admin.example.test', 'ops.example.test'" in res.stdout, explain(res)

        # verify: the declared host not created yet, the undeclared one (purge) and a drifted one are named
        admin = fake.hosts_with("admin.example.test")[0]
        with fake.lock:
            fake.update_host(None, admin["id"], {"forward_port": 9999}, validated=True)
        mutations = len(fake.mutations())
        res = run(tmp_path, "verify.yml", fake.url, "-e", "verify_checks=proxy")
        assert res.returncode != 0, explain(res)
        got = rows(res)
        assert got["app.example.test"] == ("missing", "FAIL"), res.stdout
        assert got["admin.example.test,ops.example.test"][1] == "FAIL", res.stdout
        assert "forward_port" in got["admin.example.test,ops.example.test"][0], res.stdout
        assert got["old.example.test"][1] == "FAIL" and stray["id"], res.stdout
        assert len(fake.mutations()) == mutations  # verify wrote nothing
        assert PASSWORD not in res.stdout + res.stderr

        # once NPM matches the inventory, verify passes
        for domain in ("app.example.test", "admin.example.test"):
            res = run(tmp_path, "add_domain.yml", fake.url, "-e", f"domain={domain}")
            assert res.returncode == 0, explain(res)
        with fake.lock:
            fake.delete_host(stray["id"])
        res = run(tmp_path, "verify.yml", fake.url, "-e", "verify_checks=proxy")
        assert res.returncode == 0, explain(res)
        assert set(rows(res).values()) == {("identical", "OK")} and len(rows(res)) == 2, res.stdout


def test_add_stack_converges_the_stack_and_only_the_hosts_that_forward_to_it(tmp_path):
    image = dh.require_image("httpapp")
    stack, container = dh.unique_name("ops"), dh.unique_name("ops-web")
    health = {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], "interval": "2s", "timeout": "3s",
              "retries": 15}
    stacks = [{"name": stack, "services": {
        "web": {"image": image, "container_name": container, "environment": {"APP_NAME": "web", "PORT": "8080"},
                "healthcheck": health},
        "worker": {"image": image, "environment": {"APP_NAME": "worker", "PORT": "8081"}, "deploy": {"replicas": 2},
                   "healthcheck": dict(health, test=["CMD", "curl", "-fsS", "http://localhost:8081/health"])}}},
              {"name": "shp-it-not-this-one", "services": {"x": {"image": image}}}]
    hosts = [{"domain_names": ["web.example.test"], "forward_host": container, "forward_port": 8080},
             {"domain_names": ["worker.example.test"], "forward_host": f"{stack}-worker-2", "forward_port": 8081},
             {"domain_names": ["svc.example.test"], "forward_host": "web", "forward_port": 8080},
             {"domain_names": ["else.example.test"], "forward_host": "shp-it-not-this-one-x-1", "forward_port": 80}]
    more = {"app_stack_stacks": stacks, "app_stack_stacks_dir": str(tmp_path / "stacks"),
            "app_stack_data_root": str(tmp_path / "data"), "data_tier_instances": [], "proxy_npm_proxy_hosts": hosts}
    try:
        with FakeNpm(version="2.13.5", issue_delay=0.01, initial_admin=("ops@example.test", PASSWORD)) as fake:
            stray = fake.add_proxy_host(["old.example.test"], forward_host="old", forward_port=80)
            res = run(tmp_path, "add_stack.yml", fake.url, "-e", f"stack={stack}", **more)
            assert res.returncode == 0, explain(res)
            created = sorted(d for h in fake.proxy_hosts.values() for d in h["domain_names"])
            assert created == ["old.example.test", "svc.example.test", "web.example.test", "worker.example.test"]
            assert stray["id"] in fake.proxy_hosts  # purge off
            assert "proxy hosts: web.example.test; worker.example.test; svc.example.test" in flat(res.stdout)
        states = dh.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={stack}", "--format",
                           "{{.Names}} {{.Status}}").stdout.split("\n")
        assert sorted(line.split(" ")[0] for line in states if line) == sorted(
            [container, f"{stack}-worker-1", f"{stack}-worker-2"])
        assert all("(healthy)" in line for line in states if line), states
        assert not dh.docker("ps", "-aq", "--filter", "label=com.docker.compose.project=shp-it-not-this-one").stdout
    finally:
        dh.docker("compose", "--project-directory", str(tmp_path / "stacks" / stack), "-p", stack, "down", "-t", "1",
                  check=False)
