# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CIS Docker Benchmark v1.6.0 items a single host's state can answer, as a pure function of that state.

``audit(facts, waivers, swarm_expected)`` takes what the module gathered - the daemon's ``GET /info``, its
configuration (daemon.json merged with dockerd's command-line flags), ``stat`` of the files section 3 names and the
``docker inspect`` of every running container (plus the processes ``GET /containers/{id}/top`` lists) - and returns
one result per item: ``PASS``, ``WARN`` (naming each container or setting that fails it) or ``WAIVED`` (every failing
target is covered by a waiver, whose reason is reported). No I/O here: the decisions are unit-tested.

Left out, because a host's state cannot answer them: 2.8 default ulimits, 2.10 cgroup confirmed, 2.11 base device
size, 2.17 custom seccomp profile, 5.9 only needed ports (playbooks/verify.yml's port section checks the ports
against the inventory instead), 5.19 ulimit override, 5.23/5.24 exec with --privileged / --user=root (only an
audit log of exec calls shows them), 5.28 latest image (Watchtower's job). Sections 1 (host), 4 (images), 6 and 7
are out of scope.
"""

from __future__ import annotations

import fnmatch
import re

PASS, WARN, WAIVED = "PASS", "WARN", "WAIVED"

# id -> title (CIS Docker Benchmark v1.6.0 wording, shortened)
TITLES = {
    "2.1": "Run the Docker daemon as a non-root user (rootless)",
    "2.2": "Restrict network traffic between containers on the default bridge (icc: false)",
    "2.3": "Logging level is 'info'",
    "2.4": "Docker is allowed to make changes to iptables",
    "2.5": "Insecure registries are not used",
    "2.6": "The aufs storage driver is not used",
    "2.7": "TLS authentication for a daemon listening on TCP",
    "2.9": "User namespace support is enabled (userns-remap)",
    "2.12": "Authorization for Docker client commands is enabled",
    "2.13": "Centralized and remote logging is configured",
    "2.14": "Containers are restricted from acquiring new privileges (daemon no-new-privileges)",
    "2.15": "Live restore is enabled",
    "2.16": "The userland proxy is disabled",
    "2.18": "Experimental features are not used in production",
    "3.1": "docker.service is owned by root:root",
    "3.2": "docker.service permissions are 644 or more restrictive",
    "3.3": "docker.socket is owned by root:root",
    "3.4": "docker.socket permissions are 644 or more restrictive",
    "3.5": "/etc/docker is owned by root:root",
    "3.6": "/etc/docker permissions are 755 or more restrictive",
    "3.7": "Registry certificate files are owned by root:root",
    "3.8": "Registry certificate file permissions are 444 or more restrictive",
    "3.9": "The TLS CA certificate is owned by root:root",
    "3.10": "TLS CA certificate permissions are 444 or more restrictive",
    "3.11": "The Docker server certificate is owned by root:root",
    "3.12": "Docker server certificate permissions are 444 or more restrictive",
    "3.13": "The Docker server certificate key is owned by root:root",
    "3.14": "Docker server certificate key permissions are 400",
    "3.15": "The Docker socket is owned by root:docker",
    "3.16": "Docker socket permissions are 660 or more restrictive",
    "3.17": "daemon.json is owned by root:root",
    "3.18": "daemon.json permissions are 644 or more restrictive",
    "3.19": "/etc/default/docker is owned by root:root",
    "3.20": "/etc/sysconfig/docker is owned by root:root",
    "3.21": "/etc/sysconfig/docker permissions are 644 or more restrictive",
    "3.22": "/etc/default/docker permissions are 644 or more restrictive",
    "3.23": "The containerd socket is owned by root:root",
    "3.24": "containerd socket permissions are 660 or more restrictive",
    "5.1": "Swarm mode is not enabled, if not needed",
    "5.2": "An AppArmor profile is enabled, if applicable",
    "5.3": "SELinux security options are set, if applicable",
    "5.4": "Linux kernel capabilities are restricted (cap_drop: ALL)",
    "5.5": "Privileged containers are not used",
    "5.6": "Sensitive host system directories are not mounted",
    "5.7": "sshd is not run within containers",
    "5.8": "Privileged ports are not mapped within containers",
    "5.10": "The host's network namespace is not shared",
    "5.11": "Memory usage is limited",
    "5.12": "CPU priority is set",
    "5.13": "The root filesystem is mounted read-only",
    "5.14": "Incoming traffic is bound to a specific host interface",
    "5.15": "The 'on-failure' restart policy is limited to 5 retries",
    "5.16": "The host's process namespace is not shared",
    "5.17": "The host's IPC namespace is not shared",
    "5.18": "Host devices are not directly exposed",
    "5.20": "Mount propagation mode is not shared",
    "5.21": "The host's UTS namespace is not shared",
    "5.22": "The default seccomp profile is not disabled",
    "5.25": "The cgroup usage is confirmed (no custom cgroup parent)",
    "5.26": "The container cannot acquire new privileges (no-new-privileges)",
    "5.27": "Container health is checked at runtime (healthcheck)",
    "5.29": "The PIDs cgroup limit is used",
    "5.30": "The default bridge (docker0) is not used",
    "5.31": "The host's user namespace is not shared",
    "5.32": "The Docker socket is not mounted inside containers",
}
ITEMS = tuple(TITLES)
SENSITIVE_DIRS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")
REMOTE_LOG_DRIVERS = ("syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs", "logentries")
WAIVER_ITEM = re.compile(r"^[235]\.\d{1,2}$")


class AuditError(ValueError):
    """Bad input (a waiver without a reason, an unknown item): names the option and the cause."""


def _section(item):
    return int(item.split(".", 1)[0])


def check_waivers(waivers):
    """Validate the waivers: each ``{item, target, reason}``; item a benchmark item this audit knows, reason
    non-empty, target a container name / setting / path (shell-style wildcards allowed, default ``*``)."""
    out = []
    for index, waiver in enumerate(waivers or []):
        where = "waivers[%d]" % index
        if not isinstance(waiver, dict):
            raise AuditError("%s: expected a dict with item, target and reason, got %r" % (where, waiver))
        unknown = sorted(set(waiver) - {"item", "target", "reason"})
        if unknown:
            raise AuditError("%s: unknown key(s) %s (item, target, reason)" % (where, ", ".join(unknown)))
        item = str(waiver.get("item", "")).strip()
        if item not in TITLES:
            hint = "" if WAIVER_ITEM.match(item) else " (write it as '5.13')"
            raise AuditError("%s: item %r is not a CIS Docker Benchmark 1.6.0 item this audit checks%s; known: %s"
                             % (where, item, hint, ", ".join(ITEMS)))
        reason = str(waiver.get("reason") or "").strip()
        if not reason:
            raise AuditError("%s (item %s): a waiver needs a reason - it is what the report shows instead of WARN"
                             % (where, item))
        target = str(waiver.get("target") or "*").strip() or "*"
        out.append({"item": item, "target": target, "reason": reason})
    return out


# ---------------------------------------------------------------------------------------------
# section 2: the daemon
# ---------------------------------------------------------------------------------------------
def _truthy(value):
    return value is True or str(value).lower() in ("true", "1", "yes")


def _daemon(facts):
    info = facts.get("info") or {}
    conf = facts.get("daemon_config") or {}
    secopts = [str(opt) for opt in info.get("SecurityOptions") or []]

    def has_secopt(name):
        return any(opt == "name=" + name or opt.startswith("name=%s," % name) for opt in secopts)

    swarm_state = ((info.get("Swarm") or {}).get("LocalNodeState") or "inactive").lower()
    results = {}

    def put(item, ok, target, detail):
        results[item] = [(target, ok, detail)]

    put("2.1", has_secopt("rootless"), "dockerd",
        "rootless" if has_secopt("rootless") else "dockerd runs as root (no rootless mode)")
    icc = conf.get("icc", True)
    put("2.2", not _truthy(icc), "icc", "icc: %s" % str(icc).lower())
    level = str(conf.get("log-level") or "info").lower()
    put("2.3", level == "info", "log-level", "log-level: %s" % level)
    iptables = conf.get("iptables", True)
    put("2.4", _truthy(iptables), "iptables", "iptables: %s" % str(iptables).lower())
    registry = info.get("RegistryConfig") or {}
    insecure = [c for c in registry.get("InsecureRegistryCIDRs") or [] if not str(c).startswith("127.")]
    insecure += sorted(name for name, index in (registry.get("IndexConfigs") or {}).items()
                       if isinstance(index, dict) and index.get("Secure") is False
                       and not re.match(r"^(127\.|localhost(:|$)|\[?::1\]?)", name))
    put("2.5", not insecure, "insecure-registries",
        "insecure: %s" % ", ".join(insecure) if insecure else "none (loopback only)")
    driver = str(info.get("Driver") or "")
    put("2.6", driver != "aufs", "storage-driver", "storage driver: %s" % (driver or "unknown"))
    hosts = [str(h) for h in (conf.get("hosts") or [])]
    tcp = [h for h in hosts if h.startswith("tcp://")]
    tls_ok = _truthy(conf.get("tlsverify", False)) and all(conf.get(k) for k in ("tlscacert", "tlscert", "tlskey"))
    if not tcp:
        tcp_detail = "no TCP listener"
    elif tls_ok:
        tcp_detail = "%s with tlsverify" % ", ".join(tcp)
    else:
        tcp_detail = "%s without tlsverify and certificates" % ", ".join(tcp)
    put("2.7", not tcp or tls_ok, "hosts", tcp_detail)
    put("2.9", has_secopt("userns"), "userns-remap",
        "userns-remap: %s" % (conf.get("userns-remap") or "on") if has_secopt("userns") else "userns-remap: off")
    authz = (info.get("Plugins") or {}).get("Authorization") or []
    put("2.12", bool(authz), "authorization-plugins",
        "authorization plugins: %s" % (", ".join(authz) if authz else "none"))
    log_driver = str(info.get("LoggingDriver") or conf.get("log-driver") or "json-file")
    put("2.13", log_driver in REMOTE_LOG_DRIVERS, "log-driver",
        "log-driver: %s%s" % (log_driver, "" if log_driver in REMOTE_LOG_DRIVERS else " (local files only)"))
    nnp = _truthy(conf.get("no-new-privileges", False))
    put("2.14", nnp, "no-new-privileges", "no-new-privileges: %s" % str(nnp).lower())
    if swarm_state == "active":
        put("2.15", True, "live-restore", "swarm node: live-restore is incompatible with swarm mode")
    else:
        live = bool(info.get("LiveRestoreEnabled", _truthy(conf.get("live-restore", False))))
        put("2.15", live, "live-restore", "live-restore: %s" % str(live).lower())
    proxy = conf.get("userland-proxy", True)
    put("2.16", not _truthy(proxy), "userland-proxy", "userland-proxy: %s" % str(proxy).lower())
    experimental = bool(info.get("ExperimentalBuild", False)) or _truthy(conf.get("experimental", False))
    put("2.18", not experimental, "experimental", "experimental: %s" % str(experimental).lower())
    return results


# ---------------------------------------------------------------------------------------------
# section 3: files
# ---------------------------------------------------------------------------------------------
# (owner item, mode item, fact key, owner wanted, widest mode allowed)
FILE_ITEMS = (
    ("3.1", "3.2", "docker_service", ("root", "root"), 0o644),
    ("3.3", "3.4", "docker_socket_unit", ("root", "root"), 0o644),
    ("3.5", "3.6", "etc_docker", ("root", "root"), 0o755),
    ("3.9", "3.10", "tls_ca", ("root", "root"), 0o444),
    ("3.11", "3.12", "tls_cert", ("root", "root"), 0o444),
    ("3.13", "3.14", "tls_key", ("root", "root"), 0o400),
    ("3.15", "3.16", "docker_sock", ("root", "docker"), 0o660),
    ("3.17", "3.18", "daemon_json", ("root", "root"), 0o644),
    ("3.19", "3.22", "etc_default_docker", ("root", "root"), 0o644),
    ("3.20", "3.21", "etc_sysconfig_docker", ("root", "root"), 0o644),
    ("3.23", "3.24", "containerd_sock", ("root", "root"), 0o660),
)


def _owner_mode(stat, want_owner, widest):
    owner = (stat.get("owner"), stat.get("group"))
    mode = int(stat.get("mode", 0)) & 0o7777
    owner_ok = owner == want_owner
    mode_ok = mode & ~widest == 0
    return (owner_ok, "%s:%s" % owner), (mode_ok, "%04o" % mode)


def _files(facts):
    files = facts.get("files") or {}
    results = {}
    for owner_item, mode_item, key, want, widest in FILE_ITEMS:
        stat = files.get(key)
        if not stat or not stat.get("exists"):
            label = (stat or {}).get("path") or key.replace("_", " ")
            results[owner_item] = [(label, True, "not present")]
            results[mode_item] = [(label, True, "not present")]
            continue
        (owner_ok, owner), (mode_ok, mode) = _owner_mode(stat, want, widest)
        results[owner_item] = [(stat["path"], owner_ok, "owner %s (wanted %s:%s)" % (owner, want[0], want[1]))]
        results[mode_item] = [(stat["path"], mode_ok, "mode %s (at most %04o)" % (mode, widest))]
    certs = files.get("registry_certs") or []
    if not certs:
        results["3.7"] = [("/etc/docker/certs.d", True, "no registry certificates")]
        results["3.8"] = [("/etc/docker/certs.d", True, "no registry certificates")]
    else:
        results["3.7"], results["3.8"] = [], []
        for stat in certs:
            (owner_ok, owner), (mode_ok, mode) = _owner_mode(stat, ("root", "root"), 0o444)
            results["3.7"].append((stat["path"], owner_ok, "owner %s (wanted root:root)" % owner))
            results["3.8"].append((stat["path"], mode_ok, "mode %s (at most 0444)" % mode))
    return results


# ---------------------------------------------------------------------------------------------
# section 5: containers
# ---------------------------------------------------------------------------------------------
def container_name(container):
    return str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")


def _secopts(container):
    return [str(opt) for opt in (container.get("HostConfig") or {}).get("SecurityOpt") or []]


def _nnp_on(container, daemon_nnp):
    """no-new-privileges is on: set on the container, or the daemon's default and not turned off."""
    for opt in _secopts(container):
        key, _sep, value = opt.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            return value in ("", "true")
    return daemon_nnp


def _ports(container):
    """(host ip, host port, container port) of every published port binding."""
    out = []
    for cport, bindings in ((container.get("HostConfig") or {}).get("PortBindings") or {}).items():
        for binding in bindings or []:
            host_port = str(binding.get("HostPort") or "")
            out.append((str(binding.get("HostIp") or ""), host_port, cport))
    return out


def _container_checks(container, processes, daemon):
    """{item: (ok, detail)} for one container."""
    host = container.get("HostConfig") or {}
    config = container.get("Config") or {}
    mounts = container.get("Mounts") or []
    checks = {}
    profile = str(container.get("AppArmorProfile") or "")
    if daemon["apparmor"]:
        checks["5.2"] = (profile not in ("", "unconfined"), "AppArmor profile: %s" % (profile or "none"))
    else:
        checks["5.2"] = (True, "AppArmor is not enabled on this host")
    if daemon["selinux"]:
        labels = [opt for opt in _secopts(container) if opt.startswith("label")]
        checks["5.3"] = (bool(labels) or bool(container.get("MountLabel")), "SELinux options: %s"
                         % (", ".join(labels) or "none"))
    else:
        checks["5.3"] = (True, "SELinux is not enabled on this host")
    drop = [str(c).upper().replace("CAP_", "") for c in host.get("CapDrop") or []]
    add = [str(c).upper().replace("CAP_", "") for c in host.get("CapAdd") or []]
    checks["5.4"] = ("ALL" in drop, "cap_drop: %s; cap_add: %s" % (", ".join(drop) or "none", ", ".join(add) or "none"))
    checks["5.5"] = (not host.get("Privileged"), "privileged" if host.get("Privileged") else "not privileged")
    sensitive = sorted({m.get("Source") for m in mounts
                        if m.get("Source") in SENSITIVE_DIRS and m.get("RW", True)})
    checks["5.6"] = (not sensitive, "mounted read-write: %s" % ", ".join(sensitive) if sensitive else "none mounted")
    sshd = sorted({p for p in processes if re.search(r"(^|/)sshd(\s|:|$)", p)})
    checks["5.7"] = (not sshd, "sshd running: %s" % "; ".join(sshd) if sshd else "no sshd process")
    ports = _ports(container)
    low = sorted({"%s->%s" % (hp, cp) for _ip, hp, cp in ports if hp.isdigit() and int(hp) < 1024})
    checks["5.8"] = (not low, "privileged host ports: %s" % ", ".join(low) if low else "none below 1024")
    checks["5.10"] = (host.get("NetworkMode") != "host", "network mode: %s" % (host.get("NetworkMode") or "default"))
    memory = int(host.get("Memory") or 0)
    checks["5.11"] = (memory > 0, "memory limit: %s" % ("%d MiB" % (memory // 1048576) if memory else "none"))
    cpu = int(host.get("CpuShares") or 0) or int(host.get("NanoCpus") or 0) or int(host.get("CpuQuota") or 0)
    checks["5.12"] = (cpu > 0, "cpu: %s" % ("shares %s, nano cpus %s, quota %s" % (
        host.get("CpuShares") or 0, host.get("NanoCpus") or 0, host.get("CpuQuota") or 0) if cpu else "no limit"))
    checks["5.13"] = (bool(host.get("ReadonlyRootfs")), "read-only root filesystem" if host.get("ReadonlyRootfs")
                      else "writable root filesystem")
    wildcard = sorted({"%s:%s->%s" % (ip or "0.0.0.0", hp, cp) for ip, hp, cp in ports if ip in ("", "0.0.0.0", "::")})
    checks["5.14"] = (not wildcard, "on all interfaces: %s" % ", ".join(wildcard) if wildcard
                      else ("bound to %s" % ", ".join(sorted({ip for ip, _hp, _cp in ports})) if ports
                            else "no published port"))
    policy = host.get("RestartPolicy") or {}
    name, retries = str(policy.get("Name") or "no"), int(policy.get("MaximumRetryCount") or 0)
    bad_restart = name == "always" or (name == "on-failure" and (retries == 0 or retries > 5))
    checks["5.15"] = (not bad_restart, "restart: %s%s" % (name, ":%d" % retries if name == "on-failure" else ""))
    checks["5.16"] = (host.get("PidMode") != "host", "pid mode: %s" % (host.get("PidMode") or "private"))
    checks["5.17"] = (host.get("IpcMode") != "host", "ipc mode: %s" % (host.get("IpcMode") or "private"))
    devices = [d.get("PathOnHost") for d in host.get("Devices") or [] if isinstance(d, dict)]
    checks["5.18"] = (not devices, "devices: %s" % ", ".join(devices) if devices else "no host devices")
    shared = sorted({m.get("Destination") for m in mounts if m.get("Propagation") in ("shared", "rshared")})
    checks["5.20"] = (not shared, "shared propagation: %s" % ", ".join(shared) if shared else "no shared mount")
    checks["5.21"] = (host.get("UTSMode") != "host", "uts mode: %s" % (host.get("UTSMode") or "private"))
    unconfined = any(opt.replace(":", "=", 1) == "seccomp=unconfined" for opt in _secopts(container))
    checks["5.22"] = (not unconfined, "seccomp unconfined" if unconfined else "default seccomp profile")
    parent = str(host.get("CgroupParent") or "")
    checks["5.25"] = (not parent, "cgroup parent: %s" % (parent or "default"))
    nnp = _nnp_on(container, daemon["nnp"])
    source = "container" if any(o.startswith("no-new-privileges") for o in _secopts(container)) else "daemon default"
    checks["5.26"] = (nnp, "no-new-privileges: %s (%s)" % (str(nnp).lower(), source))
    health = config.get("Healthcheck") or {}
    has_health = bool(health.get("Test")) and health.get("Test")[:1] != ["NONE"]
    checks["5.27"] = (has_health, "healthcheck: %s" % ("yes" if has_health else "none"))
    pids = int(host.get("PidsLimit") or 0)
    checks["5.29"] = (pids > 0, "pids limit: %s" % (pids if pids > 0 else "none"))
    networks = sorted((container.get("NetworkSettings") or {}).get("Networks") or {})
    on_bridge = host.get("NetworkMode") in ("default", "bridge") or "bridge" in networks
    checks["5.30"] = (not on_bridge, "networks: %s" % (", ".join(networks) or host.get("NetworkMode") or "none"))
    checks["5.31"] = (host.get("UsernsMode") != "host", "userns mode: %s" % (host.get("UsernsMode") or "default"))
    sock = sorted({m.get("Source") for m in mounts if str(m.get("Source") or "").endswith("docker.sock")})
    checks["5.32"] = (not sock, "docker socket mounted: %s" % ", ".join(sock) if sock else "no docker socket")
    return checks


def _containers(facts, swarm_expected):
    info = facts.get("info") or {}
    secopts = " ".join(str(o) for o in info.get("SecurityOptions") or [])
    daemon = {"apparmor": "name=apparmor" in secopts, "selinux": "name=selinux" in secopts,
              "nnp": _truthy((facts.get("daemon_config") or {}).get("no-new-privileges", False))}
    swarm_state = ((info.get("Swarm") or {}).get("LocalNodeState") or "inactive").lower()
    results = {"5.1": [("swarm", swarm_state != "active" or swarm_expected,
                        "swarm: %s%s" % (swarm_state, " (expected: a swarm node)" if swarm_expected else ""))]}
    tops = facts.get("processes") or {}
    for container in facts.get("containers") or []:
        name = container_name(container)
        for item, (ok, detail) in _container_checks(container, tops.get(container.get("Id"), []), daemon).items():
            results.setdefault(item, []).append((name, ok, detail))
    return results


# ---------------------------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------------------------
def _waiver_for(waivers, item, target):
    for waiver in waivers:
        if waiver["item"] == item and fnmatch.fnmatchcase(target, waiver["target"]):
            return waiver
    return None


def audit(facts, waivers=None, swarm_expected=False, sections=(2, 3, 5)):
    """Evaluate every item of SECTIONS. Returns ``{checks, counts, findings, unused_waivers}``:

    checks: ``[{id, section, title, status, targets: [{target, status, detail, reason?}]}]`` in benchmark order; an
    item is WARN when any target fails without a waiver, WAIVED when every failing target is waived, PASS otherwise.
    findings: one line per failing, unwaived target (``"5.13 shp-app-web-1: writable root filesystem"``).
    unused_waivers: waivers that matched no failing target (stale inventory data, reported so it can go)."""
    waivers = check_waivers(waivers)
    results = {}
    if 2 in sections:
        results.update(_daemon(facts))
    if 3 in sections:
        results.update(_files(facts))
    if 5 in sections:
        results.update(_containers(facts, swarm_expected))
    used = set()
    checks, findings = [], []
    counts = {PASS: 0, WARN: 0, WAIVED: 0}
    for item in ITEMS:
        if item not in results:
            continue
        targets = []
        for target, ok, detail in results[item]:
            entry = {"target": target, "status": PASS, "detail": detail}
            if not ok:
                waiver = _waiver_for(waivers, item, target)
                if waiver:
                    used.add(id(waiver))
                    entry.update(status=WAIVED, reason=waiver["reason"])
                else:
                    entry["status"] = WARN
                    findings.append("%s %s: %s" % (item, target, detail))
            targets.append(entry)
        statuses = {t["status"] for t in targets}
        status = WARN if WARN in statuses else (WAIVED if WAIVED in statuses else PASS)
        counts[status] += 1
        checks.append({"id": item, "section": _section(item), "title": TITLES[item], "status": status,
                      "targets": targets})
    unused = [w for w in waivers if id(w) not in used]
    return {"checks": checks, "counts": counts, "findings": findings, "unused_waivers": unused}


# ---------------------------------------------------------------------------------------------
# daemon configuration: daemon.json merged with dockerd's command line
# ---------------------------------------------------------------------------------------------
_FLAG_KEYS = {
    "--icc": "icc", "--log-level": "log-level", "-l": "log-level", "--iptables": "iptables",
    "--userns-remap": "userns-remap", "--log-driver": "log-driver", "--no-new-privileges": "no-new-privileges",
    "--live-restore": "live-restore", "--userland-proxy": "userland-proxy", "--experimental": "experimental",
    "--tlsverify": "tlsverify", "--tlscacert": "tlscacert", "--tlscert": "tlscert", "--tlskey": "tlskey",
}
_BOOL_FLAGS = {"--icc", "--iptables", "--no-new-privileges", "--live-restore", "--userland-proxy", "--experimental",
               "--tlsverify"}


def daemon_config(daemon_json, argv):
    """The effective settings the audit reads: daemon.json, overridden by dockerd's flags (argv without argv[0]).
    ``-H``/``--host`` accumulate into ``hosts``; a boolean flag without ``=value`` means true."""
    conf = dict(daemon_json or {})
    hosts = list(conf.get("hosts") or [])
    args = list(argv or [])
    i = 0
    while i < len(args):
        arg = args[i]
        flag, sep, value = arg.partition("=")
        if flag in ("-H", "--host"):
            if not sep and i + 1 < len(args):
                i += 1
                value = args[i]
            hosts.append(value)
        elif flag in _FLAG_KEYS:
            key = _FLAG_KEYS[flag]
            if flag in _BOOL_FLAGS:
                conf[key] = value.lower() != "false" if sep else True
            else:
                if not sep and i + 1 < len(args):
                    i += 1
                    value = args[i]
                conf[key] = value
        i += 1
    if hosts:
        conf["hosts"] = hosts
    return conf
