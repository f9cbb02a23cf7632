#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restic_snapshot_info
short_description: List restic snapshots (by tags, host, paths) with the newest one per group and its age
version_added: 0.1.0
description:
  - Lists the snapshots of a restic repository that carry all of O(tags), were made on O(host) and hold all of
    O(paths), and returns them sorted by time, the newest of them, and the newest per group of snapshots
    (O(group_by), restic's grouping fields), each with its age in seconds and hours.
  - Meant for monitoring and verification, for example "is the newest dump of every database younger than 26
    hours" (C(playbooks/verify.yml) does exactly that with the backup role's settings).
  - Read-only. restic runs with C(--no-lock), so a backup running at the same time neither blocks nor is blocked.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.restic
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing to show; the module never changes anything.
    support: none
options:
  tags:
    description: Only snapshots carrying all these tags.
    type: list
    elements: str
    default: []
  host:
    description: Only snapshots made on this host (the host name recorded in the snapshot).
    type: str
  paths:
    description: Only snapshots holding all these paths (absolute, as stored in the snapshots).
    type: list
    elements: str
    default: []
  group_by:
    description:
      - How snapshots are grouped for RV(groups), as restic spells it - a comma-separated list of C(host), C(tags)
        and C(paths). An empty string puts every snapshot in one group.
      - The backup role's database dumps carry the tags C(<set>), C(db) and C(<instance>), so grouping by C(tags)
        gives one group per database instance; its file backups carry C(<set>) and C(files).
    type: str
    default: host,tags
  list_snapshots:
    description: Return every matching snapshot in RV(snapshots). With V(false) only RV(latest) and RV(groups)
      are returned (smaller results on repositories with many snapshots).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Read the newest snapshot of every database instance, with the backup role's settings
  selfhosted.platform.restic_snapshot_info:
    repository: /mnt/backup/restic
    password_file: /etc/selfhosted/backup/password
    cache_dir: /var/cache/restic
    tags: [databases, db]
    host: "{{ inventory_hostname }}"
    group_by: tags
    list_snapshots: false
  register: dumps

- name: Fail when a dump is older than a day
  ansible.builtin.assert:
    that: item.latest.age_hours < 24
    fail_msg: "{{ item.key.tags | join(',') }}: newest snapshot is {{ item.latest.age_hours }}h old"
  loop: "{{ dumps.groups }}"
  loop_control:
    label: "{{ item.key.tags | join(',') }}"
"""

RETURN = r"""
count:
  description: Number of matching snapshots.
  returned: success
  type: int
  sample: 42
snapshots:
  description: The matching snapshots, oldest first (id, short_id, time, host, tags, paths, age_seconds, age_hours).
  returned: success and O(list_snapshots) is true
  type: list
  elements: dict
latest:
  description: The newest matching snapshot, with its age; null when none matches.
  returned: success
  type: dict
  sample: {"id": "c21d15c2...", "short_id": "c21d15c2", "time": "2026-11-23T02:31:05.470390191Z", "host": "h1",
           "tags": ["databases", "db", "amn-db"], "paths": ["/postgres/amn-db/marketplace.dump"],
           "age_seconds": 30512, "age_hours": 8.48}
groups:
  description: One entry per group of snapshots (O(group_by)), the group with the newest snapshot first.
  returned: success
  type: list
  elements: dict
  contains:
    key:
      description: The group's values of the grouping fields (C(host), C(tags) and C(paths) sorted).
      type: dict
      sample: {"host": "h1", "tags": ["amn-db", "databases", "db"]}
    count:
      description: Number of snapshots in the group.
      type: int
    latest:
      description: The group's newest snapshot, with C(age_seconds) and C(age_hours).
      type: dict
now:
  description: The time the ages are measured from (UTC, RFC 3339).
  returned: success
  type: str
  sample: "2026-11-23T10:59:37Z"
repository:
  description: The repository location, any URL password masked.
  returned: always
  type: str
restic_version:
  description: The restic version on the managed host.
  returned: success
  type: str
stale_locks_removed:
  description: Always 0 (the module takes no lock, so it never meets one).
  returned: success
  type: int
"""

from ansible_collections.selfhosted.platform.plugins.module_utils.restic import (
    CONNECTION_EXCLUSIVE,
    CONNECTION_ONE_OF,
    connection_spec,
    run_with_client,
    snapshot_info_action,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.restic_module import ResticModule


def main():
    spec = connection_spec()
    spec.update(
        tags=dict(type="list", elements="str", default=[]),
        host=dict(type="str"),
        paths=dict(type="list", elements="str", default=[]),
        group_by=dict(type="str", default="host,tags"),
        list_snapshots=dict(type="bool", default=True),
    )
    module = ResticModule(argument_spec=spec, mutually_exclusive=CONNECTION_EXCLUSIVE,
                          required_one_of=CONNECTION_ONE_OF, supports_check_mode=True)
    run_with_client(module, snapshot_info_action)


if __name__ == "__main__":
    main()
