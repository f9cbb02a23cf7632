"""docker_cis: the CIS Docker Benchmark 1.6.0 evaluation as a pure function of the host's state."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import docker_cis
from ansible_collections.selfhosted.platform.plugins.module_utils.docker_audit import container_processes, dockerd_argv

HARDENED_DAEMON = {"icc": False, "no-new-privileges": True, "userland-proxy": False, "live-restore": True,
                   "log-driver": "journald"}
INFO = {"SecurityOptions": ["name=seccomp,profile=default", "name=cgroupns"], "Driver": "overlay2",
        "LoggingDriver": "journald", "LiveRestoreEnabled": True, "ExperimentalBuild": False,
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {"docker.io": {"Name": "docker.io", "Secure": True}}},
        "Plugins": {"Authorization": None}, "Swarm": {"LocalNodeState": "inactive"}}


def hardened(name="app-web-1", **host_overrides):
    host = {"CapDrop": ["ALL"], "CapAdd": ["NET_BIND_SERVICE"], "Privileged": False, "NetworkMode": "app_default",
            "Memory": 268435456, "NanoCpus": 500000000, "CpuShares": 0, "ReadonlyRootfs": True,
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "PidMode": "", "IpcMode": "private",
            "UTSMode": "", "UsernsMode": "", "Devices": [], "CgroupParent": "",
            "SecurityOpt": ["no-new-privileges:true"], "PidsLimit": 128}
    host.update(host_overrides)
    return {"Id": name + "-id" * 10, "Name": "/" + name, "AppArmorProfile": "docker-default", "HostConfig": host,
            "Config": {"Healthcheck": {"Test": ["CMD", "true"]}},
            "Mounts": [{"Type": "volume", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/data",
                        "RW": True, "Propagation": ""}],
            "NetworkSettings": {"Networks": {"app_default": {}}}}


def handmade(name="shp-handmade"):
    """What `docker run -d -p 80:80 image` gives: the engine's defaults, nothing hardened."""
    return {"Id": name + "-id" * 10, "Name": "/" + name, "AppArmorProfile": "",
            "HostConfig": {"CapDrop": None, "CapAdd": None, "Privileged": False, "NetworkMode": "default",
                           "Memory": 0, "NanoCpus": 0, "CpuShares": 0, "ReadonlyRootfs": False,
                           "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]},
                           "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "SecurityOpt": None,
                           "PidsLimit": None},
            "Config": {}, "Mounts": [], "NetworkSettings": {"Networks": {"bridge": {}}}}


def facts(containers=(), daemon=None, info=None, files=None, processes=None):
    return {"info": copy.deepcopy(info or INFO), "daemon_config": dict(HARDENED_DAEMON if daemon is None else daemon),
            "containers": list(containers), "files": files or {}, "processes": processes or {}}


def by_id(result):
    return {item["id"]: item for item in result["checks"]}


def failing(result, item):
    return {t["target"]: t["detail"] for t in by_id(result)[item]["targets"] if t["status"] == "WARN"}


def test_a_hardened_container_passes_every_container_item():
    result = docker_cis.audit(facts([hardened()]), sections=(5,))
    assert result["findings"] == []
    assert {i["status"] for i in result["checks"]} == {"PASS"}
    assert by_id(result)["5.26"]["targets"][0]["detail"] == "no-new-privileges: true (container)"


def test_a_handmade_container_warns_by_name_on_each_default_it_lacks():
    result = docker_cis.audit(facts([hardened(), handmade()]), sections=(5,))
    warned = {item for item, entry in by_id(result).items() if entry["status"] == "WARN"}
    assert warned == {"5.4", "5.8", "5.11", "5.12", "5.13", "5.14", "5.27", "5.29", "5.30"}
    for item in warned:
        assert set(failing(result, item)) == {"shp-handmade"}, item
    assert failing(result, "5.14") == {"shp-handmade": "on all interfaces: 0.0.0.0:80->80/tcp"}
    assert "5.13 shp-handmade: writable root filesystem" in result["findings"]
    # the daemon's no-new-privileges default covers it (5.26 passes, saying where it comes from) ...
    assert by_id(result)["5.26"]["targets"][1]["detail"] == "no-new-privileges: true (daemon default)"
    # ... and without that default it does not.
    result = docker_cis.audit(facts([handmade()], daemon={}), sections=(5,))
    assert failing(result, "5.26") == {"shp-handmade": "no-new-privileges: false (daemon default)"}


def test_a_container_can_turn_the_daemon_default_off():
    container = hardened(SecurityOpt=["no-new-privileges=false"])
    result = docker_cis.audit(facts([container]), sections=(5,))
    assert failing(result, "5.26") == {"app-web-1": "no-new-privileges: false (container)"}


@pytest.mark.parametrize(("change", "item", "detail"), [
    ({"Privileged": True}, "5.5", "privileged"),
    ({"NetworkMode": "host"}, "5.10", "network mode: host"),
    ({"PidMode": "host"}, "5.16", "pid mode: host"),
    ({"IpcMode": "host"}, "5.17", "ipc mode: host"),
    ({"UTSMode": "host"}, "5.21", "uts mode: host"),
    ({"UsernsMode": "host"}, "5.31", "userns mode: host"),
    ({"Devices": [{"PathOnHost": "/dev/fuse"}]}, "5.18", "devices: /dev/fuse"),
    ({"SecurityOpt": ["no-new-privileges:true", "seccomp:unconfined"]}, "5.22", "seccomp unconfined"),
    ({"CgroupParent": "/custom"}, "5.25", "cgroup parent: /custom"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}, "5.15", "restart: always"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 10}}, "5.15", "restart: on-failure:10"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 0}}, "5.15", "restart: on-failure:0"),
    ({"PidsLimit": -1}, "5.29", "pids limit: none"),
    ({"CapDrop": ["NET_RAW"]}, "5.4", "cap_drop: NET_RAW; cap_add: NET_BIND_SERVICE"),
    ({"PortBindings": {"443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}]}}, "5.8",
     "privileged host ports: 443->443/tcp"),
])
def test_each_runtime_setting_is_named(change, item, detail):
    result = docker_cis.audit(facts([hardened(**change)]), sections=(5,))
    assert failing(result, item) == {"app-web-1": detail}


def test_mounts_sockets_propagation_and_sshd():
    container = hardened()
    container["Mounts"] += [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock", "RW": True},
        {"Type": "bind", "Source": "/etc", "Destination": "/host-etc", "RW": True, "Propagation": "rprivate"},
        {"Type": "bind", "Source": "/usr", "Destination": "/host-usr", "RW": False},
        {"Type": "bind", "Source": "/srv", "Destination": "/srv", "RW": True, "Propagation": "rshared"},
    ]
    result = docker_cis.audit(facts([container], processes={container["Id"]: ["/usr/sbin/sshd -D", "nginx"]}),
                              sections=(5,))
    assert failing(result, "5.32") == {"app-web-1": "docker socket mounted: /var/run/docker.sock"}
    assert failing(result, "5.6") == {"app-web-1": "mounted read-write: /etc"}  # /usr is read-only: fine
    assert failing(result, "5.20") == {"app-web-1": "shared propagation: /srv"}
    assert failing(result, "5.7") == {"app-web-1": "sshd running: /usr/sbin/sshd -D"}


def test_apparmor_and_selinux_only_where_the_host_has_them():
    plain = docker_cis.audit(facts([handmade()]), sections=(5,))
    assert by_id(plain)["5.2"]["status"] == "PASS"
    assert by_id(plain)["5.2"]["targets"][0]["detail"] == "AppArmor is not enabled on this host"
    info = copy.deepcopy(INFO)
    info["SecurityOptions"].append("name=apparmor")
    armored = docker_cis.audit(facts([handmade(), hardened()], info=info), sections=(5,))
    assert failing(armored, "5.2") == {"shp-handmade": "AppArmor profile: none"}


def test_swarm_mode_passes_only_where_a_swarm_is_expected():
    info = copy.deepcopy(INFO)
    info["Swarm"] = {"LocalNodeState": "active"}
    assert failing(docker_cis.audit(facts(info=info), sections=(5,)), "5.1") == {"swarm": "swarm: active"}
    assert by_id(docker_cis.audit(facts(info=info), swarm_expected=True, sections=(5,)))["5.1"]["status"] == "PASS"
    # a swarm node cannot have live-restore: 2.15 passes and says why
    daemon = docker_cis.audit(facts(info=info, daemon={}), sections=(2,))
    assert by_id(daemon)["2.15"]["status"] == "PASS"
    assert "incompatible with swarm mode" in by_id(daemon)["2.15"]["targets"][0]["detail"]


def test_daemon_defaults_of_a_plain_engine_warn_and_the_hardened_ones_pass():
    info = copy.deepcopy(INFO)
    info.update(LoggingDriver="json-file", LiveRestoreEnabled=False)
    plain = docker_cis.audit(facts(daemon={}, info=info), sections=(2,))
    assert {i["id"] for i in plain["checks"] if i["status"] == "WARN"} == {
        "2.1", "2.2", "2.9", "2.12", "2.13", "2.14", "2.15", "2.16"}
    assert failing(plain, "2.16") == {"userland-proxy": "userland-proxy: true"}
    hard = docker_cis.audit(facts(), sections=(2,))
    assert {i["id"] for i in hard["checks"] if i["status"] == "WARN"} == {"2.1", "2.9", "2.12"}


def test_userns_remapping_passes_2_9_as_docker_info_reports_it():
    """docker_engine_userns_remap: dockerd reports the userns security option (as `docker info` prints it on Debian
    13's docker.io 26.1: "name=userns"); 2.9 passes on it, naming the daemon.json value."""
    info = copy.deepcopy(INFO)
    info["SecurityOptions"].append("name=userns")
    result = docker_cis.audit(facts(daemon=dict(HARDENED_DAEMON, **{"userns-remap": "default"}), info=info),
                              sections=(2,))
    assert by_id(result)["2.9"]["status"] == "PASS"
    assert by_id(result)["2.9"]["targets"][0]["detail"] == "userns-remap: default"
    # daemon.json alone (a daemon not restarted yet) is not enough: the running engine decides
    pending = docker_cis.audit(facts(daemon=dict(HARDENED_DAEMON, **{"userns-remap": "default"})), sections=(2,))
    assert failing(pending, "2.9") == {"userns-remap": "userns-remap: off"}


@pytest.mark.parametrize(("daemon", "info_change", "item", "detail"), [
    ({"log-level": "debug"}, {}, "2.3", "log-level: debug"),
    ({"iptables": False}, {}, "2.4", "iptables: false"),
    ({}, {"Driver": "aufs"}, "2.6", "storage driver: aufs"),
    ({"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]}, {}, "2.7",
     "tcp://0.0.0.0:2375 without tlsverify and certificates"),
    ({}, {"ExperimentalBuild": True}, "2.18", "experimental: true"),
    ({}, {"RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"],
                             "IndexConfigs": {"reg.example.test:5000": {"Secure": False},
                                              "127.0.0.1:5000": {"Secure": False}}}},
     "2.5", "insecure: 10.0.0.0/8, reg.example.test:5000"),
])
def test_daemon_settings_are_named(daemon, info_change, item, detail):
    info = copy.deepcopy(INFO)
    info.update(info_change)
    result = docker_cis.audit(facts(daemon=dict(HARDENED_DAEMON, **daemon), info=info), sections=(2,))
    assert list(failing(result, item).values()) == [detail]


def test_tls_on_tcp_passes_with_verify_and_certificates():
    daemon = dict(HARDENED_DAEMON, hosts=["tcp://0.0.0.0:2376"], tlsverify=True, tlscacert="/c", tlscert="/s",
                  tlskey="/k")
    assert by_id(docker_cis.audit(facts(daemon=daemon), sections=(2,)))["2.7"]["status"] == "PASS"


def test_file_owners_and_modes():
    files = {
        "docker_service": {"path": "/lib/systemd/system/docker.service", "exists": True, "owner": "root",
                           "group": "root", "mode": 0o644},
        "docker_sock": {"path": "/run/docker.sock", "exists": True, "owner": "root", "group": "docker",
                        "mode": 0o666},
        "daemon_json": {"path": "/etc/docker/daemon.json", "exists": True, "owner": "admin", "group": "root",
                        "mode": 0o600},
        "tls_key": {"path": "/etc/docker/key.pem", "exists": True, "owner": "root", "group": "root", "mode": 0o440},
        "registry_certs": [{"path": "/etc/docker/certs.d/r/ca.crt", "exists": True, "owner": "root",
                            "group": "root", "mode": 0o644}],
    }
    result = docker_cis.audit(facts(files=files), sections=(3,))
    warned = {i["id"]: [t["detail"] for t in i["targets"] if t["status"] == "WARN"]
              for i in result["checks"] if i["status"] == "WARN"}
    assert warned == {"3.16": ["mode 0666 (at most 0660)"], "3.17": ["owner admin:root (wanted root:root)"],
                      "3.14": ["mode 0440 (at most 0400)"], "3.8": ["mode 0644 (at most 0444)"]}
    assert by_id(result)["3.19"]["targets"][0]["detail"] == "not present"


def test_waivers_turn_named_targets_into_waived_with_their_reason():
    waivers = [{"item": "5.14", "target": "router-*", "reason": "the public router answers on every address"},
               {"item": "5.8", "target": "router-router-1", "reason": "the router listens on 80/443"},
               {"item": "2.9", "reason": "userns-remap is opt-in (docs/security.md)"},
               {"item": "5.13", "target": "nobody-*", "reason": "stale"}]
    router = hardened("router-router-1", PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "80"}]})
    result = docker_cis.audit(facts([router, handmade()]), waivers=waivers)
    items = by_id(result)
    # the router is waived, the hand-made container still warns on the same item
    assert items["5.14"]["status"] == "WARN"
    assert [(t["target"], t["status"], t.get("reason")) for t in items["5.14"]["targets"]] == [
        ("router-router-1", "WAIVED", "the public router answers on every address"),
        ("shp-handmade", "WARN", None)]
    assert items["2.9"]["status"] == "WAIVED"
    assert items["2.9"]["targets"][0]["reason"] == "userns-remap is opt-in (docs/security.md)"
    assert result["unused_waivers"] == [{"item": "5.13", "target": "nobody-*", "reason": "stale"}]
    assert result["counts"]["WAIVED"] == 1 and result["counts"]["WARN"] > 0
    # only the router: 5.8 and 5.14 are WAIVED, not WARN
    only = by_id(docker_cis.audit(facts([router]), waivers=waivers, sections=(5,)))
    assert (only["5.8"]["status"], only["5.14"]["status"]) == ("WAIVED", "WAIVED")


@pytest.mark.parametrize(("waiver", "message"), [
    ({"item": "5.13", "target": "x"}, "waivers[0] (item 5.13): a waiver needs a reason"),
    ({"item": "5.13", "target": "x", "reason": "  "}, "a waiver needs a reason"),
    ({"item": "5.9", "reason": "r"}, "item '5.9' is not a CIS Docker Benchmark 1.6.0 item this audit checks"),
    ({"item": "5_13", "reason": "r"}, "(write it as '5.13')"),
    ({"item": "5.13", "reason": "r", "why": "x"}, "waivers[0]: unknown key(s) why"),
    ("5.13", "waivers[0]: expected a dict"),
])
def test_bad_waivers_are_refused_naming_the_waiver(waiver, message):
    with pytest.raises(docker_cis.AuditError, match=None) as err:
        docker_cis.check_waivers([waiver])
    assert message in str(err.value)


def test_daemon_config_merges_flags_over_daemon_json():
    conf = docker_cis.daemon_config(
        {"icc": True, "hosts": ["unix:///var/run/docker.sock"], "log-level": "info"},
        ["-H", "fd://", "--containerd=/run/containerd/containerd.sock", "--icc=false", "--userland-proxy=false",
         "--no-new-privileges", "-l", "warn", "--host=tcp://127.0.0.1:2375"])
    assert conf["icc"] is False and conf["userland-proxy"] is False and conf["no-new-privileges"] is True
    assert conf["log-level"] == "warn"
    assert conf["hosts"] == ["unix:///var/run/docker.sock", "fd://", "tcp://127.0.0.1:2375"]


def test_process_table_helpers():
    cid = "a" * 64
    table = [(1, ["/sbin/init"], "0::/init.scope\n"),
             (10, ["/usr/bin/dockerd", "-H", "fd://"], "0::/system.slice/docker.service\n"),
             (20, ["nginx:", "master"], "0::/system.slice/docker-%s.scope\n" % cid),
             (21, ["/usr/sbin/sshd", "-D"], "12:pids:/docker/%s\n" % cid)]
    assert dockerd_argv(table) == ["-H", "fd://"]
    expected = {cid: ["nginx: master", "/usr/sbin/sshd -D"], "b" * 64: []}
    assert container_processes(table, [cid, "b" * 64]) == expected
