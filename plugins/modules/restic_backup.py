#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restic_backup
short_description: Make a restic snapshot of paths or of a command's output (a database dump)
version_added: 0.1.0
description:
  - Backs up O(paths) (with O(excludes)), or the standard output of O(command) saved in the snapshot as
    O(filename), for example C(docker exec db pg_dump -Fc app) saved as C(postgres/app.dump). The repository must
    exist (see M(selfhosted.platform.restic_repository)).
  - Returns restic's summary (snapshot id, files and bytes added, duration). On restic 0.14 the summary names the
    snapshot by its short id; the full id is looked up and returned too.
  - "Unreadable source files (restic's exit code 3: the snapshot is made without them) are not a silent success:
    the task warns and lists them in RV(unreadable), or fails with O(unreadable=fail)."
  - "A command backup leaves no snapshot of a failed command: restic 0.17 and later run the command themselves
    (C(--stdin-from-command)) and make none when it fails; on older releases (Debian 12's 0.14) it is a pipe with
    both exit codes known and the incomplete snapshot is forgotten. Either way the task fails naming the command's
    exit code and its stderr; a command that prints nothing fails too (unless O(allow_empty)). The command gets
    O(command_env) and none of restic's environment (the repository, its credentials) either way."
  - A backup makes a new snapshot, so the task reports C(changed) each time it runs, unless
    O(skip_if_unchanged=true) finds nothing new (a dry run first).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.restic
attributes:
  check_mode:
    description: For O(paths), a C(restic backup --dry-run) whose summary is returned; O(command) is not run.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  paths:
    description: Absolute paths to back up. Exactly one of O(paths) and O(command) is required.
    type: list
    elements: path
  excludes:
    description: restic exclude patterns (C(--exclude)), for example C(*.tmp) or C(/mnt/data/app/cache).
    type: list
    elements: str
    default: []
  exclude_caches:
    description: Skip directories holding a C(CACHEDIR.TAG) (C(--exclude-caches)).
    type: bool
    default: false
  one_file_system:
    description: Do not cross file systems (C(--one-file-system)).
    type: bool
    default: false
  skip_if_unchanged:
    description: With O(paths), make no snapshot (and report no change) when a dry run finds nothing new or changed
      since the last snapshot of the same paths and host. Deleted files and changed metadata of the directories
      above the paths count as changes too (restic reports them as changed directories).
    type: bool
    default: false
  unreadable:
    description: What unreadable source files (restic's exit code 3) do to the task. The snapshot is kept either way.
    type: str
    choices: [warn, fail]
    default: warn
  command:
    description:
      - A command (argv list, no shell) whose standard output is the data to back up, for example
        C([docker, exec, db-1, pg_dump, -Fc, -U, postgres, app]). Use C(docker exec) without C(-t), which would
        mangle binary output.
    type: list
    elements: str
  command_env:
    description:
      - Extra environment for O(command) only (never logged), for secrets a dump needs; with C(docker exec -e NAME)
        (no value) docker passes the variable into the container without putting it on a command line.
    type: dict
    default: {}
  filename:
    description: The file name the command's output gets in the snapshot (stable, so snapshots of the same dump
      share a path and retention groups them), for example C(postgres/app.dump). Required with O(command).
    type: str
  allow_empty:
    description: Accept a command that succeeds but prints nothing. When false such a snapshot is forgotten and the
      task fails.
    type: bool
    default: false
  tags:
    description: Tags of the snapshot (C(--tag)); retention and restore select by them.
    type: list
    elements: str
    default: []
  host:
    description: The host name recorded in the snapshot (C(--host)); restic uses the machine's host name by default.
    type: str
"""

EXAMPLES = r"""
- name: Uploads and the stack directories
  selfhosted.platform.restic_backup:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    paths: [/mnt/data/uploads, /opt/stacks]
    excludes: ["*.log", /opt/stacks/*/cache]
    tags: [files]

- name: A consistent dump of one Postgres database, saved under a stable name
  selfhosted.platform.restic_backup:
    repository: /mnt/data/restic
    password_file: /etc/restic/password
    command: [docker, exec, shared-postgres-postgres-1, pg_dump, -Fc, -U, postgres, app]
    filename: postgres/app.dump
    tags: [db, postgres]
"""

RETURN = r"""
snapshot_id:
  description: The full id of the new snapshot; null in check mode or when skipped.
  returned: always
  type: str
snapshot_short_id:
  description: Its first 8 characters, as restic shows it.
  returned: always
  type: str
source:
  description: C(paths) or C(command).
  returned: always
  type: str
exit_code:
  description: restic's exit code, 0 or 3 (some source files unreadable; the snapshot lacks them).
  returned: always
  type: int
unreadable:
  description: The source files restic could not read (first 100).
  returned: always
  type: list
  elements: str
files_new:
  description: Files new in this snapshot.
  returned: when restic ran
  type: int
files_changed:
  description: Files changed since the parent snapshot.
  returned: when restic ran
  type: int
files_unmodified:
  description: Files unchanged since the parent snapshot.
  returned: when restic ran
  type: int
dirs_new:
  description: New directories.
  returned: when restic ran
  type: int
dirs_changed:
  description: Changed directories.
  returned: when restic ran
  type: int
dirs_unmodified:
  description: Unchanged directories.
  returned: when restic ran
  type: int
data_added:
  description: Bytes added to the repository (after deduplication, before compression).
  returned: when restic ran
  type: int
total_files_processed:
  description: Files read.
  returned: when restic ran
  type: int
total_bytes_processed:
  description: Bytes read.
  returned: when restic ran
  type: int
duration:
  description: Seconds restic took.
  returned: when restic ran
  type: float
tags:
  description: The snapshot's tags.
  returned: always
  type: list
  elements: str
host:
  description: The host name given with O(host).
  returned: always
  type: str
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
    backup_action,
    connection_spec,
    run_with_client,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.restic_module import ResticModule


def main():
    spec = connection_spec()
    spec.update(
        paths=dict(type="list", elements="path"),
        excludes=dict(type="list", elements="str", default=[]),
        exclude_caches=dict(type="bool", default=False),
        one_file_system=dict(type="bool", default=False),
        skip_if_unchanged=dict(type="bool", default=False),
        unreadable=dict(type="str", default="warn", choices=["warn", "fail"]),
        command=dict(type="list", elements="str"),
        command_env=dict(type="dict", default={}, no_log=True),
        filename=dict(type="str"),
        allow_empty=dict(type="bool", default=False),
        tags=dict(type="list", elements="str", default=[]),
        host=dict(type="str"),
    )
    module = ResticModule(argument_spec=spec, supports_check_mode=True,
                          mutually_exclusive=CONNECTION_EXCLUSIVE + [("paths", "command")],
                          required_one_of=CONNECTION_ONE_OF + [("paths", "command")],
                          required_by={"command": ("filename",)})
    run_with_client(module, backup_action)


if __name__ == "__main__":
    main()
