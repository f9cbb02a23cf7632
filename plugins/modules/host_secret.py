#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_secret
short_description: Keep a secret in a root-only file on the managed host, generated once and stable across runs
version_added: 0.1.0
description:
  - Vault-friendly credentials for services the platform deploys. When O(value) is given (from Ansible Vault) it wins
    and the file is rewritten when it differs. Without O(value), the secret already in O(path) is returned unchanged;
    when there is no file yet, a random secret is generated and written once, so later runs find the same value.
  - The file is written atomically with its final mode (default C(0600)); the secret is never shown in a diff, a
    message or on a command line. Use C(no_log) on the task, since RV(secret) is returned so later tasks can use it.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Reports whether the file would be created or changed; a secret that would be generated is returned
      but not written.
    support: full
  diff_mode:
    description: Shows that the secret would be created, changed or removed, never its value.
    support: full
options:
  path:
    description: File that holds the secret. Its parent directory is created with mode C(0700) when missing.
    type: path
    required: true
  value:
    description:
      - The secret to keep. When given and not empty, it replaces what the file holds. When omitted, the stored
        secret is kept, or a new one is generated.
    type: str
  length:
    description: Length of a generated secret (at least 8).
    type: int
    default: 32
  charset:
    description: Characters of a generated secret. C(alphanumeric) is safe in URLs, env files and SQL literals.
    type: str
    choices: [alphanumeric, hex, urlsafe]
    default: alphanumeric
  owner:
    description: Owner of the file (for example the uid a database server runs as, so it can read its secret).
    type: str
  group:
    description: Group of the file.
    type: str
  mode:
    description: Mode of the file. Only owner and group read bits may be given to anyone but the owner.
    type: raw
    default: "0600"
  create_parent:
    description: Create the parent directory when it is missing.
    type: bool
    default: true
  regenerate:
    description:
      - Replace the stored secret with a newly generated one (a rotation), even when the file already holds one.
        Every run with V(true) generates a new secret and reports a change, so use it in a one-off task (as
        C(playbooks/rotate_db_password.yml) does), never in a role that is meant to converge to C(changed=0).
      - Cannot be combined with O(value) (a secret pinned in vault is rotated by changing the vault).
      - In check mode the new secret is returned but not written.
    type: bool
    default: false
  state:
    description: C(absent) removes the file.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Keep the Postgres superuser password (vault value wins when set)
  selfhosted.platform.host_secret:
    path: /etc/selfhosted/secrets/shared-postgres/superuser
    value: "{{ vault_postgres_password | default(omit) }}"
    owner: "999"
    mode: "0400"
  register: pg_secret
  no_log: true

- name: Rotate the password of the app database (a new random secret replaces the stored one)
  selfhosted.platform.host_secret:
    path: /etc/selfhosted/secrets/shared-postgres/db-app
    regenerate: true
    mode: "0400"
  register: app_secret
  no_log: true
"""

RETURN = r"""
secret:
  description: The secret (use no_log on the task).
  returned: state is present
  type: str
path:
  description: The file that holds it.
  returned: always
  type: str
action:
  description: What happened to the secret, C(keep), C(generate), C(create) (from O(value)), C(update),
    C(regenerate) (O(regenerate)) or C(remove).
  returned: always
  type: str
generated:
  description: Whether a new random secret was generated in this run (first run or O(regenerate)).
  returned: state is present
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.host_secret import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            value=dict(type="str", no_log=True),
            length=dict(type="int", default=32, no_log=False),
            charset=dict(type="str", default="alphanumeric", choices=["alphanumeric", "hex", "urlsafe"]),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            create_parent=dict(type="bool", default=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            regenerate=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
