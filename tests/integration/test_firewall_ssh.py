"""The firewall role's SSH part on a real server (tests/tools/sandbox.py: systemd, real sshd, reached over SSH on a
loopback port), run as a NON-ROOT user with sudo - the case where the old guard read root's keys and an empty
SSH_CONNECTION:

1. a user with only a password, connecting with ``ansible_password`` or with the password given the way ``-k`` and
   AWX machine credentials give it (``--connection-password-file``): the role refuses, naming the user and the
   reason, and sshd is untouched (password login still works);
2. the same user with a key: the key-only probe passes, the hardening is written, password login is refused
   afterwards, a second run and ``--check`` report changed=0, and the controller's address is found although the
   role runs under sudo;
3. a port change on Debian 12 (ssh.service, no socket activation): sshd is reloaded and the new port answers;
4. a login whose session has no SSH_CONNECTION: options that need the controller's address fail clearly.

Only the SSH part of the role runs (``firewall_ufw_enabled: false``, ``firewall_fail2ban_enabled: false``).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = [pytest.mark.integration]

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PASSWORD = "Pw-" + secrets.token_hex(8)
PLAY = """\
- name: The firewall role's SSH part
  hosts: all
  become: true
  gather_facts: true
  vars:
    firewall_ufw_enabled: false
    firewall_fail2ban_enabled: false
  roles:
    - role: selfhosted.platform.firewall
  post_tasks:
    - name: Show what the role found
      ansible.builtin.debug:
        msg: "CONTROLLER={{ firewall__controller_ip }} PORT={{ firewall__connection_port }}"
"""
# What sshd was started with and what its configuration directory holds: the refusal must leave both alone.
SSHD_STATE = ("sha256sum /etc/ssh/sshd_config; ls -la --time-style=+%s /etc/ssh/sshd_config.d; "
              "systemctl show ssh -p MainPID -p ExecMainStartTimestampMonotonic; sshd -T | sort | sha256sum")


class Server:
    def __init__(self, name: str, state: Path, port: int):
        self.name, self.state, self.port = name, state, port
        self.ip = dh.docker("container", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                            name).stdout.strip()
        self.gateway = dh.docker("container", "inspect", "-f",
                                 "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}", name).stdout.strip()

    def root(self, script: str) -> str:
        res = subprocess.run(
            ["ssh", "-i", str(self.state / "id_ed25519"), "-p", str(self.port), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={self.state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
             "root@127.0.0.1", "bash", "-s"], input=script, capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def password_login(self, user: str, host: str = "127.0.0.1", port: int | None = None):
        """A real password login (sshpass), public keys off: (exit status, stderr)."""
        res = subprocess.run(
            ["sshpass", "-e", "ssh", "-p", str(port or self.port), "-o", "PubkeyAuthentication=no",
             "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"{user}@{host}", "true"],
            capture_output=True, text=True, timeout=60, check=False, env={"SSHPASS": PASSWORD, "PATH": "/usr/bin:/bin"})
        return res.returncode, res.stderr

    def key_login(self, user: str, key: Path, host: str, port: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"{user}@{host}", "echo key-ok"],
            capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    dh.require_image("server")
    if not shutil.which("sshpass"):
        dh._missing("sshpass is missing on the controller (scripts/testground.sh packages installs it)")
    name = dh.unique_name("ssh")
    state = tmp_path_factory.mktemp("ssh-server")
    tool = ROOT / "tests" / "tools" / "sandbox.py"
    started = time.monotonic()
    res = subprocess.run(["python3", str(tool), "create", "--name", name, "--state-dir", str(state)],
                         capture_output=True, text=True, timeout=300, check=False)
    try:
        assert res.returncode == 0, res.stderr
        srv = Server(name, state, int((state / "ssh_port").read_text()))
        # alice: sudo with her password, a password and no authorized key.
        srv.root(f"useradd -m -s /bin/bash -G sudo alice && echo 'alice:{PASSWORD}' | chpasswd")
        print(f"server {name} ready in {time.monotonic() - started:.1f}s")
        yield srv
    finally:
        subprocess.run(["python3", str(tool), "destroy", "--name", name, "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=120, check=False)


def inventory(tmp: Path, srv: Server, user: str, **hostvars: str) -> Path:
    lines = [f"      {k}: {v!r}" for k, v in {
        "ansible_host": "127.0.0.1", "ansible_port": srv.port, "ansible_user": user,
        "ansible_become_password": PASSWORD,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={srv.state / 'known_hosts'} -o StrictHostKeyChecking=yes",
        **hostvars}.items()]
    path = tmp / f"inventory-{secrets.token_hex(3)}.yml"
    path.write_text("all:\n  hosts:\n    box:\n" + "\n".join(lines) + "\n")
    return path


def converge(tmp: Path, inv: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, int], float]:
    play = tmp / "play.yml"
    play.write_text(PLAY)
    started = time.monotonic()
    # A control socket directory of this test's own: a master opened with the password by an earlier run must not
    # be what a later run rides on (the probe itself never uses one).
    res = run_tool(["ansible-playbook", "-i", str(inv), str(play), *args], timeout=600,
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp / "cp"), ANSIBLE_HOME=str(tmp / "ansible-home"))
    m = RECAP.search(res.stdout)
    counts = {"ok": int(m[2]), "changed": int(m[3]), "failed": int(m[5])} if m else {}
    return res, counts, time.monotonic() - started


def test_a_password_only_user_is_refused_and_sshd_is_untouched(server, tmp_path):
    before = server.root(SSHD_STATE)
    assert server.password_login("alice")[0] == 0, "the test needs password login on at the start"

    # ansible_password in the inventory, and the password given like -k / an AWX machine credential (it lands in
    # the play context, not in a variable).
    pw_file = tmp_path / "conn-pass"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o600)
    for inv, extra in ((inventory(tmp_path, server, "alice", ansible_password=PASSWORD), ()),
                       (inventory(tmp_path, server, "alice"), ("--connection-password-file", str(pw_file)))):
        res, counts, _secs = converge(tmp_path, inv, *extra)
        assert res.returncode != 0, explain(res)
        out = res.stdout + res.stderr
        assert "key login for alice is not proven" in out, explain(res)
        assert "alice has no authorized key" in out and "Permission denied (publickey" in out, explain(res)
        assert "Ansible itself logs in with a password" in out, explain(res)
        assert PASSWORD not in out
        assert "Write the sshd hardening drop-in" not in out, explain(res)
        # The run got that far as alice under sudo: the controller's address was found.
        assert counts.get("failed") == 1

    assert server.root(SSHD_STATE) == before, "sshd or its configuration changed"
    assert server.root("test -e /etc/ssh/sshd_config.d/00-selfhosted.conf && echo present || echo absent").strip() \
        == "absent"
    rc, err = server.password_login("alice")
    assert rc == 0, f"password login broke: {err}"


def test_with_a_key_the_guard_passes_hardens_and_the_controller_is_found_under_sudo(server, tmp_path):
    key = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)], check=True)
    server.root("install -d -o alice -g alice -m 700 ~alice/.ssh && "
                f"echo '{(tmp_path / 'alice_ed25519.pub').read_text().strip()}' > ~alice/.ssh/authorized_keys && "
                "chown alice: ~alice/.ssh/authorized_keys")
    inv = inventory(tmp_path, server, "alice", ansible_ssh_private_key_file=str(key))

    res, counts, t_first = converge(tmp_path, inv, "-v")
    assert res.returncode == 0, explain(res)
    assert counts["changed"] > 0
    out = res.stdout
    assert "key login as alice@127.0.0.1" in out and "user_source: connection" in out, explain(res)
    # SSH_CONNECTION read in alice's own session although the play runs under sudo: the Docker gateway the
    # loopback port forward comes from, and sshd's port inside the server.
    assert f"CONTROLLER={server.gateway} PORT=22" in out, explain(res)

    cfg = server.root("sshd -T")
    assert "passwordauthentication no" in cfg and "kbdinteractiveauthentication no" in cfg
    rc, err = server.password_login("alice")
    assert rc != 0 and "Permission denied" in err, err
    assert server.key_login("alice", key, "127.0.0.1", server.port).stdout.strip() == "key-ok"

    res, counts, t_second = converge(tmp_path, inv)
    assert res.returncode == 0 and counts["changed"] == 0, explain(res)
    before = server.root(SSHD_STATE)
    res, counts, t_check = converge(tmp_path, inv, "--check", "--diff")
    assert res.returncode == 0 and counts["changed"] == 0, explain(res)
    assert server.root(SSHD_STATE) == before
    print(f"firewall ssh: first {t_first:.1f}s, second {t_second:.1f}s, --check {t_check:.1f}s")


def test_a_port_change_on_debian_reloads_sshd_and_the_new_port_answers(server, tmp_path):
    key = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice2", "-f", str(key)], check=True)
    server.root(f"echo '{(tmp_path / 'alice_ed25519.pub').read_text().strip()}' >> ~alice/.ssh/authorized_keys")
    inv = inventory(tmp_path, server, "alice", ansible_ssh_private_key_file=str(key))
    pid_before = server.root("systemctl show ssh -p MainPID --value").strip()
    assert server.key_login("alice", key, server.ip, 2222).returncode != 0, "port 2222 answers already"

    res, counts, _secs = converge(tmp_path, inv, "-e", "firewall_ssh_port=2222", "-v")
    assert res.returncode == 0, explain(res)
    out = res.stdout
    # Debian 12: no socket activation, so the plan is a reload of ssh.service (no socket restart).
    handlers = out[out.index("RUNNING HANDLER"):]
    assert re.search(r"RUNNING HANDLER \[selfhosted\.platform\.firewall : Reload ssh\] \*+\nchanged:", handlers), \
        explain(res)
    assert re.search(r"RUNNING HANDLER \[selfhosted\.platform\.firewall : Restart ssh\.socket on the new ports\] "
                     r"\*+\nskipping:", handlers), explain(res)
    assert "restart_socket: false" in out and "socket: false" in out, explain(res)
    # The new port answers a key login; the port this run was connected through stays until the next run.
    assert server.key_login("alice", key, server.ip, 2222).stdout.strip() == "key-ok"
    assert server.key_login("alice", key, server.ip, 22).stdout.strip() == "key-ok"
    # Reloaded, not restarted: the same sshd process.
    assert server.root("systemctl show ssh -p MainPID --value").strip() == pid_before
    res, counts, _secs = converge(tmp_path, inv, "-e", "firewall_ssh_port=2222")
    assert res.returncode == 0 and counts["changed"] == 0, explain(res)


def test_a_session_without_ssh_connection_fails_clearly_when_an_option_needs_it(server, tmp_path):
    # bob's login shell drops SSH_CONNECTION (as restricted shells and wrappers can): the address is unknown.
    key = tmp_path / "bob_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob", "-f", str(key)], check=True)
    server.root(
        "printf '#!/bin/sh\\nunset SSH_CONNECTION SSH_CLIENT\\nexec /bin/bash \"$@\"\\n' > /usr/local/bin/nosshenv && "
        "chmod 755 /usr/local/bin/nosshenv && "
        f"useradd -m -s /usr/local/bin/nosshenv -G sudo bob && echo 'bob:{PASSWORD}' | chpasswd && "
        "install -d -o bob -g bob -m 700 ~bob/.ssh && "
        f"echo '{(tmp_path / 'bob_ed25519.pub').read_text().strip()}' > ~bob/.ssh/authorized_keys && "
        "chown bob: ~bob/.ssh/authorized_keys")
    inv = inventory(tmp_path, server, "bob", ansible_ssh_private_key_file=str(key))
    before = server.root(SSHD_STATE)
    res, _counts, _secs = converge(tmp_path, inv, "-e", "firewall_admin_include_controller=true")
    assert res.returncode != 0, explain(res)
    out = res.stdout + res.stderr
    assert "firewall_admin_include_controller" in out and "SSH_CONNECTION is empty" in out, explain(res)
    assert "Write the sshd hardening drop-in" not in out
    assert server.root(SSHD_STATE) == before
    # Nothing needs the address: the role goes on (and the guard proves bob's key).
    res, counts, _secs = converge(tmp_path, inv, "-e", "firewall_admin_include_controller=false", "-v")
    assert res.returncode == 0 and counts["failed"] == 0, explain(res)
    assert "CONTROLLER= PORT=" in res.stdout, explain(res)
    assert "key login as bob@127.0.0.1" in res.stdout, explain(res)
