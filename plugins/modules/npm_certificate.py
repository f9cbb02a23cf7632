#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: npm_certificate
short_description: Let's Encrypt and custom certificates in Nginx Proxy Manager
version_added: 0.1.0
description:
  - Declares a certificate in Nginx Proxy Manager (NPM) 2.12 or newer.
  - A Let's Encrypt certificate (O(provider=letsencrypt)) is identified by its exact set of O(domain_names). When
    none exists it is requested, with the HTTP challenge or, with O(dns_provider), the DNS challenge. NPM answers
    only when certbot is done, which can take minutes (O(timeout) defaults to 900 seconds). NPM renews it itself;
    an existing certificate is never requested again.
  - NPM stores the certificate row before certbot runs and keeps it when certbot fails; the module removes that
    row and fails with certbot's output.
  - A custom certificate (O(provider=custom)) is identified by O(nice_name). Its certificate, key and intermediate
    certificate are compared with what NPM stores (never shown) and uploaded again when they differ.
  - O(state=absent) deletes the certificate; one still used by proxy hosts is kept unless O(force=true).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.npm
requirements:
  - Nginx Proxy Manager 2.12 or newer reachable from where the module runs.
attributes:
  check_mode:
    description: Reads NPM and reports what would be requested, uploaded or deleted.
    support: full
  diff_mode:
    description: Shows the certificate before and after, PEM contents masked.
    support: full
options:
  timeout:
    description: Timeout in seconds of each HTTP request; long, because NPM answers a certificate request only after
      certbot finished.
    type: int
    default: 900
  state:
    description: V(present) or V(absent).
    type: str
    choices: [present, absent]
    default: present
  provider:
    description: V(letsencrypt) (NPM's C(letsencrypt)) or V(custom) (NPM's C(other), uploaded files).
    type: str
    choices: [letsencrypt, custom]
    default: letsencrypt
  domain_names:
    description: Domains of a Let's Encrypt certificate; together they identify it. Wildcards need a DNS challenge.
    type: list
    elements: str
  nice_name:
    description: Name of a custom certificate; identifies it.
    type: str
  dns_provider:
    description: Certbot DNS plugin (for example V(cloudflare)) for a DNS challenge; HTTP challenge when omitted.
    type: str
  dns_credentials:
    description: The DNS plugin's credentials file content.
    type: str
  propagation_seconds:
    description: Seconds certbot waits for DNS propagation.
    type: int
  letsencrypt_email:
    description: Let's Encrypt account email. Required by NPM 2.12 and older; not sent to 2.13 and newer, which
      refuse it.
    type: str
  certificate:
    description: PEM certificate of a custom certificate.
    type: str
  certificate_key:
    description: PEM private key of a custom certificate.
    type: str
  intermediate_certificate:
    description: PEM intermediate certificate(s) of a custom certificate.
    type: str
  force:
    description:
      - With O(state=absent), delete a certificate even when proxy hosts use it.
      - With O(provider=custom), upload the files again when the server does not return them to compare.
    type: bool
    default: false
notes:
  - Tested against a fake of NPM's API built from NPM's source (C(tests/fakes/npm_api.py)).
seealso:
  - module: selfhosted.platform.npm_proxy_host
"""

EXAMPLES = r"""
- name: A wildcard certificate through Cloudflare DNS
  selfhosted.platform.npm_certificate:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    domain_names: ["example.test", "*.example.test"]
    dns_provider: cloudflare
    dns_credentials: "dns_cloudflare_api_token = {{ vault_cloudflare_token }}"
    propagation_seconds: 30

- name: A certificate from the company CA
  selfhosted.platform.npm_certificate:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    provider: custom
    nice_name: intranet
    certificate: "{{ lookup('file', 'intranet.crt') }}"
    certificate_key: "{{ vault_intranet_key }}"
    intermediate_certificate: "{{ lookup('file', 'ca-chain.crt') }}"
"""

RETURN = r"""
certificate:
  description: The certificate (none when absent, or still to be requested in check mode); PEM contents show as
    C((set)).
  returned: success
  type: dict
  sample: {"id": 3, "provider": "letsencrypt", "nice_name": "example.test, *.example.test",
           "domain_names": ["*.example.test", "example.test"], "expires_on": "2025-09-01 10:00:00",
           "dns_provider": "cloudflare"}
changes:
  description: What changed or would change.
  returned: always
  type: list
  elements: str
  sample: ["letsencrypt certificate example.test (request)"]
requests:
  description: Number of HTTP requests the run made.
  returned: always
  type: int
  sample: 2
request_counts:
  description: Requests per method and path.
  returned: always
  type: dict
  sample: {"GET /api/": 1, "GET /api/nginx/certificates": 1}
npm_version:
  description: The server's version.
  returned: always
  type: str
  sample: 2.13.5
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import connection_spec, run
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_certificate import run_certificate


def main():
    argument_spec = connection_spec(timeout=900)
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        provider=dict(type="str", default="letsencrypt", choices=["letsencrypt", "custom"]),
        domain_names=dict(type="list", elements="str"),
        nice_name=dict(type="str"),
        dns_provider=dict(type="str"),
        dns_credentials=dict(type="str", no_log=True),
        propagation_seconds=dict(type="int"),
        letsencrypt_email=dict(type="str"),
        certificate=dict(type="str"),
        certificate_key=dict(type="str", no_log=True),
        intermediate_certificate=dict(type="str"),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, run_certificate)


if __name__ == "__main__":
    main()
