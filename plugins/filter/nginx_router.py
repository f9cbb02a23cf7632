# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx router's routes, name-based sites and TLS (plugins/module_utils/nginx_router.py, roles/proxy): every
problem at once, and the plan the router's template and tasks render."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import nginx_router


def nginx_router_problems(routes, sites=None, ports=None):
    """Every problem of the routes, the sites and (with TLS) the ports, each naming the option."""
    return nginx_router.problems(routes, sites, ports)


def nginx_router_plan(routes, sites=None, ports=None):
    """The server blocks, htpasswd files and certificate files the router renders."""
    try:
        return nginx_router.plan(routes, sites, ports)
    except nginx_router.RouterError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"nginx_router_problems": nginx_router_problems, "nginx_router_plan": nginx_router_plan}
