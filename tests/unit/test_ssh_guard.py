"""Unit tests for the firewall role's SSH decisions (plugins/module_utils/ssh_guard.py, plugins/filter/ssh_guard.py):
the key-only probe's command line (checked with the real ssh client's own option parser, ``ssh -G``), the user it
proves, its verdict, the controller's address from SSH_CONNECTION, and how sshd applies a change on Debian and on
Ubuntu with and without socket activation."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.ssh_guard import (
    ssh_controller_address,
    sshd_apply_plan_filter,
)
from ansible_collections.selfhosted.platform.plugins.module_utils import ssh_guard as sg

# ------------------------------------------------------------------------------------------------------------------
# the probe
# ------------------------------------------------------------------------------------------------------------------

# What ansible.cfg and a typical inventory hand the connection: a persistent master (which Ansible may have opened
# with a password), a ProxyJump, known_hosts settings, and options that would allow passwords.
HOSTILE_ARGS = "-o ControlMaster=auto -o ControlPersist=120s -o ControlPath=/tmp/cp-%r@%h:%p -o BatchMode=no"
HOSTILE_COMMON = ("-o ProxyJump=jump@198.51.100.7:2200 -o UserKnownHostsFile=/tmp/kh -o StrictHostKeyChecking=yes "
                  "-o PasswordAuthentication=yes -o PreferredAuthentications=password,publickey")


def effective(argv: list[str]) -> dict[str, str]:
    """What the real ssh client would use for this command line (``ssh -G`` parses it and connects nowhere)."""
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")  # testground.sh installs openssh-client
    config = [a for a in argv if a != "exit 0"]
    config.insert(1, "-G")
    res = subprocess.run(config, capture_output=True, text=True, check=True, timeout=10, env={"HOME": "/nonexistent"})
    return sg.parse_ssh_config(res.stdout)


def test_probe_is_key_only_whatever_the_connection_args_say():
    argv = sg.probe_argv("192.0.2.10", port=2222, user="alice", private_key_file="/keys/id_ed25519",
                         ssh_args=HOSTILE_ARGS, ssh_common_args=HOSTILE_COMMON, timeout=7)
    got = effective(argv)
    assert got["batchmode"] == "yes"
    assert got["passwordauthentication"] == "no"
    assert got["kbdinteractiveauthentication"] == "no"
    assert got["preferredauthentications"] == "publickey"
    # Never the master connection Ansible may have authenticated with a password.
    assert got["controlmaster"] == "false"
    assert got.get("controlpath", "none") == "none"   # ssh -G prints no controlpath when it is none
    assert got["controlpersist"] == "no"
    # The connection's own target, identity, known_hosts and jump host are kept.
    assert got["hostname"] == "192.0.2.10" and got["port"] == "2222" and got["user"] == "alice"
    assert got["identityfile"] == "/keys/id_ed25519"
    assert got["proxyjump"].replace("[", "").replace("]", "") == "jump@198.51.100.7:2200"
    assert got["userknownhostsfile"] == "/tmp/kh"
    assert got["stricthostkeychecking"] == "true"
    assert got["connecttimeout"] == "7"
    assert argv[-2:] == ["192.0.2.10", "exit 0"]


def test_probe_follows_host_key_checking_off_and_a_key_given_as_text():
    argv = sg.probe_argv("host.example.test", host_key_checking=False, private_key_file="/tmp/k/id",
                         identities_only=True, ssh_extra_args="-o LogLevel=ERROR")
    got = effective(argv)
    assert got["stricthostkeychecking"] == "false"
    assert got["identitiesonly"] == "yes"
    assert got["loglevel"] == "ERROR"
    # No user on the command line: ssh picks it (as Ansible's connection would without remote_user).
    assert "User=" not in " ".join(argv)


def test_probe_config_form_does_not_run_a_command_and_host_is_required():
    argv = sg.probe_argv("h", config_only=True, ssh_executable="/usr/bin/ssh")
    assert argv[:2] == ["/usr/bin/ssh", "-G"] and argv[-1] == "h"
    with pytest.raises(ValueError):
        sg.probe_argv("")


@pytest.mark.parametrize(("args", "expected"), [
    (("deploy", "alice", "bob", "root"), ("deploy", "firewall_ssh_key_user")),   # explicit option wins
    ((None, "alice", "bob", "root"), ("alice", "connection")),                 # ansible_user / -u / remote_user
    (("", None, "bob", "root"), ("bob", "ssh")),                               # what ssh -G says (~/.ssh/config)
    ((None, None, None, "root"), ("root", "local")),                           # the controller's own user
    ((None, None, None, None), ("", "none")),
])
def test_the_user_proven(args, expected):
    assert sg.resolve_user(*args) == expected


def test_verdicts_name_the_user_and_the_cause():
    ok, reason = sg.probe_verdict(0, "", user="alice", host="192.0.2.10", port=22)
    assert ok and "alice@192.0.2.10:22" in reason
    ok, reason = sg.probe_verdict(255, "alice@192.0.2.10: Permission denied (publickey,password).\n",
                                  user="alice", host="192.0.2.10", port=22)
    assert not ok and "alice has no authorized key" in reason and "Permission denied (publickey,password)" in reason
    ok, reason = sg.probe_verdict(255, "Host key verification failed.\n", user="a", host="h", port=2222)
    assert not ok and "host key" in reason and "a@h:2222" in reason
    ok, reason = sg.probe_verdict(255, "ssh: connect to host h port 22: Connection refused\n", user="a", host="h",
                                  port=None)
    assert not ok and "Connection refused" in reason and "a@h:22" in reason
    ok, reason = sg.probe_verdict(1, "This account is currently not available.\n", user="a", host="h", port=22)
    assert not ok and "ended with 1" in reason


@pytest.mark.parametrize(("name", "ssh"), [
    ("ssh", True), ("smart", True), ("ansible.builtin.ssh", True), ("paramiko", True), (None, True),
    ("local", False), ("community.docker.docker", False), ("ansible.builtin.local", False), ("winrm", False),
])
def test_which_connections_are_ssh(name, ssh):
    assert sg.is_ssh_connection(name) is ssh


# ------------------------------------------------------------------------------------------------------------------
# SSH_CONNECTION
# ------------------------------------------------------------------------------------------------------------------

def test_the_controller_address_and_the_connected_port():
    got = ssh_controller_address("172.17.0.1 51234 172.17.0.3 22", "ssh", True, True, True)
    assert got == {"ip": "172.17.0.1", "port": "22", "problems": []}
    got = ssh_controller_address("2001:db8::7 40000 2001:db8::1 2222\n", "ansible.builtin.ssh")
    assert got["ip"] == "2001:db8::7" and got["port"] == "2222"


def test_missing_over_ssh_fails_naming_each_option_that_needs_it():
    got = ssh_controller_address("", "ssh", True, True, True)
    assert got["ip"] == "" and got["port"] == ""
    (problem,) = got["problems"]
    for name in ("firewall_admin_include_controller", "firewall_ufw_enabled", "firewall_fail2ban_ignore_controller"):
        assert name in problem
    assert "SSH_CONNECTION is empty" in problem and "without become" in problem
    only = ssh_controller_address(None, "ssh", False, True, False)["problems"][0]
    assert "firewall_ufw_enabled" in only and "firewall_admin_include_controller" not in only
    # Nothing that needs it: no problem.
    assert ssh_controller_address("", "ssh", False, False, False)["problems"] == []


def test_other_connections_have_no_controller_address():
    # A local connection sees the controller's own SSH session, if any: not the managed host's.
    got = ssh_controller_address("198.51.100.9 1234 192.0.2.1 22", "local", False, True, True)
    assert got == {"ip": "", "port": "", "problems": []}
    (problem,) = ssh_controller_address("", "community.docker.docker", True, True, True)["problems"]
    assert problem.startswith("firewall_admin_include_controller:") and "community.docker.docker" in problem
    with pytest.raises(AnsibleFilterError):
        ssh_controller_address(["not", "text"])


# ------------------------------------------------------------------------------------------------------------------
# sshd: service or socket
# ------------------------------------------------------------------------------------------------------------------

def show(service_active="active", socket_file="disabled", socket_active="inactive", listen="[::]:22 (Stream)",
         sshd_alias=True):
    """``systemctl show ssh.service sshd.service ssh.socket -p Id,LoadState,ActiveState,UnitFileState,Listen`` as
    systemd prints it (sshd.service is an alias of ssh.service on Debian and Ubuntu, so it repeats that unit)."""
    service = f"Id=ssh.service\nLoadState=loaded\nActiveState={service_active}\nUnitFileState=enabled\n"
    alias = service if sshd_alias else "Id=sshd.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
    sock = (f"Listen={listen}\nId=ssh.socket\nLoadState=loaded\nActiveState={socket_active}\n"
            f"UnitFileState={socket_file}\n")
    return f"{service}\n{alias}\n{sock}"


# Measured on the Debian 12 server image (tests/images/server).
DEBIAN_12 = show()


@pytest.mark.parametrize(("dist", "version", "text", "generator"), [
    ("Debian", "12", DEBIAN_12, False),
    # Debian 13: openssh-server 1:10.0p1-7+deb13u4 (checked 2026-12) ships ssh.socket (ListenStream=22, Accept=no)
    # disabled, and no sshd-socket-generator.
    ("Debian", "13", show(), False),
    ("Ubuntu", "22.04", show(), False),      # socket activation is not the default before 22.10
])
def test_without_socket_activation_the_service_is_reloaded(dist, version, text, generator):
    plan = sshd_apply_plan_filter(text, dist, version, [2222, 22], generator)
    assert plan["service"] == "ssh" and plan["socket"] is False
    assert plan["reload_service"] is True
    assert plan["daemon_reload"] is False and plan["restart_socket"] is False and plan["socket_dropin"] is False


@pytest.mark.parametrize("version", ["22.10", "23.04", "23.10"])
def test_ubuntu_socket_without_generator_needs_a_listen_dropin_and_a_socket_restart(version):
    text = show(service_active="active", socket_file="enabled", socket_active="active")
    plan = sshd_apply_plan_filter(text, "Ubuntu", version, ["2222", "22"])   # generator inferred: none before 24.04
    assert plan["socket"] is True and plan["generator"] is False and plan["socket_dropin"] is True
    assert plan["ports"] == [22, 2222] and plan["socket_ports"] == [22]
    assert plan["daemon_reload"] is True and plan["restart_socket"] is True and plan["reload_service"] is True
    # The ports already match: the socket is left alone, the running sshd re-reads the rest.
    same = sshd_apply_plan_filter(text, "Ubuntu", version, [22])
    assert same["restart_socket"] is False and same["daemon_reload"] is False and same["reload_service"] is True


# Ubuntu 24.04: openssh-server 1:9.6p1-3ubuntu13 (noble, checked 2026-12) ships
# /usr/lib/systemd/system-generators/sshd-socket-generator and ssh.socket with ListenStream=22, RequiredBy=ssh.service.
@pytest.mark.parametrize("version", ["24.04", "24.10", "25.04"])
def test_ubuntu_24_04_socket_takes_its_ports_from_sshd_config_through_the_generator(version):
    text = show(service_active="inactive", socket_file="enabled", socket_active="active")
    plan = sshd_apply_plan_filter(text, "Ubuntu", version, [2222])
    assert plan["socket"] is True and plan["generator"] is True and plan["socket_dropin"] is False
    assert plan["daemon_reload"] is True and plan["restart_socket"] is True
    # No sshd runs between connections: the next one starts it with the new configuration.
    assert plan["reload_service"] is False
    # The installed generator decides over the version guess.
    assert sshd_apply_plan_filter(text, "Ubuntu", "23.10", [2222], True)["socket_dropin"] is False


def test_an_upgraded_ubuntu_keeps_its_service_and_a_debian_admin_may_enable_the_socket():
    # 22.04 -> 24.04 upgrades keep ssh.service when the admin had customised it: socket disabled, inactive.
    plan = sshd_apply_plan_filter(show(), "Ubuntu", "24.04", [2222])
    assert plan["socket"] is False and plan["reload_service"] is True and plan["restart_socket"] is False
    # Debian with ssh.socket switched on by hand and no generator: the drop-in carries the ports.
    text = show(socket_file="enabled", socket_active="active", listen="0.0.0.0:22 (Stream)\nListen=[::]:22 (Stream)")
    plan = sshd_apply_plan_filter(text, "Debian", "12", [22], False)
    assert plan["socket_dropin"] is True and plan["socket_ports"] == [22] and plan["restart_socket"] is False


def test_sshd_service_name_and_bad_input():
    text = ("Id=ssh.service\nLoadState=not-found\nActiveState=inactive\n\n"
            "Id=sshd.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
            "Id=ssh.socket\nLoadState=not-found\nActiveState=inactive\n")
    assert sshd_apply_plan_filter(text, "Debian", "12", [22])["service"] == "sshd"
    with pytest.raises(AnsibleFilterError):
        sshd_apply_plan_filter(text, "Debian", "12", ["ssh"])
    with pytest.raises(AnsibleFilterError):
        sshd_apply_plan_filter(None)
    assert sg.listen_ports(["[::]:2222 (Stream)", "0.0.0.0:22 (Stream)", "/run/x.sock (Stream)", "22 (Datagram)"]) \
        == [22, 2222]
