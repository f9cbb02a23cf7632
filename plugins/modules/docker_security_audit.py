#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_security_audit
short_description: Check a Docker host against the CIS Docker Benchmark 1.6.0 (daemon, files, container runtime)
version_added: 0.1.0
description:
  - Reads the live host - the daemon's C(GET /info), C(/etc/docker/daemon.json) merged with dockerd's command-line
    flags, the owner and mode of the files section 3 names, C(docker inspect) of every running container and the
    processes in each - and evaluates the CIS Docker Benchmark v1.6.0 items of sections 2 (daemon configuration),
    3 (daemon configuration files) and 5 (container runtime) that apply to a single host.
  - Each item is C(PASS), C(WARN) (naming every container, setting or file that fails it) or C(WAIVED) (every
    failing target is covered by a waiver from O(waivers), whose reason is reported). Waivers that matched nothing
    are returned in RV(unused_waivers) so stale inventory data is seen.
  - Items a host's state cannot answer are not reported - 2.8, 2.10, 2.11, 2.17, 5.9 (C(playbooks/verify.yml)
    checks published ports against the inventory instead), 5.19, 5.23, 5.24 (only an audit log of exec calls shows
    them) and 5.28.
  - 5.4 is stricter than docker-bench-security's check - it asks that every capability is dropped
    (C(cap_drop) C(ALL)) and only those a container needs are added back, the platform's default.
  - 5.15 follows docker-bench-security - C(always) and an unlimited or over-5 C(on-failure) policy WARN, while
    C(unless-stopped) passes.
  - 5.26 passes when the container sets C(no-new-privileges) or the daemon's default applies and the container does
    not turn it off.
  - Changes nothing.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Audits the same in check mode (it only reads).
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  docker_host:
    description:
      - The daemon to audit, a local unix socket (the audit also reads files and processes of this host).
    type: str
    default: unix:///var/run/docker.sock
  daemon_json:
    description: Path of the daemon's configuration file.
    type: path
    default: /etc/docker/daemon.json
  waivers:
    description:
      - Failing targets accepted on purpose, reported as C(WAIVED) with their reason instead of C(WARN).
    type: list
    elements: dict
    default: []
    suboptions:
      item:
        description: The benchmark item, e.g. C(5.14).
        type: str
        required: true
      target:
        description:
          - The container name (without the leading slash), setting (C(userland-proxy)) or file path the waiver
            covers; shell-style wildcards (C(proxy-*)). C(*) covers every target of the item.
        type: str
        default: "*"
      reason:
        description: Why the item is waived; required, it is what the report shows.
        type: str
        required: true
  swarm_expected:
    description: The host is meant to be a Swarm node (item 5.1 then passes with swarm mode active).
    type: bool
    default: false
  sections:
    description: The benchmark sections to evaluate.
    type: list
    elements: int
    choices: [2, 3, 5]
    default: [2, 3, 5]
  fail_on_warn:
    description: Fail the task when any item is C(WARN) (the message lists them).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Audit the host, accepting the router's public ports
  selfhosted.platform.docker_security_audit:
    waivers:
      - item: "5.8"
        target: router-router-1
        reason: the public router listens on 80/443
      - item: "5.14"
        target: router-router-1
        reason: the public router answers on every address
  register: cis

- name: Show what fails
  ansible.builtin.debug:
    var: cis.findings
"""

RETURN = r"""
checks:
  description: One entry per evaluated item, in benchmark order.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: The item, e.g. C(5.13).
      type: str
    section:
      description: 2, 3 or 5.
      type: int
    title:
      description: What the item asks for.
      type: str
    status:
      description: C(PASS), C(WARN) or C(WAIVED).
      type: str
    targets:
      description: Each container, setting or file the item looked at - C({target, status, detail, reason}).
      type: list
      elements: dict
  sample:
    - id: "5.13"
      section: 5
      title: The root filesystem is mounted read-only
      status: WARN
      targets:
        - {target: shp-handmade, status: WARN, detail: writable root filesystem}
counts:
  description: How many items are C(PASS), C(WARN) and C(WAIVED).
  returned: success
  type: dict
  sample: {"PASS": 58, "WARN": 1, "WAIVED": 3}
findings:
  description: One line per failing, unwaived target.
  returned: success
  type: list
  elements: str
  sample: ["5.13 shp-handmade: writable root filesystem"]
unused_waivers:
  description: Waivers that matched no failing target.
  returned: success
  type: list
  elements: dict
containers:
  description: The running containers audited.
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.docker_audit import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
            daemon_json=dict(type="path", default="/etc/docker/daemon.json"),
            waivers=dict(type="list", elements="dict", default=[], options=dict(
                item=dict(type="str", required=True),
                target=dict(type="str", default="*"),
                reason=dict(type="str", required=True),
            )),
            swarm_expected=dict(type="bool", default=False),
            sections=dict(type="list", elements="int", choices=[2, 3, 5], default=[2, 3, 5]),
            fail_on_warn=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
