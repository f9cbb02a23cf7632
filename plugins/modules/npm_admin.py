#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: npm_admin
short_description: Bootstrap the Nginx Proxy Manager admin account, for both API generations
version_added: 0.1.0
description:
  - Makes O(email) / O(password) the credentials of Nginx Proxy Manager's admin, right after its first start.
  - On NPM 2.13 and newer a fresh install has no user (C(GET /api/) says C(setup=false)); the module creates the
    first user, made admin by NPM, through the setup endpoint (C(POST /api/users) without a token). An install
    started with C(INITIAL_ADMIN_EMAIL)/C(INITIAL_ADMIN_PASSWORD) already has it.
  - On NPM 2.12 and older the default admin C(admin@example.com) / C(changeme) exists; the module logs in with it
    and changes its email and password at once.
  - When the declared credentials already log in, nothing changes (one health request and one login, whose token is
    cached for the next NPM tasks, see O(token_cache)).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - Nginx Proxy Manager 2.12 or newer reachable from where the module runs.
attributes:
  check_mode:
    description: Reports whether the account would be created or changed; only reads and logs in.
    support: full
  diff_mode:
    description: No diff; RV(changes) says what changes.
    support: none
options:
  url:
    description: Base URL of NPM's admin interface, for example V(http://127.0.0.1:81).
    type: str
    required: true
  email:
    description: Email address (login) of the admin.
    type: str
    required: true
  password:
    description: Password of the admin.
    type: str
    required: true
  totp_secret:
    description:
      - Base32 TOTP secret of the admin when two-factor authentication is turned on for the account (NPM 2.14+);
        the module computes the current code (RFC 6238, SHA1, 6 digits, 30 seconds) for C(POST /api/tokens/2fa).
      - Needs a correct clock on the machine the module runs on.
    type: str
  name:
    description: Full name of the admin; set when creating or changing the account, and corrected when it differs.
    type: str
  nickname:
    description: Nickname of the admin; as O(name).
    type: str
  default_email:
    description: Login of the default admin of NPM 2.12 and older.
    type: str
    default: admin@example.com
  default_password:
    description: Password of the default admin of NPM 2.12 and older.
    type: str
    default: changeme
  validate_certs:
    description: Verify the server's TLS certificate when O(url) is HTTPS.
    type: bool
    default: true
  timeout:
    description: Timeout in seconds of each HTTP request.
    type: int
    default: 30
  token_cache:
    description: Keep the token of the final login in the cache the other NPM modules use.
    type: bool
    default: true
  token_cache_dir:
    description: Directory of the token cache (see M(selfhosted.platform.npm_proxy_host)).
    type: path
notes:
  - Tested against a fake of NPM's API built from NPM's source for both generations (C(tests/fakes/npm_api.py)).
seealso:
  - module: selfhosted.platform.npm_proxy_host
"""

EXAMPLES = r"""
- name: The admin account, from vault
  selfhosted.platform.npm_admin:
    url: http://127.0.0.1:81
    email: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    name: Platform Ops
    nickname: ops
"""

RETURN = r"""
method:
  description: V(first_user) (2.13+ setup endpoint), V(default_admin) (2.12 default account changed) or V(login)
    (the credentials already worked).
  returned: success
  type: str
  sample: first_user
setup_before:
  description: Whether NPM had a user before the run.
  returned: success
  type: bool
  sample: false
user:
  description: The admin account (id, email, name, nickname, roles).
  returned: when not in check mode
  type: dict
  sample: {"id": 1, "email": "ops@example.test", "name": "Platform Ops", "nickname": "ops", "roles": ["admin"]}
changes:
  description: What changed or would change.
  returned: always
  type: list
  elements: str
  sample: ["admin ops@example.test (create with the setup endpoint)"]
requests:
  description: Number of HTTP requests the run made.
  returned: always
  type: int
  sample: 2
request_counts:
  description: Requests per method and path.
  returned: always
  type: dict
  sample: {"GET /api/": 1, "POST /api/tokens": 1}
npm_version:
  description: The server's version.
  returned: always
  type: str
  sample: 2.13.5
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_admin import (
    ADMIN_SPEC,
    make_admin_client,
    run_admin,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import run


def main():
    module = AnsibleModule(argument_spec=ADMIN_SPEC, supports_check_mode=True)
    run(module, run_admin, client_factory=make_admin_client)


if __name__ == "__main__":
    main()
