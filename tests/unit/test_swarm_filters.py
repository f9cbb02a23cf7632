"""The Docker Swarm cluster an inventory describes (plugins/filter/swarm.py): node roles and addresses, the firewall's
cluster rules (and the firewall role's rendering of them: UFW rules and the DOCKER-USER/ESP block, unchanged on hosts
that are not swarm nodes), who inits and who joins, and what happens to nodes that left the inventory."""

from __future__ import annotations

import subprocess

import pytest
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible_collections.selfhosted.platform.plugins.filter import swarm as sw
from ansible_collections.selfhosted.platform.plugins.filter.firewall import firewall_ufw_rules
from ansible_collections.selfhosted.platform.plugins.module_utils import ufw_rules as ur

from tests.conftest import ROOT

M1, M2, M3, W1, W2 = "m1.example.test", "m2.example.test", "m3.example.test", "w1.example.test", "w2.example.test"


def hostvars(**addrs):
    """hostvars with swarm_advertise_addr (a str) or facts (a tuple: the default IPv4 address)."""
    out = {}
    for host, addr in addrs.items():
        name = host.replace("_", ".") + ".example.test"
        out[name] = ({"ansible_facts": {"default_ipv4": {"address": addr[0]}}} if isinstance(addr, tuple)
                     else {"swarm_advertise_addr": addr})
    return out


GROUPS = {"all": [M1, W1, W2, "solo.example.test"], "swarm_managers": [M1], "swarm_workers": [W1, W2]}
HV = hostvars(m1="192.0.2.11", w1="192.0.2.21", w2=("192.0.2.22",))


def test_roles_and_addresses_from_the_groups_the_advertise_address_or_the_facts():
    assert [sw.swarm_role_of(h, GROUPS) for h in (M1, W1, "solo.example.test")] == ["manager", "worker", ""]
    cluster = sw.swarm_cluster(GROUPS, HV)
    assert cluster["problems"] == []
    assert cluster["managers"] == [M1] and cluster["workers"] == [W1, W2]
    assert [(n["name"], n["role"], n["addr"]) for n in cluster["nodes"]] == [
        (M1, "manager", "192.0.2.11"), (W1, "worker", "192.0.2.21"), (W2, "worker", "192.0.2.22")]
    assert cluster["addresses"] == ["192.0.2.11", "192.0.2.21", "192.0.2.22"]
    # Other group names; a host in no group is no node.
    groups = {"all": [M1, W1], "ctl": [M1], "run": [W1]}
    assert sw.swarm_role_of(W1, groups, "ctl", "run") == "worker"
    assert sw.swarm_role_of(W1, groups) == ""
    assert sw.swarm_cluster({"all": [M1]}, {})["nodes"] == []


@pytest.mark.parametrize(("groups", "hv", "cause"), [
    ({"swarm_managers": [M1], "swarm_workers": [M1]}, hostvars(m1="192.0.2.11"), "in both swarm_managers and"),
    ({"swarm_workers": [W1]}, hostvars(w1="192.0.2.21"), "swarm_managers has none"),
    ({"swarm_managers": [M1]}, {M1: {}}, "no address for node m1.example.test: neither swarm_advertise_addr"),
    ({"swarm_managers": [M1]}, hostvars(m1="node-one"), "swarm_advertise_addr 'node-one' is not an IP address"),
    ({"swarm_managers": [M1, M2]}, hostvars(m1="192.0.2.11", m2="192.0.2.11"), "have the same address 192.0.2.11"),
])
def test_an_inventory_that_is_no_cluster_names_the_host_and_the_cause(groups, hv, cause):
    problems = sw.swarm_cluster(groups, hv)["problems"]
    assert any(cause in p for p in problems), problems
    with pytest.raises(AnsibleFilterError, match="swarm_firewall_rules"):
        sw.swarm_firewall_rules(sw.swarm_cluster(groups, hv), "manager")


def test_cluster_ports_only_from_the_nodes_and_2377_only_on_managers():
    cluster = sw.swarm_cluster(GROUPS, HV)
    manager = sw.swarm_firewall_rules(cluster, "manager")
    worker = sw.swarm_firewall_rules(cluster, "worker")
    assert sw.swarm_firewall_rules(cluster, "") == []
    assert {(r["port"], r["proto"]) for r in manager} == {("2377", "tcp"), ("7946", "tcp"), ("7946", "udp"),
                                                          ("4789", "udp")}
    assert {(r["port"], r["proto"]) for r in worker} == {("7946", "tcp"), ("7946", "udp"), ("4789", "udp")}
    assert {r["from"] for r in manager} == set(cluster["addresses"])
    assert len(manager) == 4 * 3 and len(worker) == 3 * 3


BASE = {"ssh_port": 22, "connection_port": "22", "ssh_sources": [], "admin_sources": [], "ssh_rate_limit": True,
        "public_tcp_ports": [80, 443], "public_udp_ports": [], "rules": [{"port": 8083, "comment": "app"}],
        "ipv6": True}


def test_the_firewall_declares_the_cluster_rules_last_and_nothing_more_elsewhere():
    plain = firewall_ufw_rules(BASE)
    assert firewall_ufw_rules(dict(BASE, swarm_rules=[])) == plain
    rules = sw.swarm_firewall_rules(sw.swarm_cluster(GROUPS, HV), "worker")
    with_swarm = firewall_ufw_rules(dict(BASE, swarm_rules=rules))
    assert with_swarm[:len(plain)] == plain
    added = [ur.desired_rule(r) for r in with_swarm[len(plain):]]
    assert {(r.action, r.proto, r.port, r.src, r.comment) for r in added} == {
        ("allow", proto, port, src, "selfhosted swarm")
        for port, proto in (("7946", "tcp"), ("7946", "udp"), ("4789", "udp"))
        for src in ("192.0.2.11", "192.0.2.21", "192.0.2.22")}
    # Nothing from anywhere: every cluster rule names a node's address.
    assert all(r.src != "any" for r in added)


# --- the DOCKER-USER block of after.rules, rendered as the role's lookup renders it -----------------------------------
TEMPLATE = "roles/firewall/templates/docker-user.rules.j2"


def render_block(family: int, template_text: str | None = None, **extra) -> str:
    path = ROOT / TEMPLATE
    if template_text is not None:
        path = ROOT / "tests" / "output" / f"docker-user-base-{family}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template_text)
    variables = {"firewall__origin_sources": [], "firewall_docker_internal_interfaces": ["docker0", "br-+"],
                 "firewall_public_tcp_ports": [80, 443], "firewall_public_udp_ports": [],
                 "firewall_rules": [{"port": 8083, "docker": True}], "firewall__external_interfaces": ["eth0"],
                 "firewall_docker_log_blocked": True, "firewall__swarm_role": "", **extra}
    templar = Templar(loader=DataLoader(), variables=variables)
    expr = trust_as_template("{{ lookup('ansible.builtin.template', '%s', template_vars={'family': %d}) }}"
                             % (path, family))
    return templar.template(expr)


def base_template() -> str:
    """The template as it was before swarm support: the newest commit of it that has no ESP line."""
    commits = subprocess.run(["git", "log", "--format=%H", "--", TEMPLATE], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for commit in commits:
        text = subprocess.run(["git", "show", f"{commit}:{TEMPLATE}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
        if "-p esp" not in text:
            return text
    raise AssertionError(f"no commit of {TEMPLATE} without the swarm block")


@pytest.mark.parametrize("family", [4, 6])
def test_the_docker_user_block_is_unchanged_on_a_host_that_is_no_swarm_node(family):
    before = render_block(family, base_template())
    assert render_block(family) == before
    assert "-p esp" not in before and before.rstrip().endswith("COMMIT")


def test_a_swarm_node_accepts_esp_from_the_nodes_only_and_keeps_its_docker_user_rules():
    cluster = sw.swarm_cluster({"swarm_managers": [M1], "swarm_workers": [W1]},
                               hostvars(m1="192.0.2.11", w1="2001:db8::21"))
    plain4, plain6 = render_block(4), render_block(6)
    v4 = render_block(4, firewall__swarm_role="worker", firewall__swarm=cluster)
    v6 = render_block(6, firewall__swarm_role="worker", firewall__swarm=cluster)
    assert v4 == plain4.replace("COMMIT", "-A ufw-after-input -p esp -s 192.0.2.11 -j ACCEPT\nCOMMIT")
    assert v6 == plain6.replace("COMMIT", "-A ufw6-after-input -p esp -s 2001:db8::21 -j ACCEPT\nCOMMIT")
    # Traffic into containers through docker_gwbridge and the ingress network: DNATed connections to the public
    # ports return to Docker's chains, others are dropped; connections containers open are not matched at all.
    assert "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 443 --ctdir ORIGINAL -j RETURN" in v4
    assert "-A DOCKER-USER -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j DROP" in v4
    assert "docker_gwbridge" not in v4


# --- who inits, who joins --------------------------------------------------------------------------------------------
def node(state="inactive", node_id="", cluster_id="", manager=False, docker=True):
    return {"docker": docker, "state": state, "node_id": node_id, "cluster_id": cluster_id, "manager": manager,
            "live_restore": False, "addr": "", "advertise": ""}


CLUSTER3 = sw.swarm_cluster({"swarm_managers": [M1], "swarm_workers": [W1, W2]},
                            hostvars(m1="192.0.2.11", w1="192.0.2.21", w2="192.0.2.22"))


def test_a_fresh_cluster_is_inited_on_the_first_manager_and_joined_by_the_others():
    plan = sw.swarm_join_plan(CLUSTER3, {M1: node(), W1: node(), W2: node(docker=False)})
    assert plan == {"bootstrap": M1, "init": True, "joins": {W1: "worker", W2: "worker"}, "node_ids": {},
                    "problems": []}


def test_an_existing_cluster_hands_out_tokens_from_a_manager_that_is_one():
    cluster = sw.swarm_cluster({"swarm_managers": [M1, M2, M3], "swarm_workers": [W1]},
                               hostvars(m1="192.0.2.11", m2="192.0.2.12", m3="192.0.2.13", w1="192.0.2.21"))
    states = {M1: node(), M2: node("active", "n2", "c1", True), M3: node("active", "n3", "c1", True),
              W1: node("active", "nw1")}
    nodes = [{"ID": "n2"}, {"ID": "n3"}, {"ID": "nw1"}]
    plan = sw.swarm_join_plan(cluster, states, nodes)
    assert plan == {"bootstrap": M2, "init": False, "joins": {M1: "manager"},
                    "node_ids": {M2: "n2", M3: "n3", W1: "nw1"}, "problems": []}
    # The converged cluster: nothing to do.
    states[M1] = node("active", "n1", "c1", True)
    plan = sw.swarm_join_plan(cluster, states, [*nodes, {"ID": "n1"}])
    assert (plan["bootstrap"], plan["init"], plan["joins"], plan["problems"]) == (M1, False, {}, [])
    # A worker that is down this run is neither joined nor a problem.
    del states[W1]
    assert sw.swarm_join_plan(cluster, states, nodes)["joins"] == {}


@pytest.mark.parametrize(("states", "nodes", "cause"), [
    ({M1: node("active", "n1", "c1", True), W1: node("active", "x9"), W2: node()}, [{"ID": "n1"}],
     "w1.example.test in another swarm than m1.example.test's"),
    ({M1: node(), W1: node("active", "nw1"), W2: node()}, None, "already in a swarm none of whose managers"),
    ({M1: node("pending"), W1: node(), W2: node()}, None, "in swarm state 'pending'"),
    ({W1: node(), W2: node()}, None, "the bootstrap manager m1.example.test did not answer"),
])
def test_a_cluster_the_role_cannot_form_is_refused_before_anything_changes(states, nodes, cause):
    problems = sw.swarm_join_plan(CLUSTER3, states, nodes)["problems"]
    assert any(cause in p for p in problems), problems


def test_managers_in_different_swarms_are_refused():
    cluster = sw.swarm_cluster({"swarm_managers": [M1, M2]}, hostvars(m1="192.0.2.11", m2="192.0.2.12"))
    states = {M1: node("active", "n1", "c1", True), M2: node("active", "n2", "c2", True)}
    problems = sw.swarm_join_plan(cluster, states)["problems"]
    assert any("the managers are in different swarms" in p for p in problems), problems


# --- nodes that left the inventory -----------------------------------------------------------------------------------
def api_node(node_id, role="worker", state="ready", availability="active", addr="192.0.2.99", reach=""):
    out = {"ID": node_id, "Description": {"Hostname": f"host-{node_id}"},
           "Spec": {"Role": role, "Availability": availability}, "Status": {"State": state, "Addr": addr}}
    if role == "manager":
        out["ManagerStatus"] = {"Reachability": reach or ("reachable" if state == "ready" else "unreachable")}
    return out


def test_departed_nodes_are_only_reported_without_the_guard():
    nodes = [api_node("n1", "manager", addr="192.0.2.11"), api_node("old", state="down", addr="192.0.2.30")]
    plan = sw.swarm_departed_plan(nodes, ["n1"], ["192.0.2.11"], False)
    assert [r["id"] for r in plan["departed"]] == ["old"]
    assert plan["drain"] == plan["demote"] == plan["remove"] == plan["waiting"] == plan["refused"] == []


def test_a_node_that_is_merely_down_is_recognised_by_its_address():
    nodes = [api_node("n1", "manager", addr="192.0.2.11"), api_node("w1", state="down", addr="192.0.2.21")]
    # w1 did not answer this run (its container is stopped): its ID is unknown, its address is the inventory's.
    plan = sw.swarm_departed_plan(nodes, ["n1"], ["192.0.2.11", "192.0.2.21"], True)
    assert plan["departed"] == [] and plan["remove"] == []


def test_with_the_guard_departed_nodes_are_drained_demoted_and_removed_once_down():
    nodes = [api_node("n1", "manager", addr="192.0.2.11"), api_node("n2", "manager", addr="192.0.2.12"),
             api_node("n3", "manager", state="down", addr="192.0.2.13"),
             api_node("gone", state="down", availability="drain", addr="192.0.2.30"),
             api_node("up", addr="192.0.2.31")]
    plan = sw.swarm_departed_plan(nodes, ["n1", "n2"], ["192.0.2.11", "192.0.2.12"], True)
    assert plan["demote"] == ["n3"]
    assert plan["drain"] == ["n3", "up"]  # "gone" is drained already
    assert plan["remove"] == ["n3", "gone"]
    assert [r["id"] for r in plan["waiting"]] == ["up"]  # still running: drained, removed by a later run
    assert plan["refused"] == []


def test_never_the_last_manager_never_losing_quorum():
    # The only manager left the inventory (the inventory names none of the swarm's nodes).
    plan = sw.swarm_departed_plan([api_node("n1", "manager", addr="192.0.2.11")], [], [], True)
    assert [(r["id"], r["reason"]) for r in plan["refused"]] == [("n1", "it is the last manager")]
    assert plan["demote"] == plan["drain"] == plan["remove"] == []
    # Three managers, one of the two that stay is unreachable: demoting the reachable departed one leaves 1 of 2.
    nodes = [api_node("n1", "manager", addr="192.0.2.11"), api_node("n2", "manager", state="down", addr="192.0.2.12"),
             api_node("n3", "manager", addr="192.0.2.13")]
    plan = sw.swarm_departed_plan(nodes, ["n1"], ["192.0.2.11", "192.0.2.12"], True)
    assert [r["id"] for r in plan["refused"]] == ["n3"] and "no quorum" in plan["refused"][0]["reason"]
    assert plan["demote"] == []
    # All three reachable, two departed: 3 -> 2 -> 1 managers, a majority reachable at every step.
    nodes = [api_node("n1", "manager", addr="192.0.2.11"), api_node("n2", "manager", addr="192.0.2.12"),
             api_node("n3", "manager", addr="192.0.2.13")]
    plan = sw.swarm_departed_plan(nodes, ["n1"], ["192.0.2.11"], True)
    assert plan["demote"] == ["n2", "n3"] and plan["refused"] == []


def test_the_node_state_docker_host_info_answers():
    info = {"LiveRestoreEnabled": False, "Swarm": {"LocalNodeState": "active", "NodeID": "n1", "NodeAddr": "192.0.2.11",
                                                   "ControlAvailable": True, "Cluster": {"ID": "c1"}}}
    assert sw.swarm_check_node(info, "192.0.2.11") == {
        "docker": True, "state": "active", "node_id": "n1", "cluster_id": "c1", "manager": True, "live_restore": False,
        "addr": "192.0.2.11", "advertise": "192.0.2.11"}
    fresh = sw.swarm_check_node({}, "192.0.2.11")
    assert (fresh["docker"], fresh["state"], fresh["manager"]) == (False, "inactive", False)
