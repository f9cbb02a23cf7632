# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker Swarm cluster an inventory describes, in one place for the three roles that need it: docker_engine
(live-restore off on every swarm node), firewall (the cluster ports open from the nodes' addresses only) and swarm
(who inits, who joins, which nodes left the inventory and may be removed without losing quorum).

Pure functions of inventory data and of what the Engine API answered (docker_node_info's nodes); no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

# The inventory groups a cluster is read from unless swarm_managers_group / swarm_workers_group name others. The
# swarm role's defaults repeat them for its argument spec; the engine and firewall roles, which may run without the
# swarm role in the play, get them from here.
MANAGERS_GROUP = "swarm_managers"
WORKERS_GROUP = "swarm_workers"
AVAILABILITIES = ("active", "pause", "drain")
# The cluster's own ports (Docker's documentation, "Use overlay networks"): cluster management on managers, node
# gossip everywhere, the VXLAN data path everywhere.
MANAGER_PORTS = (("2377", "tcp"),)
NODE_PORTS = (("7946", "tcp"), ("7946", "udp"), ("4789", "udp"))


def _groups(groups, managers_group, workers_group):
    if not isinstance(groups, Mapping):
        raise AnsibleFilterError("swarm: expects the inventory's groups (the `groups` variable)")
    mg = managers_group or MANAGERS_GROUP
    wg = workers_group or WORKERS_GROUP
    return list(groups.get(mg) or []), list(groups.get(wg) or []), mg, wg


def swarm_role_of(host, groups, managers_group=None, workers_group=None):
    """``manager``, ``worker`` or ``""`` (not a swarm node) for HOST (an inventory hostname)."""
    managers, workers, _mg, _wg = _groups(groups, managers_group, workers_group)
    if host in managers:
        return "manager"
    if host in workers:
        return "worker"
    return ""


def _address(host, hostvars):
    hv = hostvars.get(host) if isinstance(hostvars, Mapping) else None
    if hv is None:
        return "", "it is not in hostvars"
    addr = hv.get("swarm_advertise_addr") or ""
    source = "swarm_advertise_addr"
    if not addr:
        facts = hv.get("ansible_facts") or {}
        addr = ((facts.get("default_ipv4") or {}).get("address")) or ""
        source = "its default IPv4 address (facts)"
    if not addr:
        return "", "neither swarm_advertise_addr is set nor its facts (default_ipv4) gathered"
    try:
        return str(ipaddress.ip_address(str(addr))), ""
    except ValueError:
        return "", f"{source} {addr!r} is not an IP address"


def swarm_cluster(groups, hostvars, managers_group=None, workers_group=None):
    """The cluster: ``managers`` and ``workers`` (inventory hostnames, inventory order), ``nodes`` (each with
    ``name``, ``role``, ``addr``), ``addresses`` (every node's address, sorted, no duplicates) and ``problems``
    (sentences naming the host and the variable; empty when the inventory describes a usable cluster)."""
    managers, workers, mg, wg = _groups(groups, managers_group, workers_group)
    problems = []
    both = [h for h in managers if h in workers]
    if both:
        problems.append(f"swarm: {', '.join(both)} in both {mg} and {wg}: a node is a manager or a worker")
    if workers and not managers:
        problems.append(f"swarm: the group {wg} has nodes but {mg} has none: a cluster needs a manager")
    nodes = []
    for host in managers + [h for h in workers if h not in managers]:
        addr, why = _address(host, hostvars)
        if why:
            problems.append(f"swarm: no address for node {host}: {why} (set swarm_advertise_addr in its host vars)")
        nodes.append({"name": host, "role": "manager" if host in managers else "worker", "addr": addr})
    seen = {}
    for node in nodes:
        if node["addr"] and node["addr"] in seen:
            problems.append(f"swarm: {seen[node['addr']]} and {node['name']} have the same address {node['addr']}")
        seen.setdefault(node["addr"], node["name"])
    return {"managers": managers, "workers": [h for h in workers if h not in managers], "nodes": nodes,
            "addresses": sorted({n["addr"] for n in nodes if n["addr"]}), "problems": problems}


def swarm_firewall_rules(cluster, role):
    """The UFW rules of a node with ROLE (manager/worker) in CLUSTER (swarm_cluster's answer): the cluster ports from
    every node's address, nothing from anywhere else. A host that is not a node (ROLE empty) gets none."""
    if not role:
        return []
    if not isinstance(cluster, Mapping) or cluster.get("problems"):
        raise AnsibleFilterError("swarm_firewall_rules: "
                                 + ("; ".join(cluster.get("problems")) if isinstance(cluster, Mapping)
                                    else "expects swarm_cluster's answer"))
    ports = (MANAGER_PORTS if role == "manager" else ()) + NODE_PORTS
    return [{"port": port, "proto": proto, "from": addr} for port, proto in ports for addr in cluster["addresses"]]


def _node_row(node):
    spec = node.get("Spec") or {}
    desc = node.get("Description") or {}
    status = node.get("Status") or {}
    mstatus = node.get("ManagerStatus") or {}
    row = {"id": node.get("ID", ""), "hostname": desc.get("Hostname", ""), "role": spec.get("Role", ""),
           "availability": spec.get("Availability", ""), "state": status.get("State", ""),
           "addr": status.get("Addr", ""), "reachability": mstatus.get("Reachability", ""),
           "leader": bool(mstatus.get("Leader"))}
    # For the report: "host (id, worker, down, active)".
    row["line"] = f"{row['hostname']} ({row['id']}, {row['role']}, {row['state']}, {row['availability']})"
    return row


def swarm_departed_plan(nodes, inventory_ids, inventory_addrs, remove=False):
    """What to do with the swarm's nodes that are not in the inventory.

    NODES: docker_node_info's ``nodes`` (Engine API node objects). A node is in the inventory when its ID is one an
    inventory host reported (INVENTORY_IDS) or its address is an inventory node's (INVENTORY_ADDRS): a node that is
    down or unreachable this run is still recognised by its address. REMOVE: the role's guard
    (swarm_remove_departed_nodes); false reports the departed nodes and plans nothing.

    Answers ``departed`` (rows: id, hostname, role, availability, state, addr), ``drain`` (ids not drained yet),
    ``demote`` (manager ids), ``remove`` (ids that are down: the Engine removes only those), ``waiting`` (rows
    drained but still up: removed by a later run once they are down) and ``refused`` (rows with a ``reason``: a
    demotion that would leave the cluster without a manager or without quorum)."""
    if not isinstance(nodes, list):
        raise AnsibleFilterError("swarm_departed_plan: expects docker_node_info's nodes (a list)")
    ids = {str(i) for i in inventory_ids or [] if i}
    addrs = {str(a) for a in inventory_addrs or [] if a}
    rows = [_node_row(n) for n in nodes]
    departed = [r for r in rows if r["id"] not in ids and r["addr"] not in addrs]
    plan = {"departed": departed, "drain": [], "demote": [], "remove": [], "waiting": [], "refused": []}
    if not remove:
        return plan
    managers = [r for r in rows if r["role"] == "manager"]
    reachable = {r["id"] for r in managers if r["reachability"] == "reachable" and r["state"] != "down"}
    remaining = list(managers)
    for row in departed:
        if row["role"] == "manager":
            after = [m for m in remaining if m["id"] != row["id"]]
            up = [m for m in after if m["id"] in reachable]
            if not after:
                plan["refused"].append(dict(row, reason="it is the last manager"))
                continue
            # Raft needs a majority of the managers that remain: more than half of them must be reachable.
            if len(up) * 2 <= len(after):
                plan["refused"].append(dict(row, reason=(
                    f"demoting it leaves {len(after)} managers of which {len(up)} are reachable: no quorum")))
                continue
            remaining = after
            plan["demote"].append(row["id"])
        if row["availability"] != "drain":
            plan["drain"].append(row["id"])
        if row["state"] == "down":
            plan["remove"].append(row["id"])
        else:
            plan["waiting"].append(row)
    return plan


def swarm_check_node(info, advertise_addr):
    """Settle what docker_host_info said about a node (``host_info`` of a run that could talk to Docker; an empty dict
    when Docker is not there yet, e.g. check mode on a fresh host): ``state`` (inactive/pending/active/error/locked),
    ``node_id``, ``cluster_id``, ``manager`` (this node is a manager that answers), ``live_restore``,
    ``addr`` (the node's address in the swarm) and ``advertise`` (the address it is told to use)."""
    info = info or {}
    swarm = info.get("Swarm") or {}
    cluster = swarm.get("Cluster") or {}
    return {"docker": bool(info), "state": swarm.get("LocalNodeState") or "inactive",
            "node_id": swarm.get("NodeID") or "", "cluster_id": cluster.get("ID") or "",
            "manager": bool(swarm.get("ControlAvailable")), "live_restore": bool(info.get("LiveRestoreEnabled")),
            "addr": swarm.get("NodeAddr") or "", "advertise": str(advertise_addr or "")}


def swarm_join_plan(cluster, states, nodes=None):
    """Who forms the cluster. CLUSTER: swarm_cluster's answer; STATES: {host: swarm_check_node's answer} of every
    node that answered (a node missing from it is unreachable this run); NODES: docker_node_info's nodes as the
    bootstrap manager sees them (None before the cluster exists).

    Answers ``bootstrap`` (the manager that inits the swarm or, when it exists, hands out the join tokens: the first
    manager of the group that already is an active manager, else the group's first manager), ``init`` (true: no node
    of the inventory is in a swarm yet), ``joins`` ({host: manager|worker} of the nodes not in the swarm yet),
    ``node_ids`` ({host: node id} of the nodes in it) and ``problems`` (sentences; the role stops before it changes
    anything when there is one)."""
    if not isinstance(cluster, Mapping) or not isinstance(states, Mapping):
        raise AnsibleFilterError("swarm_join_plan: expects swarm_cluster's answer and a dict of node states")
    problems = list(cluster.get("problems") or [])
    managers, workers = cluster.get("managers") or [], cluster.get("workers") or []
    role = dict.fromkeys(managers, "manager") | dict.fromkeys(workers, "worker")

    def state(host):
        return (states.get(host) or {}).get("state", "inactive")

    for host in managers + workers:
        if host in states and state(host) not in ("inactive", "active"):
            problems.append(f"swarm: node {host} is in swarm state {state(host)!r}: settle it by hand "
                            "(docker info) before the role can use it")
    active_managers = [h for h in managers if state(h) == "active" and (states.get(h) or {}).get("manager")]
    clusters = {}
    for host in active_managers:
        clusters.setdefault(states[host].get("cluster_id"), []).append(host)
    if len(clusters) > 1:
        problems.append("swarm: the managers are in different swarms: "
                        + "; ".join(f"{', '.join(hosts)} in {cid}" for cid, hosts in clusters.items()))
    in_swarm = [h for h in managers + workers if state(h) == "active"]
    if active_managers:
        bootstrap = active_managers[0]
    elif in_swarm:
        bootstrap = managers[0] if managers else ""
        problems.append(f"swarm: {', '.join(in_swarm)} already in a swarm none of whose managers is in the "
                        "managers group (or answers): add one of its managers to the group, or make them leave "
                        "(docker swarm leave) first")
    else:
        bootstrap = managers[0] if managers else ""
    if bootstrap and bootstrap not in states:
        problems.append(f"swarm: the bootstrap manager {bootstrap} did not answer")
    node_ids = {h: states[h]["node_id"] for h in in_swarm if states[h].get("node_id")}
    if nodes is not None:
        known = {str(n.get("ID")) for n in nodes}
        foreign = [h for h, nid in node_ids.items() if nid not in known]
        if foreign:
            problems.append(f"swarm: {', '.join(foreign)} in another swarm than {bootstrap}'s: make them leave it "
                            "(docker swarm leave) first")
    joins = {h: role[h] for h in managers + workers if h in states and state(h) == "inactive" and h != bootstrap}
    return {"bootstrap": bootstrap, "init": bool(bootstrap) and not in_swarm and bootstrap in states,
            "joins": joins, "node_ids": node_ids, "problems": problems}


class FilterModule:
    def filters(self):
        return {"swarm_role_of": swarm_role_of, "swarm_cluster": swarm_cluster,
                "swarm_firewall_rules": swarm_firewall_rules, "swarm_departed_plan": swarm_departed_plan,
                "swarm_check_node": swarm_check_node, "swarm_join_plan": swarm_join_plan}
