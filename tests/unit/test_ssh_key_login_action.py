"""The ssh_key_login action (plugins/action/ssh_key_login.py) read through a real ansible-playbook run on the
controller: which user it proves, taken from the connection the way Ansible resolves it, that a connection password is
detected but never used, and that other connection types are not probed. The hosts point at a loopback port nothing
listens on, so every probe is a real ssh run that is refused at once (no server needed)."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

from tests.conftest import explain, run_tool

PLAY = """\
- name: Probe
  hosts: all
  gather_facts: false
  tasks:
    - name: Prove key login
      selfhosted.platform.ssh_key_login:
        timeout: 3
      register: probe
    - name: Record it
      ansible.builtin.copy:
        content: "{{ probe | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp: Path, hosts: dict, *args: str, **env: str) -> dict:
    port = closed_port()
    lines = ["all:", "  hosts:"]
    for name, hostvars in hosts.items():
        lines.append(f"    {name}:")
        for key, value in {"ansible_host": "127.0.0.1", "ansible_port": port, **hostvars}.items():
            lines.append(f"      {key}: {json.dumps(value)}")
    inv = tmp / "hosts.yml"
    inv.write_text("\n".join(lines) + "\n")
    play = tmp / "play.yml"
    play.write_text(PLAY)
    res = run_tool(["ansible-playbook", "-i", str(inv), str(play), "-e", f"out_dir={tmp}", *args], timeout=300,
                   ANSIBLE_LOCALHOST_WARNING="false", **env)
    assert res.returncode == 0, explain(res)
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in hosts}


def test_the_user_is_the_connection_user_as_ansible_resolves_it(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host *\n  User erin\n")
    got = run(tmp_path, {
        # Both set: Ansible's ssh plugin itself logs in as ansible_ssh_user (its later-listed variable wins).
        "both": {"ansible_user": "zed", "ansible_ssh_user": "alice"},
        "ssh_user": {"ansible_ssh_user": "carol"},
        "from_config": {},                                                # ANSIBLE_REMOTE_USER below
        "from_ssh_config": {"ansible_ssh_common_args": f"-F {cfg}"},
    }, ANSIBLE_REMOTE_USER="")
    assert (got["both"]["user"], got["both"]["user_source"]) == ("alice", "connection")
    assert (got["ssh_user"]["user"], got["ssh_user"]["user_source"]) == ("carol", "connection")
    assert (got["from_ssh_config"]["user"], got["from_ssh_config"]["user_source"]) == ("erin", "ssh")
    # Nothing set anywhere: ssh's own default, the controller's user.
    assert (got["from_config"]["user"], got["from_config"]["user_source"]) == (getpass.getuser(), "ssh")
    for result in got.values():
        assert result["proven"] is False and result["not_ssh"] is False
        assert "Connection refused" in result["reason"], result
        assert result["command"][:3] == ["ssh", "-o", "BatchMode=yes"]
    # remote_user from the environment (ANSIBLE_REMOTE_USER, like -u or ansible.cfg's remote_user).
    got = run(tmp_path, {"from_config": {}}, ANSIBLE_REMOTE_USER="dave")
    assert (got["from_config"]["user"], got["from_config"]["user_source"]) == ("dave", "connection")
    # -u on the command line.
    got = run(tmp_path, {"from_config": {}}, "-u", "frank")
    assert got["from_config"]["user"] == "frank"


def test_a_connection_password_is_detected_and_never_used(tmp_path):
    secret = "Not-On-Argv-7f3a"
    pw_file = tmp_path / "pw"
    pw_file.write_text(secret + "\n")
    got = run(tmp_path, {"var": {"ansible_user": "alice", "ansible_password": secret},
                         "ssh_pass": {"ansible_user": "alice", "ansible_ssh_pass": secret}})
    for result in got.values():
        assert result["password_in_use"] is True and result["proven"] is False
        assert "logs in with a password" in result["reason"]
        assert secret not in json.dumps(result)
        assert "sshpass" not in result["command"][0] and "PasswordAuthentication=no" in result["command"]
    got = run(tmp_path, {"conn_pass": {"ansible_user": "alice"}}, "--connection-password-file", str(pw_file))
    assert got["conn_pass"]["password_in_use"] is True and secret not in json.dumps(got["conn_pass"])
    got = run(tmp_path, {"key_only": {"ansible_user": "alice"}})
    assert got["key_only"]["password_in_use"] is False


def test_other_connections_are_not_probed(tmp_path):
    got = run(tmp_path, {"here": {"ansible_connection": "local"}})
    assert got["here"]["not_ssh"] is True and got["here"]["proven"] is False
    assert "not SSH" in got["here"]["reason"] and "command" not in got["here"]
