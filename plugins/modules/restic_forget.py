#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restic_forget
short_description: Apply a restic retention policy (C(forget --prune)) and report what went
version_added: 0.1.0
description:
  - Runs C(restic forget) with the C(keep_*) policy, per group of snapshots (O(group_by)), limited to snapshots
    with O(tags) and O(host) when given, and prunes the repository when snapshots were removed (O(prune)).
  - Reports C(changed) only when snapshots were (or in check mode would be) removed, so a second run is C(ok).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.restic
attributes:
  check_mode:
    description: C(restic forget --dry-run); returns what would be kept and removed.
    support: full
  diff_mode:
    description: The short ids of the snapshots before and after.
    support: full
options:
  keep_last:
    description: Keep the last N snapshots.
    type: int
  keep_hourly:
    description: Keep the last N hourly snapshots.
    type: int
  keep_daily:
    description: Keep the last N daily snapshots.
    type: int
  keep_weekly:
    description: Keep the last N weekly snapshots.
    type: int
  keep_monthly:
    description: Keep the last N monthly snapshots.
    type: int
  keep_yearly:
    description: Keep the last N yearly snapshots.
    type: int
  keep_within:
    description: Keep snapshots newer than this duration (C(1y5m7d2h)) relative to the latest snapshot.
    type: str
  keep_within_hourly:
    description: Keep hourly snapshots within this duration.
    type: str
  keep_within_daily:
    description: Keep daily snapshots within this duration.
    type: str
  keep_within_weekly:
    description: Keep weekly snapshots within this duration.
    type: str
  keep_within_monthly:
    description: Keep monthly snapshots within this duration.
    type: str
  keep_within_yearly:
    description: Keep yearly snapshots within this duration.
    type: str
  keep_tags:
    description: Keep snapshots with these tags (C(--keep-tag)).
    type: list
    elements: str
    default: []
  tags:
    description: Only consider snapshots carrying all these tags.
    type: list
    elements: str
    default: []
  host:
    description: Only consider snapshots of this host.
    type: str
  group_by:
    description: How snapshots are grouped before the policy applies (C(--group-by)); restic's default
      (C(host,paths)) when unset.
    type: str
  prune:
    description: Remove the data no snapshot uses any more, when snapshots were removed.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Keep 7 daily, 4 weekly and 6 monthly snapshots of this host
  selfhosted.platform.restic_forget:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    host: "{{ inventory_hostname }}"
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
"""

RETURN = r"""
kept:
  description: The snapshots the policy keeps (id, short_id, time, host, tags, paths).
  returned: always
  type: list
  elements: dict
removed:
  description: The snapshots removed (or in check mode to be removed).
  returned: always
  type: list
  elements: dict
pruned:
  description: Whether the repository was pruned.
  returned: always
  type: bool
repository:
  description: The repository location, any URL password masked.
  returned: always
  type: str
restic_version:
  description: The restic version on the managed host.
  returned: success
  type: str
stale_locks_removed:
  description: How many stale locks C(restic unlock) removed before a locked command was retried (see O(unlock_stale)).
  returned: success
  type: int
  sample: 0
"""

from ansible_collections.selfhosted.platform.plugins.module_utils.restic import (
    CONNECTION_EXCLUSIVE,
    CONNECTION_ONE_OF,
    connection_spec,
    forget_action,
    run_with_client,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.restic_module import ResticModule


def main():
    spec = connection_spec()
    spec.update(
        keep_last=dict(type="int"),
        keep_hourly=dict(type="int"),
        keep_daily=dict(type="int"),
        keep_weekly=dict(type="int"),
        keep_monthly=dict(type="int"),
        keep_yearly=dict(type="int"),
        keep_within=dict(type="str"),
        keep_within_hourly=dict(type="str"),
        keep_within_daily=dict(type="str"),
        keep_within_weekly=dict(type="str"),
        keep_within_monthly=dict(type="str"),
        keep_within_yearly=dict(type="str"),
        keep_tags=dict(type="list", elements="str", default=[]),
        tags=dict(type="list", elements="str", default=[]),
        host=dict(type="str"),
        group_by=dict(type="str"),
        prune=dict(type="bool", default=True),
    )
    module = ResticModule(argument_spec=spec, mutually_exclusive=CONNECTION_EXCLUSIVE,
                          required_one_of=CONNECTION_ONE_OF, supports_check_mode=True)
    run_with_client(module, forget_action)


if __name__ == "__main__":
    main()
