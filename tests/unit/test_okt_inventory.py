"""inventories/okt declares seed 003 faithfully: rendered by Ansible itself with the documented example vault
password (every vault value and every variable the roles get must render), then checked against the seed's
structure - 7 stacks, the infrastructure layer's 16 containers, the hybrid data tier, NPM on the seven stack
networks and never on a database network, 21 proxy hosts with Let's Encrypt + force SSL + HTTP/2 + HSTS + block
exploits, Authelia's users with argon2id hashes, UFW 22/80/443, documentation addresses and names only. The
reduced sandbox copy (inventories/sandbox-okt) must keep every pattern."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, explain, run_tool

VARS = ["app_stack_stacks", "data_tier_instances", "proxy_npm_networks", "proxy_mode",
        "firewall_public_tcp_ports", "firewall_rules", "authelia_users", "authelia_access_control_rules",
        "authelia_networks", "backup_sets", "backup_repository", "ansible_host"]


def rendered(inventory: str, tmp_path: Path) -> dict:
    data = yaml.safe_load((ROOT / "inventories" / inventory / "group_vars/all/data.yml").read_text())
    # data_tier_connections is what the data_tier role records at run time: a stand-in with every instance.
    connections = {i["name"]: {"superuser_password": "gen", "databases": {d["name"]: {"password": "gen"}
                                                                          for d in i.get("databases", [])}}
                   for i in data["data_tier_instances"]}
    extra = tmp_path / "runtime.json"
    extra.write_text(json.dumps({"data_tier_connections": connections}))
    expr = "{{ {" + ", ".join(f"'{v}': {v}" for v in VARS) + ", 'hosts': proxy_npm_proxy_hosts"
    expr += " | selfhosted.platform.npm_authelia_hosts, 'users_db': authelia_users"
    expr += " | selfhosted.platform.authelia_users_database('k' * 32)} | to_json }}"
    args = ["ansible", "all", "-i", f"inventories/{inventory}", "-e", f"@{extra}", "-m", "ansible.builtin.debug",
            "-a", f"msg={expr}"]
    if (ROOT / "inventories" / inventory / "group_vars/all/vault.yml").exists():
        args[2:2] = ["--vault-password-file", "inventories/vault-password.example.txt"]
    (tmp_path / "ssh_port").write_text("2222\n")
    res = run_tool(args, timeout=300, SHP_SANDBOX_STATE=str(tmp_path), HOME=str(tmp_path),
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    assert res.returncode == 0, explain(res)
    report = json.loads(res.stdout)
    (result,) = [h for p in report["plays"] for t in p["tasks"] for h in t["hosts"].values()]
    msg = result["msg"]
    return json.loads(msg) if isinstance(msg, str) else msg


@pytest.fixture(scope="module")
def okt(tmp_path_factory):
    return rendered("okt", tmp_path_factory.mktemp("okt"))


@pytest.fixture(scope="module")
def okt_sandbox(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("okt-sandbox")
    (tmp / "ssh_port").write_text("2222\n")
    return rendered("sandbox-okt", tmp)


SEED_STACKS = {"pro-0kt-stack": 11, "seller1-prod-stack": 2, "seller1-dev-stack": 2, "myshop-stack": 1,
               "commerce-stack": 1, "varbase-stack": 1, "python-stack": 2}


def containers(v: dict) -> set[str]:
    return {s.get("container_name") for st in v["app_stack_stacks"] for s in st["services"].values()}


def test_the_seven_stacks_and_the_container_inventory_of_seed_003(okt):
    stacks = {s["name"]: s for s in okt["app_stack_stacks"]}
    assert {k: len(v["services"]) for k, v in stacks.items()} == SEED_STACKS
    data = {i["name"]: i for i in okt["data_tier_instances"]}
    # Layer 1: NPM + Authelia + the three shared instances + the stack's 11 = the seed's 16 containers.
    shared = [n for n, i in data.items() if i["networks"] == ["okt-shared"]]
    assert sorted(shared) == ["mariadb-shared", "postgres-shared", "redis-shared"]
    assert 2 + len(shared) + SEED_STACKS["pro-0kt-stack"] == 16
    # ADR-002: an isolated database per production/dev stack (5) + their caches, 13 instances in all.
    assert len(data) == 13
    assert {n for n, i in data.items() if i["engine"] in ("postgres", "mariadb") and n not in shared} == {
        "seller1-prod-db", "seller1-dev-db", "varbase-db", "commerce-db", "myshop-db"}
    # The seed's container names.
    for name in ("pro-0kt-homarr", "pro-0kt-gitea", "pro-0kt-minio", "pro-0kt-portainer", "pro-0kt-pgadmin",
                 "pro-0kt-mailhog", "pro-0kt-n8n", "pro-0kt-jupyter", "pro-0kt-uptime", "pro-0kt-restic",
                 "pro-0kt-adminer", "seller1-prod-web", "seller1-prod-n8n", "seller1-dev-web", "seller1-dev-n8n",
                 "varbase-web", "commerce-web", "myshop-web", "python-dev", "python-tst"):
        assert name in containers(okt)


def test_isolation_production_sees_only_its_own_data_and_npm_no_database(okt):
    stacks = {s["name"]: s for s in okt["app_stack_stacks"]}
    data_networks = {n for i in okt["data_tier_instances"] for n in i["networks"]}
    assert stacks["seller1-prod-stack"]["networks"] == ["seller1-prod-data"]
    for dev in ("seller1-dev-stack", "myshop-stack", "commerce-stack", "varbase-stack"):
        assert "okt-shared" in stacks[dev]["networks"] and "seller1-prod-data" not in stacks[dev]["networks"]
    for stack in stacks.values():
        assert set(stack.get("networks", [])) <= data_networks
    assert sorted(okt["proxy_npm_networks"]) == sorted([f"{s}_default" for s in SEED_STACKS] + ["okt-sso"])
    assert not set(okt["proxy_npm_networks"]) & data_networks
    assert okt["proxy_mode"] == "npm"  # the role binds the admin port to 127.0.0.1 by default
    assert okt["firewall_public_tcp_ports"] == [80, 443] and okt["firewall_rules"] == []


def test_twenty_one_domains_with_the_seeds_tls_settings_and_authelia(okt):
    hosts = okt["hosts"]
    domains = [d for h in hosts for d in h["domain_names"]]
    assert len(hosts) == 21 and len(set(domains)) == 21
    assert all(d.endswith((".0kt.example.test", "seller1.example.test")) for d in domains)
    for h in hosts:
        assert h["certificate"] == "new" and h["ssl_forced"] and h["http2_support"] and h["hsts_enabled"]
        assert h["block_exploits"]
        assert h["forward_host"] in containers(okt) | {"authelia"}, h
    protected = [h for h in hosts if "auth_request /internal/authelia/authz;" in h.get("advanced_config", "")]
    guarded = {d for h in protected for d in h["domain_names"]}
    assert guarded >= {"seller1.dev.0kt.example.test", "pgadmin.0kt.example.test"}
    # The production site keeps its own login; the portal is never behind itself.
    for h in hosts:
        if h["domain_names"][0] in ("seller1.example.test", "auth.0kt.example.test"):
            assert "auth_request" not in h.get("advanced_config", "")
    www = next(h for h in hosts if h["domain_names"] == ["www.seller1.example.test"])
    assert "return 301 https://seller1.example.test$request_uri;" in www["advanced_config"]


def test_authelia_users_hashes_rules_and_secrets_from_the_vault(okt):
    assert {u["name"] for u in okt["authelia_users"]} == {"admin", "dev"}
    users_db = yaml.safe_load(okt["users_db"]) if isinstance(okt["users_db"], str) else okt["users_db"]
    for user in users_db["users"].values():
        assert user["password"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    for u in okt["authelia_users"]:
        assert u["password"].startswith("example-okt-authelia-")  # decrypted from vault.yml
    policies = [r["policy"] for r in okt["authelia_access_control_rules"]]
    assert policies[0] == "bypass" and "two_factor" in policies
    assert okt["authelia_networks"] == ["okt-sso"]


def test_documentation_addresses_and_names_only():
    text = "\n".join(p.read_text() for p in (ROOT / "inventories/okt").rglob("*.yml"))
    text += "\n".join(p.read_text() for p in (ROOT / "inventories/sandbox-okt").rglob("*.yml"))
    for addr in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text):
        ip = ipaddress.ip_address(addr)
        allowed = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "127.0.0.0/8", "172.16.0.0/12")
        assert any(ip in ipaddress.ip_network(n) for n in allowed), addr
    assert "0kt.ru" not in text and "seller1.ru" not in text and "45.144." not in text


def test_the_sandbox_copy_keeps_every_pattern(okt, okt_sandbox):
    kinds = {s["name"] for s in okt_sandbox["app_stack_stacks"]}
    assert kinds == {"pro-0kt-stack", "seller1-prod-stack", "commerce-stack", "python-stack"}
    engines = {(i["engine"], tuple(i["networks"])) for i in okt_sandbox["data_tier_instances"]}
    assert ("postgres", ("okt-shared",)) in engines and ("postgres", ("seller1-prod-data",)) in engines
    assert ("mariadb", ("commerce-data",)) in engines and ("redis", ("seller1-prod-data",)) in engines
    assert not set(okt_sandbox["proxy_npm_networks"]) & {n for i in okt_sandbox["data_tier_instances"]
                                                         for n in i["networks"]}
    assert okt_sandbox["firewall_public_tcp_ports"] == okt["firewall_public_tcp_ports"]
    assert any("auth_request" in h.get("advanced_config", "") for h in okt_sandbox["hosts"])
    assert any(not h.get("advanced_config") for h in okt_sandbox["hosts"])
