#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restic_repository
short_description: A restic repository that exists (initialised once) and, on request, passes C(restic check)
version_added: 0.1.0
description:
  - Initialises the repository when, and only when, there is none at O(repository). A repository is taken as
    missing only when restic says so (exit code 10 from restic 0.17, a not-found cause of
    C(unable to open config file) before); a network failure, a wrong password or a lock is reported as such and
    nothing is initialised.
  - With O(check=true) runs C(restic check), optionally reading a subset of the data packs (O(read_data_subset)),
    and fails when the repository has errors.
  - Works with any backend restic has (local path, C(sftp:), C(rest:), S3-compatible C(s3:), ...). The collection's
    tests use real restic with local repositories, and an unreachable REST server to show that a network failure
    is never taken for a missing repository.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.restic
attributes:
  check_mode:
    description:
      - Reports whether the repository would be initialised. O(check=true) still runs, without locking the repository
        (C(--no-lock)).
      - On a host without restic yet (C(site.yml --check) on a fresh host, where the same run installs it) the
        repository cannot be asked; the prediction is an initialisation, with RV(restic_missing) set.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  check:
    description: Run C(restic check) after making sure the repository exists.
    type: bool
    default: false
  read_data_subset:
    description:
      - With O(check=true), also read and verify this subset of the data packs, as C(restic check
        --read-data-subset) takes it (C(1/7), C(10%), C(500M)).
    type: str
"""

EXAMPLES = r"""
- name: The repository on the backup disk
  selfhosted.platform.restic_repository:
    repository: /mnt/data/restic
    password: "{{ vault_restic_password }}"

- name: Weekly check of an S3-compatible repository, reading a tenth of the data
  selfhosted.platform.restic_repository:
    repository: s3:https://s3.example.test/backups/host1
    password_file: /etc/restic/password
    env:
      AWS_ACCESS_KEY_ID: "{{ vault_s3_key_id }}"
      AWS_SECRET_ACCESS_KEY: "{{ vault_s3_secret }}"
    check: true
    read_data_subset: 10%
"""

RETURN = r"""
restic_missing:
  description: Check mode on a host without restic yet; RV(initialized) is then a prediction that could not be verified.
  returned: in check mode when restic is not installed
  type: bool
  sample: true
initialized:
  description: Whether the repository was (or in check mode would be) initialised by this task.
  returned: always
  type: bool
repository_id:
  description: The repository's id from its config; absent when check mode would initialise it.
  returned: when the repository exists
  type: str
repository_format:
  description: The repository format version (2 from restic 0.14 on).
  returned: when the repository exists
  type: int
checked:
  description: Whether C(restic check) ran and found no errors.
  returned: always
  type: bool
check_output:
  description: The last lines of C(restic check)'s output.
  returned: when O(check=true)
  type: str
repository:
  description: The repository location, any URL password masked.
  returned: always
  type: str
restic_version:
  description: The restic version on the managed host.
  returned: success
  type: str
  sample: 0.14.0
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
    predict_repository_without_restic,
    repository_action,
    restic_missing,
    run_with_client,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.restic_module import ResticModule


def main():
    spec = connection_spec()
    spec.update(
        check=dict(type="bool", default=False),
        read_data_subset=dict(type="str"),
    )
    module = ResticModule(argument_spec=spec, mutually_exclusive=CONNECTION_EXCLUSIVE,
                          required_one_of=CONNECTION_ONE_OF, supports_check_mode=True)
    if module.check_mode and restic_missing(module):
        module.exit_json(**predict_repository_without_restic(module.params))
    run_with_client(module, repository_action)


if __name__ == "__main__":
    main()
