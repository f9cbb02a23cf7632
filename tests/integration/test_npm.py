"""npm_admin, npm_proxy_host, npm_proxy_hosts, npm_certificate and npm_access_list as real Ansible tasks
(ansible-playbook) against the fake NPM API (tests/fakes/npm_api.py) served in-process on 127.0.0.1, counting the
requests the server receives."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.fakes.npm_api import FakeNpm

pytestmark = pytest.mark.integration

EMAIL = "ops@example.test"
PASSWORD = "it-admin-" + secrets.token_hex(8)
USER_PASSWORD = "it-user-" + secrets.token_hex(8)
DNS_TOKEN = "it-dns-" + secrets.token_hex(8)


def play(tmp: Path, tasks: list[dict], *flags: str) -> tuple[list[dict], str]:
    """Run tasks on localhost; returns each task's result and the raw output."""
    pb = tmp / f"play-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "vars": {"ansible_python_interpreter": sys.executable},
                               "tasks": [dict(t, ignore_errors=True) for t in tasks]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), *flags], timeout=600,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    out = json.loads(res.stdout[start:])
    return [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]], res.stdout + res.stderr


def task(module: str, fake: FakeNpm, tmp: Path, **args) -> dict:
    base = {"url": fake.url, "token_cache_dir": str(tmp / "tokens")}
    if module != "npm_admin":
        base.update(username=EMAIL, password=PASSWORD)
    base.update(args)
    return {"name": module, "selfhosted.platform." + module: base}


def admin(fake: FakeNpm, tmp: Path) -> dict:
    return task("npm_admin", fake, tmp, email=EMAIL, password=PASSWORD, name="Platform Ops")


def seed_003_hosts(count: int) -> list[dict]:
    """Seed 003's shape: one public site per stack, Let's Encrypt, force SSL, HTTP/2, HSTS, block exploits."""
    return [{"domain_names": ["site%02d.example.test" % i, "www.site%02d.example.test" % i],
             "forward_host": "stack%02d-web" % i, "forward_port": 3000 + i, "certificate": "new",
             "ssl_forced": True, "http2_support": True, "hsts_enabled": True, "block_exploits": True,
             "allow_websocket_upgrade": i % 3 == 0} for i in range(count)]


@pytest.fixture
def fake():
    server = FakeNpm(version="2.13.5", issue_delay=0.01)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("version", ["2.12.6", "2.13.5", "2.14.0"])
def test_bootstrap_and_second_run_changes_nothing(version, tmp_path):
    with FakeNpm(version=version, issue_delay=0.01) as fake:
        tasks = [admin(fake, tmp_path),
                 task("npm_access_list", fake, tmp_path, name="staff", satisfy_any=True,
                      users=[{"username": "alice", "password": USER_PASSWORD}],
                      clients=[{"address": "198.51.100.0/24", "directive": "allow"}]),
                 task("npm_proxy_host", fake, tmp_path, domain_names=["shop.example.test"], forward_host="shop",
                      forward_port=8080, certificate="new", new_certificate={"email": EMAIL}, ssl_forced=True,
                      http2_support=True, hsts_enabled=True, block_exploits=True, access_list="staff")]
        first, out = play(tmp_path, tasks)
        assert all(r.get("changed") and not r.get("failed") for r in first), first
        assert first[0]["method"] == ("default_admin" if version < "2.13" else "first_user")
        assert first[2]["proxy_host"]["ssl_forced"] and first[2]["proxy_host"]["certificate_id"] == 1
        assert PASSWORD not in out and USER_PASSWORD not in out
        fake.reset_counts()
        again, out = play(tmp_path, tasks)
        assert [r["changed"] for r in again] == [False, False, False], again
        assert fake.mutations() == []
        # one login for the whole play (npm_admin's, cached), then reads only
        assert fake.count("POST", "/api/tokens") == 1 and again[2]["requests"] == 2


def test_check_diff_shows_the_exact_field_changes(fake, tmp_path):
    base = {"domain_names": ["api.example.test"], "forward_host": "api", "forward_port": 5001,
            "block_exploits": True, "allow_websocket_upgrade": False}
    play(tmp_path, [admin(fake, tmp_path), task("npm_proxy_host", fake, tmp_path, **base)])
    edited = {**base, "forward_port": 5002, "allow_websocket_upgrade": True}
    fake.reset_counts()
    results = play(tmp_path, [task("npm_proxy_host", fake, tmp_path, **edited)], "--check", "--diff")[0]
    res = results[0]
    assert res["changed"] and res["changes"] == ["forward_port: 5001 -> 5002",
                                                 "allow_websocket_upgrade: false -> true"], res
    assert res["diff"]["before"]["forward_port"] == 5001 and res["diff"]["after"]["forward_port"] == 5002
    assert fake.mutations() == [] and fake.hosts_with("api.example.test")[0]["forward_port"] == 5001
    results = play(tmp_path, [task("npm_proxy_host", fake, tmp_path, **edited)], "--diff")[0]
    assert results[0]["changed"] and fake.hosts_with("api.example.test")[0]["forward_port"] == 5002
    assert fake.mutations() == ["PUT /api/nginx/proxy-hosts/1"]


def bulk_noop_requests(tmp: Path, count: int) -> tuple[int, dict]:
    tmp.mkdir()
    with FakeNpm(version="2.13.5", issue_delay=0.001) as fake:
        tasks = [admin(fake, tmp), task("npm_proxy_hosts", fake, tmp, hosts=seed_003_hosts(count))]
        first = play(tmp, tasks)[0]
        assert first[1]["changed"] and first[1]["summary"]["create"] == count, first[1]
        assert len(fake.certificates) == count and all(h["ssl_forced"] for h in fake.proxy_hosts.values())
        for path in (tmp / "tokens").iterdir():  # no cached token: the no-op pays for its login
            path.unlink()
        fake.reset_counts()
        again = play(tmp, [tasks[1]])[0][0]
        assert again["changed"] is False and fake.mutations() == [], again
        assert again["requests"] == fake.total_requests
        return fake.total_requests, dict(fake.counts)


def test_bulk_noop_costs_a_constant_number_of_requests(tmp_path):
    five, counts5 = bulk_noop_requests(tmp_path / "five", 5)
    twenty_one, counts21 = bulk_noop_requests(tmp_path / "twenty-one", 21)
    assert five == twenty_one == 3, (counts5, counts21)
    assert counts21 == {"GET /api/": 1, "POST /api/tokens": 1, "GET /api/nginx/proxy-hosts": 1}


def test_bulk_purge_and_duplicate_domains(fake, tmp_path):
    play(tmp_path, [admin(fake, tmp_path), task("npm_proxy_hosts", fake, tmp_path, hosts=seed_003_hosts(3))])
    fake.add_proxy_host(["forgotten.example.test"])
    declared = seed_003_hosts(3)[:2]
    results = play(tmp_path, [task("npm_proxy_hosts", fake, tmp_path, hosts=declared, purge=True)], "--check")[0]
    assert [h["action"] for h in results[0]["hosts"]] == ["unchanged", "unchanged", "delete", "delete"]
    assert len(fake.proxy_hosts) == 4
    results = play(tmp_path, [task("npm_proxy_hosts", fake, tmp_path, hosts=declared, purge=True),
                              task("npm_proxy_hosts", fake, tmp_path, hosts=declared, purge=True)])[0]
    assert results[0]["summary"]["delete"] == 2 and results[1]["changed"] is False
    left = sorted(h["domain_names"][0] for h in fake.proxy_hosts.values())
    assert left == ["site00.example.test", "site01.example.test"]
    fake.reset_counts()
    results = play(tmp_path, [task("npm_proxy_host", fake, tmp_path, domain_names=["site00.example.test"],
                                   forward_host="other", forward_port=80),
                              task("npm_proxy_hosts", fake, tmp_path, hosts=[
                                  {"domain_names": ["x.example.test"]},
                                  {"domain_names": ["y.example.test", "X.example.test"]}])])[0]
    assert results[0]["failed"] and results[0]["msg"].startswith(
        "domain_names: site00.example.test already belongs to proxy host #1")
    assert results[1]["failed"] and results[1]["msg"] == \
        "hosts[1].domain_names: x.example.test is also declared in hosts[0]"
    assert fake.mutations() == []


def test_failed_new_certificate_leaves_no_half_created_host(fake, tmp_path):
    tasks = [admin(fake, tmp_path),
             task("npm_proxy_host", fake, tmp_path, domain_names=["shop.invalid"], forward_host="shop",
                  forward_port=80, certificate="new", ssl_forced=True),
             task("npm_certificate", fake, tmp_path, domain_names=["other.invalid"])]
    results = play(tmp_path, tasks)[0]
    res = results[1]
    assert res["failed"] and "could not obtain a Let's Encrypt certificate" in res["msg"], res
    assert "Removed the half-created proxy host #1" in res["msg"]
    assert fake.hosts_with("shop.invalid") == [] and fake.certificates == {}
    assert results[2]["failed"] and "no valid A records found for other.invalid" in results[2]["msg"]
    assert fake.certificates == {}


def test_certificates_and_access_lists_keep_secrets_out_of_the_output(fake, tmp_path):
    tasks = [admin(fake, tmp_path),
             task("npm_certificate", fake, tmp_path, domain_names=["example.test", "*.example.test"],
                  dns_provider="cloudflare", dns_credentials="dns_cloudflare_api_token = " + DNS_TOKEN),
             task("npm_access_list", fake, tmp_path, name="staff",
                  users=[{"username": "alice", "password": USER_PASSWORD}], update_password="on_change"),
             task("npm_proxy_host", fake, tmp_path, domain_names=["grafana.example.test"], forward_host="grafana",
                  forward_port=3000, certificate={"match": "grafana.example.test"}, ssl_forced=True,
                  access_list="staff")]
    first, out = play(tmp_path, tasks, "--diff")
    assert all(r["changed"] and not r.get("failed") for r in first), first
    assert first[3]["proxy_host"]["certificate_id"] == first[1]["certificate"]["id"]
    again, out2 = play(tmp_path, tasks, "--diff")
    assert [r["changed"] for r in again] == [False] * 4, again
    for text in (out, out2):
        assert DNS_TOKEN not in text and USER_PASSWORD not in text and PASSWORD not in text


def test_access_list_pass_auth_runs_without_the_no_log_warning(fake, tmp_path):
    tasks = [admin(fake, tmp_path),
             task("npm_access_list", fake, tmp_path, name="staff", pass_auth=True, satisfy_any=True,
                  users=[{"username": "alice", "password": USER_PASSWORD}])]
    results, out = play(tmp_path, tasks)
    assert results[1]["changed"] and not results[1].get("failed"), results[1]
    assert fake.access_lists[1]["pass_auth"] is True
    warnings = [w for r in results for w in r.get("warnings", [])]
    assert not [w for w in warnings if "pass_auth" in w], warnings
    assert "Module did not set no_log for pass_auth" not in out


def test_two_factor_account_and_a_host_nginx_rejects(tmp_path):
    secret = "JBSWY3DPEHPK3PXP"
    with FakeNpm(version="2.14.1", initial_admin=(EMAIL, PASSWORD), issue_delay=0.01) as fake:
        fake.set_totp(EMAIL, secret)
        tasks = [task("npm_proxy_host", fake, tmp_path, totp_secret=secret, domain_names=["a.example.test"],
                      forward_host="app", forward_port=80),
                 task("npm_proxy_host", fake, tmp_path, totp_secret=secret, domain_names=["b.example.test"],
                      forward_host="app", forward_port=80, advanced_config="bogus_directive on;")]
        results, out = play(tmp_path, tasks)
        assert results[0]["changed"] and not results[0].get("failed"), results[0]
        assert results[1]["failed"] and "b.example.test" in results[1]["msg"], results[1]
        assert 'unknown directive "bogus_directive"' in results[1]["msg"]
        assert secret not in out and PASSWORD not in out
        again = play(tmp_path, tasks)[0]
        assert again[0]["changed"] is False and again[1]["failed"]
