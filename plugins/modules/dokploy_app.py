#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dokploy_app
short_description: A Dokploy application as code, idempotent, deployed and waited for
version_added: 0.1.0
description:
  - Declares a Dokploy application through Dokploy's API (v0.25 or newer, where projects contain environments),
    together with its project and environment, which are created when missing.
  - The application is identified by O(project), O(environment) and its exact O(name). Dokploy allows several
    services with the same name; when more than one matches, the module fails and names their ids instead of
    guessing, and it never creates a second one.
  - Manages the source (a registry image with credentials, or a git repository, branch and build path), the build
    type, the environment variables, the domains and whether the application runs. Every field is compared with
    what Dokploy has before anything is written, so a second run with the same input makes no change and only
    reads (RV(requests) says how many calls it cost).
  - With O(deploy=auto) a deployment starts when the application was created, its source, build or environment
    changed, or its last deployment failed. The module then waits for the deployment that call started (the first
    row of C(deployment.all) newer than the newest row before it, as C(application.deploy) returns no id) until it
    is done, failed or cancelled. A failed deployment fails the task with the tail of its log.
  - The registry password and the values of O(secret_env) are compared but never shown; changes and diffs name
    their keys only. Values of O(env) are not secret and appear in diffs.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - A Dokploy server v0.25.0 or newer reachable from where the module runs (usually the controller, with
    C(delegate_to) C(localhost)), and an API key created with C(rateLimitEnabled) false.
attributes:
  check_mode:
    description: Reads the server and reports the changes and the deployment it would make; writes nothing.
    support: full
  diff_mode:
    description: Shows the project, environment and application before and after, field by field, with the values of
      O(secret_env) and the registry password masked (values of O(env) are shown).
    support: full
options:
  url:
    description:
      - Base URL of the Dokploy server, for example V(https://dokploy.example.test). A trailing C(/api) is accepted.
    type: str
    required: true
  api_key:
    description:
      - A Dokploy API key, sent as the C(x-api-key) header.
      - Create it with C(rateLimitEnabled) false. A rate-limited key answers 401 once its daily quota is spent,
        exactly as a wrong key does, and Dokploy checks a key twice per request, so such a key allows only half its
        nominal limit (5 requests a day with the default limit of 10); a module run makes several requests.
    type: str
    required: true
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Timeout in seconds of each HTTP request.
    type: int
    default: 30
  project:
    description: Name of the Dokploy project (exact match). Created when missing.
    type: str
    required: true
  project_description:
    description: Description of the project; set on creation and corrected when it differs.
    type: str
  environment:
    description:
      - Name of the environment inside the project (exact match). Created when missing. Every project has the
        default V(production) environment.
    type: str
    default: production
  name:
    description: Name of the application, exact and case-sensitive.
    type: str
    required: true
  description:
    description: Description of the application. Left alone when omitted.
    type: str
  state:
    description:
      - V(present) converges the application and deploys according to O(deploy).
      - V(started) does the same and also starts an application that is stopped (or deploys one never deployed).
      - V(stopped) converges the configuration without deploying and stops the application.
      - V(absent) deletes the application (its domains and deployments go with it).
    type: str
    choices: [present, started, stopped, absent]
    default: present
  source:
    description:
      - Where the application comes from. V(docker) runs O(docker_image) from a registry; V(git) builds
        O(git_repository). Left alone when omitted.
    type: str
    choices: [docker, git]
  docker_image:
    description:
      - The image with its tag, for example V(ghcr.io/example/api:1.4.2). Required with O(source=docker).
      - With O(source=docker) the image and the three registry options are managed together (Dokploy saves them in
        one call); a registry option left out means none.
    type: str
  registry_url:
    description: Registry of a private O(docker_image), for example V(ghcr.io).
    type: str
  registry_username:
    description: User name for the registry.
    type: str
  registry_password:
    description: Password or token for the registry. Compared without being shown.
    type: str
  git_repository:
    description: Git URL to build from. Required with O(source=git).
    type: str
  git_branch:
    description: Branch to build. Defaults to V(main) with O(source=git).
    type: str
  git_build_path:
    description: Directory of the repository to build. Defaults to V(/) with O(source=git).
    type: str
  git_ssh_key_id:
    description: Id of a Dokploy SSH key used to clone O(git_repository).
    type: str
  build_type:
    description: How Dokploy builds a git source. Left alone when omitted.
    type: str
    choices: [dockerfile, heroku_buildpacks, paketo_buildpacks, nixpacks, static, railpack]
  dockerfile:
    description: Path of the Dockerfile with O(build_type=dockerfile).
    type: str
  docker_context_path:
    description: Build context with O(build_type=dockerfile).
    type: str
  docker_build_stage:
    description: Target stage with O(build_type=dockerfile).
    type: str
  env:
    description:
      - The application's environment variables that are not secret, as a dict of C(NAME) to value (strings,
        numbers, booleans as V(true)/V(false)). Together with O(secret_env) they are all of the application's
        variables (variables in neither are removed). Left alone when both are omitted.
      - Not masked in the output (no C(no_log)). Values show in diffs, and ports or words such as V(staging)
        elsewhere in the output are not hidden. Put passwords, tokens and URLs holding credentials in O(secret_env).
      - A string (dotenv text with one C(NAME=value) per line) is refused; give a dict.
      - Names are letters, digits, C(_), C(.) and C(-) (what Dokploy's dotenv parser reads). Values reach the
        container byte for byte, quotes, C(\\), C(#), C($), backticks, surrounding spaces and newlines included;
        each is quoted the way Dokploy's parser (dotenv 16.4.5) reads back unchanged. A value that no quoting can
        carry (a single quote, a double quote or backslash and a backtick together with a newline or surrounding
        spaces) is refused, naming the variable. Dokploy itself substitutes C(${{project.NAME}}) references.
    type: raw
  secret_env:
    description:
      - Secret environment variables (passwords, tokens, credentials in URLs), like O(env) but passed with
        C(no_log). Values are never shown, diffs and changes name the keys only. Merged with O(env) when sent;
        a name may not be in both.
    type: raw
  domains:
    description:
      - The application's domains, all of them (domains missing here are removed). Matched by O(domains[].host) and
        O(domains[].path). Left alone when omitted. Domain changes apply without a deployment.
      - Each item has O(domains[].host), O(domains[].port) (default V(3000)), O(domains[].https) (default V(false)),
        O(domains[].path) (default V(/)) and O(domains[].certificate_type).
    type: list
    elements: dict
    suboptions:
      host:
        description: Host name.
        type: str
        required: true
      port:
        description: Container port the domain routes to.
        type: int
        default: 3000
      https:
        description: Serve the domain over HTTPS.
        type: bool
        default: false
      path:
        description: Path prefix.
        type: str
        default: /
      certificate_type:
        description: Certificate for HTTPS; defaults to V(letsencrypt) with O(domains[].https=true), else V(none).
        type: str
        choices: [none, letsencrypt, custom]
  deploy:
    description:
      - V(auto) deploys when the application was created, its source, build or environment changed, or its last
        deployment failed. V(always) deploys on every run. V(never) never deploys.
    type: str
    choices: [auto, always, never]
    default: auto
  wait:
    description: Wait for the deployment to finish; a failed deployment fails the task with the tail of its log.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the deployment.
    type: int
    default: 600
  log_lines:
    description: Number of log lines returned (and shown) when a deployment fails.
    type: int
    default: 40
notes:
  - The deployment log tail comes from C(GET /api/deployment.readLogs?deploymentId=<id>&tail=<n>) (Dokploy v0.29.5
    and newer). On older releases the log is not available through the API; the module says so and reports the
    deployment's status, error message (often empty) and the log's path on the server instead.
  - O(secret_env) is passed with C(no_log), so Ansible masks every other occurrence of its values in the output;
    keep plain values such as ports and environment names in O(env).
  - After a start or stop the module reads the application again (Dokploy answers those calls with the row as it
    was before the change), so RV(status) is the state the server ends in. On a Dokploy server whose Docker is not
    a Swarm manager, starting fails with Dokploy's 500 "This node is not a swarm manager".
  - Services are looked up with C(environment.one), not C(application.search), which matches names as substrings
    and may return nothing for an owner without explicit service access.
  - Tested against a fake of Dokploy's API built from Dokploy's source (C(tests/fakes/dokploy_api.py)); its docstring
    lists the assumptions the source could not settle (the known differences).
seealso:
  - module: selfhosted.platform.dokploy_database
"""

EXAMPLES = r"""
- name: The API from a registry image, with its domain and secrets from vault
  selfhosted.platform.dokploy_app:
    url: https://dokploy.example.test
    api_key: "{{ vault_dokploy_api_key }}"
    project: ideony
    name: api
    source: docker
    docker_image: ghcr.io/example/ideony-api:1.4.2
    registry_url: ghcr.io
    registry_username: example-bot
    registry_password: "{{ vault_ghcr_token }}"
    env:
      NODE_ENV: production
      PORT: 3001
    secret_env:
      DATABASE_URL: "{{ vault_ideony_database_url }}"
    domains:
      - host: api.example.test
        port: 3001
        https: true
  delegate_to: localhost

- name: A web front-end built from git with its Dockerfile, in a staging environment
  selfhosted.platform.dokploy_app:
    url: https://dokploy.example.test
    api_key: "{{ vault_dokploy_api_key }}"
    project: ideony
    environment: staging
    name: web
    source: git
    git_repository: https://git.example.test/ideony/web.git
    git_branch: develop
    build_type: dockerfile
    dockerfile: apps/web/Dockerfile
  delegate_to: localhost

- name: Stop an application without removing it
  selfhosted.platform.dokploy_app:
    url: https://dokploy.example.test
    api_key: "{{ vault_dokploy_api_key }}"
    project: ideony
    name: worker
    state: stopped
  delegate_to: localhost
"""

RETURN = r"""
application_id:
  description: Id of the application (none in check mode when it is still to be created).
  returned: success
  type: str
  sample: 3hZ_4m5dE2kX9qv-8aRt1
app_name:
  description: Dokploy's C(appName), the Docker service name (the name's slug plus a random suffix).
  returned: when the application exists
  type: str
  sample: ideony-api-x7k2pq
project_id:
  description: Id of the project.
  returned: success
  type: str
environment_id:
  description: Id of the environment.
  returned: success
  type: str
status:
  description:
    - Dokploy's C(applicationStatus) after the run (idle, running, done or error), read again after a start or
      stop.
  returned: when the application exists
  type: str
  sample: done
changes:
  description: What changed or, in check mode, would change; field names and environment keys (prefixed with the
    option, C(env.) or C(secret_env.)), never values.
  returned: always
  type: list
  elements: str
  sample: ["secret_env.DATABASE_URL (changed)", "env.PORT (added)", "domains api.example.test/ (create)",
           "deploy (env changed)"]
deployment:
  description:
    - The deployment this run started. C(status) is V(skipped) when none was needed, V(planned) in check mode,
      V(queued) with O(wait=false), else the final status (done, error or cancelled) with the row's id,
      timestamps and log path. C(log_tail) holds the last log lines of a failed deployment.
  returned: always
  type: dict
  sample: {"id": "Yp0m9z3lQ2cVw8nN4sKxA", "status": "done", "created_at": "2025-06-01T10:00:00.000Z",
           "reasons": ["env changed"]}
requests:
  description: Number of HTTP requests the run made (a run that changes nothing only reads).
  returned: always
  type: int
  sample: 4
request_counts:
  description: Requests per Dokploy procedure.
  returned: always
  type: dict
  sample: {"settings.getDokployVersion": 1, "project.all": 1, "environment.one": 1, "application.one": 1}
dokploy_version:
  description: The server's version (C(settings.getDokployVersion)).
  returned: always
  type: str
  sample: v0.30.2
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.dokploy_api import connection_spec
from ansible_collections.selfhosted.platform.plugins.module_utils.dokploy_app import run_app


def main():
    module = AnsibleModule(
        argument_spec=dict(
            connection_spec(timeout=30),
            description=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "started", "stopped", "absent"]),
            source=dict(type="str", choices=["docker", "git"]),
            docker_image=dict(type="str"),
            registry_url=dict(type="str"),
            registry_username=dict(type="str"),
            registry_password=dict(type="str", no_log=True),
            git_repository=dict(type="str"),
            git_branch=dict(type="str"),
            git_build_path=dict(type="str"),
            git_ssh_key_id=dict(type="str", no_log=False),
            build_type=dict(type="str", choices=["dockerfile", "heroku_buildpacks", "paketo_buildpacks", "nixpacks",
                                                 "static", "railpack"]),
            dockerfile=dict(type="str"),
            docker_context_path=dict(type="str"),
            docker_build_stage=dict(type="str"),
            env=dict(type="raw", no_log=False),
            secret_env=dict(type="raw", no_log=True),
            domains=dict(type="list", elements="dict", options=dict(
                host=dict(type="str", required=True),
                port=dict(type="int", default=3000),
                https=dict(type="bool", default=False),
                path=dict(type="str", default="/"),
                certificate_type=dict(type="str", choices=["none", "letsencrypt", "custom"]),
            )),
            deploy=dict(type="str", default="auto", choices=["auto", "always", "never"]),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=600),
            log_lines=dict(type="int", default=40),
        ),
        supports_check_mode=True,
    )
    run_app(module)


if __name__ == "__main__":
    main()
