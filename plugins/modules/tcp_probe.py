#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tcp_probe
short_description: Try TCP connections to many ports of one address at once and say which are open, closed or filtered
version_added: 0.1.0
description:
  - Connects to every port in O(ports) of O(host) in parallel and classifies each like a port scanner does -
    C(open) (the handshake completed), C(closed) (refused with a reset - nothing listens, or a REJECT rule),
    C(filtered) (no answer within O(timeout) - a DROP rule, UFW's default for incoming connections), C(unreachable)
    (no route) or C(error) (with the error text).
  - Run it on the controller (C(delegate_to localhost)) against a server's public address to see its ports as the
    Internet does - C(playbooks/verify.yml) checks that the ports the firewall opens answer and that database and
    admin ports do not.
  - Sends nothing but the TCP handshake (the connection is closed at once) and changes nothing.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Probes the same in check mode (it only reads).
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  host:
    description: The address (or name) to connect to.
    type: str
    required: true
  ports:
    description: The TCP ports to try (duplicates are tried once).
    type: list
    elements: int
    required: true
  timeout:
    description: Seconds to wait for each handshake; a port that has not answered by then is C(filtered).
    type: float
    default: 2.0
  workers:
    description: How many ports are tried at the same time.
    type: int
    default: 32
"""

EXAMPLES = r"""
- name: See the server's ports from the controller
  selfhosted.platform.tcp_probe:
    host: 192.0.2.30
    ports: [22, 80, 443, 81, 5432, 3306, 6379]
    timeout: 2
  delegate_to: localhost
  become: false
  register: probe

- name: Fail when a database port answers
  ansible.builtin.assert:
    that: probe.open | intersect([5432, 3306, 6379]) | length == 0
"""

RETURN = r"""
ports:
  description: One entry per distinct port, ascending.
  returned: success
  type: list
  elements: dict
  contains:
    port:
      description: The port.
      type: int
    state:
      description: C(open), C(closed), C(filtered), C(unreachable) or C(error).
      type: str
    detail:
      description: Why, for the states other than C(open) and C(closed).
      type: str
    elapsed_ms:
      description: How long the attempt took.
      type: int
  sample: [{"port": 22, "state": "open", "detail": "", "elapsed_ms": 1},
           {"port": 5432, "state": "filtered", "detail": "no answer in 2s", "elapsed_ms": 2001}]
open:
  description: The open ports.
  returned: success
  type: list
  elements: int
closed:
  description: The ports that refused the connection.
  returned: success
  type: list
  elements: int
filtered:
  description: The ports that did not answer.
  returned: success
  type: list
  elements: int
no_route:
  description:
    - The ports the network had no route for (state C(unreachable)).
    - Not named C(unreachable), a result key Ansible reserves for hosts it cannot reach.
  returned: success
  type: list
  elements: int
errors:
  description: The ports whose attempt failed otherwise.
  returned: success
  type: list
  elements: int
host:
  description: The address probed.
  returned: always
  type: str
elapsed_ms:
  description: Wall time of the whole probe.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.tcp_probe import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str", required=True),
            ports=dict(type="list", elements="int", required=True),
            timeout=dict(type="float", default=2.0),
            workers=dict(type="int", default=32),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
