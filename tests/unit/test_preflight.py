"""site.yml's preflight (the selfhosted.platform.preflight action): every problem of every enabled layer at once,
each naming the variable, before any host is touched - run through ansible-playbook on the controller only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool, swarm_sandbox_state

SITE = ROOT / "playbooks" / "site.yml"


def preflight(tmp: Path, inventory: str, *extra: str) -> tuple[int, str]:
    res = run_tool(["ansible-playbook", str(SITE), "-i", inventory, "--tags", "preflight", *extra], timeout=300,
                   ANSIBLE_LOCALHOST_WARNING="false", HOME=str(tmp))
    return res.returncode, res.stdout + res.stderr


@pytest.fixture
def okt_vars(tmp_path):
    path = tmp_path / "vars.json"

    def write(**values):
        path.write_text(json.dumps(values))
        return f"@{path}"

    return write


def test_the_okt_inventory_passes_with_its_vault(tmp_path):
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-v")
    assert rc == 0, out
    assert "preflight passed for" in out and "selfhosted_backup_enabled" in out


def test_every_problem_is_reported_at_once_naming_the_variable(tmp_path, okt_vars):
    extra = okt_vars(backup_password="{{ vault_not_in_the_vault }}",
                     firewall_rules="not-a-list",
                     data_tier_instances=[{"name": "x", "engine": "oracle"}],
                     proxy_npm_admin_password="")
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-e", extra)
    assert rc != 0, out
    assert "preflight found 4 problem(s) - nothing was changed" in out, out
    assert "backup_password: vault_not_in_the_vault is undefined - is the vault loaded" in out
    assert "firewall_rules: expected list of dict, got str" in out
    assert "data_tier_instances[0].engine: must be one of: postgres, mariadb, mongodb, redis, got: 'oracle'" in out
    assert "proxy_npm_admin_password: required when selfhosted_proxy_enabled is enabled, but empty" in out
    # Nothing ran after the preflight: no other play reached a task.
    assert "Converge Docker Engine" not in out


def test_a_disabled_layer_is_not_checked_and_facts_set_later_are_deferred(tmp_path, okt_vars):
    extra = okt_vars(selfhosted_backup_enabled=False, backup_password="")
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-e", extra, "-v")
    assert rc == 0, out
    assert "selfhosted_backup_enabled" not in out.split("preflight passed for", 1)[1].splitlines()[0]
    # app_stack_stacks uses data_tier_connections (set by the data tier layer): deferred, not a problem.
    assert '"deferred": [' in out.replace("\n", "") or "deferred:" in out
    assert "app_stack_stacks" in out


def test_a_proxy_jail_behind_a_cdn_is_refused_saying_why(tmp_path, okt_vars):
    # okt's inventory watches its proxy's access log with fail2ban; with the client address taken from a CDN's header,
    # the jail would ban visitors that never connect to the host.
    extra = okt_vars(proxy_mode="nginx", proxy_nginx_real_ip_enabled=True)
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-e", extra)
    assert rc != 0, out
    assert "preflight found 1 problem(s) - nothing was changed" in out, out
    assert "firewall_fail2ban_proxy_logs: cannot be used with proxy_nginx_real_ip_enabled" in out
    assert "visitors never connect to this host" in out and "firewall_origin_sources" in out
    assert "Converge Docker Engine" not in out


@pytest.mark.parametrize("values", [
    {"proxy_mode": "nginx", "proxy_nginx_real_ip_enabled": True, "firewall_fail2ban_proxy_logs": [],
     "firewall_origin_sources": ["203.0.113.0/24"]},
    {"proxy_mode": "nginx", "proxy_nginx_real_ip_enabled": True, "firewall_fail2ban_enabled": False},
    {"proxy_mode": "nginx", "proxy_nginx_real_ip_enabled": True, "selfhosted_firewall_enabled": False},
    {"proxy_mode": "nginx", "proxy_nginx_real_ip_enabled": False},
])
def test_the_cdn_check_passes_without_the_combination(tmp_path, okt_vars, values):
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-e", okt_vars(**values), "-v")
    assert rc == 0, out
    assert "preflight passed for" in out


def test_the_amn_inventory_behind_cloudflare_passes(tmp_path):
    rc, out = preflight(tmp_path, str(ROOT / "inventories/amn"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"), "-v")
    assert rc == 0, out
    assert "preflight passed for" in out


INVENTORIES = sorted(p.name for p in (ROOT / "inventories").iterdir() if p.is_dir())


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_inventory_passes_for_every_host_without_a_false_positive(tmp_path, inventory):
    # Every inventory of the repository, every host of it: no variable reported as unknown, no item as wrong.
    (tmp_path / "ssh_port").write_text("2222\n")
    # The swarm sandbox's nodes (inventories/sandbox-swarm, sandbox-nmt): a port and an address each, the certificates.
    swarm_sandbox_state(tmp_path)
    res = run_tool(["ansible-playbook", str(SITE), "-i", str(ROOT / "inventories" / inventory), "--tags", "preflight",
                    "--vault-password-file", str(ROOT / "inventories/vault-password.example.txt")],
                   timeout=300, HOME=str(tmp_path), SHP_SANDBOX_STATE=str(tmp_path),
                   SHP_SWARM_SANDBOX_STATE=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="false")
    assert res.returncode == 0, explain(res)
    hosts = run_tool(["ansible-inventory", "-i", str(ROOT / "inventories" / inventory), "--list",
                      "--vault-password-file", str(ROOT / "inventories/vault-password.example.txt")],
                     timeout=120, HOME=str(tmp_path), SHP_SANDBOX_STATE=str(tmp_path),
                     SHP_SWARM_SANDBOX_STATE=str(tmp_path))
    names = sorted(json.loads(hosts.stdout)["_meta"]["hostvars"])
    assert names, explain(hosts)
    for name in names:
        assert re.search(r"^%s\s+: ok=1 .*failed=0" % re.escape(name), res.stdout, re.M), explain(res)


SSH_MARKER = """#!/bin/sh
# Stands in for ssh: any connection attempt leaves a trace and fails.
echo "$@" >> "$(dirname "$0")/ssh-was-called"
exit 255
"""


def test_a_misspelt_variable_stops_the_site_in_the_preflight_before_any_host_is_contacted(tmp_path):
    # A host on a documentation address, reached (if ever) through an ssh that only records the attempt.
    ssh = tmp_path / "ssh"
    ssh.write_text(SSH_MARKER)
    ssh.chmod(0o755)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"unreachable": {
        "ansible_host": "192.0.2.77", "ansible_user": "root", "ansible_ssh_executable": str(ssh),
        "ansible_ssh_common_args": "-o ConnectTimeout=2", "backup_password": "a-test-password",
        "backup_repository": "/mnt/backup/restic"}}}}))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"firewall_rule": [{"port": "8080"}],
                                 "backup_sets": [{"name": "db", "databases": "all", "on_calender": "daily"}]}))
    res = run_tool(["ansible-playbook", str(SITE), "-i", str(inventory), "-e", f"@{extra}"], timeout=120,
                   HOME=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="false")
    out = res.stdout + res.stderr
    assert res.returncode != 0, explain(res)
    assert "preflight found 2 problem(s) - nothing was changed" in out, explain(res)
    assert "firewall_rule is not a variable of role firewall; did you mean firewall_rules?" in out, explain(res)
    assert "backup_sets[0].on_calender: unsupported parameter; did you mean on_calendar?" in out, explain(res)
    # The run ended with the preflight play: no other play started, no connection was even attempted.
    assert "PLAY [Docker Engine]" not in out and "unreachable=0" in out, explain(res)
    assert not (tmp_path / "ssh-was-called").exists(), (tmp_path / "ssh-was-called").read_text()


@pytest.mark.parametrize(("waivers", "message"), [
    ([{"item": "5.14", "target": "router-*"}],
     "selfhosted_security_waivers: item [0] (item 5.14): a waiver needs a reason"),
    ([{"item": "5.9", "reason": "ports are checked by verify"}],
     "selfhosted_security_waivers: item [0]: item '5.9' is not a CIS Docker Benchmark 1.6.0 item this audit checks"),
    ("5.14", "selfhosted_security_waivers: expected a list of {item, target, reason}, got a string"),
])
def test_security_waivers_are_checked_before_anything_runs(tmp_path, okt_vars, waivers, message):
    rc, out = preflight(tmp_path, str(ROOT / "inventories/okt"), "--vault-password-file",
                        str(ROOT / "inventories/vault-password.example.txt"),
                        "-e", okt_vars(selfhosted_security_waivers=waivers))
    assert rc != 0, out
    assert message in out, out
    assert "Converge Docker Engine" not in out
