#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swarm_stack
short_description: Deploy a Compose definition to Docker Swarm with docker stack deploy, fast when nothing changed
version_added: 0.2.0
description:
  - Takes the stack definition an inventory gives M(selfhosted.platform.compose_stack) (O(definition), O(env)) and
    deploys it to the swarm this node manages with C(docker stack deploy).
  - Checks and translates first, before anything on the host changes. Every Compose key the stack file format
    (version 3.9, the newest Docker 20.10's CLI reads) ignores or rejects is either translated - C(restart) to
    C(deploy.restart_policy) (C(no) to condition C(none), C(always) and C(unless-stopped) to C(any), C(on-failure[:N])
    to C(on-failure) with C(max_attempts)), the long C(depends_on) form to a list, C(mem_limit), C(mem_reservation),
    C(cpus) and C(pids_limit) to C(deploy.resources), C(scale) to C(deploy.replicas), C(tmpfs) to tmpfs volumes,
    C(container_name) to a network alias, C(expose) dropped, C(ports) to the long form in the endpoint mode's publish
    mode - or refused with a message naming the service and the key (C(build), C(network_mode), C(privileged),
    C(devices), C(security_opt), a port bound to one host address, ...). RV(translated) lists each translation.
  - Health-gated rolling updates by default - C(update_config) with C(parallelism 1), C(failure_action rollback), a
    C(monitor) of the healthcheck's C(start_period + interval x retries) (5 to 60 s; 10 s without a healthcheck) and
    C(order start-first), or C(stop-first) for a service that cannot run two copies (host-mode published ports, a
    stateful service); C(rollback_config) likewise with C(failure_action pause). O(update_config) and
    O(rollback_config) change the defaults; a service's own C(deploy) values win.
  - Configs and secrets (the definition's top-level C(configs)/C(secrets) with C(file), C(content) or
    C(environment), and O(configs)/O(secrets)) become Swarm configs and secrets named
    C(<stack>_<name>_<sha256[:12]>) of their content, so a change rotates them; secret values go to
    C(docker secret create) on standard input, never on a command line or in the stack file. After a successful
    deploy the stack's old ones that nothing uses are removed.
  - Placement - stateful services (a data tier image - postgres, mariadb, mysql, mongo, redis, valkey - or one named
    in O(stateful_services)) get the constraint C(node.labels.<stateful_label>==<stateful_label_value>) unless they
    set constraints of their own; the others spread over the nodes (C(spread node.id)). A C(==) constraint no node
    satisfies (an unknown hostname, a label no node has) fails before anything is deployed.
  - Endpoint mode - O(endpoint_mode=auto) picks C(vip) (virtual IPs, ingress routing mesh) when the kernel of this
    node has IPVS and C(dnsrr) with host-mode published ports otherwise; C(vip) asked for on a kernel without IPVS
    fails before deploying (the service would accept connections and never answer). The rule - IPVS when
    C(/proc/net/ip_vs) exists, C(ip_vs) is in C(/proc/modules), the kernel's C(modules.builtin) or module tree has
    C(ip_vs), or C(/boot/config-<release>) sets C(CONFIG_IP_VS) - is applied on the node the module runs on; the
    other nodes are assumed to run the same kernel. RV(endpoint_mode) and RV(endpoint_reason) say what was chosen and
    why.
  - The current state comes from the Engine API over the manager's unix socket - C(/info), C(/nodes), the
    services labelled C(com.docker.stack.namespace=<stack>), networks, configs and secrets. Each service of the
    definition is compared with its service spec, normalised to what C(docker stack deploy) writes (labels, image,
    env, command, mounts, ports, resources, restart, update and rollback config, placement, networks, config and
    secret references, healthcheck, ...) into a plan per service - create, update (with the fields that change),
    remove, unchanged (RV(plan)). A digest of each translated service is stored in a label, so a change to a key
    the comparison does not model still shows. When every service is unchanged, no C(docker stack deploy) runs
    (RV(path=fast-noop), C(changed=false)).
  - It refuses, before anything is deployed, when this node is not a swarm manager, when the managers have lost
    quorum (C(/nodes) does not answer or half of the managers are unreachable), for a secret whose value is missing,
    an unknown node in a placement constraint, or an external network that does not exist or is not swarm-scoped.
  - Before its first write (its files included) a run that deploys proves the managers can commit - it creates a small
    config of the stack and removes it again. For seconds after most managers went away without closing their
    connections, the leader still answers and lists them reachable, and a write it takes may be applied once they
    are back; the probe meets that window instead and the run fails with RV(quorum_lost=true), nothing deployed.
  - With O(wait), waits until every service has its replicas running with the new spec (Swarm starts a task with a
    healthcheck only once it is healthy) and no update is running; one-shot services (restart condition C(none) or
    C(on-failure)) count completed tasks, so they do not make the wait hang. An update Swarm rolls back fails the task
    with RV(rolled_back=true) and RV(rolled_back_services); any failure reports the failing tasks' errors and the last
    20 lines of C(docker service logs) (secret values masked).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - Docker Engine 20.10 or newer in swarm mode on the managed host, which must be a manager; the docker CLI.
  - The Engine API's unix socket (C(/var/run/docker.sock) or C(DOCKER_HOST=unix://...)).
attributes:
  check_mode:
    description: Computes the same plan; writes no file, creates no config or secret and runs no deploy. On a node
      that is not in a swarm yet, every service is predicted as created (RV(swarm_missing)).
    support: full
  diff_mode:
    description: Shows the stack file before and after (secret values masked) and per service to update the fields
      that change, before and after.
    support: full
options:
  project_name:
    description: The stack's name (C(docker stack deploy ... <name>)); services are named C(<name>_<service>).
    type: str
    required: true
  project_dir:
    description:
      - The stack's directory on the manager. The stack file (C(docker-stack.yml)) and the env file are written there
        with mode C(0600) (the directory is created C(0700)); relative paths of the definition (bind mounts, config
        and secret files, env files) resolve against it.
    type: path
    required: true
  definition:
    description:
      - The compose document as a dict - the same one compose_stack takes (for example the output of the
        C(selfhosted.platform.compose_definition) filter).
      - Required with O(state=present).
    type: dict
  env:
    description:
      - Variables for C(${VAR}) interpolation, handed to C(docker stack deploy) in its environment (never on its
        command line), and written to the env file O(env_file_name) (C(0600)) that services can load with
        C(env_file). Values are masked in every output. A value with a line break is refused (the env file format
        C(docker stack deploy) reads has no quoting).
      - ${VAR} references are allowed in keys passed through as they are (environment, image, command, labels, ...),
        not in keys the module translates (ports, deploy, restart, tmpfs, limits).
    type: dict
  env_file_name:
    description: The env file O(env) is written to, relative to O(project_dir).
    type: str
    default: .env
  configs:
    description:
      - Configs by name (the name services refer to) and content; they become C(<stack>_<name>_<hash>).
    type: dict
  secrets:
    description:
      - Secrets by name (the name services refer to) and value; they become C(<stack>_<name>_<hash>) and are mounted
        at C(/run/secrets/<name>). A missing or empty value fails the task before anything is deployed.
    type: dict
  state:
    description:
      - V(present) deploys; V(absent) runs C(docker stack rm) (which also removes the stack's configs and secrets).
    type: str
    choices: [present, absent]
    default: present
  endpoint_mode:
    description:
      - V(auto) - V(vip) when this node's kernel has IPVS, else V(dnsrr) with host-mode published ports. V(vip) fails
        on a kernel without IPVS. V(dnsrr) always uses DNS round robin and host-mode ports.
      - A service's own C(deploy.endpoint_mode) wins.
    type: str
    choices: [auto, vip, dnsrr]
    default: auto
  resolve_image:
    description: C(docker stack deploy --resolve-image) - whether the CLI asks the registry for the image digests.
    type: str
    choices: [always, changed, never]
    default: always
  prune:
    description: Remove services of the stack that are not in the definition (C(--prune)).
    type: bool
    default: true
  wait:
    description: Wait until every service has converged, see the description.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait; on timeout the task fails with the services that did not converge and their tasks'
      errors and logs.
    type: int
    default: 300
  update_config:
    description:
      - Values over the default C(update_config) of every service (parallelism, delay, failure_action, monitor,
        max_failure_ratio, order); a service's own C(deploy.update_config) wins.
    type: dict
  rollback_config:
    description: Values over the default C(rollback_config) of every service; a service's own wins.
    type: dict
  stateful_services:
    description: Services to treat as stateful (pinned, stop-first) besides those running a data tier image.
    type: list
    elements: str
    default: []
  stateful_label:
    description: The node label stateful services are pinned with (C(node.labels.<label>==<value>)); empty to pin
      nothing.
    type: str
    default: selfhosted.data
  stateful_label_value:
    description: The value of O(stateful_label) the nodes that hold the data carry.
    type: str
    default: "true"
  ignore_keys:
    description:
      - Compose keys you accept losing on Swarm (for example C(security_opt), which Swarm services ignore on engines
        before 27, or C(build) of a service that also names its image); they are dropped and listed in
        RV(translated) instead of refused.
    type: list
    elements: str
    default: []
notes:
  - Images must come from a registry every node can pull from; O(resolve_image) pins them to their digests.
  - Named volumes are local to a node; that is why stateful services are pinned.
seealso:
  - module: selfhosted.platform.compose_stack
  - module: community.docker.docker_stack
"""

EXAMPLES = r"""
- name: Deploy the app stack to the swarm, health-gated, rolled back by Swarm on a bad release
  selfhosted.platform.swarm_stack:
    project_name: amn
    project_dir: /opt/stacks/amn
    definition:
      services:
        backend:
          image: registry.example.test/amn/backend:1.4.2
          environment:
            MONGO_URI: "${MONGO_URI}"
          secrets: [jwt_key]
          healthcheck:
            test: [CMD, node, healthcheck.js]
            interval: 10s
          deploy:
            replicas: 2
        db:
          image: postgres:16
          volumes: [db:/var/lib/postgresql/data]
          restart: unless-stopped
      volumes:
        db: {}
    env:
      MONGO_URI: "{{ vault_amn_mongo_uri }}"
    secrets:
      jwt_key: "{{ vault_amn_jwt_key }}"
    wait_timeout: 300

- name: Same stack on a kernel without IPVS, DNS round robin and host-mode ports
  selfhosted.platform.swarm_stack:
    project_name: web
    project_dir: /opt/stacks/web
    endpoint_mode: dnsrr
    definition:
      services:
        nginx:
          image: nginx:1.27
          ports: ["0.0.0.0:8080:80"]

- name: Remove a stack
  selfhosted.platform.swarm_stack:
    project_name: old
    project_dir: /opt/stacks/old
    state: absent
"""

RETURN = r"""
path:
  description: V(fast-noop) nothing differed, no deploy; V(deploy) C(docker stack deploy) ran; V(files-only) only the
    stack or env file was rewritten; V(prune) only unused old configs/secrets were removed; V(check) check mode;
    V(rm) the stack was removed; V(absent) there was nothing to remove.
  returned: success
  type: str
  sample: fast-noop
plan:
  description: Per service, C(action) create, update, remove or unchanged, and for an update the C(fields) that
    change.
  returned: always
  type: list
  elements: dict
  sample: [{"service": "web", "action": "update", "fields": ["image", "configs"]}]
translated:
  description: What the check-and-translate step changed, per service and key, and to what.
  returned: state is present
  type: list
  elements: dict
  sample: [{"service": "db", "key": "restart", "to": "deploy.restart_policy (restart unless-stopped: condition any)"}]
services:
  description: Per service its action and changed fields, and after a deploy its image, update state and (after
    the wait) running/desired replicas and converged state.
  returned: always
  type: dict
  sample: {"web": {"action": "update", "fields": ["image"], "image": "nginx:1.27", "update_state": "completed",
           "running": 2, "desired": 2, "state": "converged"}}
rolled_back:
  description: Whether Swarm rolled back a failed update.
  returned: always
  type: bool
rolled_back_services:
  description: The services Swarm rolled back.
  returned: always
  type: list
  elements: str
quorum_lost:
  description: The run failed because the swarm managers have lost quorum at a write (the quorum probe before the
    deploy, a config or secret create, C(docker stack deploy)) or during the wait. The message says what this run
    had already done, and when the leader stepped down with a write pending, that Swarm may still apply it.
  returned: when the managers lost quorum after the checks before the deploy
  type: bool
  sample: true
failed_services:
  description: When the wait fails, per service that did not converge its state, counts, update state and latest
    failing tasks (error, exit code).
  returned: failure of the wait
  type: dict
endpoint_mode:
  description: The endpoint mode the services got (vip or dnsrr).
  returned: state is present
  type: str
  sample: dnsrr
endpoint_reason:
  description: Why that endpoint mode.
  returned: state is present
  type: str
ipvs:
  description: Whether this node's kernel has IPVS, by the rule in the description.
  returned: state is present
  type: bool
configs:
  description: Hashed configs created (or to create, in check mode) and old ones pruned.
  returned: always
  type: dict
  sample: {"created": ["web_nginx_conf_3f2a9c1b7d4e"], "pruned": ["web_nginx_conf_0a1b2c3d4e5f"]}
secrets:
  description: Hashed secrets created and old ones pruned (names only).
  returned: always
  type: dict
stack_file:
  description: The stack file's path.
  returned: always
  type: str
files_changed:
  description: Managed files written (or to write in check mode).
  returned: when the comparison ran
  type: list
  elements: str
waited:
  description: How long the wait took and how many polls it made.
  returned: when a deploy waited
  type: dict
swarm_missing:
  description: Check mode on a node not in a swarm yet; the plan is a prediction.
  returned: check mode on a node outside a swarm
  type: bool
problems:
  description: Each reason the definition or the swarm was refused.
  returned: failure before deploying
  type: list
  elements: str
api_calls:
  description: Engine API requests made.
  returned: always
  type: int
cli_calls:
  description: docker CLI processes started (0 on a no-op).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.swarm_stack import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_name=dict(type="str", required=True),
            project_dir=dict(type="path", required=True),
            definition=dict(type="dict"),
            env=dict(type="dict", no_log=True),
            env_file_name=dict(type="str", default=".env"),
            configs=dict(type="dict"),
            secrets=dict(type="dict", no_log=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            endpoint_mode=dict(type="str", default="auto", choices=["auto", "vip", "dnsrr"]),
            resolve_image=dict(type="str", default="always", choices=["always", "changed", "never"]),
            prune=dict(type="bool", default=True),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=300),
            update_config=dict(type="dict"),
            rollback_config=dict(type="dict"),
            stateful_services=dict(type="list", elements="str", default=[]),
            stateful_label=dict(type="str", default="selfhosted.data"),
            stateful_label_value=dict(type="str", default="true"),
            ignore_keys=dict(type="list", elements="str", default=[], no_log=False),
        ),
        required_if=[("state", "present", ("definition",))],
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
