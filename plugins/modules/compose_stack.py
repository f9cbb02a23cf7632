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
  - What a pull would do is asked of the registry without pulling, through the Engine API
    (C(GET /distribution/{name}/json)) - the daemon asks the registry, through its own mirrors, proxies and
    insecure-registry settings, as a pull would. With O(pull=always) every image of the services to converge
    is asked about, with O(pull=missing) the images that are not present; see RV(pull_prediction). The
    registry's manifest digest is compared with the local image's C(RepoDigests). A newer image in the registry
    recreates the services that use it, in check mode as in the run (reason C(newer image in registry)); an
    image the registry does not have, or refuses with the credentials at hand, fails the task naming the image,
    the registry and its answer, in check mode as in the run, where it fails before anything is written,
    pulled or started. A registry that cannot be asked (unreachable, no network, rate limit, no Engine API
    socket) is reported as C(unverified) in RV(pull_prediction), with a warning in check mode; the plan then
    assumes the local image. In a run with O(pull=always), images whose registry digest is the local one are
    not pulled at all (no C(docker pull) process on a no-op).
  - Registry credentials are read as the docker CLI reads them from C(config.json) in C(DOCKER_CONFIG) (or
    C(~/.docker)) - C(credHelpers) for the registry's host, else C(credsStore), run as
    C(docker-credential-<name> get) with the host on standard input, else the C(auths) entry (C(auth),
    C(username)/C(password) or C(identitytoken)) - and sent to the local daemon only, in the C(X-Registry-Auth)
    header. They are never logged or returned; RV(pull_prediction) says only where they came from.
  - With O(build=always), every run builds the services that have a C(build) section (C(docker compose build),
    only those among O(services) when it is set) before it decides, then recreates exactly the services whose
    image id the build changed. A build the builder's cache answers with the same image is no change, so the task
    stays idempotent; an edited file of a build context recreates that service alone. RV(built) reports each build.
    Check mode does not build; it plans with the images as they are and names the services whose build it could not
    predict in RV(build_unpredicted) and a warning.
  - With O(wait), waits until every service with a healthcheck is healthy (a container that starts unhealthy and
    then recovers is fine) and every other service is running, each container up for at least a second since its
    last start by the daemon's clock (a crash-looping container does not pass). A container that exits and that
    Docker will not restart ends the wait at once; the failure names it, its exit code and the last 20 lines of
    its log (env values masked). With O(rollback), a deploy that does not become healthy restores the last good
    definition, env file, O(restart_on) files and image ids, brings them back up, and fails with
    RV(rolled_back=true) while the old version keeps serving.
  - The rollback point is recorded after every deploy that ends healthy, and refreshed by a run that changes
    nothing when the images the project runs are no longer the recorded ones (Watchtower, or an C(up) run by
    hand, replaced them); a no-op run compares the point with the containers it listed anyway, so it stays as
    fast. A recorded image id that no longer exists (Watchtower's C(--cleanup)) cannot be pinned; the rollback
    runs that service from its tag as it is now and says so in RV(rollback_msg).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - Docker Engine and the Compose v2 CLI plugin (2.20.0 or newer) on the managed host.
  - PyYAML on the managed host to write O(definition) as YAML (JSON, which Compose also reads, otherwise).
attributes:
  check_mode:
    description:
      - Computes the plan from the same comparison, with what the registry has for the images a pull would fetch;
        never runs up, never pulls, never builds.
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
      - V(stopped) on a project that has no container yet validates the definition, writes the managed files and
        creates the containers without starting them (C(docker compose create)), as community.docker's
        C(docker_compose_v2) does; the next run finds them created, not running, and changes nothing. On a project
        that has containers, it stops them and does not converge the definition.
    type: str
    choices: [present, stopped, restarted, absent]
    default: present
  pull:
    description:
      - V(missing) pulls images that are not present; V(always) pulls every image first, and a pull that fetched
        nothing new is not a change; V(never) never pulls; V(policy) follows each service's C(pull_policy).
      - With V(always) and V(missing) the registry is asked first (see the description and RV(pull_prediction));
        check mode predicts a newer image (the services using it are recreated) and a pull that would fail (the
        task fails, naming the image), and a run skips C(docker pull) for images the registry has as they are
        here. V(never) and V(policy) ask nothing.
    type: str
    choices: [missing, always, never, policy]
    default: missing
  build:
    description:
      - V(policy) builds missing images of services with a C(build) section; V(always) builds them on every run
        (C(docker compose build), before the plan) and recreates only the services whose image id changed;
        V(never) never builds (C(--no-build)).
      - A service with a C(build) section and no C(image) runs the image Compose tags C(<project_name>-<service>).
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
      - Keep the last good definition, env file, O(restart_on) files and image ids (under C(.compose_stack/) in
        O(project_dir), mode C(0700), each copy C(0600) - secrets in the env file or in O(restart_on) files are
        kept there as in the originals, only for the deployed version). When a deploy (its build, C(up) or wait)
        fails or does not become healthy within O(wait_timeout), restore them, bring the previous version back up
        and fail with RV(rolled_back=true).
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
      ran; V(files-only) only managed files changed; V(check) check mode; V(build) the build of O(build=always)
      failed; V(create) O(state=stopped) created a missing project's containers; V(stop), V(restart), V(down) for
      the other states.
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
  description: Images whose local id changed because of O(pull=always); in check mode, the images that would be
    pulled (the registry has a newer image, or it is not present here).
  returned: state is present
  type: list
  elements: str
pull_prediction:
  description:
    - Per image the registry was asked about (O(pull=always) every image of the services to converge,
      O(pull=missing) those not present), what a pull would do.
  returned: when O(pull) is V(always) or V(missing) and an image was asked about, also on failure
  type: dict
  contains:
    verdict:
      description:
        - V(current) the registry's digest is the local image's (nothing to pull); V(newer) the registry has
          another image under the tag (it is pulled, its services recreated); V(pullable) not present here, the
          registry has it; V(missing) the registry does not have it (the task fails); V(denied) the registry
          refused it with the credentials found (the task fails); V(unverified) the registry could not be asked,
          see C(detail).
      type: str
    registry:
      description: The registry's host (C(docker.io) for Docker Hub).
      type: str
    digest:
      description: The registry's manifest digest, when it answered.
      type: str
    detail:
      description:
        - The registry's or daemon's message when it did not answer with a digest.
        - For V(newer) on an image built or loaded here (it has no digest from that repository), says so; such an
          image is pulled, and its services are recreated only if the pull brings another image id.
      type: str
    credentials:
      description: Where the credentials came from (C(config.json auths), C(credential helper docker-credential-NAME))
        or C(no credentials); never the credentials.
      type: str
  sample: {"registry.example.test/amn/backend:1.4.2": {"verdict": "newer", "registry": "registry.example.test",
           "digest": "sha256:5b0f...", "detail": "", "credentials": "config.json auths"}}
built:
  description:
    - With O(build=always), per built service its image reference, the image id before and after the build and
      whether it changed (a build answered from the cache does not).
  returned: when O(build=always) built something
  type: list
  elements: dict
  sample: [{"service": "api", "image": "shop-api", "image_id_before": "sha256:1111", "image_id": "sha256:2222",
            "changed": true}]
build_unpredicted:
  description:
    - Check mode with O(build=always) does not build; these services would be built by the run, and whether their
      image changes (and so whether they are recreated) cannot be predicted. A warning says the same.
  returned: check mode with O(build=always)
  type: list
  elements: str
  sample: [api]
images:
  description:
    - The image each service runs after the run, as its reference and image id (for a service without a container,
      the reference it would run and its local id, null when absent). Also returned when the task fails, then
      after the rollback when there was one.
  returned: always for state present and stopped, on failure too
  type: dict
  sample: {"web": {"image": "registry.example.test/amn/backend:1.4.2", "image_id": "sha256:2222"}}
attempted_images:
  description: On a failed deploy, the reference and image id each service was to run (what failed).
  returned: failure of a deploy
  type: dict
  sample: {"web": {"image": "registry.example.test/amn/backend:1.4.3", "image_id": "sha256:3333"}}
rollback_point_refreshed:
  description: Why a run that changed nothing recorded the rollback point again (for example the images changed
    since it was recorded, by Watchtower).
  returned: when O(rollback) and the point was stale
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
  description: When the wait fails, per failing service its containers' state, health, exit code, last health
    log (C(health_log)) and the last 20 lines of the container's log (C(log), stdout and stderr in time order,
    env values masked).
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
