# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""site.yml on a Docker Swarm cluster (plugins/module_utils/swarm_site.py, docs/swarm-site.md): which hosts run each
layer, where the data lives, the roles' compose definitions in the form swarm_stack deploys, the backups of a node.
An inventory is a cluster when its swarm groups have nodes; these filters are the one place that decides what the
site does with that."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_site as site


def _wrap(func):
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except site.SiteError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    call.__name__ = func.__name__
    call.__doc__ = func.__doc__
    return call


def swarm_site_hosts(groups, layer, pattern="all", managers_group=None, workers_group=None):
    """The hosts of a site.yml layer's play (PATTERN unchanged on an inventory without swarm nodes)."""
    return site.layer_hosts(groups, layer, pattern, managers_group or None, workers_group or None)


def swarm_site_plan(groups, hostvars, instances=None, stacks=None, swarm_networks=None, layers=None,
                    managers_group=None, workers_group=None, data_label="data", shared_network="data-shared",
                    proxy_networks=None, proxy_mode="nginx"):
    """Where the site's data lives on the cluster, and every problem (site_plan); node labels from hostvars."""
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("swarm_site_plan: expects hostvars")
    managers, workers = site.cluster_nodes(groups, managers_group or None, workers_group or None)
    labels, userns = {}, {}
    for node in managers + workers:
        hv = hostvars.get(node) if node in hostvars else None
        labels[node] = (hv.get("swarm_node_labels") if hv is not None else None) or {}
        userns[node] = (hv.get("docker_engine_userns_remap") if hv is not None else None) or ""
    return site.site_plan(groups, labels, instances, stacks, swarm_networks, layers, managers_group or None,
                          workers_group or None, data_label, shared_network, proxy_networks, proxy_mode, userns)


def swarm_definition(definition, pin=None, pin_services=None, pin_mounts_under=None, drop_secrets=(),
                     host_ports=False, global_constraint=None):
    """A compose definition a role built, as swarm_stack deploys it (pinned, tmpfs and shm_size translated)."""
    return site.swarm_definition(definition, pin or None, pin_services, pin_mounts_under or None, drop_secrets or (),
                                 host_ports, global_constraint or None)


def swarm_backup_sets(sets, placement, node, default_node=""):
    """The backup sets NODE runs (its instances, the paths kept on it)."""
    return site.backup_sets_for_node(sets, placement, node, default_node)


def swarm_instances_on_node(instances, placement, node):
    """The data tier instances pinned to NODE, marked as Swarm services."""
    return site.instances_on_node(instances, placement, node)


class FilterModule:
    def filters(self):
        return {f.__name__: _wrap(f) for f in (swarm_site_hosts, swarm_site_plan, swarm_definition,
                                               swarm_backup_sets, swarm_instances_on_node)}
