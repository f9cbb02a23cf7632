# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the Docker socket proxy's allowlist (logic in module_utils/socket_proxy.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import socket_proxy


def _pairs(named, name):
    if not isinstance(named, dict):
        raise AnsibleFilterError("%s: expects a dict of option name -> allowlist" % name)
    return list(named.items())


def socket_proxy_problems(named):
    """{option: allowlist} -> every problem, each naming its option and entry."""
    return socket_proxy.named_problems(_pairs(named, "socket_proxy_problems"))


def socket_proxy_flags(named):
    """{option: allowlist} -> the proxy's -allow<METHOD>=<regex> flags of the allowlists merged in order; fails
    naming every bad entry."""
    pairs = _pairs(named, "socket_proxy_flags")
    problems = socket_proxy.named_problems(pairs)
    if problems:
        raise AnsibleFilterError("socket_proxy_flags: " + "; ".join(problems))
    return socket_proxy.proxy_flags(socket_proxy.merge(pairs))


class FilterModule:
    def filters(self):
        return {"socket_proxy_problems": socket_proxy_problems, "socket_proxy_flags": socket_proxy_flags}
