#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: container_db
short_description: An application database and its own user inside a containerised Postgres, MariaDB or MongoDB
version_added: 0.1.0
description:
  - Creates, idempotently, a database and a user that owns it (and can reach nothing else) in a database server
    running in a Docker container, using the server's own client through C(docker exec -i) (C(psql), C(mariadb),
    C(mongosh)). Nothing needs to be published or installed on the host.
  - Secrets never reach a command line. The admin password and the user's password travel on the client's stdin;
    Postgres receives the user's password only as a SCRAM-SHA-256 verifier and MariaDB only as the
    C(mysql_native_password) hash. The stored verifier is read back and checked against O(password), so an
    unchanged password is not rewritten and a changed one is.
  - "Isolation: Postgres databases are owned by the user with C(CONNECT) revoked from C(PUBLIC); MariaDB users get
    C(ALL) on their database only and any grant on another database is revoked; MongoDB users get exactly
    C(readWrite) and C(dbAdmin) on their database."
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - The docker CLI on the managed host; the container running the official image's client (C(psql), C(mariadb) or
    C(mysql), C(mongosh)).
attributes:
  check_mode:
    description:
      - Reads the server's state and reports the statements it would run, without running them.
      - A container that does not exist yet (or a host without the docker CLI yet, as on a fresh host where the same
        run installs Docker and deploys the instance) is predicted as a new, empty instance - the user and the database
        would be created - with RV(container_missing) set, instead of failing. Outside check mode it is an error.
    support: full
  diff_mode:
    description: Shows whether the database and user exist before and after, and the planned actions; never secrets.
    support: full
options:
  container:
    description: Name or id of the running database container.
    type: str
    required: true
  engine:
    description: The server in the container.
    type: str
    required: true
    choices: [postgres, mariadb, mongodb]
  admin_user:
    description:
      - Superuser to connect as. Defaults to C(postgres), C(root) and C(root) for the three engines.
      - Postgres connects over the container's local socket, where the official image trusts local connections;
        O(admin_password) is sent too for images that do not.
    type: str
  admin_password:
    description: Password of O(admin_user).
    type: str
  database:
    description: The application database (lower-case letters, digits and C(_)).
    type: str
    required: true
  user:
    description: The application user; defaults to O(database).
    type: str
  password:
    description: The application user's password. Required with O(state=present).
    type: str
  user_host:
    description: MariaDB only, the host part of the account.
    type: str
    default: "%"
  port:
    description: MongoDB only, the port mongod listens on inside the container.
    type: int
    default: 27017
  state:
    description:
      - C(present) creates or corrects the database, the user, its password and its privileges.
      - C(absent) drops the database and, unless O(keep_user), the user. Dropping deletes data.
    type: str
    choices: [present, absent]
    default: present
  keep_user:
    description: With O(state=absent), keep the user.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A database for the devapp stack on the shared Postgres
  selfhosted.platform.container_db:
    container: shared-postgres-postgres-1
    engine: postgres
    database: devapp
    password: "{{ devapp_db_password }}"
  no_log: true

- name: A MariaDB database with its user
  selfhosted.platform.container_db:
    container: shared-mariadb-mariadb-1
    engine: mariadb
    admin_password: "{{ mariadb_root_password }}"
    database: wiki
    user: wiki
    password: "{{ wiki_db_password }}"
  no_log: true
"""

RETURN = r"""
container_missing:
  description: Check mode only - the container does not exist yet, so the actions are predicted for a new instance.
  returned: when the container does not exist in check mode
  type: bool
  sample: true
actions:
  description: What was done (or in check mode would be done), in order; never secrets.
  returned: always
  type: list
  elements: str
  sample: ["create user devapp", "create database devapp owned by devapp", "revoke CONNECT on devapp from PUBLIC"]
engine:
  description: The engine.
  returned: always
  type: str
container:
  description: The container.
  returned: always
  type: str
database:
  description: The database.
  returned: always
  type: str
user:
  description: The user.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.container_db import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            container=dict(type="str", required=True),
            engine=dict(type="str", required=True, choices=["postgres", "mariadb", "mongodb"]),
            admin_user=dict(type="str"),
            admin_password=dict(type="str", no_log=True),
            database=dict(type="str", required=True),
            user=dict(type="str"),
            password=dict(type="str", no_log=True),
            user_host=dict(type="str", default="%"),
            port=dict(type="int", default=27017),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            keep_user=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not module.params["user"]:
        module.params["user"] = module.params["database"]
    run(module)


if __name__ == "__main__":
    main()
