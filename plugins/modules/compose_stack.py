#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_stack
short_description: Converge a Docker Compose v2 project, fast when nothing changed, honest in check and diff mode
version_added: 0.1.0
description:
  - Deploys a Docker Compose v2 project from a definition given as a dict (rendered to a compose file in
    O(project_dir)) or from compose files already in O(project_dir).
  - Validates the new definition with C(docker compose config) before anything is written or started; an
    invalid definition fails with Compose's message and leaves the old files and the running stack as they were.
  - Decides whether anything must change from the per-service configuration hashes Compose itself computes
    (C(config --hash) over the resolved model, so env_file contents count), the containers' compose labels,
    local image ids, container states and orphans. When nothing differs it makes no change and runs no
    C(up) (the C(fast-noop) path). It never re-implements Compose's hashing.
  - Compose's answers (the resolved model and the per-service hashes) are kept in a resolution cache,
    C(.compose_stack/resolved.json) in O(project_dir) (mode C(0600), no environment values or commands in it),
    keyed by a SHA-256 over every input that can change them, so a converge where nothing changed starts no
    docker or Compose process at all (RV(resolution=cache)). The key covers the project name, directory,
    profiles and other options, the compose document (O(definition) or the bytes of the files), the env files
    in the order Compose reads them, every file the document makes Compose read (C(env_file), C(label_file),
    config and secret sources), the value of every process environment variable named in those texts, the
    C(DOCKER_*) and C(COMPOSE_*) variables and the Compose plugin binary (path, size, mtime, found as the docker
    CLI finds it). Any change is a miss, and Compose resolves the project as without the cache. Documents that
    use C(include), C(extends) from another file or interpolated file paths are not cached.
  - Container, image and network state is read from the Docker Engine API over its unix socket
    (C(DOCKER_HOST=unix://...) or C(/var/run/docker.sock)); with a C(tcp://) or C(ssh://) host, a docker context
    other than C(default), or when the socket does not answer, the docker CLI is used instead.
  - Files listed in O(restart_on) (bind-mounted configuration such as an nginx.conf) recreate exactly the
    services that mount them when their content changes, through a checksum label the module adds.
  - Check mode computes the same plan and never runs C(up), never pulls and never builds. Diff mode shows the
    compose file and env file before and after (secret values masked) and the per-service plan.
  - With O(wait), waits until every service with a healthcheck is healthy (a container that starts unhealthy and
    then recovers is fine) and every other service is running, each container up for at least a second since its
    last start by the daemon's clock (a crash-looping container does not pass). With O(rollback), a deploy that
    does not become healthy restores the last good definition, env file and image ids, brings them back up, and
    fails with RV(rolled_back=true) while the old version keeps serving.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - Docker Engine and the Compose v2 CLI plugin (2.20.0 or newer) on the managed host.
  - PyYAML on the managed host to write O(definition) as YAML (JSON, which Compose also reads, otherwise).
attributes:
  check_mode:
    description:
      - Computes the plan from the same comparison; never runs up, never pulls, never builds.
      - On a host without the docker CLI yet (C(site.yml --check) on a fresh host, where the same run installs Docker
        first) every declared service is predicted as created, with RV(engine_missing) set; Compose cannot validate
        the definition there.
    support: full
  diff_mode:
    description: Shows the compose and env files before and after (secrets masked) and the per-service plan.
    support: full
options:
  project_name:
    description:
      - Compose project name (C(--project-name)); containers, networks and volumes are named after it.
    type: str
    required: true
  project_dir:
    description:
      - Project directory. Relative paths in the compose files resolve against it. Created when missing and
        O(definition) is given.
    type: path
    required: true
  definition:
    description:
      - The compose document as a dict. Written to the first of O(files) (default C(compose.yaml)) in
        O(project_dir). When omitted, the compose files already in O(project_dir) are used.
    type: dict
  files:
    description:
      - Compose files relative to O(project_dir). Without O(definition), defaults to the first of
        C(compose.yaml), C(compose.yml), C(docker-compose.yaml), C(docker-compose.yml) found.
      - With O(definition), at most one name, the file to write.
    type: list
    elements: str
    default: []
  env:
    description:
      - Variables written to the env file O(env_file_name) in O(project_dir) with mode C(0600). Compose reads
        them for C(${VAR}) interpolation; services can also load the file with C(env_file).
      - Values are never logged and never put on a command line. This option is the secret channel (C(no_log)), so
        every non-empty value, whatever its length, is a secret, and so is every value of the env file it replaces
        (a changed secret stays masked on the before side of a diff).
      - Masking is by substring, longest value first, to C(********) - in the compose file's before and after
        (a value literally present in O(definition), for example inside a URL, is masked there; C(${VAR})
        references stay as they are), in the per-service plan, in the restart-on override file, in every other
        string of the result (messages, Compose's stdout and stderr, health-check output) and in warnings. The env
        file's diff shows every value as C(********), with C(# value changed) on the keys whose value changes.
      - Because of that, a short or common value (C(3001), C(true)) masks every occurrence of that text in the
        diff; put values that are not secret in O(definition), not here.
    type: dict
  env_file_name:
    description:
      - Name of the env file O(env) is written to, relative to O(project_dir).
    type: str
    default: .env
  env_files:
    description:
      - Further env files (relative to O(project_dir)) read for interpolation after the managed one.
    type: list
    elements: str
    default: []
  profiles:
    description:
      - Compose profiles to enable.
    type: list
    elements: str
    default: []
  services:
    description:
      - Act only on these services (and what they depend on, as C(docker compose up SERVICE) does).
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) converges the project; V(stopped) stops its containers; V(restarted) converges then restarts
        (always a change); V(absent) runs C(docker compose down).
    type: str
    choices: [present, stopped, restarted, absent]
    default: present
  pull:
    description:
      - V(missing) pulls images that are not present; V(always) pulls every image first, and a pull that fetched
        nothing new is not a change; V(never) never pulls; V(policy) follows each service's C(pull_policy).
      - Check mode never pulls; with V(always) it cannot know about a newer image in the registry.
    type: str
    choices: [missing, always, never, policy]
    default: missing
  build:
    description:
      - V(policy) builds missing images of services with a C(build) section; V(always) rebuilds them on every
        deploy (C(--build)); V(never) never builds (C(--no-build)).
    type: str
    choices: [policy, always, never]
    default: policy
  recreate:
    description:
      - V(auto) recreates containers whose configuration or image changed; V(always) recreates every container
        (always a change); V(never) only creates missing containers and starts stopped ones.
    type: str
    choices: [auto, always, never]
    default: auto
  remove_orphans:
    description:
      - Remove containers of services no longer in the definition.
    type: bool
    default: false
  restart_on:
    description:
      - Files (relative to O(project_dir) or absolute) whose content change recreates the services that
        bind-mount them (the file itself or a directory containing it). A file no service mounts is an error.
    type: list
    elements: path
    default: []
  wait:
    description:
      - Wait until every service with a healthcheck is healthy and every other service is running (each
        container up for at least a second). Polls the Engine API every 0.25 s, and at once when the daemon's
        event stream reports a start, a death or a health change of one of the project's containers
        (C(docker ps) every second without the API).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for health. On timeout the module fails with the failing service's last health log.
    type: int
    default: 120
  rollback:
    description:
      - Keep the last good definition, env file and image ids (under C(.compose_stack/) in O(project_dir),
        mode C(0700)). When a deploy fails or does not become healthy within O(wait_timeout), restore them,
        bring the previous version back up and fail with RV(rolled_back=true).
    type: bool
    default: false
  timeout:
    description:
      - Shutdown timeout in seconds for containers that are stopped or recreated.
    type: int
  remove_volumes:
    description:
      - With O(state=absent), also remove named volumes declared by the project and anonymous volumes.
    type: bool
    default: false
  remove_images:
    description:
      - With O(state=absent), remove images used by services, V(all) or only V(local) ones (no custom tag).
    type: str
    choices: [all, local]
notes:
  - The module adds the label C(org.selfhosted.compose-stack.restart-on) to services affected by O(restart_on).
  - Edits to bind-mounted files are invisible to Compose; list them in O(restart_on).
seealso:
  - module: community.docker.docker_compose_v2
"""

EXAMPLES = r"""
- name: Deploy the app stack, health-gated, rolling back a bad release
  selfhosted.platform.compose_stack:
    project_name: amn
    project_dir: /opt/stacks/amn
    definition:
      services:
        backend:
          image: registry.example.test/amn/backend:1.4.2
          env_file: [.env]
          healthcheck:
            test: [CMD, node, healthcheck.js]
            interval: 30s
        nginx:
          image: nginx:1.27-alpine
          ports: ["8083:80"]
          volumes: [./nginx/nginx.conf:/etc/nginx/nginx.conf:ro]
    env:
      MONGO_URI: "{{ vault_amn_mongo_uri }}"
    restart_on: [nginx/nginx.conf]
    wait: true
    wait_timeout: 180
    rollback: true
    remove_orphans: true

- name: Converge an existing compose directory, pulling newer images
  selfhosted.platform.compose_stack:
    project_name: monitoring
    project_dir: /opt/stacks/monitoring
    pull: always

- name: Remove a stack and its volumes
  selfhosted.platform.compose_stack:
    project_name: old-app
    project_dir: /opt/stacks/old-app
    state: absent
    remove_volumes: true
"""

RETURN = r"""
engine_missing:
  description: Check mode on a host without the docker CLI yet; the actions are a prediction for a new project.
  returned: in check mode when the host has no docker CLI
  type: bool
  sample: true
path:
  description:
    - How the module got its answer. V(fast-noop) nothing differed and no C(up) ran; V(up) C(docker compose up)
      ran; V(files-only) only managed files changed; V(check) check mode; V(stop), V(restart), V(down) for the
      other states.
  returned: always
  type: str
  sample: fast-noop
actions:
  description: Per-service plan, sorted by service. C(action) is one of none, create, recreate, start, scale, stop,
    remove, skip.
  returned: always
  type: list
  elements: dict
  sample: [{"service": "backend", "action": "recreate", "reasons": ["configuration changed"]}]
services:
  description: Per service after the run, its action, containers, state, health, image and image ids before
    and after.
  returned: always
  type: dict
  sample: {"backend": {"action": "recreate", "containers": ["amn-backend-1"], "state": "running",
           "health": "healthy", "image": "registry.example.test/amn/backend:1.4.2",
           "image_id_before": "sha256:1111", "image_id_after": "sha256:2222"}}
files_changed:
  description: Managed files (compose file, env file, override) that were or would be written.
  returned: state is present
  type: list
  elements: str
pulled:
  description: Images whose local id changed because of O(pull=always).
  returned: state is present
  type: list
  elements: str
rolled_back:
  description: Whether a failed deploy was rolled back to the last good version.
  returned: always
  type: bool
rollback_msg:
  description: What the rollback did.
  returned: when rolled_back is true
  type: str
failed_services:
  description: On a health timeout, per failing service its containers' state, health, exit code and last health
    log.
  returned: failure
  type: dict
compose_version:
  description: The Compose version on the host (recorded with the resolution cache on a cached run).
  returned: always
  type: str
  sample: v2.40.3
resolution:
  description:
    - Where the resolved model and Compose's per-service hashes came from. V(cache) the resolution cache
      (no Compose process); V(compose) C(docker compose config) and C(config --hash).
  returned: state is present or restarted
  type: str
  sample: cache
resolution_note:
  description: Why the resolution cannot be cached for this project (for example C(include)).
  returned: when the resolution is not cacheable
  type: str
cli_calls:
  description: Number of docker/compose CLI processes the module started (0 on a cached no-op).
  returned: always
  type: int
  sample: 0
waited:
  description:
    - How the health-gated wait went. RV(waited.events) is C(on) when the daemon's event stream woke the
      polls, C(off) when they ran on their interval alone (no Engine API, or the stream was refused or ended).
  returned: when the module waited for health (O(wait) and C(up) ran); the wait for the restored version after a
    rollback is reported the same way as C(rollback_waited)
  type: dict
  contains:
    seconds:
      description: Time spent waiting.
      type: float
    polls:
      description: Container state queries made while waiting.
      type: int
    events:
      description: C(on) or C(off), see above.
      type: str
    wakeups:
      description: Times the event stream woke the wait before its poll interval was over.
      type: int
  sample: {"seconds": 2.31, "polls": 4, "events": "on", "wakeups": 3}
api_calls:
  description: Number of Docker Engine API requests the module made over the unix socket.
  returned: always
  type: int
  sample: 3
project_dir:
  description: Absolute project directory.
  returned: always
  type: str
project_name:
  description: The project name.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.compose_stack import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_name=dict(type="str", required=True),
            project_dir=dict(type="path", required=True),
            definition=dict(type="dict"),
            files=dict(type="list", elements="str", default=[]),
            env=dict(type="dict", no_log=True),
            env_file_name=dict(type="str", default=".env"),
            env_files=dict(type="list", elements="str", default=[]),
            profiles=dict(type="list", elements="str", default=[]),
            services=dict(type="list", elements="str", default=[]),
            state=dict(type="str", default="present", choices=["present", "stopped", "restarted", "absent"]),
            pull=dict(type="str", default="missing", choices=["missing", "always", "never", "policy"]),
            build=dict(type="str", default="policy", choices=["policy", "always", "never"]),
            recreate=dict(type="str", default="auto", choices=["auto", "always", "never"]),
            remove_orphans=dict(type="bool", default=False),
            restart_on=dict(type="list", elements="path", default=[]),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=120),
            rollback=dict(type="bool", default=False),
            timeout=dict(type="int"),
            remove_volumes=dict(type="bool", default=False),
            remove_images=dict(type="str", choices=["all", "local"]),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
