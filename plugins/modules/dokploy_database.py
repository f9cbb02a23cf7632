#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dokploy_database
short_description: A Dokploy Postgres (or PostGIS) or Redis database service as code
version_added: 0.1.0
description:
  - Declares a database service managed by Dokploy (v0.25 or newer) through its API, with the project and
    environment it lives in (created when missing). Postgres covers PostGIS through O(docker_image), for example
    V(postgis/postgis:17-3.5).
  - The service is identified by O(project), O(environment), O(type) and its exact O(name); several services with
    that name are an error, never a guess, and a second one is never created.
  - Manages the image, description, environment variables and external port, and whether the service runs. With
    O(deploy=auto) the service is deployed when it was created, its image or environment changed, or its last
    deploy failed (Dokploy deploys databases synchronously).
  - The database password is set on creation and never changed afterwards (the data volume keeps the password it
    was initialised with); a different O(database_password) only produces a warning.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - A Dokploy server v0.25.0 or newer and an API key created with C(rateLimitEnabled) false.
attributes:
  check_mode:
    description: Reads the server and reports what would change; writes nothing.
    support: full
  diff_mode:
    description: Shows the service before and after with the values of O(secret_env) masked (those of O(env) shown).
    support: full
options:
  url:
    description: Base URL of the Dokploy server. A trailing C(/api) is accepted.
    type: str
    required: true
  api_key:
    description:
      - A Dokploy API key (created with C(rateLimitEnabled) false), sent as the C(x-api-key) header.
      - A rate-limited key answers 401 once its daily quota is spent, and Dokploy checks a key twice per request,
        so it allows only half its nominal limit (5 requests a day with the default 10).
    type: str
    required: true
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Timeout in seconds of each HTTP request (a database deploy is one request).
    type: int
    default: 120
  project:
    description: Name of the Dokploy project (exact match). Created when missing.
    type: str
    required: true
  project_description:
    description: Description of the project; set on creation and corrected when it differs.
    type: str
  environment:
    description: Name of the environment inside the project (exact match). Created when missing.
    type: str
    default: production
  name:
    description: Name of the database service, exact and case-sensitive.
    type: str
    required: true
  type:
    description: The database engine.
    type: str
    required: true
    choices: [postgres, redis]
  description:
    description: Description of the service. Left alone when omitted.
    type: str
  docker_image:
    description:
      - The image. Dokploy's defaults (V(postgres:18), V(redis:8)) are used on creation when omitted; an existing
        service keeps its image then.
    type: str
  database_name:
    description: Name of the database (Postgres). Required to create a Postgres service.
    type: str
  database_user:
    description: Owner of the database (Postgres). Required to create a Postgres service.
    type: str
  database_password:
    description:
      - Password of O(database_user) (Postgres) or of Redis. Required to create the service; never changed afterwards.
      - Dokploy refuses C($ ! ' " \ /) and spaces in Postgres passwords.
    type: str
  env:
    description:
      - Extra environment variables of the service that are not secret, a dict of C(NAME) to value. With
        O(secret_env) they are all of the service's extra variables; left alone when both are omitted. A string is
        refused.
      - Not masked in the output (values show in diffs). Values reach the container byte for byte, quoted the way
        Dokploy's dotenv parser reads them back; a value no quoting can carry is refused, naming the variable.
    type: raw
  secret_env:
    description: Secret extra environment variables, like O(env) but passed with C(no_log) and never shown.
    type: raw
  external_port:
    description: Publish the database on this host port (Dokploy redeploys the service to apply it).
    type: int
  state:
    description:
      - V(present) converges and deploys according to O(deploy); V(started) also starts a stopped service;
        V(stopped) stops it; V(absent) deletes it (and its data volume, as Dokploy does).
    type: str
    choices: [present, started, stopped, absent]
    default: present
  deploy:
    description: V(auto) deploys when needed (see the description), V(always) on every run, V(never) never.
    type: str
    choices: [auto, always, never]
    default: auto
notes:
  - Compose services are not covered by this module.
  - After a start or stop the service is read again (Dokploy answers those calls with the row before the change),
    so RV(status) is the state the server ends in.
seealso:
  - module: selfhosted.platform.dokploy_app
"""

EXAMPLES = r"""
- name: PostGIS for the API
  selfhosted.platform.dokploy_database:
    url: https://dokploy.example.test
    api_key: "{{ vault_dokploy_api_key }}"
    project: ideony
    name: postgis
    type: postgres
    docker_image: postgis/postgis:17-3.5
    database_name: ideony
    database_user: ideony
    database_password: "{{ vault_ideony_db_password }}"
  delegate_to: localhost

- name: Redis with a password
  selfhosted.platform.dokploy_database:
    url: https://dokploy.example.test
    api_key: "{{ vault_dokploy_api_key }}"
    project: ideony
    name: redis
    type: redis
    docker_image: redis:8.6-alpine
    database_password: "{{ vault_ideony_redis_password }}"
  delegate_to: localhost
"""

RETURN = r"""
database_id:
  description: Id of the service (C(postgresId) or C(redisId)); none in check mode when it is still to be created.
  returned: success
  type: str
app_name:
  description: Dokploy's C(appName) of the service, its Docker service and host name.
  returned: when the service exists
  type: str
  sample: ideony-postgis-4kd9sa
project_id:
  description: Id of the project.
  returned: success
  type: str
environment_id:
  description: Id of the environment.
  returned: success
  type: str
status:
  description: Dokploy's C(applicationStatus) of the service after the run (read again after a start or stop).
  returned: when the service exists
  type: str
  sample: done
changes:
  description: What changed or would change; field names and environment keys, never values.
  returned: always
  type: list
  elements: str
requests:
  description: Number of HTTP requests the run made.
  returned: always
  type: int
request_counts:
  description: Requests per Dokploy procedure.
  returned: always
  type: dict
dokploy_version:
  description: The server's version.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.dokploy_api import connection_spec
from ansible_collections.selfhosted.platform.plugins.module_utils.dokploy_app import run_database


def main():
    module = AnsibleModule(
        argument_spec=dict(
            connection_spec(timeout=120),
            type=dict(type="str", required=True, choices=["postgres", "redis"]),
            description=dict(type="str"),
            docker_image=dict(type="str"),
            database_name=dict(type="str"),
            database_user=dict(type="str"),
            database_password=dict(type="str", no_log=True),
            env=dict(type="raw", no_log=False),
            secret_env=dict(type="raw", no_log=True),
            external_port=dict(type="int"),
            state=dict(type="str", default="present", choices=["present", "started", "stopped", "absent"]),
            deploy=dict(type="str", default="auto", choices=["auto", "always", "never"]),
        ),
        supports_check_mode=True,
    )
    run_database(module)


if __name__ == "__main__":
    main()
