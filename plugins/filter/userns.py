# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker's user-namespace remapping (plugins/module_utils/userns.py) as filters: the docker_engine role settles the
mapping (``docker_engine_userns_plan``) and publishes it as the fact ``docker_engine__userns``; every other layer
hands a container's files to the host's ids through ``host_uid`` / ``host_gid`` and lets ``userns_definition`` give
``userns_mode: host`` to the services that need the host's namespaces."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults, userns


def docker_engine_userns_plan(remap, subuid="", subgid="", name="docker_engine_userns_remap"):
    """The mapping for the option REMAP on a host whose /etc/subuid and /etc/subgid read SUBUID and SUBGID."""
    try:
        return userns.plan(remap, subuid or "", subgid or "", where=name)
    except userns.UsernsError as exc:
        raise AnsibleFilterError("docker_engine_userns_plan: %s" % exc) from exc


def _host(value, mapping, kind, name):
    try:
        return userns.host_id(value, mapping, kind, name)
    except userns.UsernsError as exc:
        raise AnsibleFilterError("host_%s: %s" % (kind, exc)) from exc


def host_uid(value, mapping=None, name="owner"):
    """The host's uid for a container's uid VALUE under MAPPING (docker_engine__userns); VALUE itself when off."""
    return _host(value, mapping, "uid", name)


def host_gid(value, mapping=None, name="group"):
    """The host's gid for a container's gid VALUE under MAPPING (docker_engine__userns); VALUE itself when off."""
    return _host(value, mapping, "gid", name)


def _plain(value):
    """VALUE as plain dicts and lists, read item by item: a role variable arrives as a lazily templated container,
    whose items are templated as they are read (copying it whole does not template them in the play's context)."""
    if isinstance(value, Mapping):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def userns_definition(definition, mapping=None):
    """A Compose DEFINITION whose services that need the host's namespaces get userns_mode host under MAPPING."""
    if not isinstance(definition, Mapping):
        raise AnsibleFilterError("userns_definition: expected a Compose definition (a dict), got %r" % (definition,))
    try:
        return container_defaults.with_userns_definition(_plain(definition), _plain(mapping))
    except container_defaults.HardeningError as exc:
        raise AnsibleFilterError("userns_definition: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"docker_engine_userns_plan": docker_engine_userns_plan, "host_uid": host_uid, "host_gid": host_gid,
                "userns_definition": userns_definition}
