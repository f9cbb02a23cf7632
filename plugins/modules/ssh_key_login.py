#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssh_key_login
short_description: Prove from the controller that a user logs in to the host with a key, never with a password
version_added: 0.2.0
description:
  - An action plugin (it runs on the controller; nothing is sent to the host). It runs C(ssh ... exit 0) to the task's
    host with the options of Ansible's own connection to that host - host, port, C(ansible_ssh_private_key_file) /
    C(private_key_file) (or C(ansible_private_key), written to a temporary 0600 file), C(ssh_args),
    C(ssh_common_args), C(ssh_extra_args) (ProxyJump, UserKnownHostsFile, StrictHostKeyChecking), host key
    checking and the C(ssh) executable - and in front of them the options that make it a key-only login whatever
    those say (ssh keeps the first value of an option) - C(BatchMode=yes), C(PasswordAuthentication=no),
    C(KbdInteractiveAuthentication=no), C(PreferredAuthentications=publickey), and C(ControlMaster=no),
    C(ControlPath=none) so a master connection Ansible opened with a password is never reused.
  - The user is O(user) when given, else the connection's C(remote_user) option exactly as Ansible's connection
    resolves it (C(ansible_ssh_user) or C(ansible_user) - the ssh plugin prefers C(ansible_ssh_user) when both are
    set - else C(-u), the play's C(remote_user), C(ANSIBLE_REMOTE_USER) or ansible.cfg), else the C(User) ssh takes
    from C(~/.ssh/config) or an C(-F) file in the connection's args, else the controller's local user.
  - A password Ansible connects with (C(ansible_password), C(ansible_ssh_pass), C(--ask-pass), an AWX machine
    credential's password) is detected (RV(password_in_use)), never counts as proof and is never given to the probe;
    C(SSHPASS) and askpass helpers are removed from the probe's environment.
  - Connections that are not SSH (C(local), C(community.docker.docker), ...) have no SSH login to prove - the result
    has RV(not_ssh=true) and RV(proven=false) and the reason.
  - Do not delegate the task (it would then read the options of the connection to the delegate); it already runs on
    the controller. It runs in check mode too, since it changes nothing.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Probes the same in check mode; it changes nothing.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  user:
    description: User whose key login is proven; default the user Ansible connects as.
    type: str
  timeout:
    description: Seconds ssh may take to connect (C(ConnectTimeout)); the whole probe gets 20 more.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Prove key login works before password login is switched off
  selfhosted.platform.ssh_key_login:
  register: key_login

- name: Refuse to harden sshd without it
  ansible.builtin.assert:
    that: key_login.proven
    fail_msg: "no key login for {{ key_login.user }}: {{ key_login.reason }}"
"""

RETURN = r"""
proven:
  description: The key-only login succeeded and C(exit 0) returned 0.
  returned: always
  type: bool
not_ssh:
  description: The connection is not SSH, so nothing could be proven (RV(proven) is false).
  returned: always
  type: bool
user:
  description: The user the login was tried as.
  returned: always
  type: str
user_source:
  description: Where the user came from - C(firewall_ssh_key_user) (the O(user) option), C(connection) (Ansible's
    remote user), C(ssh) (what C(ssh -G) says - C(~/.ssh/config) or ssh's default, the local user) or C(local).
  returned: when the connection is SSH
  type: str
host:
  description: The address ssh connected to.
  returned: always
  type: str
port:
  description: The port ssh connected to (22 when the connection sets none).
  returned: always
  type: int
reason:
  description: Why the login is or is not proven, with ssh's own last message.
  returned: always
  type: str
password_in_use:
  description: Ansible's own connection to the host uses a password.
  returned: always
  type: bool
connection:
  description: The connection plugin of the task.
  returned: always
  type: str
command:
  description: The ssh command line of the probe (no secret is ever on it).
  returned: when the connection is SSH
  type: list
  elements: str
"""
