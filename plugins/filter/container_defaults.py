# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The platform's hardened container defaults (plugins/module_utils/container_defaults.py) as filters: the roles
pass each Compose service they render through ``hardened_service`` instead of spelling the keys out again."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults


def hardened_service(service, profile, options=None, name="service_defaults", user=None, userns=None):
    """SERVICE with the hardened defaults of PROFILE it does not set itself; OPTIONS (named NAME in errors) turn
    them off or set their values; USER is the unprivileged user the caller knows the image runs as; USERNS the
    engine's user-namespace mapping (docker_engine__userns: userns_mode host where the service needs it)."""
    try:
        return container_defaults.harden(service, profile, options, where=name, user=user or None,
                                         name="%s (%s service)" % (name, profile), userns=userns)
    except container_defaults.HardeningError as exc:
        raise AnsibleFilterError("hardened_service: %s" % exc) from exc


def hardened_user(service):
    """{uid, gid} a hardened service runs as, or {} when it starts as root or as a named user."""
    owner = container_defaults.service_user(service)
    return {"uid": owner[0], "gid": owner[1]} if owner else {}


class FilterModule:
    def filters(self):
        return {"hardened_service": hardened_service, "hardened_user": hardened_user}
