"""roles/proxy in mode npm with ``authelia: true`` proxy hosts, through ansible-playbook with a local connection,
against the fake NPM API (tests/fakes/npm_api.py) on 127.0.0.1 with ``proxy_npm_deploy: false``.

Protected hosts reach NPM with Authelia's NGINX auth_request snippet (the contract of the NPM stand-in's edge) in
their advanced_config - after the host's own advanced_config when it has one - and without the ``authelia`` key the
NPM API would refuse; unprotected hosts are sent as declared; a second run changes nothing and sends no write; a
protected host that already has its own ``location /`` is refused before any request."""

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
RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
OWN = "client_max_body_size 50m;"
HOSTS = [
    {"domain_names": ["seller1.dev.0kt.example.test"], "forward_host": "seller1-dev-web", "forward_port": 80,
     "authelia": True},
    {"domain_names": ["py.dev.0kt.example.test"], "forward_host": "python-dev", "forward_port": 5000,
     "authelia": True, "advanced_config": OWN},
    {"domain_names": ["auth.0kt.example.test"], "forward_host": "authelia", "forward_port": 9091},
    {"domain_names": ["www.0kt.example.test"], "forward_host": "www", "forward_port": 80, "authelia": False,
     "advanced_config": "return 301 https://0kt.example.test$request_uri;"},
]


def converge(tmp: Path, url: str, **extra) -> tuple[dict, str]:
    variables = {
        "ansible_python_interpreter": sys.executable,
        "proxy_mode": "npm",
        "proxy_npm_deploy": False,
        "proxy_npm_url": url,
        "proxy_npm_admin_email": "ops@example.test",
        "proxy_npm_admin_password": PASSWORD,
        "proxy_npm_wait_timeout": 9,
        "proxy_npm_proxy_hosts": HOSTS,
        "proxy_npm_authelia_url": "http://sso.internal:9091",
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


def directives(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines() if line.strip()]


def test_protected_hosts_carry_the_authelia_snippet_and_a_second_run_sends_nothing(tmp_path):
    with FakeNpm(version="2.13.5", issue_delay=0.01) as fake:
        first, out = converge(tmp_path, fake.url)
        assert first["rc"] == 0 and first["failed"] == 0, out
        assert first["changed"] == 2, out  # admin, hosts
        assert PASSWORD not in out
        hosts = {h["domain_names"][0]: h for h in fake.proxy_hosts.values()}
        assert set(hosts) == {h["domain_names"][0] for h in HOSTS}

        plain = directives(hosts["seller1.dev.0kt.example.test"]["advanced_config"])
        # The snippet of the shared contract, with proxy_npm_authelia_url in place.
        assert plain[:3] == ["location /internal/authelia/authz {", "internal;",
                             "proxy_pass http://sso.internal:9091/api/authz/auth-request;"]
        for line in ("proxy_set_header X-Original-URL $scheme://$http_host$request_uri;",
                     "proxy_set_header X-Original-Method $request_method;", "proxy_pass_request_body off;",
                     "location / {", "auth_request /internal/authelia/authz;",
                     "auth_request_set $user $upstream_http_remote_user;", "proxy_set_header Remote-User $user;",
                     "proxy_set_header Remote-Groups $groups;", "error_page 401 =302 $redirection_url;",
                     "include conf.d/include/proxy.conf;"):
            assert line in plain, line
        # The host's own advanced_config comes first, then the snippet.
        own = directives(hosts["py.dev.0kt.example.test"]["advanced_config"])
        assert own[0] == OWN and own[1:] == plain
        # Unprotected hosts are sent as declared (NPM would refuse an `authelia` key: additionalProperties false).
        assert hosts["auth.0kt.example.test"]["advanced_config"] == ""
        assert hosts["www.0kt.example.test"]["advanced_config"] == HOSTS[3]["advanced_config"]

        fake.reset_counts()
        again, out = converge(tmp_path, fake.url)
        assert again["rc"] == 0 and again["changed"] == 0, out
        assert fake.mutations() == []

        # Dropping the protection removes the snippet again.
        fake.reset_counts()
        hosts_unprotected = [{**h, "authelia": False} for h in HOSTS]
        third, out = converge(tmp_path, fake.url, proxy_npm_proxy_hosts=hosts_unprotected)
        assert third["rc"] == 0 and third["changed"] == 1, out
        hosts = {h["domain_names"][0]: h for h in fake.proxy_hosts.values()}
        assert hosts["seller1.dev.0kt.example.test"]["advanced_config"] == ""
        assert hosts["py.dev.0kt.example.test"]["advanced_config"] == OWN


def test_a_protected_host_with_its_own_root_location_is_refused_before_any_request(tmp_path):
    with FakeNpm(version="2.13.5") as fake:
        bad = [*HOSTS, {"domain_names": ["api.0kt.example.test"], "forward_host": "api", "forward_port": 80,
                        "authelia": True, "advanced_config": "location / {\n  proxy_pass http://api;\n}"}]
        res, out = converge(tmp_path, fake.url, proxy_npm_proxy_hosts=bad)
        assert res["rc"] != 0, out
        assert "proxy_npm_proxy_hosts[4] (api.0kt.example.test)" in out and "location /" in out, out
        assert fake.total_requests == 0
