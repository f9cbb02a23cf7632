# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decision logic for swarm_stack: check-and-translate a Compose definition into a stack file that
``docker stack deploy`` honours, add the platform's update/rollback, placement and endpoint defaults, name
configs and secrets by their content, and compare the services the stack file describes with the service specs a
swarm manager holds (per service: create / update with the fields that change / remove / unchanged).

No I/O here: the executor (swarm_stack.py) reads files, environment and the Engine API and passes them in.
Unit-tested directly (tests/unit/test_swarm_plan.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import re
import shlex

STACK_VERSION = "3.9"  # the newest stack file format Docker 20.10's CLI (Debian 12's docker.io) reads
NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
HASH_LABEL = "org.selfhosted.swarm-stack.hash"
OBJECT_LABEL = "org.selfhosted.swarm-stack.source"  # on configs/secrets: the name the definition gives them
MAX_OBJECT_NAME = 64  # swarm's limit for config and secret names

CREATE = "create"
UPDATE = "update"
REMOVE = "remove"
UNCHANGED = "unchanged"

DATA_TIER_IMAGE = re.compile(r"(^|/)(postgres|postgis|mariadb|mysql|mongo|mongodb|redis|valkey)(:|@|$)",
                             re.IGNORECASE)

# Service keys the stack file takes as they are (stack file format 3.9, honoured by Swarm services).
PASS_KEYS = frozenset((
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "dns", "dns_search", "entrypoint",
    "env_file", "environment", "extra_hosts", "healthcheck", "hostname", "image", "init", "isolation", "labels",
    "logging", "networks", "ports", "read_only", "secrets", "stdin_open", "stop_grace_period", "stop_signal",
    "tty", "user", "volumes", "working_dir", "depends_on",
))
# Keys translated into the stack file's own form (see translate_service()).
TRANSLATED_KEYS = frozenset(("restart", "mem_limit", "mem_reservation", "cpus", "pids_limit", "scale", "tmpfs",
                             "container_name", "expose"))
# Keys refused (no faithful translation), with the reason given in the message.
REFUSED = {
    "build": "Swarm does not build images: build and push the image to a registry the nodes can pull from, "
             "and give its reference in image",
    "network_mode": "Swarm services always join the stack's overlay networks (no host, bridge, none, service: or "
                    "container: network mode)",
    "privileged": "Swarm services cannot run privileged",
    "devices": "Swarm services cannot map host devices",
    "pid": "Swarm services cannot share a PID namespace",
    "ipc": "Swarm services cannot share an IPC namespace",
    "userns_mode": "Swarm services have no user namespace mode",
    "cgroup_parent": "Swarm services have no cgroup parent",
    "cgroupns_mode": "Swarm services have no cgroup namespace mode",
    "mac_address": "Swarm services cannot set a MAC address",
    "links": "Swarm ignores links: reach the service by its name on a shared network",
    "external_links": "Swarm ignores external links: join the other stack's network",
    "domainname": "Swarm services have no domain name",
    "shm_size": "Swarm services cannot size /dev/shm (mount a tmpfs volume there)",
    "security_opt": "Swarm services ignore security_opt on this engine (no-new-privileges needs Engine 27 and "
                    "API 1.46); list it in ignore_keys to deploy without it",
    "sysctls": "docker stack deploy of Docker 20.10 ignores sysctls",
    "ulimits": "docker stack deploy of Docker 20.10 ignores ulimits",
    "memswap_limit": "Swarm services have no swap limit",
    "mem_swappiness": "Swarm services have no swappiness",
    "cpu_shares": "Swarm services have no CPU shares (use deploy.resources)",
    "cpu_quota": "Swarm services have no CPU quota (use cpus)",
    "cpu_period": "Swarm services have no CPU period (use cpus)",
    "cpuset": "Swarm services cannot pin CPUs",
    "oom_score_adj": "docker stack deploy of Docker 20.10 ignores oom_score_adj",
    "oom_kill_disable": "Swarm services cannot disable the OOM killer",
    "group_add": "Swarm services have no supplementary groups",
    "volumes_from": "Swarm services cannot mount another container's volumes",
    "extends": "the stack file format has no extends: give the whole service",
    "profiles": "docker stack deploy has no profiles: leave the service out of the definition instead",
    "pull_policy": "docker stack deploy pulls as resolve_image says; it has no pull_policy",
    "platform": "use a placement constraint on node.platform.arch instead",
    "runtime": "Swarm services cannot choose a runtime",
    "storage_opt": "Swarm services have no storage options",
    "stop_signal_timeout": "not a stack file key",
    "blkio_config": "Swarm services have no block IO weights",
    "annotations": "not a stack file key",
    "develop": "not a stack file key",
    "attach": "not a stack file key",
    "label_file": "not a stack file key: give the labels",
    "post_start": "Swarm services have no lifecycle hooks",
    "pre_stop": "Swarm services have no lifecycle hooks",
}
DEPLOY_KEYS = frozenset(("mode", "endpoint_mode", "replicas", "labels", "rollback_config", "update_config",
                         "resources", "restart_policy", "placement"))
UPDATE_KEYS = frozenset(("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"))
HEALTH_KEYS = frozenset(("disable", "interval", "retries", "test", "timeout", "start_period"))
VOLUME_LONG_KEYS = frozenset(("type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"))
NETWORK_KEYS = frozenset(("name", "driver", "driver_opts", "ipam", "external", "internal", "attachable", "labels"))
VOLUME_KEYS = frozenset(("name", "driver", "driver_opts", "external", "labels"))
OBJECT_KEYS = frozenset(("file", "content", "environment", "external", "name", "labels"))

DEFAULT_UPDATE = {"parallelism": 1, "failure_action": "rollback", "order": "start-first"}
DEFAULT_ROLLBACK = {"parallelism": 1, "failure_action": "pause", "order": "start-first"}
MONITOR_NO_HEALTHCHECK = 10.0  # seconds an updated task without a healthcheck must stay up
MONITOR_MIN, MONITOR_MAX = 5.0, 60.0
NS = 1000000000
ONE_SHOT_CONDITIONS = ("none", "on-failure")  # restart conditions of services whose tasks end by design
# What the daemon writes into a service spec for what the stack file leaves unset (measured on Engine 20.10).
DEFAULT_MONITOR_NS = 5 * NS
DEFAULT_RESTART_DELAY_NS = 5 * NS
DEFAULT_STOP_GRACE_NS = 10 * NS


class PlanError(ValueError):
    """Input the module refuses; ``problems`` lists every finding (each names the service and the key)."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------------------------------------
# small parsers (Docker's units)
# ---------------------------------------------------------------------------------------------
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value):
    """A Go duration ('1m30s', '500ms', '10s') or a number of seconds -> float seconds; None for None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.match(r"^\d+(\.\d+)?$", text):
        return float(text)
    pos, total = 0, 0.0
    for m in DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError("not a duration: %r" % value)
        total += float(m.group(1)) * DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError("not a duration: %r" % value)
    return total


def go_duration(seconds):
    """Seconds -> a duration string the stack file reads ('30s', '1m30s', '500ms')."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return "%dms" % ms
    s = ms // 1000
    if s >= 60 and s % 60 == 0:
        return "%dm" % (s // 60)
    if s >= 60:
        return "%dm%ds" % (s // 60, s % 60)
    return "%ds" % s


MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def memory_bytes(value):
    """Docker's RAMInBytes: '256m', '1g', '512MiB', 1048576 -> bytes (binary units)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = MEMORY.match(str(value))
    if not m:
        raise ValueError("not a size: %r" % value)
    factor = 1024 ** " kmgtp".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * factor)


def nano_cpus(value):
    if value is None or value == "":
        return None
    return round(float(value) * NS)


# ---------------------------------------------------------------------------------------------
# interpolation (Compose's ${VAR} syntax, as docker stack deploy applies it from its environment)
# ---------------------------------------------------------------------------------------------
VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
                 r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate_text(text, environ, missing):
    """TEXT with ${VAR}, $VAR, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+r}, ${VAR+r} and $$ resolved from
    ENVIRON. Variables that are not set (without a default) become '' and are added to MISSING."""

    def repl(m):
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        present = name in environ
        value = environ.get(name, "")
        if op in (":-", "-"):
            if (op == ":-" and not value) or (op == "-" and not present):
                return interpolate_text(arg, environ, missing)
            return value
        if op in (":?", "?"):
            if (op == ":?" and not value) or (op == "?" and not present):
                raise PlanError(["required variable %s is not set: %s" % (name, arg or "(no message)")])
            return value
        if op in (":+", "+"):
            if (op == ":+" and value) or (op == "+" and present):
                return interpolate_text(arg, environ, missing)
            return ""
        if not present:
            missing.add(name)
        return value

    return VAR.sub(repl, text)


def interpolate(value, environ, missing):
    """Every string of VALUE (dicts, lists) interpolated; keys stay."""
    if isinstance(value, str):
        return interpolate_text(value, environ, missing)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, missing) for v in value]
    return value


def has_reference(value):
    """Whether VALUE (any structure) contains a ${VAR} or $VAR reference."""
    if isinstance(value, str):
        return any(not m.group(1) for m in VAR.finditer(value))
    if isinstance(value, dict):
        return any(has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(has_reference(v) for v in value)
    return False


# ---------------------------------------------------------------------------------------------
# check and translate
# ---------------------------------------------------------------------------------------------
def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


PORT_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _port_range(text, where):
    m = PORT_RANGE.match(str(text).strip())
    if not m:
        raise ValueError("%s: %r is not a port or a port range" % (where, text))
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if hi < lo:
        raise ValueError("%s: port range %r ends before it starts" % (where, text))
    return list(range(lo, hi + 1))


def parse_ports(entry, where):
    """One ``ports`` entry (short or long syntax) -> a list of long-form dicts {target, published, protocol,
    mode}. A host address other than 0.0.0.0 / :: raises ValueError (Swarm publishes on every address)."""
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"target", "published", "protocol", "mode", "host_ip", "name",
                                       "app_protocol"})
        if unknown:
            raise ValueError("%s: the stack file's long port syntax has no %s" % (where, ", ".join(unknown)))
        if entry.get("host_ip") not in (None, "", "0.0.0.0", "::"):
            raise ValueError("%s: a Swarm service publishes on every address of the node; host_ip %s cannot be "
                             "kept (reach the service over an overlay network, or publish on 0.0.0.0)"
                             % (where, entry["host_ip"]))
        targets = _port_range(entry.get("target"), where)
        published = _port_range(entry["published"], where) if entry.get("published") not in (None, "") else None
        if published is not None and len(published) != len(targets):
            raise ValueError("%s: published and target ranges differ in length" % where)
        out = []
        for i, t in enumerate(targets):
            p = {"target": t, "protocol": str(entry.get("protocol") or "tcp").lower()}
            if published is not None:
                p["published"] = published[i]
            if entry.get("mode"):
                p["mode"] = entry["mode"]
            out.append(p)
        return out
    if isinstance(entry, bool) or not isinstance(entry, (str, int)):
        raise ValueError("%s: expected a port mapping such as '8080:80' or a dict, got %r" % (where, entry))
    text = str(entry).strip()
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        proto = proto.lower()
    host_ip = None
    if text.startswith("["):
        end = text.index("]")
        host_ip, text = text[1:end], text[end + 2:]
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, parts = parts[0], parts[1:]
    if host_ip not in (None, "", "0.0.0.0", "::"):
        raise ValueError("%s: a Swarm service publishes on every address of the node; the address %s in %r cannot "
                         "be kept (reach the service over an overlay network, or publish on 0.0.0.0)"
                         % (where, host_ip, entry))
    if len(parts) == 1:
        return [{"target": t, "protocol": proto} for t in _port_range(parts[0], where)]
    published = _port_range(parts[0], where) if parts[0] else None
    targets = _port_range(parts[1], where)
    if published is not None and len(published) != len(targets):
        raise ValueError("%s: published and target ranges differ in length" % where)
    out = []
    for i, t in enumerate(targets):
        p = {"target": t, "protocol": proto}
        if published is not None:
            p["published"] = published[i]
        out.append(p)
    return out


def restart_policy_of(restart, where):
    """Compose's ``restart`` -> (deploy.restart_policy dict, note)."""
    text = "no" if restart is False else str(restart).strip()
    name, _sep, count = text.partition(":")
    if name == "no" or text in ("", "false"):
        return {"condition": "none"}, "restart no: Swarm restarts a task by default, so condition none"
    if name == "always":
        return {"condition": "any"}, "restart always: condition any"
    if name == "unless-stopped":
        return {"condition": "any"}, ("restart unless-stopped: condition any (a Swarm task has no 'stopped by "
                                      "hand' state: scale the service to 0 to stop it)")
    if name == "on-failure":
        policy = {"condition": "on-failure"}
        if count:
            if not count.isdigit():
                raise ValueError("%s: %r: the retry count must be a whole number" % (where, restart))
            if int(count) > 0:
                policy["max_attempts"] = int(count)
        return policy, "restart %s: condition on-failure%s" % (text, ", max_attempts %s" % count if count else "")
    raise ValueError("%s: %r is not a restart policy (no, always, on-failure[:N], unless-stopped)" % (where, restart))


def tmpfs_mount(entry, where):
    """A ``tmpfs`` entry ('/run', '/run:size=64m') -> a long-form tmpfs volume. Mount options the stack file's
    tmpfs volume cannot carry (uid, gid, mode, noexec, ...) raise ValueError."""
    text = str(entry).strip()
    path, _sep, opts = text.partition(":")
    mount = {"type": "tmpfs", "target": path}
    for opt in [o for o in opts.split(",") if o]:
        key, _eq, value = opt.partition("=")
        if key == "size":
            mount["tmpfs"] = {"size": memory_bytes(value)}
        else:
            raise ValueError("%s: the tmpfs option %r of %s cannot be given to a Swarm tmpfs mount (only size); "
                             "drop it or mount a volume there" % (where, opt, path))
    return mount


def _limit_value(key, value):
    if key == "pids":
        return int(value)
    if key == "memory":
        return str(value) if not isinstance(value, int) else "%db" % value
    return str(value)


def translate_service(name, svc, ignore_keys=(), networks_declared=()):
    """Check one service of the definition and translate it to the stack file's form.

    Returns (service dict, translated rows [{service, key, to}], problems [str]). ``ignore_keys`` lists keys the
    caller accepts losing (they are dropped and reported). ``networks_declared`` names the top-level networks
    (for container_name aliases)."""
    out, rows, problems = {}, [], []
    ignore = set(ignore_keys or ())

    def row(key, to):
        rows.append({"service": name, "key": key, "to": to})

    def refuse(key, why):
        problems.append("service %s: key %s: %s" % (name, key, why))

    if not isinstance(svc, dict):
        return {}, [], ["service %s: must be a dict" % name]
    if not svc.get("image") and "build" not in svc:
        refuse("image", "a Swarm service needs an image reference")
    deploy = copy.deepcopy(svc.get("deploy") or {})
    extra_volumes, aliases = [], []
    for key in sorted(svc):
        value = svc[key]
        where = "service %s: key %s" % (name, key)
        if key.startswith("x-"):
            out[key] = copy.deepcopy(value)
            continue
        if key == "build":
            if key in ignore and svc.get("image"):
                row(key, "dropped (ignore_keys): the image is deployed as the registry has it")
            else:
                refuse(key, REFUSED["build"])
            continue
        if key in ignore and key not in PASS_KEYS:
            row(key, "dropped (ignore_keys)")
            continue
        if key in ("ports", "deploy") and has_reference(value):
            refuse(key, "the module translates this key and cannot translate ${VAR} references in it; give "
                        "the value in the definition")
            continue
        if key in REFUSED:
            refuse(key, REFUSED[key])
            continue
        if key in TRANSLATED_KEYS:
            if has_reference(value):
                refuse(key, "the module translates this key and cannot translate ${VAR} references in it; give "
                            "the value in the definition")
                continue
            try:
                if key == "restart":
                    if deploy.get("restart_policy"):
                        row(key, "dropped: deploy.restart_policy is set and wins")
                    else:
                        policy, note = restart_policy_of(value, where)
                        deploy["restart_policy"] = policy
                        row(key, "deploy.restart_policy (%s)" % note)
                elif key in ("mem_limit", "cpus", "pids_limit", "mem_reservation"):
                    target = {"mem_limit": ("limits", "memory"), "cpus": ("limits", "cpus"),
                              "pids_limit": ("limits", "pids"), "mem_reservation": ("reservations", "memory")}[key]
                    res = deploy.setdefault("resources", {}).setdefault(target[0], {})
                    new = _limit_value(target[1], value)
                    if target[1] in res and \
                            _resource_norm(target[1], res[target[1]]) != _resource_norm(target[1], new):
                        refuse(key, "%r conflicts with deploy.resources.%s.%s %r" % (
                            value, target[0], target[1], res[target[1]]))
                        continue
                    res[target[1]] = new
                    row(key, "deploy.resources.%s.%s" % target)
                elif key == "scale":
                    if deploy.get("replicas") not in (None, int(value)):
                        refuse(key, "%r conflicts with deploy.replicas %r" % (value, deploy["replicas"]))
                        continue
                    deploy["replicas"] = int(value)
                    row(key, "deploy.replicas")
                elif key == "tmpfs":
                    for entry in _as_list(value):
                        extra_volumes.append(tmpfs_mount(entry, where))
                    row(key, "volumes (type tmpfs)")
                elif key == "container_name":
                    aliases.append(str(value))
                    row(key, "a network alias %s on each network of the service (Swarm names the containers "
                             "itself; the name still resolves)" % value)
                elif key == "expose":
                    row(key, "dropped: services on one overlay network reach each other's ports anyway")
            except (TypeError, ValueError) as exc:
                refuse(key, str(exc).replace(where + ": ", ""))
            continue
        if key not in PASS_KEYS:
            refuse(key, "not a key of the stack file format %s" % STACK_VERSION)
            continue
        value = copy.deepcopy(value)
        if key == "depends_on" and isinstance(value, dict):
            out[key] = sorted(value)
            conditions = sorted({str((v or {}).get("condition", "service_started")) for v in value.values()})
            row(key, "a list of names (Swarm starts services in no order; conditions %s are not honoured)"
                % ", ".join(conditions))
            continue
        if key == "env_file" and any(isinstance(e, dict) for e in _as_list(value)):
            files = []
            for e in _as_list(value):
                files.append(e.get("path") if isinstance(e, dict) else e)
            out[key] = files
            row(key, "a list of paths")
            continue
        if key == "healthcheck" and isinstance(value, dict):
            unknown = sorted(set(value) - HEALTH_KEYS)
            if unknown:
                refuse(key, "the stack file's healthcheck has no %s" % ", ".join(unknown))
                continue
        if key == "networks" and isinstance(value, dict):
            bad = sorted({k for v in value.values() if isinstance(v, dict) for k in v if k != "aliases"})
            if bad:
                refuse(key, "Swarm services cannot set %s on a network" % ", ".join(bad))
                continue
        if key == "volumes":
            vols, ok = [], True
            for i, v in enumerate(_as_list(value)):
                if isinstance(v, dict):
                    unknown = sorted(set(v) - VOLUME_LONG_KEYS)
                    sub = sorted(set(v.get("bind") or {}) - {"propagation"}) + sorted(
                        set(v.get("volume") or {}) - {"nocopy"}) + sorted(set(v.get("tmpfs") or {}) - {"size"})
                    if unknown or sub:
                        refuse(key, "volumes[%d]: the stack file's volume syntax has no %s" % (
                            i, ", ".join(unknown + sub)))
                        ok = False
                vols.append(v)
            if not ok:
                continue
            value = vols
        if key == "deploy":
            continue  # merged below
        out[key] = value
    unknown = sorted(set(deploy) - DEPLOY_KEYS)
    for key in unknown:
        problems.append("service %s: key deploy.%s: not a key of the stack file format %s"
                        % (name, key, STACK_VERSION))
    for cfg in ("update_config", "rollback_config"):
        bad = sorted(set(deploy.get(cfg) or {}) - UPDATE_KEYS)
        if bad:
            problems.append("service %s: key deploy.%s: no %s in the stack file format" % (name, cfg,
                                                                                           ", ".join(bad)))
    if str(deploy.get("mode") or "replicated") not in ("replicated", "global"):
        problems.append("service %s: key deploy.mode: %r is not a mode docker stack deploy of Docker 20.10 knows "
                        "(replicated, global)" % (name, deploy.get("mode")))
    if extra_volumes:
        taken = {_volume_target(v) for v in out.get("volumes") or []}
        out["volumes"] = list(out.get("volumes") or []) + [v for v in extra_volumes if v["target"] not in taken]
    if aliases:
        nets = out.get("networks")
        if nets is None:
            nets = ["default"]
        if isinstance(nets, list):
            nets = dict.fromkeys(nets)
        for net in list(nets):
            entry = dict(nets[net] or {})
            entry["aliases"] = list(entry.get("aliases") or []) + [a for a in aliases
                                                                   if a not in (entry.get("aliases") or [])]
            nets[net] = entry
        out["networks"] = nets
    if deploy:
        out["deploy"] = deploy
    return out, rows, problems


def _volume_target(v):
    if isinstance(v, dict):
        return v.get("target")
    parts = str(v).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _resource_norm(key, value):
    try:
        if key == "memory":
            return memory_bytes(value)
        if key == "cpus":
            return nano_cpus(value)
        return int(value)
    except (TypeError, ValueError):
        return value


# ---------------------------------------------------------------------------------------------
# defaults: endpoint mode, update/rollback, placement
# ---------------------------------------------------------------------------------------------
def decide_endpoint_mode(option, ipvs, ipvs_reason):
    """(mode, why) for OPTION auto|vip|dnsrr on a node whose kernel has IPVS or not; explicit vip without IPVS
    raises PlanError (VIP and the ingress routing mesh need IPVS: the service would run and never answer)."""
    if option == "vip" and not ipvs:
        raise PlanError(["endpoint_mode vip: this node's kernel has no IPVS (%s); Swarm's virtual IPs and the ingress "
                         "routing mesh would accept connections and never answer. Use endpoint_mode dnsrr (or auto) "
                         "here" % ipvs_reason])
    if option == "vip":
        return "vip", "endpoint_mode vip requested; the kernel has IPVS (%s)" % ipvs_reason
    if option == "dnsrr":
        return "dnsrr", "endpoint_mode dnsrr requested: DNS round robin, ports published in host mode"
    if ipvs:
        return "vip", "auto: the kernel has IPVS (%s): virtual IPs and the ingress routing mesh" % ipvs_reason
    return "dnsrr", ("auto: the kernel has no IPVS (%s): DNS round robin, ports published in host mode on the "
                     "nodes that run a task" % ipvs_reason)


def is_stateful(name, svc, stateful_services):
    return name in (stateful_services or ()) or bool(DATA_TIER_IMAGE.search(str(svc.get("image") or "")))


def monitor_seconds(svc):
    """The update monitor: long enough for a healthcheck to turn a task unhealthy (start_period + interval x
    retries, Docker's defaults 30s x 3), within [5s, 60s]; 10s without a healthcheck."""
    hc = svc.get("healthcheck") or {}
    if not hc or hc.get("disable") or hc.get("test") in (["NONE"], "NONE", None):
        return MONITOR_NO_HEALTHCHECK
    try:
        interval = duration_seconds(hc.get("interval")) or 30.0
        retries = int(hc.get("retries") or 3)
        start = duration_seconds(hc.get("start_period")) or 0.0
    except (TypeError, ValueError):
        return 30.0
    return max(MONITOR_MIN, min(MONITOR_MAX, start + interval * retries))


def apply_defaults(name, svc, endpoint_mode, options):
    """The service with the platform's Swarm defaults it does not set itself (its own values win). Returns
    (service, notes [{service, key, to}], problems)."""
    out = copy.deepcopy(svc)
    deploy = out.setdefault("deploy", {})
    notes, problems = [], []
    stateful = is_stateful(name, out, options.get("stateful_services"))

    # endpoint mode and ports
    own_mode = deploy.get("endpoint_mode")
    mode = own_mode or endpoint_mode
    if own_mode == "vip" and endpoint_mode == "dnsrr" and not options.get("ipvs", False):
        problems.append("service %s: key deploy.endpoint_mode: vip needs IPVS, which this node's kernel lacks" % name)
    if not own_mode:
        deploy["endpoint_mode"] = mode
    ports = []
    for i, entry in enumerate(_as_list(out.get("ports"))):
        try:
            parsed = parse_ports(entry, "ports[%d]" % i)
        except ValueError as exc:
            problems.append("service %s: key ports: %s" % (name, exc))
            continue
        for p in parsed:
            if mode == "dnsrr":
                if p.get("mode") == "ingress":
                    problems.append("service %s: key ports: ports[%d] asks for ingress mode, which needs "
                                    "endpoint_mode vip" % (name, i))
                p["mode"] = "host"
            else:
                p.setdefault("mode", "ingress")
            ports.append(p)
    if out.get("ports") is not None:
        out["ports"] = ports
    host_ports = any(p.get("mode") == "host" and p.get("published") for p in ports)

    # update and rollback: health-gated, start-first where two copies can run at once
    order = "stop-first" if (host_ports or stateful) else "start-first"
    why = ("host-mode published ports" if host_ports else "stateful") if order == "stop-first" else None
    monitor = go_duration(monitor_seconds(out))
    # A one-shot service's task ends by design; Swarm's updater counts a task that ends during an update as a
    # failure (measured: "early termination of task"), so rollback would undo every release of it.
    one_shot = str((deploy.get("restart_policy") or {}).get("condition") or "any") in ONE_SHOT_CONDITIONS
    one_shot = one_shot and "failure_action" not in (deploy.get("update_config") or {}) and \
        (options.get("update_config") or {}).get("failure_action") is None
    for key, defaults, opt in (("update_config", DEFAULT_UPDATE, "update_config"),
                               ("rollback_config", DEFAULT_ROLLBACK, "rollback_config")):
        own = dict(deploy.get(key) or {})
        merged = dict(defaults, monitor=monitor, order=order)
        if one_shot and key == "update_config":
            merged["failure_action"] = "continue"
        merged.update({k: v for k, v in (options.get(opt) or {}).items() if v is not None})
        merged.update(own)
        deploy[key] = merged
    if one_shot:
        notes.append({"service": name, "key": "deploy.update_config.failure_action",
                      "to": "continue (a one-shot service: Swarm counts its task ending as a failed update)"})
    if why:
        notes.append({"service": name, "key": "deploy.update_config.order",
                      "to": "stop-first (%s: two copies cannot run at once)" % why})

    # placement
    placement = deploy.setdefault("placement", {})
    label = options.get("stateful_label")
    if stateful and label and not placement.get("constraints"):
        placement["constraints"] = ["node.labels.%s==%s" % (label, options.get("stateful_label_value", "true"))]
        notes.append({"service": name, "key": "deploy.placement.constraints",
                      "to": "pinned to nodes labelled %s=%s (stateful)" % (label, options.get("stateful_label_value",
                                                                                              "true"))})
    elif not stateful and not placement.get("preferences"):
        placement["preferences"] = [{"spread": "node.id"}]
    if not placement:
        deploy.pop("placement")
    return out, notes, problems


# ---------------------------------------------------------------------------------------------
# configs and secrets: content-hashed names
# ---------------------------------------------------------------------------------------------
def object_name(stack, name, content):
    """``<stack>_<name>_<sha256[:12]>`` of CONTENT (bytes or str)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return "%s_%s_%s" % (stack, name, hashlib.sha256(data).hexdigest()[:12])


def resolve_objects(kind, declared, option_values, sources, env, stack):
    """The configs or secrets (KIND) of a stack, each with its content and hashed name.

    declared      -- the definition's top-level configs/secrets {name: {file|content|environment|external, name}}
    option_values -- the module's configs/secrets option {name: value}
    sources       -- {path as declared: bytes or None (missing)} the executor read for ``file`` entries
    env           -- the env option (for ``environment`` entries)

    Returns ({name: {"name": hashed or external name, "external": bool, "content": bytes|None}}, problems)."""
    out, problems = {}, []
    for name, given in sorted((declared or {}).items()):
        spec = given or {}
        unknown = sorted(set(spec) - OBJECT_KEYS)
        if unknown:
            problems.append("%s %s: the stack file has no %s for %s" % (kind[:-1], name, ", ".join(unknown), kind))
            continue
        if name in (option_values or {}):
            problems.append("%s %s: given both in the definition and in the %s option" % (kind[:-1], name, kind))
            continue
        if spec.get("external"):
            ext = spec["external"]
            ext_name = spec.get("name") or (ext.get("name") if isinstance(ext, dict) else None) or name
            out[name] = {"name": ext_name, "external": True, "content": None}
            continue
        if "file" in spec:
            data = sources.get(spec["file"])
            if data is None:
                problems.append("%s %s: its file %s does not exist" % (kind[:-1], name, spec["file"]))
                continue
        elif "content" in spec:
            data = str(spec["content"]).encode("utf-8")
        elif "environment" in spec:
            value = (env or {}).get(spec["environment"])
            if value in (None, ""):
                problems.append("%s %s: its value, env %s, is missing" % (kind[:-1], name, spec["environment"]))
                continue
            data = str(value).encode("utf-8")
        else:
            problems.append("%s %s: give file, content, environment or external" % (kind[:-1], name))
            continue
        out[name] = {"name": object_name(stack, name, data), "external": False, "content": data}
    for name, value in sorted((option_values or {}).items()):
        if value is None or (kind == "secrets" and str(value) == ""):
            problems.append("%s %s: the value is missing (is it in the vault?)" % (kind[:-1], name))
            continue
        data = value.encode("utf-8") if isinstance(value, str) else str(value).encode("utf-8")
        out[name] = {"name": object_name(stack, name, data), "external": False, "content": data}
    for name, obj in out.items():
        if len(obj["name"]) > MAX_OBJECT_NAME:
            problems.append("%s %s: the name %s is longer than Swarm's %d characters: use a shorter stack or %s "
                            "name" % (kind[:-1], name, obj["name"], MAX_OBJECT_NAME, kind[:-1]))
    return out, problems


def object_refs(svc, key):
    return [r if isinstance(r, str) else (r or {}).get("source") for r in _as_list(svc.get(key))]


# ---------------------------------------------------------------------------------------------
# the whole stack
# ---------------------------------------------------------------------------------------------
def build_stack(stack, definition, options, ipvs=False, ipvs_reason="", sources=None, env=None):
    """Check, translate and complete DEFINITION for ``docker stack deploy``.

    Returns a dict: doc (the stack file's document, ${VAR} references left for docker stack deploy to resolve),
    translated (rows), endpoint_mode, endpoint_reason, configs and secrets (resolve_objects()).
    Raises PlanError listing every problem, each naming the service and the key."""
    problems = []
    if not isinstance(definition, dict) or not isinstance(definition.get("services"), dict) \
            or not definition["services"]:
        raise PlanError(["definition: needs a non-empty services dict"])
    top_unknown = sorted(k for k in definition if k not in ("services", "networks", "volumes", "configs", "secrets",
                                                            "version", "name") and not k.startswith("x-"))
    for key in top_unknown:
        problems.append("definition: top-level key %s is not in the stack file format %s" % (key, STACK_VERSION))
    try:
        mode, why = decide_endpoint_mode(options.get("endpoint_mode", "auto"), ipvs, ipvs_reason)
    except PlanError as exc:
        problems.extend(exc.problems)
        mode, why = "dnsrr", ""
    opts = dict(options, ipvs=ipvs)
    services, translated = {}, []
    networks = definition.get("networks") or {}
    for name in sorted(definition["services"]):
        svc, rows, probs = translate_service(name, definition["services"][name], options.get("ignore_keys"),
                                             networks)
        problems.extend(probs)
        translated.extend(rows)
        svc, notes, more = apply_defaults(name, svc, mode, opts)
        problems.extend(more)
        translated.extend(notes)
        if probs or more:
            continue
        for kind in ("configs", "secrets"):
            declared = set(definition.get(kind) or {}) | set(options.get(kind) or {})
            for ref in object_refs(svc, kind):
                if ref not in declared:
                    problems.append("service %s: key %s: %s is not declared (top-level %s of the definition or the "
                                    "module's %s option)" % (name, kind, ref, kind, kind))
        for net in (svc.get("networks") or {}) if not isinstance(svc.get("networks"), list) else svc["networks"]:
            if net != "default" and net not in networks:
                problems.append("service %s: key networks: network %s is not declared" % (name, net))
        services[name] = svc
    for kind, allowed in (("networks", NETWORK_KEYS), ("volumes", VOLUME_KEYS)):
        for name, spec in sorted((definition.get(kind) or {}).items()):
            bad = sorted(set(spec or {}) - allowed - {k for k in (spec or {}) if k.startswith("x-")})
            if bad:
                problems.append("%s %s: the stack file format %s has no %s" % (kind[:-1], name, STACK_VERSION,
                                                                               ", ".join(bad)))
    objects = {}
    for kind in ("configs", "secrets"):
        objects[kind], probs = resolve_objects(kind, definition.get(kind), options.get(kind), sources or {}, env,
                                               stack)
        problems.extend(probs)
    if problems:
        raise PlanError(problems)
    doc = {"version": STACK_VERSION, "services": services}
    for kind in ("networks", "volumes"):
        if definition.get(kind):
            doc[kind] = copy.deepcopy(definition[kind])
    for kind in ("configs", "secrets"):
        if objects[kind]:
            doc[kind] = {n: {"external": True, "name": o["name"]} for n, o in sorted(objects[kind].items())}
    return {"doc": doc, "translated": translated, "endpoint_mode": mode, "endpoint_reason": why,
            "configs": objects["configs"], "secrets": objects["secrets"]}


def service_hash(svc):
    """A digest of a translated service without its environment (values may be secrets; Env is compared field by
    field), stored as a label so a change to a key the comparison does not model still shows."""
    slim = {k: v for k, v in svc.items() if k not in ("environment",)}
    return hashlib.sha256(json.dumps(slim, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def add_hash_labels(doc):
    """Each service of DOC with HASH_LABEL in deploy.labels (computed before the label is added)."""
    for svc in doc["services"].values():
        digest = service_hash(svc)
        deploy = svc.setdefault("deploy", {})
        labels = deploy.get("labels")
        if isinstance(labels, list):
            labels = dict(_split_kv(x) for x in labels)
        labels = dict(labels or {})
        labels[HASH_LABEL] = digest
        deploy["labels"] = labels
    return doc


# ---------------------------------------------------------------------------------------------
# the comparison: desired service (from the interpolated stack document) vs. Engine API service spec
# ---------------------------------------------------------------------------------------------
FIELDS = ("image", "labels", "container_labels", "env", "command", "args", "user", "dir", "hostname", "read_only",
          "init", "tty", "stdin_open", "stop_grace_period", "stop_signal", "healthcheck", "mounts", "configs",
          "secrets", "cap_add", "cap_drop", "hosts", "dns", "dns_search", "logging", "mode", "replicas", "resources",
          "restart_policy", "placement", "networks", "endpoint_mode", "ports", "update_config", "rollback_config")


def _split_kv(item):
    key, sep, value = str(item).partition("=")
    return key, value if sep else ""


def _dict_of(value):
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
    return dict(_split_kv(x) for x in value)


def _cmd(value):
    if value is None or value == []:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(x) for x in value]


def _ns(value):
    s = duration_seconds(value)
    return round(s * NS) if s else None


def parse_env_file(text):
    """docker stack deploy's env_file reader (docker/cli opts.ParseEnvFile): KEY=VALUE lines taken literally
    (no quotes removed), comments and blank lines skipped, a KEY alone reads the variable from the environment
    (returned with value None)."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        out.append((key, value if sep else None))
    return out


def desired_env(svc, env_files, environ):
    """Env the CLI writes (sorted K=V): env_file entries first (read by the executor: {path: text}), then
    ``environment`` (a KEY without value from the environment, left out when unset)."""
    merged = {}
    for path in _as_list(svc.get("env_file")):
        for key, value in parse_env_file(env_files.get(path)):
            if value is None:
                if key in environ:
                    merged[key] = environ[key]
            else:
                merged[key] = value
    env = svc.get("environment")
    if isinstance(env, dict):
        items = [(str(k), None if v is None else str(v)) for k, v in env.items()]
    else:
        items = []
        for x in _as_list(env):
            key, sep, value = str(x).partition("=")
            items.append((key, value if sep else None))
    for key, value in items:
        if value is None:
            merged[key] = environ.get(key)  # unset: docker stack deploy writes the bare name
        else:
            merged[key] = value
    return sorted(k if v is None else "%s=%s" % (k, v) for k, v in merged.items())


def _scoped(stack, name, spec):
    spec = spec or {}
    if spec.get("name"):
        return spec["name"]
    ext = spec.get("external")
    if ext:
        return ext.get("name") if isinstance(ext, dict) and ext.get("name") else name
    return "%s_%s" % (stack, name)


def desired_mounts(stack, svc, volumes, project_dir):
    out = []
    for v in _as_list(svc.get("volumes")):
        if isinstance(v, dict):
            kind = v.get("type", "volume")
            source, target, ro = v.get("source"), v.get("target"), bool(v.get("read_only"))
            size = (v.get("tmpfs") or {}).get("size")
        else:
            parts = str(v).split(":")
            size = None
            if len(parts) == 1:
                kind, source, target, ro = "volume", None, parts[0], False
            else:
                source, target = parts[0], parts[1]
                ro = len(parts) > 2 and "ro" in parts[2].split(",")
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        if kind == "volume" and source:
            source = _scoped(stack, source, (volumes or {}).get(source))
        if kind == "bind" and source and not source.startswith("/"):
            source = posixpath.normpath(posixpath.join(project_dir, source))
        out.append({"type": kind, "source": source or None, "target": target, "read_only": ro,
                    "size": memory_bytes(size) if size else None})
    return sorted(out, key=lambda m: m["target"] or "")


def _object_refs_norm(stack, svc, key, objects):
    out = []
    for given in _as_list(svc.get(key)):
        r = {"source": given} if isinstance(given, str) else dict(given)
        obj = objects.get(r["source"]) or {}
        mode = r.get("mode")
        out.append({"name": obj.get("name") or "%s_%s" % (stack, r["source"]),
                    "target": r.get("target") or r["source"], "uid": str(r.get("uid") or "0"),
                    "gid": str(r.get("gid") or "0"), "mode": int(mode) if mode is not None else 0o444})
    return sorted(out, key=lambda x: (x["name"], x["target"]))


def _update_norm(cfg):
    cfg = cfg or {}
    return {"parallelism": int(cfg.get("parallelism", 1) if cfg.get("parallelism") is not None else 1),
            "delay": _ns(cfg.get("delay")) or 0, "failure_action": cfg.get("failure_action") or "pause",
            "monitor": _ns(cfg.get("monitor")) or DEFAULT_MONITOR_NS,
            "max_failure_ratio": float(cfg.get("max_failure_ratio") or 0),
            "order": cfg.get("order") or "stop-first"}


def _health_norm(hc):
    if not hc:
        return None
    if hc.get("disable"):
        return {"test": ["NONE"]}
    test = hc.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    return {"test": list(test or []), "interval": _ns(hc.get("interval")) or 0, "timeout": _ns(hc.get("timeout")) or 0,
            "retries": int(hc.get("retries") or 0), "start_period": _ns(hc.get("start_period")) or 0}


def _restart_norm(rp):
    rp = rp or {}
    delay = _ns(rp.get("delay"))
    return {"condition": rp.get("condition") or "any", "delay": DEFAULT_RESTART_DELAY_NS if delay is None else delay,
            "max_attempts": int(rp.get("max_attempts") or 0), "window": _ns(rp.get("window")) or 0}


def _resources_norm(res):
    res = res or {}
    lim, rsv = res.get("limits") or {}, res.get("reservations") or {}
    out = {"limits": {"cpus": nano_cpus(lim.get("cpus")) or 0, "memory": memory_bytes(lim.get("memory")) or 0,
                      "pids": int(lim.get("pids") or 0)},
           "reservations": {"cpus": nano_cpus(rsv.get("cpus")) or 0, "memory": memory_bytes(rsv.get("memory")) or 0}}
    return out


def _ports_norm(ports):
    return sorted(({"target": int(p["target"]), "published": int(p.get("published") or 0),
                    "protocol": p.get("protocol") or "tcp", "mode": p.get("mode") or "ingress"}
                   for p in ports or []), key=lambda p: (p["target"], p["protocol"], p["published"]))


def _caps(caps):
    """Capability names as the CLI writes them: upper case with the CAP_ prefix (ALL stays ALL), sorted."""
    out = set()
    for c in _as_list(caps):
        name = str(c).strip().upper()
        out.add(name if name == "ALL" or name.startswith("CAP_") else "CAP_" + name)
    return sorted(out) or None


def _logging_norm(log):
    if not log:
        return None
    return {"driver": log.get("driver") or "", "options": _dict_of(log.get("options"))}


def _hosts_norm(hosts):
    out = []
    if isinstance(hosts, dict):
        items = list(hosts.items())
    else:
        items = [str(h).split(":", 1) if "=" not in str(h) else str(h).split("=", 1) for h in _as_list(hosts)]
    for name, ip in items:
        out.append("%s %s" % (ip, name))
    return out


def desired_service(stack, name, svc, doc, objects, env_files, environ, project_dir):
    """The normalised form (FIELDS) of one service of the interpolated stack document, as docker stack deploy
    writes it into the service spec."""
    deploy = svc.get("deploy") or {}
    networks = svc.get("networks")
    if networks is None:
        networks = {"default": None}
    elif isinstance(networks, list):
        networks = dict.fromkeys(networks)
    nets = []
    for net, cfg in networks.items():
        target = _scoped(stack, net, (doc.get("networks") or {}).get(net))
        aliases = sorted(set(list((cfg or {}).get("aliases") or []) + [name]))
        nets.append({"name": target, "aliases": aliases})
    placement = deploy.get("placement") or {}
    labels = _dict_of(deploy.get("labels"))
    labels[NAMESPACE_LABEL] = stack
    labels[IMAGE_LABEL] = svc.get("image")
    clabels = _dict_of(svc.get("labels"))
    clabels[NAMESPACE_LABEL] = stack
    mode = deploy.get("mode") or "replicated"
    return {
        "image": svc.get("image"),
        "labels": labels,
        "container_labels": clabels,
        "env": desired_env(svc, env_files, environ),
        "command": _cmd(svc.get("entrypoint")),
        "args": _cmd(svc.get("command")),
        "user": svc.get("user") or None,
        "dir": svc.get("working_dir") or None,
        "hostname": svc.get("hostname") or None,
        "read_only": bool(svc.get("read_only")),
        "init": svc.get("init"),
        "tty": bool(svc.get("tty")),
        "stdin_open": bool(svc.get("stdin_open")),
        "stop_grace_period": _ns(svc.get("stop_grace_period")) or DEFAULT_STOP_GRACE_NS,
        "stop_signal": svc.get("stop_signal") or None,
        "healthcheck": _health_norm(svc.get("healthcheck")),
        "mounts": desired_mounts(stack, svc, doc.get("volumes"), project_dir),
        "configs": _object_refs_norm(stack, svc, "configs", objects.get("configs") or {}),
        "secrets": _object_refs_norm(stack, svc, "secrets", objects.get("secrets") or {}),
        "cap_add": _caps(svc.get("cap_add")),
        "cap_drop": _caps(svc.get("cap_drop")),
        "hosts": _hosts_norm(svc.get("extra_hosts")) or None,
        "dns": [str(x) for x in _as_list(svc.get("dns"))] or None,
        "dns_search": [str(x) for x in _as_list(svc.get("dns_search"))] or None,
        "logging": _logging_norm(svc.get("logging")),
        "mode": mode,
        "replicas": int(deploy["replicas"]) if mode == "replicated" and deploy.get("replicas") is not None else (
            1 if mode == "replicated" else None),
        "resources": _resources_norm(deploy.get("resources")),
        "restart_policy": _restart_norm(deploy.get("restart_policy")),
        "placement": {"constraints": sorted(placement.get("constraints") or []),
                      "preferences": [p.get("spread") for p in placement.get("preferences") or []],
                      "max_replicas": int(placement.get("max_replicas_per_node") or 0)},
        "networks": sorted(nets, key=lambda n: n["name"]),
        "endpoint_mode": deploy.get("endpoint_mode") or "vip",
        "ports": _ports_norm(svc.get("ports")),
        "update_config": _update_norm(deploy.get("update_config")),
        "rollback_config": _update_norm(deploy.get("rollback_config")),
    }


def _ns_api(value):
    return int(value) if value else None


def _update_api(cfg):
    if not cfg:
        return _update_norm(None)
    return {"parallelism": int(cfg.get("Parallelism", 1) if cfg.get("Parallelism") is not None else 1),
            "delay": int(cfg.get("Delay") or 0), "failure_action": cfg.get("FailureAction") or "pause",
            "monitor": int(cfg.get("Monitor") or DEFAULT_MONITOR_NS),
            "max_failure_ratio": float(cfg.get("MaxFailureRatio") or 0),
            "order": cfg.get("Order") or "stop-first"}


def current_service(spec, network_names):
    """The normalised form (FIELDS) of an Engine API service spec (``Spec`` of GET /services), with network ids
    mapped to names by NETWORK_NAMES {id: name}."""
    task = spec.get("TaskTemplate") or {}
    cs = task.get("ContainerSpec") or {}
    labels = dict(spec.get("Labels") or {})
    image = labels.get(IMAGE_LABEL) or (cs.get("Image") or "").split("@")[0]
    mode = spec.get("Mode") or {}
    hc = cs.get("Healthcheck")
    health = None
    if hc:
        health = {"test": ["NONE"]} if hc.get("Test") == ["NONE"] else {
            "test": list(hc.get("Test") or []), "interval": int(hc.get("Interval") or 0),
            "timeout": int(hc.get("Timeout") or 0), "retries": int(hc.get("Retries") or 0),
            "start_period": int(hc.get("StartPeriod") or 0)}
    mounts = []
    for m in cs.get("Mounts") or []:
        mounts.append({"type": (m.get("Type") or "volume").lower(), "source": m.get("Source") or None,
                       "target": m.get("Target"), "read_only": bool(m.get("ReadOnly")),
                       "size": (m.get("TmpfsOptions") or {}).get("SizeBytes") or None})

    def refs(items, key):
        out = []
        for r in items or []:
            f = r.get("File") or {}
            if not f:
                continue  # runtime configs (credential specs)
            mode = f.get("Mode") if f.get("Mode") is not None else 0o444
            out.append({"name": r.get(key), "target": f.get("Name"), "uid": str(f.get("UID") or "0"),
                        "gid": str(f.get("GID") or "0"), "mode": int(mode)})
        return sorted(out, key=lambda x: (x["name"], x["target"]))

    res = task.get("Resources") or {}
    lim, rsv = res.get("Limits") or {}, res.get("Reservations") or {}
    rp = task.get("RestartPolicy")
    placement = task.get("Placement") or {}
    nets = []
    for n in task.get("Networks") or spec.get("Networks") or []:
        target = n.get("Target")
        nets.append({"name": network_names.get(target, target), "aliases": sorted(set(n.get("Aliases") or []))})
    endpoint = spec.get("EndpointSpec") or {}
    log = task.get("LogDriver")
    dns = cs.get("DNSConfig") or {}
    if "Replicated" in mode:
        mode_name, replicas = "replicated", int((mode["Replicated"] or {}).get("Replicas") or 0)
    elif "Global" in mode:
        mode_name, replicas = "global", None
    elif "ReplicatedJob" in mode:
        mode_name, replicas = "replicated-job", None
    else:
        mode_name, replicas = "global-job", None
    return {
        "image": image,
        "labels": labels,
        "container_labels": dict(cs.get("Labels") or {}),
        "env": sorted(cs.get("Env") or []),
        "command": list(cs["Command"]) if cs.get("Command") else None,
        "args": list(cs["Args"]) if cs.get("Args") else None,
        "user": cs.get("User") or None,
        "dir": cs.get("Dir") or None,
        "hostname": cs.get("Hostname") or None,
        "read_only": bool(cs.get("ReadOnly")),
        "init": cs.get("Init"),
        "tty": bool(cs.get("TTY")),
        "stdin_open": bool(cs.get("OpenStdin")),
        "stop_grace_period": _ns_api(cs.get("StopGracePeriod")) or DEFAULT_STOP_GRACE_NS,
        "stop_signal": cs.get("StopSignal") or None,
        "healthcheck": health,
        "mounts": sorted(mounts, key=lambda m: m["target"] or ""),
        "configs": refs(cs.get("Configs"), "ConfigName"),
        "secrets": refs(cs.get("Secrets"), "SecretName"),
        "cap_add": _caps(cs.get("CapabilityAdd")),
        "cap_drop": _caps(cs.get("CapabilityDrop")),
        "hosts": list(cs.get("Hosts") or []) or None,
        "dns": list(dns.get("Nameservers") or []) or None,
        "dns_search": list(dns.get("Search") or []) or None,
        "logging": {"driver": log.get("Name") or "", "options": dict(log.get("Options") or {})} if log else None,
        "mode": mode_name,
        "replicas": replicas,
        "resources": {"limits": {"cpus": int(lim.get("NanoCPUs") or 0), "memory": int(lim.get("MemoryBytes") or 0),
                                 "pids": int(lim.get("Pids") or 0)},
                      "reservations": {"cpus": int(rsv.get("NanoCPUs") or 0),
                                       "memory": int(rsv.get("MemoryBytes") or 0)}},
        "restart_policy": {
            "condition": (rp or {}).get("Condition") or "any",
            "delay": int((rp or {}).get("Delay", DEFAULT_RESTART_DELAY_NS) or 0),
            "max_attempts": int((rp or {}).get("MaxAttempts") or 0), "window": int((rp or {}).get("Window") or 0)},
        "placement": {"constraints": sorted(placement.get("Constraints") or []),
                      "preferences": [(p.get("Spread") or {}).get("SpreadDescriptor")
                                      for p in placement.get("Preferences") or []],
                      "max_replicas": int(placement.get("MaxReplicas") or 0)},
        "networks": sorted(nets, key=lambda n: n["name"]),
        "endpoint_mode": endpoint.get("Mode") or "vip",
        "ports": sorted(({"target": int(p.get("TargetPort") or 0), "published": int(p.get("PublishedPort") or 0),
                          "protocol": p.get("Protocol") or "tcp", "mode": p.get("PublishMode") or "ingress"}
                         for p in endpoint.get("Ports") or []),
                        key=lambda p: (p["target"], p["protocol"], p["published"])),
        "update_config": _update_api(spec.get("UpdateConfig")),
        "rollback_config": _update_api(spec.get("RollbackConfig")),
    }


def changed_fields(want, have):
    """FIELDS whose values differ. A published port of 0 in the definition (Swarm picks one) matches any."""
    out = []
    for field in FIELDS:
        a, b = want.get(field), have.get(field)
        if field == "ports" and a is not None and b is not None and len(a) == len(b):
            a = [dict(p, published=b[i]["published"]) if not p["published"] else p for i, p in enumerate(a)]
        if field == "init" and not a and not b:
            continue
        if a != b:
            out.append(field)
    return out


def plan(stack, desired, current, prune=True):
    """Per-service plan: [{service, action, fields}] sorted by service. DESIRED {service: desired_service()},
    CURRENT {service: current_service()} (service names without the stack prefix)."""
    steps = []
    for name in sorted(set(desired) | set(current)):
        if name not in current:
            steps.append({"service": name, "action": CREATE, "fields": []})
        elif name not in desired:
            steps.append({"service": name, "action": REMOVE if prune else UNCHANGED,
                          "fields": [] if prune else ["not in the definition (prune=false)"]})
        else:
            fields = changed_fields(desired[name], current[name])
            steps.append({"service": name, "action": UPDATE if fields else UNCHANGED, "fields": fields})
    return steps


def is_changing(steps):
    return any(s["action"] in (CREATE, UPDATE, REMOVE) for s in steps)


def field_changes(want, have, fields):
    """{field: {before, after}} of the changed FIELDS (for the diff; the executor masks secrets)."""
    return {f: {"before": have.get(f), "after": want.get(f)} for f in fields}


def plan_text(steps):
    lines = []
    for s in steps:
        extra = ": " + ", ".join(s["fields"]) if s["fields"] else ""
        lines.append("  %-24s %s%s" % (s["service"], s["action"], extra))
    return "\n".join(lines) + "\n"


def stack_service_name(stack, full):
    prefix = stack + "_"
    return full[len(prefix):] if full.startswith(prefix) else full


# ---------------------------------------------------------------------------------------------
# objects to create and prune, placement checks, quorum
# ---------------------------------------------------------------------------------------------
def objects_plan(wanted, existing, in_use):
    """(to create [name], to prune [name]). WANTED {source: {name, external}}, EXISTING names of this stack's
    hashed objects (labelled by the module), IN_USE names referenced by services after the deploy."""
    want = {o["name"] for o in wanted.values() if not o["external"]}
    create = sorted(want - set(existing))
    prune = sorted(set(existing) - want - set(in_use or ()))
    return create, prune


CONSTRAINT = re.compile(r"^\s*(node\.(?:hostname|id|role|labels\.[^=!\s]+)|engine\.labels\.[^=!\s]+)"
                        r"\s*(==|!=)\s*(.+?)\s*$")


def constraint_problems(doc, nodes):
    """Placement constraints (==) that no node satisfies: [problem]. NODES are GET /nodes entries."""
    problems = []
    facts = []
    for n in nodes or []:
        spec = n.get("Spec") or {}
        desc = n.get("Description") or {}
        facts.append({"node.hostname": desc.get("Hostname"), "node.id": n.get("ID"), "node.role": spec.get("Role"),
                      "labels": dict(spec.get("Labels") or {}),
                      "engine": dict((desc.get("Engine") or {}).get("Labels") or {})})
    for name, svc in sorted((doc.get("services") or {}).items()):
        for c in ((svc.get("deploy") or {}).get("placement") or {}).get("constraints") or []:
            m = CONSTRAINT.match(str(c))
            if not m or m.group(2) != "==":
                continue
            key, value = m.group(1), m.group(3)
            if key.startswith("node.labels."):
                label = key[len("node.labels."):]
                ok = any(f["labels"].get(label) == value for f in facts)
                what = "no node has the label %s=%s" % (label, value)
            elif key.startswith("engine.labels."):
                label = key[len("engine.labels."):]
                ok = any(f["engine"].get(label) == value for f in facts)
                what = "no node's engine has the label %s=%s" % (label, value)
            else:
                ok = any(str(f[key]) == value for f in facts)
                what = "no node has %s %s" % (key.split(".")[1], value)
            if not ok:
                problems.append("service %s: placement constraint %s: %s (nodes: %s)" % (
                    name, c, what, ", ".join(sorted(str(f["node.hostname"]) for f in facts)) or "none"))
    return problems


def quorum_problem(nodes):
    """Why the managers have lost quorum, or None. NODES are GET /nodes entries."""
    managers = [n for n in nodes or [] if (n.get("Spec") or {}).get("Role") == "manager"]
    if not managers:
        return "the swarm lists no manager"
    reachable = [n for n in managers if (n.get("ManagerStatus") or {}).get("Reachability") == "reachable"]
    if len(reachable) * 2 <= len(managers):
        return "only %d of %d managers are reachable (a quorum needs %d)" % (
            len(reachable), len(managers), len(managers) // 2 + 1)
    return None


# ---------------------------------------------------------------------------------------------
# the wait
# ---------------------------------------------------------------------------------------------
FAILED_STATES = ("failed", "rejected", "orphaned")


TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def timestamp_seconds(text):
    """An RFC 3339 time of the Engine API ('2026-12-06T14:01:02.123456789Z') -> seconds since the epoch (float);
    None when absent or unreadable (Go's zero time '0001-01-01T00:00:00Z' reads as a very old time)."""
    import calendar

    m = TIMESTAMP.match(str(text or "").strip())
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    value = calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)) + float(m.group(7) or 0)
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        value -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return value


def _same_spec(task, template):
    """Whether a task runs the service's task template. The task's copy lacks ``Runtime`` (Engine 20.10)."""

    def slim(spec):
        return json.dumps({k: v for k, v in (spec or {}).items() if k != "Runtime"}, sort_keys=True)

    return slim(task.get("Spec")) == slim(template)


def service_state(service, tasks, since):
    """Judge one poll of one service after a deploy.

    service -- the GET /services entry (Spec, UpdateStatus)
    tasks   -- its GET /tasks entries
    since   -- the daemon's time (seconds, timestamp_seconds()) before the deploy: update statuses and task failures
               older than it are history

    A task is current when its spec is the service's task template (tasks of the previous spec are being replaced).
    The service has converged when its current tasks are all that is left, as many running as it wants (a one-shot
    service - restart condition none or on-failure - counts completed tasks too), and no update runs. Returns
    {state: converged|pending|rollback|rolled_back|paused, running, completed, desired, failing, update_state,
    one_shot, note}."""
    spec = service.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    mode = spec.get("Mode") or {}
    cond = (template.get("RestartPolicy") or {}).get("Condition") or "any"
    one_shot = cond in ONE_SHOT_CONDITIONS or "ReplicatedJob" in mode or "GlobalJob" in mode
    live = [t for t in tasks if t.get("DesiredState") in ("running", "complete")]
    current = [t for t in live if _same_spec(t, template)]
    running = [t for t in current if (t.get("Status") or {}).get("State") == "running"]
    # A one-shot task that finished is shut down by Swarm (desired state shutdown, state complete): it counts.
    complete = [t for t in tasks if (t.get("Status") or {}).get("State") == "complete" and _same_spec(t, template)]
    if "Replicated" in mode:
        desired = int((mode["Replicated"] or {}).get("Replicas") or 0)
    elif "ReplicatedJob" in mode:
        desired = int((mode["ReplicatedJob"] or {}).get("TotalCompletions") or 1)
    else:
        # global: one task per eligible node. The nodes are those with a live task, and those whose task of this spec
        # failed since the deploy (Swarm is between the failed task and its replacement: that node still wants one).
        # No task yet is not converged: the orchestrator has not placed it (a crash-looping global service polled
        # between two tasks, or right after the deploy, looked converged with 0 of 0).
        nodes = {t.get("NodeID") for t in live}
        for t in tasks:
            when = timestamp_seconds((t.get("Status") or {}).get("Timestamp"))
            if _same_spec(t, template) and since is not None and when is not None and when >= since:
                nodes.add(t.get("NodeID"))
        desired = max(len(nodes), 1)
    us = service.get("UpdateStatus") or {}
    started = timestamp_seconds(us.get("StartedAt"))
    recent = bool(us) and started is not None and since is not None and started >= since
    state = us.get("State") if recent else None
    failing = []
    for t in sorted(tasks, key=lambda t: (t.get("Status") or {}).get("Timestamp") or "", reverse=True):
        st = t.get("Status") or {}
        when = timestamp_seconds(st.get("Timestamp"))
        if since is not None and when is not None and when < since:
            continue
        attempted = not _same_spec(t, template) and t.get("DesiredState") != "running"
        failed = st.get("State") in FAILED_STATES or (st.get("State") == "complete" and not one_shot) or bool(
            st.get("Err"))
        if attempted or failed:
            # A task of a spec that is not the service's any more: after a rollback, the release that failed
            # (Swarm shuts its tasks down; their state says how far they got).
            failing.append({"task": t.get("ID"), "slot": t.get("Slot"), "node": t.get("NodeID"),
                            "image": ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Image"),
                            "state": st.get("State"), "error": st.get("Err") or "",
                            "message": st.get("Message") or "",
                            "exit_code": (st.get("ContainerStatus") or {}).get("ExitCode"),
                            "timestamp": st.get("Timestamp")})
    done = len(running) + (len(complete) if one_shot else 0)
    out = {"running": len(running), "completed": len(complete), "desired": desired, "failing": failing[:5],
           "update_state": us.get("State") if recent else None, "one_shot": one_shot,
           "note": (us.get("Message") or "") if recent else ""}
    if state == "rollback_completed":
        # settled once the previous release runs again
        out["state"] = "rolled_back" if done >= desired and len(current) == len(live) else "rollback"
    elif state == "rollback_started":
        out["state"] = "rollback"
    elif state in ("paused", "rollback_paused"):
        out["state"] = "paused"
    elif state == "updating":
        out["state"] = "pending"
    elif done >= desired and len(current) == len(live):
        out["state"] = "converged"
    else:
        out["state"] = "pending"
    return out


def wait_message(states, timeout, seconds, logs):
    """The failure text of a wait: per service that did not converge, its counts, update state and the latest
    failing tasks' errors, then the log tails (LOGS {service: [lines]})."""
    parts = []
    for name, st in sorted(states.items()):
        if st["state"] == "converged":
            continue
        errs = "; ".join("task %s (%s): %s %s%s" % (
            (f.get("task") or "?")[:12], f.get("image") or "?", f["state"], f["error"] or f["message"],
            " (exit %s)" % f["exit_code"] if f.get("exit_code") not in (None, 0) else "") for f in st["failing"][:3])
        notes = [n for n in st.get("notes") or [st.get("note")] if n]
        parts.append("%s: %s, %d/%d running%s%s%s" % (
            name, st["state"], st["running"], st["desired"],
            ", update %s" % st["update_state"] if st.get("update_state") else "",
            " (%s)" % "; ".join(notes) if notes else "", "; tasks: " + errs if errs else ""))
    text = "; ".join(parts)
    for name, lines in sorted((logs or {}).items()):
        if lines:
            text += "\nlast %d log lines of %s:\n%s" % (len(lines), name, "\n".join("  " + ln for ln in lines))
    return text


def render_yaml_free(doc):
    """The stack document as JSON (docker stack deploy reads JSON as YAML) when PyYAML is missing."""
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
