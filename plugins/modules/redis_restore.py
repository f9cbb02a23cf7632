#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_restore
short_description: Load an RDB file into a containerised Redis that runs with AOF on
version_added: 0.2.0
description:
  - Replaces the whole data set of a Redis running in a Docker container with the contents of an RDB file (a
    C(dump.rdb) from a backup), also when the instance runs with C(appendonly yes), where Redis loads the AOF at start
    and ignores C(dump.rdb).
  - "The procedure: the container is stopped; its current RDB and AOF files are moved into
    C(before-restore-<time>/) in its data directory; the RDB file is put in place; a throwaway twin of the container
    (same image, mounts and command, no network) loads it with C(--appendonly no); C(CONFIG SET appendonly yes)
    writes a fresh AOF from memory; the twin is stopped and removed; the container is started again."
  - The task waits for that new start, not for the old process; running, healthy (when the container has a
    healthcheck), done loading, with AOF on. Keys written after the backup are gone; TTLs are kept as the RDB holds
    them.
  - On a failure after the stop, the moved files are put back and the container is started on its old data.
  - The password reaches C(redis-cli) through the environment of C(docker exec -e REDISCLI_AUTH) only.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - The docker CLI on the managed host; the container's data directory (C(CONFIG GET dir)) on a bind mount or volume.
attributes:
  check_mode:
    description: Checks the RDB file and reads the container; reports what would be done without stopping anything.
    support: full
  diff_mode:
    description: Not supported; a restore replaces the data set.
    support: none
options:
  container:
    description: Name or id of the Redis container (for a data tier instance C(<instance>-redis-1)).
    type: str
    required: true
  rdb:
    description: Path on the managed host of the RDB file to load.
    type: path
    required: true
  password:
    description: The instance's password (C(requirepass)). Give this or O(password_file).
    type: str
  password_file:
    description: File on the managed host holding the password (the data tier keeps C(<secrets>/<instance>/superuser)).
    type: path
  wait_timeout:
    description: Seconds to wait for each stage (the twin loading, the AOF rewrite, the instance coming back).
    type: int
    default: 180
notes:
  - The previous files are kept in C(before-restore-<time>/) inside the data directory; remove it once the restore is
    checked.
"""

EXAMPLES = r"""
- name: Load a dump.rdb restored from the backup repository into amn-redis
  selfhosted.platform.redis_restore:
    container: amn-redis-redis-1
    rdb: /var/tmp/selfhosted-restore/amn-redis.rdb
    password_file: /etc/selfhosted/secrets/amn-redis/superuser
"""

RETURN = r"""
key_count:
  description: Keys the RDB file held (C(DBSIZE) after loading it).
  returned: success, not in check mode
  type: int
  sample: 1042
key_count_after_start:
  description: C(DBSIZE) of the restarted instance when it answered (clients may already have written).
  returned: success, not in check mode
  type: int
aof_enabled:
  description: Whether the restarted instance runs with AOF on.
  returned: success, not in check mode
  type: bool
started_at:
  description: StartedAt of the restarted container (the start the task waited for).
  returned: success, not in check mode
  type: str
health:
  description: Health status of the restarted container (null without a healthcheck).
  returned: success, not in check mode
  type: str
data_dir:
  description: Host path of the data directory.
  returned: always
  type: str
previous_dir:
  description: Where the previous RDB and AOF files were moved.
  returned: always
  type: str
moved_aside:
  description: Names of the files and directories moved into RV(previous_dir).
  returned: success, not in check mode
  type: list
  elements: str
seconds:
  description: Wall time of the restore.
  returned: success, not in check mode
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.redis_restore import Docker, RestoreError, restore


def main():
    module = AnsibleModule(
        argument_spec=dict(
            container=dict(type="str", required=True),
            rdb=dict(type="path", required=True),
            password=dict(type="str", no_log=True),
            password_file=dict(type="path", no_log=False),
            wait_timeout=dict(type="int", default=180),
        ),
        mutually_exclusive=[("password", "password_file")],
        required_one_of=[("password", "password_file")],
        supports_check_mode=True,
    )
    p = module.params
    password = p["password"]
    if p["password_file"]:
        try:
            with open(p["password_file"]) as fh:
                password = fh.read().strip()
        except OSError as exc:
            module.fail_json(msg="password_file: cannot read %s: %s" % (p["password_file"], exc))
        module.no_log_values.add(password)
    try:
        result = restore(Docker(module, password), p["container"], p["rdb"], wait_timeout=p["wait_timeout"],
                         check_mode=module.check_mode)
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
