# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""site.yml on a Docker Swarm cluster (docs/swarm-site.md): the planning that the site's layers share.

An inventory is a cluster when its swarm groups (swarm_managers / swarm_workers, or the groups
swarm_managers_group / swarm_workers_group name) have nodes - the same fact docker_engine (live-restore off) and
firewall (the cluster ports) already read. Nothing else switches the site to Swarm. This file answers, from inventory
data only:

  - which hosts run each layer's play (:func:`layer_hosts`): on an inventory without nodes exactly the pattern the
    play always had, so a single-host converge is unchanged;
  - where each stateful thing lives (:func:`site_plan`): a data tier instance and a stack's data directories on one
    node each (its ``node``, else the first node labelled ``<data label>=true``), and the problems that stop the run
    before anything is deployed (an unknown node, a network that is not an overlay of the swarm, what cannot work on
    a swarm);
  - the compose definitions the roles already build, in the form ``swarm_stack`` deploys
    (:func:`swarm_definition`): pinned to the node that holds the data, tmpfs mount options Swarm cannot carry
    dropped, ``shm_size`` as a tmpfs on /dev/shm, ports published in host mode, global services;
  - what the backup role runs on a node (:func:`backup_sets_for_node`).

Pure functions, no I/O, no Ansible imports (the filter plugin swarm_site.py exposes them).
"""

from __future__ import annotations

import re

from ansible_collections.selfhosted.platform.plugins.module_utils.container_defaults import plain_copy

MANAGERS_GROUP = "swarm_managers"
WORKERS_GROUP = "swarm_workers"
NO_HOSTS = ["!all"]  # a play pattern that matches no host, without a warning
# The layers of site.yml and the hosts of a cluster each runs on: every node, the managers, or the deployer (the first
# manager: swarm_stack runs on a manager).
LAYER_SCOPE = {"swarm": "nodes", "data_tier": "nodes", "backup": "nodes", "app_stack": "deployer",
               "watchtower": "deployer", "proxy": "managers", "authelia": "none"}
# Pattern characters other than names of hosts and groups: a cluster's plays resolve patterns themselves.
PATTERN_SPECIAL = re.compile(r"[!&*?~\[\]]")
SHM_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
SHM_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


class SiteError(ValueError):
    """Input the planner cannot read at all (not a dict where one is needed, a pattern it cannot resolve)."""


def cluster_nodes(groups, managers_group=None, workers_group=None):
    """(managers, workers) of the inventory's swarm groups, inventory order; a host in both counts as a manager."""
    groups = groups or {}
    managers = list(groups.get(managers_group or MANAGERS_GROUP) or [])
    workers = [h for h in groups.get(workers_group or WORKERS_GROUP) or [] if h not in managers]
    return managers, workers


def is_cluster(groups, managers_group=None, workers_group=None):
    managers, workers = cluster_nodes(groups, managers_group, workers_group)
    return bool(managers or workers)


def resolve_pattern(groups, pattern):
    """The hosts PATTERN names (``all``, groups and hosts separated by ``,`` or ``:``), in inventory order."""
    text = str(pattern or "all")
    if PATTERN_SPECIAL.search(text):
        raise SiteError("selfhosted_hosts %r: on a swarm inventory the site's plays take names of hosts and groups "
                        "only (no !, &, wildcards or ranges); use --limit for the rest" % text)
    every = list((groups or {}).get("all") or [])
    wanted = set()
    for token in [t.strip() for t in re.split(r"[,:]", text) if t.strip()]:
        wanted.update((groups or {}).get(token) or [token])
    return [h for h in every if h in wanted]


def layer_hosts(groups, layer, pattern="all", managers_group=None, workers_group=None):
    """The hosts of LAYER's play. Without swarm nodes: PATTERN itself (the play as it always was). On a cluster: the
    hosts of PATTERN that are no node (they run the layer as on one host) followed by the nodes the layer runs on
    (LAYER_SCOPE); a pattern matching no host when there are none."""
    if layer not in LAYER_SCOPE:
        raise SiteError("layer %r is not one of %s" % (layer, ", ".join(sorted(LAYER_SCOPE))))
    managers, workers = cluster_nodes(groups, managers_group, workers_group)
    if not managers and not workers:
        return NO_HOSTS if layer == "swarm" else pattern
    selected = resolve_pattern(groups, pattern)
    nodes = managers + workers
    scope = LAYER_SCOPE[layer]
    cluster = {"nodes": nodes, "managers": managers, "deployer": managers[:1], "none": []}[scope]
    others = [] if layer == "swarm" else [h for h in selected if h not in nodes]
    hosts = others + [h for h in cluster if h in selected]
    return hosts or NO_HOSTS


def _labelled(nodes, node_labels, label):
    return [n for n in nodes if str(((node_labels or {}).get(n) or {}).get(label, "")).lower() == "true"]


def _networks_of_instance(inst, shared_network):
    nets = inst.get("networks")
    return list(nets) if isinstance(nets, list) else [shared_network]


def site_plan(groups, node_labels=None, instances=None, stacks=None, swarm_networks=None, layers=None,
              managers_group=None, workers_group=None, data_label="data", shared_network="data-shared",
              proxy_networks=None, proxy_mode="nginx", userns_nodes=None):
    """Where everything lives on the cluster, and every problem at once.

    groups         -- the inventory's groups
    node_labels    -- {node: swarm_node_labels}
    instances      -- data_tier_instances; stacks -- app_stack_stacks
    swarm_networks -- the swarm role's overlay networks (names or {name: ...} items)
    layers         -- the enabled layers' roles (data_tier, app_stack, authelia, proxy, watchtower, backup)
    userns_nodes   -- {node: docker_engine_userns_remap} of the nodes that set it

    Returns {cluster, managers, workers, deployer, placement {instance: node}, stack_nodes {stack: node},
    data_nodes, notes, problems}. Without swarm nodes: cluster false and nothing else to say."""
    managers, workers = cluster_nodes(groups, managers_group, workers_group)
    mg, wg = managers_group or MANAGERS_GROUP, workers_group or WORKERS_GROUP
    plan = {"cluster": bool(managers or workers), "managers": managers, "workers": workers,
            "deployer": managers[0] if managers else "", "placement": {}, "stack_nodes": {}, "data_nodes": [],
            "notes": [], "problems": []}
    if not plan["cluster"]:
        return plan
    problems = plan["problems"]
    layers = set(layers if layers is not None else LAYER_SCOPE)
    nodes = managers + workers
    if not managers:
        problems.append("swarm: the group %s has nodes but %s has none: site.yml on a cluster deploys from a manager"
                        % (wg, mg))
    overlays = set()
    for net in swarm_networks or []:
        overlays.add(net.get("name") if isinstance(net, dict) else str(net))
    labelled = _labelled(nodes, node_labels, data_label)
    default_node = labelled[0] if labelled else ""
    where = "a node of %s or %s (%s)" % (mg, wg, ", ".join(nodes))

    def pin(what, node, default_why):
        if node:
            if node not in nodes:
                problems.append("%s.node: %s is not %s" % (what, node, where))
                return ""
            return node
        if not default_node:
            problems.append("%s: no node given and no node carries the label %s=true (swarm_node_labels): on a swarm "
                            "%s lives on one node - set node: or label a node" % (what, data_label, default_why))
        return default_node

    def need_overlay(net, user):
        if net not in overlays:
            problems.append("%s: the network %s is not one of swarm_networks: on a swarm every network of the site is "
                            "an overlay network the swarm role creates - add {name: %s} to swarm_networks"
                            % (user, net, net))

    remapped = sorted(n for n, value in (userns_nodes or {}).items() if value and n in nodes)
    if remapped:
        problems.append("docker_engine_userns_remap: set on %s, a node of the swarm: Swarm services cannot keep the "
                        "host's user namespace (no userns_mode), and the site's layers on a swarm do not hand the "
                        "nodes' files to remapped owners - leave it unset on swarm nodes (docs/security.md)"
                        % ", ".join(remapped))
    if "data_tier" in layers:
        for inst in instances or []:
            if not isinstance(inst, dict):
                raise SiteError("data_tier_instances: every item is a dict, got %r" % (inst,))
            name = inst.get("name", "?")
            what = "data_tier_instances[%s]" % name
            plan["placement"][name] = pin(what, inst.get("node"), "an instance's data")
            if inst.get("publish_loopback"):
                problems.append("%s.publish_loopback: a Swarm service publishes on every address of its node, never "
                                "on 127.0.0.1 only: drop it and reach the instance over its overlay network (an SSH "
                                "tunnel to a container on it)" % what)
            for net in _networks_of_instance(inst, shared_network):
                need_overlay(net, what + ".networks")
    elif any(isinstance(i, dict) and i.get("node") for i in instances or []):
        plan["placement"] = {i["name"]: i["node"] for i in instances if isinstance(i, dict) and i.get("node")}
    if "app_stack" in layers:
        for stack in stacks or []:
            if not isinstance(stack, dict):
                raise SiteError("app_stack_stacks: every item is a dict, got %r" % (stack,))
            name = stack.get("name", "?")
            what = "app_stack_stacks[%s]" % name
            if stack.get("state", "present") == "absent":
                continue
            if stack.get("dirs") or stack.get("node"):
                plan["stack_nodes"][name] = pin(what, stack.get("node"), "a stack's data directories")
            if stack.get("files"):
                problems.append("%s.files: a file in the project directory exists on the manager only, while Swarm "
                                "runs the services anywhere: on a swarm give configuration as top-level configs "
                                "(content:) and mount them with the services' configs: key" % what)
            for net in stack.get("networks") or []:
                need_overlay(net, what + ".networks")
    if "authelia" in layers:
        problems.append("selfhosted_authelia_enabled: Authelia is not deployed on a swarm yet (its Compose project, "
                        "users file and session storage are one host's): turn it off for a cluster inventory")
    if "proxy" in layers:
        if proxy_mode != "nginx":
            problems.append("proxy_mode %s: Nginx Proxy Manager keeps its hosts, certificates and users in its own "
                            "database on one host and is configured through its API on 127.0.0.1:81, which a Swarm "
                            "service cannot publish: on a swarm use proxy_mode nginx (the router runs on every "
                            "manager)" % proxy_mode)
        for net in proxy_networks or []:
            need_overlay(net, "proxy_nginx_networks")
    if "watchtower" in layers:
        plan["notes"].append("Watchtower is not deployed on a swarm: it replaces containers behind Swarm's back "
                             "(Swarm would restart the old task); new releases reach a swarm through site.yml, whose "
                             "swarm_stack rolls them out health-gated")
    plan["data_nodes"] = [n for n in nodes if n in set(plan["placement"].values()) | set(plan["stack_nodes"].values())]
    return plan


# ---------------------------------------------------------------------------------------------
# Definitions in the form swarm_stack deploys
# ---------------------------------------------------------------------------------------------

def _shm_bytes(value, where):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = SHM_SIZE.match(str(value))
    if not match:
        raise SiteError("%s: shm_size %r is not a size such as 256m" % (where, value))
    return int(match.group(1)) * SHM_UNITS[match.group(2).lower()]


def _tmpfs_entry(entry):
    """'/run:uid=101,gid=101,mode=0755' -> '/run' (Swarm's tmpfs mounts take a size only). A size is kept. The
    mount is root's, with the mode of the image's directory there (measured on Engine 20.10): a service that does not
    start as root can write it only when the image made that directory world-writable (/tmp, Postgres's
    /var/run/postgresql); the router therefore starts as root on a swarm (roles/proxy/vars/main.yml)."""
    path, _sep, opts = str(entry).partition(":")
    kept = [o for o in opts.split(",") if o.startswith("size=")]
    return path + (":" + ",".join(kept) if kept else "")


def _host_ports(ports, where):
    """Short port entries ('80:80', '0.0.0.0:443:443/tcp') -> long form in host mode: the published port binds on
    the node that runs the task, with the client's own address (the ingress routing mesh would hide it and needs
    IPVS)."""
    out = []
    for entry in ports or []:
        if isinstance(entry, dict):
            out.append(dict(entry, mode=entry.get("mode") or "host"))
            continue
        text, _sep, proto = str(entry).partition("/")
        parts = text.split(":")
        if len(parts) == 3 and parts[0] not in ("", "0.0.0.0"):
            raise SiteError("%s: port %s is bound to %s; a Swarm service publishes on every address of its node"
                            % (where, entry, parts[0]))
        parts = parts[-2:]
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise SiteError("%s: port %r: give published:target (e.g. 80:80)" % (where, entry))
        out.append({"target": int(parts[1]), "published": int(parts[0]), "protocol": proto or "tcp", "mode": "host"})
    return out


def swarm_definition(definition, pin=None, pin_services=None, pin_mounts_under=None, drop_secrets=(),
                     host_ports=False, global_constraint=None):
    """DEFINITION (a compose document one of the roles built) as swarm_stack deploys it on this site.

    pin               -- the Swarm hostname of the node that holds the data: services get the constraint
                         ``node.hostname==<pin>`` ...
    pin_services      -- ... these services only (default: every service) ...
    pin_mounts_under  -- ... or the services that bind-mount a host path under this directory (a stack's data);
    drop_secrets      -- top-level secrets whose value the role gives swarm_stack's secrets option instead (their
                         ``file:`` is on another node than the manager that reads it);
    host_ports        -- publish every port in host mode;
    global_constraint -- run one task on each node matching this constraint (``deploy.mode: global``).

    Always: tmpfs mount options other than size are dropped (Swarm cannot carry them: see _tmpfs_entry) and
    ``shm_size`` becomes a tmpfs on /dev/shm of that size."""
    if not isinstance(definition, dict) or not isinstance(definition.get("services"), dict):
        raise SiteError("swarm_definition: expects a compose definition with a services dict")
    doc = plain_copy(definition)
    for name, svc in doc["services"].items():
        where = "service %s" % name
        if svc.get("tmpfs"):
            tmpfs = svc["tmpfs"] if isinstance(svc["tmpfs"], list) else [svc["tmpfs"]]
            svc["tmpfs"] = [_tmpfs_entry(e) for e in tmpfs]
        if "shm_size" in svc:
            size = _shm_bytes(svc.pop("shm_size"), where)
            svc["volumes"] = list(svc.get("volumes") or []) + [
                {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": size}}]
        if host_ports and svc.get("ports"):
            svc["ports"] = _host_ports(svc["ports"], where)
        constraints = []
        if pin and _pinned(name, svc, pin_services, pin_mounts_under):
            constraints.append("node.hostname==%s" % pin)
        if global_constraint:
            svc.setdefault("deploy", {})["mode"] = "global"
            constraints.append(global_constraint)
        if constraints:
            placement = svc.setdefault("deploy", {}).setdefault("placement", {})
            placement["constraints"] = list(placement.get("constraints") or []) + [
                c for c in constraints if c not in (placement.get("constraints") or [])]
    if drop_secrets and isinstance(doc.get("secrets"), dict):
        for name in drop_secrets:
            doc["secrets"].pop(name, None)
        if not doc["secrets"]:
            doc.pop("secrets")
    return doc


def _pinned(name, svc, pin_services, pin_mounts_under):
    if pin_services is None and not pin_mounts_under:
        return True
    if pin_services is not None and name in pin_services:
        return True
    if pin_mounts_under:
        return bool(mounts_under(svc, pin_mounts_under))
    return False


def mounts_under(svc, directory):
    """The host paths under DIRECTORY that SVC bind-mounts (short 'src:dst[:mode]' or long type bind)."""
    base = str(directory).rstrip("/") + "/"
    found = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            src = vol.get("source") if vol.get("type", "volume") == "bind" else None
        else:
            src = str(vol).split(":", 1)[0] if ":" in str(vol) else None
        if src and (src + "/").startswith(base):
            found.append(src)
    return found


# ---------------------------------------------------------------------------------------------
# Backups
# ---------------------------------------------------------------------------------------------

def backup_sets_for_node(sets, placement, node, default_node=""):
    """The backup sets a NODE runs: each set's databases narrowed to the instances pinned to NODE (``all``: every
    one of them), its paths kept on the set's ``node`` (default DEFAULT_NODE, the first data node); a set left with
    neither is not run there. The ``node`` key itself is not passed on."""
    here = sorted(n for n, where in (placement or {}).items() if where == node)
    out = []
    for bset in sets or []:
        item = {k: v for k, v in bset.items() if k != "node"}
        wanted = bset.get("databases") or []
        dbs = ("all" if here else []) if wanted == "all" else [d for d in wanted if d in here]
        paths = bset.get("paths") or []
        paths_here = paths if (bset.get("node") or default_node) == node else []
        if not dbs and not paths_here:
            continue
        item["databases"] = dbs
        if paths:
            item["paths"] = paths_here
            if not paths_here:
                item.pop("paths")
        out.append(item)
    return out


def instances_on_node(instances, placement, node):
    """The data tier instances pinned to NODE, each marked as a Swarm service (``swarm: true``: the backup runner and
    restore.yml find its container through the service's label on that node)."""
    return [dict(i, swarm=True) for i in instances or [] if isinstance(i, dict)
            and (placement or {}).get(i.get("name")) == node]
