# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The executor behind the docker_security_audit module: gathers the host's state (Engine API, daemon.json,
dockerd's command line, file modes, the processes of each container) and hands it to docker_cis.audit(), the pure
evaluation. Reads only: nothing on the host changes."""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
from urllib.parse import quote

from ansible_collections.selfhosted.platform.plugins.module_utils import docker_cis
from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import (
    EngineAPI,
    EngineAPIError,
    unix_socket_transport,
)

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
CONTAINERD_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock")


def stat_file(path):
    """{path, exists, owner, group, mode} of PATH (owner/group as names, numeric when the id has no name)."""
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "exists": False}
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"path": path, "exists": True, "owner": owner, "group": group, "mode": st.st_mode & 0o7777}


def unit_path(module, unit):
    """Where systemd loads UNIT from (systemctl's FragmentPath), else the first standard location holding it."""
    systemctl = module.get_bin_path("systemctl")
    if systemctl:
        rc, out, _err = module.run_command([systemctl, "show", "--property=FragmentPath", "--value", unit])
        if rc == 0 and out.strip():
            return out.strip()
    for directory in UNIT_DIRS:
        if os.path.exists(os.path.join(directory, unit)):
            return os.path.join(directory, unit)
    return os.path.join(UNIT_DIRS[2], unit)


def proc_table(proc="/proc"):
    """[(pid, argv list, cgroup text)] of every process this host's /proc shows."""
    table = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
            with open(os.path.join(proc, entry, "cgroup"), encoding="utf-8", errors="replace") as handle:
                cgroup = handle.read()
        except OSError:
            continue
        table.append((int(entry), argv, cgroup))
    return table


def dockerd_argv(table):
    """dockerd's arguments (without argv[0]) from the process table, [] when no dockerd runs here."""
    for _pid, argv, _cgroup in table:
        if argv and os.path.basename(argv[0]) == "dockerd":
            return argv[1:]
    return []


def container_processes(table, container_ids):
    """{container id: [command lines]}: a process belongs to the container whose id is in its cgroup path."""
    out = {cid: [] for cid in container_ids}
    for _pid, argv, cgroup in table:
        for cid in container_ids:
            if cid in cgroup:
                out[cid].append(" ".join(argv))
                break
    return out


def gather(module, socket_path, daemon_json_path):
    api = EngineAPI(unix_socket_transport(socket_path))
    info = api.get("/info")[1] or {}
    listed = api.get("/containers/json")[1] or []
    containers = []
    for entry in listed:
        status, inspected = api.get("/containers/%s/json" % quote(entry["Id"], safe=""), allow=(200, 404))
        if status == 200 and inspected:
            containers.append(inspected)
    try:
        with open(daemon_json_path, encoding="utf-8") as handle:
            daemon_json = json.load(handle)
    except FileNotFoundError:
        daemon_json = {}
    except (OSError, ValueError) as exc:
        module.fail_json(msg="daemon_json: %s cannot be read as JSON: %s" % (daemon_json_path, exc))
    table = proc_table()
    config = docker_cis.daemon_config(daemon_json, dockerd_argv(table))
    files = {
        "docker_service": stat_file(unit_path(module, "docker.service")),
        "docker_socket_unit": stat_file(unit_path(module, "docker.socket")),
        "etc_docker": stat_file("/etc/docker"),
        "docker_sock": stat_file(socket_path),
        "daemon_json": stat_file(daemon_json_path),
        "etc_default_docker": stat_file("/etc/default/docker"),
        "etc_sysconfig_docker": stat_file("/etc/sysconfig/docker"),
        "containerd_sock": next((stat_file(p) for p in CONTAINERD_SOCKETS if os.path.exists(p)),
                                {"path": CONTAINERD_SOCKETS[0], "exists": False}),
        "registry_certs": [stat_file(p) for p in sorted(glob.glob("/etc/docker/certs.d/*/*")) if os.path.isfile(p)],
    }
    for key, option in (("tls_ca", "tlscacert"), ("tls_cert", "tlscert"), ("tls_key", "tlskey")):
        if config.get(option):
            files[key] = stat_file(config[option])
    processes = container_processes(table, [c["Id"] for c in containers])
    return {"info": info, "daemon_config": config, "files": files, "containers": containers,
            "processes": processes}


def run(module):
    params = module.params
    host = params["docker_host"]
    if not host.startswith("unix://"):
        module.fail_json(msg="docker_host: only a local unix socket can be audited (the audit reads files and "
                             "processes of the host it runs on), got %s" % host)
    try:
        waivers = docker_cis.check_waivers(params["waivers"])
    except docker_cis.AuditError as exc:
        module.fail_json(msg="waivers: %s" % exc)
    socket_path = host[len("unix://"):]
    try:
        facts = gather(module, socket_path, params["daemon_json"])
    except EngineAPIError as exc:
        module.fail_json(msg="docker_host: the Docker Engine at %s does not answer: %s" % (socket_path, exc))
    result = docker_cis.audit(facts, waivers, swarm_expected=params["swarm_expected"],
                              sections=tuple(params["sections"]))
    result["changed"] = False
    result["containers"] = sorted(docker_cis.container_name(c) for c in facts["containers"])
    if params["fail_on_warn"] and result["findings"]:
        module.fail_json(msg="%d CIS Docker Benchmark item(s) WARN: %s" % (
            result["counts"]["WARN"], "; ".join(result["findings"])), **result)
    module.exit_json(**result)
