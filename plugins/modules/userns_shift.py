#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: userns_shift
short_description: Move the owners of container data into Docker's remapped user-namespace range
version_added: 0.1.0
description:
  - With Docker's user-namespace remapping (C(docker_engine_userns_remap)), uid N in a container is uid BASE+N on the
    host. Data written before remapping was turned on, or restored from a backup made before it, is still owned by
    the unshifted ids, which the containers can no longer use.
  - For every entry of each tree in O(paths) (the directory itself and everything below it, symlinks not followed,
    other filesystems not entered), an owner id below the range's size (a container id not shifted yet) moves by the
    base; ids already in the range, or above it, stay. The same for group ids. Set-uid and set-gid bits, which
    C(chown) clears, are put back.
  - Idempotent - a second run finds nothing to move. With remapping off (O(mapping) undefined, empty or C(enabled)
    false) nothing is done.
  - The decision is C(plugins/module_utils/userns.py), the one home of the mapping (C(docker_engine__userns)).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Reports the entries whose owner would move; changes nothing.
    support: full
  diff_mode:
    description: The entries and their owners before and after (at most 50).
    support: full
options:
  paths:
    description: The top directories (or files) whose trees are shifted.
    type: list
    elements: path
    required: true
  mapping:
    description: The engine's mapping, the fact C(docker_engine__userns) the docker_engine role publishes.
    type: dict
  missing:
    description: What a path that does not exist does - C(skip) it (listed in RV(missing)) or C(fail).
    type: str
    choices: [skip, fail]
    default: skip
"""

EXAMPLES = r"""
- name: Hand the uploads, written before remapping, to the remapped ids
  selfhosted.platform.userns_shift:
    paths: [/mnt/data/amn/uploads]
    mapping: "{{ docker_engine__userns }}"
"""

RETURN = r"""
shifted:
  description: The entries whose owner moved (or would), as C(path uid:gid -> uid:gid), at most 50.
  returned: always
  type: list
  elements: str
shifted_count:
  description: How many entries moved (or would).
  returned: always
  type: int
missing:
  description: Paths of O(paths) that do not exist (skipped).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.userns import run_shift


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            mapping=dict(type="dict"),
            missing=dict(type="str", default="skip", choices=["skip", "fail"]),
        ),
        supports_check_mode=True,
    )
    run_shift(module)


if __name__ == "__main__":
    main()
