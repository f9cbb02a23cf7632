"""roles/proxy in mode npm, through ansible-playbook, against the fake NPM API (tests/fakes/npm_api.py) on
127.0.0.1 with ``proxy_npm_deploy: false``: the role's admin bootstrap, access lists, proxy hosts (bulk, purge)
and its idempotency. No NPM image exists offline, so the Compose deployment of NPM itself (ports, data
directories, external networks) is not exercised here; see docs/roles/proxy.md."""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.fakes.npm_api import FakeNpm

pytestmark = pytest.mark.integration

PASSWORD = "it-proxy-" + secrets.token_hex(8)
USER_PASSWORD = "it-staff-" + secrets.token_hex(8)
RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def converge(tmp: Path, fake: FakeNpm, **extra) -> tuple[dict, str]:
    variables = {
        "ansible_python_interpreter": sys.executable,
        "proxy_mode": "npm",
        "proxy_npm_deploy": False,
        "proxy_npm_url": fake.url,
        "proxy_npm_admin_email": "ops@example.test",
        "proxy_npm_admin_password": PASSWORD,
        "proxy_npm_wait_timeout": 9,
        "proxy_npm_access_lists": [{"name": "staff", "satisfy_any": True,
                                    "users": [{"username": "alice", "password": USER_PASSWORD}],
                                    "clients": [{"address": "198.51.100.0/24", "directive": "allow"}]}],
        "proxy_npm_proxy_hosts": [
            {"domain_names": ["app.example.test"], "forward_host": "app-web", "forward_port": 3000,
             "certificate": "new", "ssl_forced": True, "http2_support": True, "block_exploits": True},
            {"domain_names": ["admin.example.test"], "forward_host": "app-admin", "forward_port": 8080,
             "access_list": "staff", "allow_websocket_upgrade": True},
        ],
        "proxy_npm_purge": True,
        **extra,
    }
    (tmp / "vars.json").write_text(json.dumps(variables))
    pb = tmp / "play.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "roles": ["selfhosted.platform.proxy"]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), "-e", f"@{tmp / 'vars.json'}"], timeout=600,
                   ANSIBLE_LOCALHOST_WARNING="false", XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))
    m = RECAP.search(res.stdout)
    assert m, explain(res)
    return {"rc": res.returncode, "ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}, res.stdout + res.stderr


def test_npm_mode_declares_admin_access_lists_and_hosts_then_changes_nothing(tmp_path):
    with FakeNpm(version="2.13.5", issue_delay=0.01) as fake:
        first, out = converge(tmp_path, fake)
        assert first["rc"] == 0 and first["failed"] == 0, out
        assert first["changed"] == 3, out  # admin, access list, hosts
        assert PASSWORD not in out and USER_PASSWORD not in out
        hosts = {tuple(h["domain_names"]): h for h in fake.proxy_hosts.values()}
        assert set(hosts) == {("app.example.test",), ("admin.example.test",)}
        assert hosts[("app.example.test",)]["ssl_forced"] and hosts[("app.example.test",)]["certificate_id"]
        staff = next(a for a in fake.access_lists.values() if a["name"] == "staff")
        assert hosts[("admin.example.test",)]["access_list_id"] == staff["id"]

        fake.reset_counts()
        again, out = converge(tmp_path, fake)
        assert again["rc"] == 0 and again["changed"] == 0, out
        assert fake.mutations() == []

        # A host dropped from the inventory is purged (proxy_npm_purge).
        fake.reset_counts()
        third, out = converge(tmp_path, fake, proxy_npm_proxy_hosts=[
            {"domain_names": ["app.example.test"], "forward_host": "app-web", "forward_port": 3000,
             "certificate": "new", "ssl_forced": True, "http2_support": True, "block_exploits": True}])
        assert third["rc"] == 0 and third["changed"] == 1, out
        assert [tuple(h["domain_names"]) for h in fake.proxy_hosts.values()] == [("app.example.test",)]


def test_npm_mode_refuses_a_missing_admin_password_before_any_request(tmp_path):
    with FakeNpm(version="2.13.5") as fake:
        res, out = converge(tmp_path, fake, proxy_npm_admin_password="")
        assert res["rc"] != 0 and "proxy_npm_admin_password" in out, out
        assert fake.total_requests == 0
