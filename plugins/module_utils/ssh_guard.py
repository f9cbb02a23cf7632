# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions behind the firewall role's SSH hardening, kept pure so they are unit-tested.

- ``probe_argv`` / ``resolve_user`` / ``probe_verdict``: the key-only login the ``ssh_key_login`` action runs from
  the controller before password login is switched off, built from the options of Ansible's own connection.
- ``controller_address``: where the controller connects from (``SSH_CONNECTION`` read without become) and the
  options that cannot work without it.
- ``sshd_apply_plan``: how a changed sshd configuration takes effect - ``ssh.service`` reload on Debian,
  ``ssh.socket`` (systemd socket activation, Ubuntu 22.10+) restarted after a port change.
"""

from __future__ import annotations

import re
import shlex

# Connection plugins that reach the host with SSH, so the controller can try the same login itself.
SSH_CONNECTIONS = frozenset((
    "ssh", "smart", "ansible.builtin.ssh", "ansible.legacy.ssh",
    "paramiko", "paramiko_ssh", "ansible.builtin.paramiko_ssh", "ansible.legacy.paramiko_ssh",
    "ansible.netcommon.paramiko_ssh", "ansible.netcommon.libssh", "libssh",
))

# Options that come first on the probe's command line. ssh keeps the FIRST value it gets for an option, so none of
# the connection's own ssh_args (ControlMaster/ControlPath of a session Ansible may have opened with a password,
# PasswordAuthentication=yes, ...) can override them.
FORCED_OPTIONS = (
    "BatchMode=yes",
    "PasswordAuthentication=no",
    "KbdInteractiveAuthentication=no",
    "PreferredAuthentications=publickey",
    "NumberOfPasswordPrompts=0",
    "ControlMaster=no",
    "ControlPath=none",
    "ControlPersist=no",
)


def is_ssh_connection(name):
    """True for connection plugins that log in over SSH (``ssh``, ``smart``, ``paramiko_ssh``, ``libssh``)."""
    return (name or "ssh") in SSH_CONNECTIONS


def split_args(value):
    """An ssh_args-style option as a list (None and empty give [])."""
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return shlex.split(str(value))


def resolve_user(explicit=None, connection_user=None, ssh_config_user=None, local_user=None):
    """The user the key login is proven for, and where that name came from.

    ``explicit`` (firewall_ssh_key_user) wins; else the connection's ``remote_user`` option as the connection plugin
    resolved it (``ansible_ssh_user`` / ``ansible_user`` - the ssh plugin takes ``ansible_ssh_user`` when both are
    set - else ``-u``, the play keyword, ``ANSIBLE_REMOTE_USER``, ansible.cfg); else what ssh itself would use
    (``ssh -G``: ``User`` of ~/.ssh/config or an ``-F`` file, else ssh's default, the local user); else the
    controller's local user (when ``ssh -G`` could not run).
    """
    for value, source in ((explicit, "firewall_ssh_key_user"), (connection_user, "connection"),
                          (ssh_config_user, "ssh"), (local_user, "local")):
        if value:
            return str(value), source
    return "", "none"


def probe_argv(host, *, ssh_executable="ssh", port=None, user=None, private_key_file=None, ssh_args=None,
               ssh_common_args=None, ssh_extra_args=None, host_key_checking=None, timeout=10, proxy_command=None,
               identities_only=False, config_only=False):
    """The argv of a key-only login to ``host`` that runs ``exit 0``, with the connection's own options.

    The order follows Ansible's ssh connection plugin (ssh_args, host key checking, port, identity, user, timeout,
    ssh_common_args, ssh_extra_args) behind ``FORCED_OPTIONS``. ``config_only`` gives ``ssh -G`` instead, which
    prints the values ssh would use (user, hostname, port) without connecting.
    """
    if not host:
        raise ValueError("no host to connect to")
    argv = [ssh_executable or "ssh"]
    if config_only:
        argv.append("-G")
    for option in FORCED_OPTIONS:
        argv += ["-o", option]
    argv += split_args(ssh_args)
    if host_key_checking is False:
        argv += ["-o", "StrictHostKeyChecking=no"]
    if port:
        argv += ["-o", "Port=%s" % port]
    if private_key_file:
        if identities_only:
            argv += ["-o", "IdentitiesOnly=yes"]
        argv += ["-o", 'IdentityFile="%s"' % private_key_file]
    if user:
        argv += ["-o", 'User="%s"' % user]
    if proxy_command:
        argv += ["-o", "ProxyCommand=%s" % proxy_command]
    argv += ["-o", "ConnectTimeout=%s" % int(timeout)]
    argv += split_args(ssh_common_args)
    argv += split_args(ssh_extra_args)
    argv.append(str(host))
    if not config_only:
        argv.append("exit 0")
    return argv


def parse_ssh_config(text):
    """``ssh -G`` output as a dict (lower-case keys, first value of each)."""
    values = {}
    for line in (text or "").splitlines():
        key, _sep, value = line.strip().partition(" ")
        if key and key.lower() not in values:
            values[key.lower()] = value.strip()
    return values


def _last_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else ""


def probe_verdict(rc, stderr, *, user, host, port):
    """(proven, reason) from the probe's exit status and stderr."""
    where = "%s@%s:%s" % (user or "?", host, port or 22)
    detail = _last_line(stderr)
    if rc == 0:
        return True, "key login as %s works (BatchMode, publickey only)" % where
    if "Permission denied" in (stderr or ""):
        return False, ("the server refused a key-only login as %s - %s has no authorized key that the controller "
                       "offers (identity file, ssh-agent) - ssh said: %s" % (where, user or "the user", detail))
    if "Host key verification failed" in (stderr or "") or "REMOTE HOST IDENTIFICATION HAS CHANGED" in (stderr or ""):
        return False, ("the host key of %s could not be verified with the connection's known_hosts settings - "
                       "ssh said: %s" % (where, detail))
    if rc == 255:
        return False, "ssh could not log in as %s - ssh said: %s" % (where, detail or "exit 255")
    return False, ("the key login as %s ran, but 'exit 0' ended with %s (a shell that refuses commands, "
                   "e.g. nologin or ForceCommand) - ssh said: %s" % (where, rc, detail or "nothing"))


# ------------------------------------------------------------------------------------------------------------------
# SSH_CONNECTION
# ------------------------------------------------------------------------------------------------------------------

def controller_address(ssh_connection, *, connection="ssh", include_controller=False, keep_connection_port=False,
                       fail2ban_ignore_controller=False):
    """Where the controller connects from, from ``SSH_CONNECTION`` ("client-ip client-port server-ip server-port")
    read in the connection user's own session (sudo resets the environment, so never under become).

    Returns ``{ip, port, problems}``: ``problems`` names each enabled option that needs the address when it is
    missing over an SSH connection. Over other connections (local, docker, ...) there is no SSH session (a value
    there would be the controller's own, e.g. on a local connection) and it is ignored: only
    ``firewall_admin_include_controller``, which asks for the address explicitly, is a problem then.
    """
    fields = (ssh_connection or "").split()
    ip, port = (fields[0], fields[3]) if len(fields) == 4 and is_ssh_connection(connection) else ("", "")
    problems = []
    if ip:
        return {"ip": ip, "port": port, "problems": problems}
    if is_ssh_connection(connection):
        why = ("SSH_CONNECTION is empty in the session of the connection user (read without become), so the "
               "controller's address and the port Ansible is connected through are unknown")
        wanted = [name for name, on in (("firewall_admin_include_controller", include_controller),
                                        ("firewall_ufw_enabled (keeps the connected SSH port open)",
                                         keep_connection_port),
                                        ("firewall_fail2ban_ignore_controller", fail2ban_ignore_controller)) if on]
        if wanted:
            problems.append("%s: %s; set the option(s) to false or add the controller to firewall_admin_sources "
                            "(nothing was changed)" % (", ".join(wanted), why))
    elif include_controller:
        problems.append("firewall_admin_include_controller: the connection is %r, not SSH, so there is no controller "
                        "address (SSH_CONNECTION); set it to false and list the admin addresses in "
                        "firewall_admin_sources (nothing was changed)" % connection)
    return {"ip": ip, "port": port, "problems": problems}


# ------------------------------------------------------------------------------------------------------------------
# sshd: service or socket
# ------------------------------------------------------------------------------------------------------------------

def _version_tuple(version):
    parts = re.findall(r"\d+", str(version or ""))
    return tuple(int(p) for p in parts[:2]) if parts else ()


def parse_systemctl_show(text):
    """``systemctl show UNIT... -p Id,LoadState,ActiveState,UnitFileState,Listen`` as {unit id: {property: value}};
    ``Listen`` may repeat (a list)."""
    units, current = {}, {}
    for line in (text or "").splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                units[current["Id"]] = current
            current = {}
            continue
        key, _sep, value = line.partition("=")
        if key == "Listen":
            current.setdefault("Listen", []).append(value)
        else:
            current[key] = value
    return units


def listen_ports(listen):
    """Port numbers of a socket unit's ``Listen`` values (``[::]:22 (Stream)``, ``0.0.0.0:2222 (Stream)``)."""
    ports = set()
    for item in listen or []:
        match = re.match(r"^\s*(?:\S*:)?(\d+)\s+\(Stream\)", item)
        if match:
            ports.add(int(match.group(1)))
    return sorted(ports)


def sshd_apply_plan(distribution, version, units, ports, *, generator=None):
    """How a changed sshd drop-in takes effect.

    ``units`` is ``parse_systemctl_show`` of ssh.service, sshd.service and ssh.socket; ``ports`` the ports sshd must
    listen on; ``generator`` whether ``sshd-socket-generator`` is installed (None: inferred - Ubuntu 24.04 and later).

    - ssh.service (Debian 12/13, Ubuntu 22.04, and any host whose ssh.socket is neither enabled nor active): reload
      the service; sshd re-reads its configuration, Port lines included, and keeps the open sessions.
    - ssh.socket in use (Ubuntu 22.10 and later by default): systemd owns the listening socket. Ubuntu 24.04+ derives
      ``ListenStream`` from sshd_config with ``sshd-socket-generator`` at ``daemon-reload``; 22.10-23.10 ignore
      sshd_config's Port, so a ``ssh.socket.d`` drop-in must set ``ListenStream``. Either way a port change needs
      ``daemon-reload`` and a restart of ssh.socket (open sessions survive); the service is reloaded for the rest.
    """
    units = units or {}
    service = "ssh"
    if units.get("ssh.service", {}).get("LoadState") != "loaded" and \
            units.get("sshd.service", {}).get("LoadState") == "loaded":
        service = "sshd"
    sock = units.get("ssh.socket", {})
    socket_used = sock.get("LoadState") == "loaded" and (
        sock.get("UnitFileState") in ("enabled", "enabled-runtime")
        or sock.get("ActiveState") in ("active", "activating", "reloading"))
    if generator is None:
        ver = _version_tuple(version)
        generator = (distribution or "").lower() == "ubuntu" and ver >= (24, 4)
    want = sorted({int(p) for p in ports or []})
    service_active = units.get("%s.service" % service, {}).get("ActiveState") in ("active", "reloading")
    plan = {"service": service, "socket": socket_used, "generator": bool(generator) and socket_used,
            "socket_dropin": socket_used and not generator, "daemon_reload": False, "restart_socket": False,
            # Socket-activated, an idle ssh.service starts with the new configuration at the next connection.
            "reload_service": service_active or not socket_used,
            "ports": want, "socket_ports": listen_ports(sock.get("Listen"))}
    if socket_used and plan["socket_ports"] != want:
        plan["daemon_reload"] = True
        plan["restart_socket"] = True
    return plan
