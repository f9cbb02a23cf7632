# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters behind the firewall role's SSH handling; the decisions live in module_utils/ssh_guard.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils.ssh_guard import (
    controller_address,
    parse_systemctl_show,
    sshd_apply_plan,
)


def ssh_controller_address(ssh_connection, connection="ssh", include_controller=False, keep_connection_port=False,
                           fail2ban_ignore_controller=False):
    if ssh_connection is not None and not isinstance(ssh_connection, str):
        raise AnsibleFilterError("ssh_controller_address: expects the text of SSH_CONNECTION")
    return controller_address(ssh_connection, connection=connection or "ssh",
                              include_controller=bool(include_controller),
                              keep_connection_port=bool(keep_connection_port),
                              fail2ban_ignore_controller=bool(fail2ban_ignore_controller))


def sshd_apply_plan_filter(systemctl_show, distribution="", version="", ports=(), generator=None):
    if not isinstance(systemctl_show, str):
        raise AnsibleFilterError("sshd_apply_plan: expects the text of systemctl show")
    try:
        port_list = [int(p) for p in ports or []]
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("sshd_apply_plan: ports must be numbers: %s" % exc) from exc
    return sshd_apply_plan(distribution, version, parse_systemctl_show(systemctl_show), port_list,
                           generator=None if generator is None else bool(generator))


class FilterModule:
    def filters(self):
        return {
            "ssh_controller_address": ssh_controller_address,
            "sshd_apply_plan": sshd_apply_plan_filter,
        }
