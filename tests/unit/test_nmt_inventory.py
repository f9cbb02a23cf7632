"""inventories/nmt declares seed 004's backend on a three-node swarm, rendered by Ansible itself (vault values with the
documented example password): the backend's requests/limits and RAM disks, prod and stage as separate stacks with a
PostgreSQL 16 instance each, TLS sites for backend.<domain> and backend.stage.<domain>, documentation addresses and
names only. Its sandbox twin (inventories/sandbox-nmt) must be the same site: it links to the site's definitions
and substitutes only images, domain, certificates, overlay encryption and backups."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool, swarm_sandbox_state

VARS = ["app_stack_stacks", "data_tier_instances", "data_tier_images", "proxy_nginx_sites", "proxy_nginx_ports",
        "proxy_nginx_networks", "proxy_nginx_routes", "swarm_networks", "firewall_public_tcp_ports", "backup_sets",
        "ansible_host", "swarm_node_labels", "group_names"]


def rendered(inventory: str, state: Path) -> dict:
    """Every host's VARS, with the TLS sites' keys masked (they are secrets)."""
    connections = {n: {"databases": {"nmt": {"password": "gen"}}} for n in ("nmt-prod-db", "nmt-stage-db")}
    extra = state / "runtime.json"
    extra.write_text(json.dumps({"data_tier_connections": connections}))
    expr = "{{ {" + ", ".join(f"'{v}': {v} | default(none)" for v in VARS) + "} | to_json }}"
    res = run_tool(["ansible", "all", "-i", f"inventories/{inventory}", "--vault-password-file",
                    "inventories/vault-password.example.txt", "-e", f"@{extra}", "-m", "ansible.builtin.debug",
                    "-a", f"msg={expr}"], timeout=300, SHP_SWARM_SANDBOX_STATE=str(state), HOME=str(state),
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    assert res.returncode == 0, explain(res)
    report = json.loads(res.stdout)
    out = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                msg = result["msg"]
                out[host] = json.loads(msg) if isinstance(msg, str) else msg
    return out


@pytest.fixture(scope="module")
def nmt(tmp_path_factory):
    return rendered("nmt", swarm_sandbox_state(tmp_path_factory.mktemp("nmt")))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return rendered("sandbox-nmt", swarm_sandbox_state(tmp_path_factory.mktemp("twin")))


def test_three_swarm_nodes_on_documentation_addresses_one_labelled_for_the_data(nmt):
    assert sorted(nmt) == ["nmt-1", "nmt-2", "nmt-3"]
    assert "swarm_managers" in nmt["nmt-1"]["group_names"]
    assert all("swarm_workers" in nmt[h]["group_names"] for h in ("nmt-2", "nmt-3"))
    assert nmt["nmt-3"]["swarm_node_labels"]["data"] == "true"
    for host, v in nmt.items():
        assert ipaddress.ip_address(v["ansible_host"]) in ipaddress.ip_network("192.0.2.0/24"), host


def test_the_backend_has_the_seeds_resources_ram_disks_and_two_replicas(nmt):
    stacks = {s["name"]: s for s in nmt["nmt-1"]["app_stack_stacks"]}
    assert sorted(stacks) == ["nmt-prod", "nmt-stage"]
    prod = stacks["nmt-prod"]["services"]["backend"]
    assert prod["image"].startswith("ghcr.io/")
    assert prod["deploy"]["replicas"] == 2
    assert prod["deploy"]["resources"] == {"reservations": {"cpus": "1", "memory": "2g"},
                                           "limits": {"cpus": "2", "memory": "4g"}}
    assert prod["tmpfs"] == ["/chrome-data:size=2g", "/tmp:size=1g"]
    assert prod["healthcheck"]["test"][:2] == ["CMD", "curl"]
    # prod and stage: separate stacks, each on its own database network (and the router's edge network)
    assert stacks["nmt-prod"]["networks"] == ["nmt-prod-data", "nmt-edge"]
    assert stacks["nmt-stage"]["networks"] == ["nmt-stage-data", "nmt-edge"]
    assert "@nmt-prod-db:5432/nmt" in stacks["nmt-prod"]["env"]["DATABASE_URL"]
    assert "@nmt-stage-db:5432/nmt" in stacks["nmt-stage"]["env"]["DATABASE_URL"]


def test_postgresql_16_one_instance_per_environment(nmt):
    v = nmt["nmt-1"]
    assert v["data_tier_images"]["postgres"].startswith("postgres:16")
    assert [(i["name"], i["engine"], i["networks"]) for i in v["data_tier_instances"]] == [
        ("nmt-prod-db", "postgres", ["nmt-prod-data"]), ("nmt-stage-db", "postgres", ["nmt-stage-data"])]


def test_tls_for_both_backend_names_on_the_router(nmt):
    v = nmt["nmt-1"]
    sites = v["proxy_nginx_sites"]
    assert [s["server_names"] for s in sites] == [["backend.nmt.example.test"], ["backend.stage.nmt.example.test"]]
    assert all(s["tls"]["certificate"].startswith("-----BEGIN CERTIFICATE-----") for s in sites)
    assert all("PRIVATE KEY-----" in s["tls"]["key"] for s in sites)
    upstreams = [r["upstream"] for s in sites for r in s["routes"]]
    assert upstreams == ["http://nmt-prod_backend:8080", "http://nmt-stage_backend:8080"]
    assert all(r["resolve"] and r["websocket"] for s in sites for r in s["routes"])
    assert v["proxy_nginx_ports"] == ["80:80", "443:443"] and v["firewall_public_tcp_ports"] == [80, 443]
    assert v["proxy_nginx_routes"] == []
    assert all(n["encrypted"] is True for n in v["swarm_networks"])


def test_the_twin_links_to_the_sites_definitions_and_substitutes_only_its_own(nmt, twin):
    twin_dir = ROOT / "inventories" / "sandbox-nmt"
    real_path = os.path.realpath
    site = real_path(ROOT / "inventories/nmt/group_vars/all/site.yml")
    assert real_path(twin_dir / "group_vars/all/site.yml") == site
    assert real_path(twin_dir / "hosts.yml") == real_path(ROOT / "inventories/sandbox-swarm/hosts.yml")
    assert real_path(twin_dir / "group_vars/all/cluster.yml") == real_path(
        ROOT / "inventories/sandbox-swarm/group_vars/all/main.yml")
    real, sandbox = nmt["nmt-1"], twin["swarm-1"]
    assert sorted(twin) == ["swarm-1", "swarm-2", "swarm-3"]
    assert twin["swarm-3"]["swarm_node_labels"]["data"] == "true"

    def same_shape(stacks):
        out = []
        for s in stacks:
            svc = dict(s["services"]["backend"], image=None,
                       environment=dict(s["services"]["backend"]["environment"], APP_VERSION=None))
            out.append(dict(s, services={"backend": svc}))
        return out

    # The same stacks, the image (and the release it reports) aside.
    assert same_shape(sandbox["app_stack_stacks"]) == same_shape(real["app_stack_stacks"])
    assert sandbox["app_stack_stacks"][0]["services"]["backend"]["image"] == "shp-test/httpapp:latest"
    assert sandbox["data_tier_instances"] == real["data_tier_instances"]
    assert [dict(n, encrypted=None) for n in sandbox["swarm_networks"]] == [
        dict(n, encrypted=None) for n in real["swarm_networks"]]
    strip = [dict(s, server_names=None, tls=None) for s in sandbox["proxy_nginx_sites"]]
    assert strip == [dict(s, server_names=None, tls=None) for s in real["proxy_nginx_sites"]]
    assert [s["server_names"] for s in sandbox["proxy_nginx_sites"]] == [
        ["backend.nmt-sandbox.example.test"], ["backend.stage.nmt-sandbox.example.test"]]
