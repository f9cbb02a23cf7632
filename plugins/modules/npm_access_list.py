#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: npm_access_list
short_description: Nginx Proxy Manager access lists (basic-auth users and client rules) without password churn
version_added: 0.1.0
description:
  - Declares an access list of Nginx Proxy Manager (NPM), identified by its O(name), with its htpasswd users,
    client allow/deny rules, O(satisfy_any) and O(pass_auth).
  - NPM never returns passwords, so users are tracked by name and passwords are not set again on every run; see
    O(update_password). Passwords are never shown in output or diffs.
  - Proxy hosts refer to the list by name with M(selfhosted.platform.npm_proxy_host)'s C(access_list).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.npm
requirements:
  - Nginx Proxy Manager 2.12 or newer reachable from where the module runs.
attributes:
  check_mode:
    description: Reads NPM and reports what would change.
    support: full
  diff_mode:
    description: Shows the list before and after; users appear with markers instead of passwords.
    support: full
options:
  name:
    description: Name of the access list (exact match).
    type: str
    required: true
  state:
    description: V(present) or V(absent). Deleting a list leaves the proxy hosts that used it without one.
    type: str
    choices: [present, absent]
    default: present
  satisfy_any:
    description: Let a client in when it passes either the client rules or basic auth (else both). Left alone when
      omitted (false on creation).
    type: bool
  pass_auth:
    description: Pass the C(Authorization) header on to the upstream. Left alone when omitted (false on creation).
    type: bool
  users:
    description: The basic-auth users, all of them (users left out are removed). Left alone when omitted.
    type: list
    elements: dict
    suboptions:
      username:
        description: User name.
        type: str
        required: true
      password:
        description: Password; required for a user the list does not have yet.
        type: str
  update_password:
    description:
      - V(on_create) sets a password only for new users.
      - V(on_change) also sets it when NPM's password hint (first character and length, the only thing NPM tells)
        shows the stored password differs; a change keeping both is not seen.
      - V(always) sets every password on every run (and reports a change each time).
    type: str
    choices: [on_create, on_change, always]
    default: on_create
  clients:
    description: Client rules in order, all of them. Left alone when omitted.
    type: list
    elements: dict
    suboptions:
      address:
        description: IP address, network (CIDR), host name, or V(all).
        type: str
        required: true
      directive:
        description: V(allow) or V(deny).
        type: str
        choices: [allow, deny]
        default: allow
notes:
  - Tested against a fake of NPM's API built from NPM's source (C(tests/fakes/npm_api.py)).
seealso:
  - module: selfhosted.platform.npm_proxy_host
"""

EXAMPLES = r"""
- name: Staff only, from the office or with a password
  selfhosted.platform.npm_access_list:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    name: staff
    satisfy_any: true
    users:
      - username: alice
        password: "{{ vault_staff_alice }}"
      - username: bob
        password: "{{ vault_staff_bob }}"
    update_password: on_change
    clients:
      - address: 198.51.100.0/24
        directive: allow
      - address: all
        directive: deny
"""

RETURN = r"""
access_list:
  description: The access list after the run (before it, in check mode); users as C((set)) markers.
  returned: success
  type: dict
  sample: {"id": 2, "name": "staff", "satisfy_any": true, "pass_auth": false,
           "users": {"alice": "(set)", "bob": "(set)"},
           "clients": [{"address": "198.51.100.0/24", "directive": "allow"}], "proxy_host_count": 3}
changes:
  description: What changed or would change; user names, never passwords.
  returned: always
  type: list
  elements: str
  sample: ["users.carol (added)", "users.bob (removed)"]
requests:
  description: Number of HTTP requests the run made.
  returned: always
  type: int
  sample: 2
request_counts:
  description: Requests per method and path.
  returned: always
  type: dict
  sample: {"GET /api/": 1, "GET /api/nginx/access-lists": 1}
npm_version:
  description: The server's version.
  returned: always
  type: str
  sample: 2.13.5
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_access_list import run_access_list
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import connection_spec, run


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        satisfy_any=dict(type="bool"),
        pass_auth=dict(type="bool", no_log=False),
        users=dict(type="list", elements="dict", options=dict(
            username=dict(type="str", required=True),
            password=dict(type="str", no_log=True),
        )),
        update_password=dict(type="str", default="on_create", choices=["on_create", "on_change", "always"],
                             no_log=False),
        clients=dict(type="list", elements="dict", options=dict(
            address=dict(type="str", required=True),
            directive=dict(type="str", default="allow", choices=["allow", "deny"]),
        )),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, run_access_list)


if __name__ == "__main__":
    main()
