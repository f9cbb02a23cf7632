#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restic_restore
short_description: Restore a restic snapshot (the latest, or by id, tags, host) into a directory
version_added: 0.1.0
description:
  - Restores the whole snapshot under O(target) (a snapshot of C(/mnt/data/uploads) lands in
    C(<target>/mnt/data/uploads)).
  - With O(command), one file of the snapshot (a database dump made by M(selfhosted.platform.restic_backup) with
    O(selfhosted.platform.restic_backup#module:command)) is streamed with C(restic dump) into the command's standard
    input instead, for example C(docker exec -i db pg_restore ...); nothing is written to disk on the way.
  - "C(changed) is honest: the snapshot's listing is compared with the target first (type, size, modification time
    to the nanosecond and permissions, which restic restores) and nothing is written when everything matches.
    Files in the target that are not in the snapshot are left alone."
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.restic
attributes:
  check_mode:
    description: Compares and reports what would be restored; writes nothing.
    support: full
  diff_mode:
    description: The paths that would be written, with the reason.
    support: full
options:
  target:
    description:
      - Absolute directory to restore into; created when missing.
      - Exactly one of O(target) and O(command) is required.
    type: path
  command:
    description:
      - A command (argv list, no shell) that reads O(filename) of the snapshot on its standard input.
      - It runs with O(command_env) only; restic's password and repository are not in its environment.
    type: list
    elements: str
  command_env:
    description:
      - Environment variables for O(command) only (database passwords); never logged, never on a command line.
        Pass them into a container by name, C(docker exec -e PGPASSWORD ...).
    type: dict
    default: {}
  filename:
    description:
      - With O(command), the file of the snapshot to stream, as it was saved, for example
        C(postgres/app-db/app.dump) (the O(selfhosted.platform.restic_backup#module:filename) of a command backup).
      - With O(snapshot=latest) and no O(paths), the newest snapshot holding this file is used.
    type: str
  snapshot:
    description: C(latest) (filtered by O(tags), O(host) and O(paths)) or a snapshot id (full or short).
    type: str
    default: latest
  tags:
    description: With O(snapshot=latest), the newest snapshot carrying all these tags.
    type: list
    elements: str
    default: []
  host:
    description: With O(snapshot=latest), the newest snapshot of this host.
    type: str
  paths:
    description: With O(snapshot=latest), the newest snapshot of exactly these backed-up paths.
    type: list
    elements: str
    default: []
  include:
    description:
      - Restore only these paths of the snapshot (absolute, as stored, for example C(/mnt/data/amn/uploads)) and
        what is below them (C(--include)); the rest of the snapshot is neither compared nor written.
    type: list
    elements: path
    default: []
  verify:
    description: Let restic verify the restored files' content (C(--verify)).
    type: bool
    default: false
  force:
    description: Restore even when the target already matches the snapshot.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The last database dumps into a scratch directory
  selfhosted.platform.restic_restore:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    tags: [db]
    target: /var/tmp/restore

- name: The latest dump of one database back into the live Postgres
  selfhosted.platform.restic_restore:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    filename: postgres/app-db/app.dump
    command: [docker, exec, -i, -e, PGPASSWORD, app-db-postgres-1, pg_restore, -U, postgres, --clean, --if-exists,
              -d, app]
    command_env:
      PGPASSWORD: "{{ vault_app_db_superuser_password }}"

- name: One snapshot back in place
  selfhosted.platform.restic_restore:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    snapshot: 4bba301e
    target: /
"""

RETURN = r"""
snapshot:
  description: The snapshot restored (id, short_id, time, host, tags, paths).
  returned: always
  type: dict
target:
  description: The target directory.
  returned: with O(target)
  type: str
filename:
  description: The file of the snapshot streamed into O(command).
  returned: with O(command)
  type: str
  sample: /postgres/app-db/app.dump
stdout_lines:
  description: The last 50 lines the command printed on standard output.
  returned: with O(command), when it ran
  type: list
  elements: str
stderr_lines:
  description: The last 50 lines the command printed on standard error.
  returned: with O(command), when it ran
  type: list
  elements: str
restored_count:
  description: How many paths were (or in check mode would be) written.
  returned: always
  type: int
restored:
  description: Those paths as stored in the snapshot (first 100).
  returned: always
  type: list
  elements: str
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
    restore_action,
    run_with_client,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.restic_module import ResticModule


def main():
    spec = connection_spec()
    spec.update(
        target=dict(type="path"),
        command=dict(type="list", elements="str"),
        command_env=dict(type="dict", default={}, no_log=True),
        filename=dict(type="str"),
        snapshot=dict(type="str", default="latest"),
        tags=dict(type="list", elements="str", default=[]),
        host=dict(type="str"),
        paths=dict(type="list", elements="str", default=[]),
        include=dict(type="list", elements="path", default=[]),
        verify=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
    )
    module = ResticModule(argument_spec=spec, mutually_exclusive=CONNECTION_EXCLUSIVE + [("target", "command")],
                          required_one_of=CONNECTION_ONE_OF + [("target", "command")],
                          required_by={"command": "filename"}, supports_check_mode=True)
    run_with_client(module, restore_action)


if __name__ == "__main__":
    main()
