#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: npm_proxy_host
short_description: An Nginx Proxy Manager proxy host as code, with idempotent field-level diffs
version_added: 0.1.0
description:
  - Declares one proxy host of Nginx Proxy Manager (NPM) through its API (2.12 to 2.14 and newer), identified by its
    set of domain names (lower-cased, in any order).
  - Every field is compared with what NPM stores after applying NPM's own normalisation (sorted domains; no
    certificate turns off C(ssl_forced) and C(http2_support); no C(ssl_forced) turns off HSTS), so a second run
    changes nothing and only reads. Fields left out are left alone on an existing host.
  - V(enabled) and V(disabled) use NPM's enable/disable endpoints (a C(PUT) with C(enabled=false) would leave the
    site live).
  - A certificate is given by id, found by domain, or requested on demand (O(certificate=new)); when Let's
    Encrypt fails, the host NPM created anyway is deleted before the task fails.
  - NPM saves a host even when nginx then refuses its configuration (an unknown directive in O(advanced_config), a
    location whose O(locations[].forward_host) does not resolve, a custom certificate whose key is not its own) - it
    sets C(meta.nginx_online=false) with nginx's message in C(meta.nginx_err), removes the host's conf file and
    stops serving it. The module reads the host back after every write and fails naming the host and nginx's
    message. An enabled host NPM reports offline is drift - the next run saves it again (a C(PUT)), which repairs it
    once the cause is gone, and fails again while nginx still refuses it.
  - To declare many hosts with a constant number of requests and purge the undeclared ones, use
    M(selfhosted.platform.npm_proxy_hosts).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.npm
requirements:
  - Nginx Proxy Manager 2.12 or newer reachable from where the module runs.
attributes:
  check_mode:
    description: Reads NPM and reports what would change; writes nothing.
    support: full
  diff_mode:
    description: Shows the managed fields before and after.
    support: full
options:
  domain_names:
    description: The host's domain names; together they identify the host. Another host holding one of them is an
      error that names it.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) converges the host (created enabled).
      - V(enabled) and V(disabled) also enable or disable it with NPM's endpoints.
      - V(absent) deletes it.
    type: str
    choices: [present, absent, enabled, disabled]
    default: present
  forward_scheme:
    description: Scheme NPM uses to reach the upstream. Left alone when omitted (V(http) on creation).
    type: str
    choices: [http, https]
  forward_host:
    description: Upstream host name or address (a container name on a shared network, for example). Required to
      create the host; left alone when omitted.
    type: str
  forward_port:
    description: Upstream port (1-65535). Required to create the host; left alone when omitted.
    type: int
  certificate:
    description:
      - The host's TLS certificate. Left alone when omitted (none on creation).
      - An existing certificate's id; V(none) (or V(0)) for no certificate.
      - A dict with the key C(match) set to a domain picks an existing certificate (Let's Encrypt or custom) valid
        for that domain, exact or by wildcard; without C(match) it must cover every domain of the host. The attached
        certificate is kept while it still matches, else the one expiring last is chosen. With the key
        C(new_if_missing) true, a new Let's Encrypt certificate is requested when none matches.
      - V(new) keeps an attached certificate that covers every domain, else uses an existing one that does
        and that O(certificate_reuse) accepts (by default issued Let's Encrypt certificates only), else requests a
        Let's Encrypt certificate for the host's domains (see O(new_certificate)). Attaching an existing
        certificate is reported as a warning naming it. When issuance fails, the host NPM already created is
        deleted and the task fails.
    type: raw
  certificate_reuse:
    description:
      - Which existing certificates O(certificate=new) may attach instead of requesting one.
      - V(letsencrypt) - an issued Let's Encrypt certificate that covers every domain of the host; never a
        custom one (a self-signed wildcard, for example), which browsers may not trust.
      - V(any) - any certificate that covers every domain, custom ones included (the behaviour before
        this option).
      - V(never) - only the Let's Encrypt certificate already attached to the host; otherwise a certificate
        of its own is requested.
    type: str
    choices: [letsencrypt, any, never]
    default: letsencrypt
  new_certificate:
    description: How a certificate requested by O(certificate=new) is obtained.
    type: dict
    suboptions:
      email:
        description: Let's Encrypt account email. Required by NPM 2.12 and older, not sent to 2.13 and newer (which
          refuse it).
        type: str
      dns_provider:
        description: Certbot DNS plugin (for example V(cloudflare)) for a DNS challenge, else HTTP challenge.
        type: str
      dns_credentials:
        description: The DNS plugin's credentials file content (for example C(dns_cloudflare_api_token = ...)).
        type: str
      propagation_seconds:
        description: Seconds to wait for DNS propagation.
        type: int
  ssl_forced:
    description: Redirect HTTP to HTTPS. NPM turns it off on a host without a certificate (the module warns instead
      of reporting a change on every run). Left alone when omitted.
    type: bool
  http2_support:
    description: HTTP/2. Off without a certificate. Left alone when omitted.
    type: bool
  hsts_enabled:
    description: HSTS header. Off unless O(ssl_forced). Left alone when omitted.
    type: bool
  hsts_subdomains:
    description: HSTS C(includeSubDomains). Off unless O(hsts_enabled). Left alone when omitted.
    type: bool
  block_exploits:
    description: NPM's "block common exploits" rules. Left alone when omitted.
    type: bool
  caching_enabled:
    description: Cache assets. Left alone when omitted.
    type: bool
  allow_websocket_upgrade:
    description: Pass websocket upgrades. Left alone when omitted.
    type: bool
  trust_forwarded_proto:
    description: Trust C(X-Forwarded-Proto) from an upstream proxy (NPM 2.14 and newer; V(true) fails on older
      servers, V(false) is then a no-op). Left alone when omitted.
    type: bool
  access_list:
    description: An access list by name or id, or V(none). Left alone when omitted.
    type: raw
  advanced_config:
    description: Custom nginx configuration of the host. Left alone when omitted.
    type: str
  locations:
    description: Custom locations, all of them, in order. Left alone when omitted; V([]) removes them.
    type: list
    elements: dict
    suboptions:
      path:
        description: Location path, for example V(/api).
        type: str
        required: true
      forward_scheme:
        description: Upstream scheme.
        type: str
        default: http
        choices: [http, https]
      forward_host:
        description: Upstream host.
        type: str
        required: true
      forward_port:
        description: Upstream port.
        type: int
        required: true
      forward_path:
        description: Path appended upstream.
        type: str
        default: ""
      advanced_config:
        description: Custom nginx configuration of the location.
        type: str
        default: ""
  certificate_timeout:
    description: Seconds to wait for NPM when the request makes it obtain a Let's Encrypt certificate (NPM answers
      only when certbot is done).
    type: int
    default: 900
notes:
  - Tested against a fake of NPM's API built from NPM's source (C(tests/fakes/npm_api.py)); its docstring lists what
    it reproduces and its known differences.
seealso:
  - module: selfhosted.platform.npm_proxy_hosts
  - module: selfhosted.platform.npm_certificate
  - module: selfhosted.platform.npm_access_list
"""

EXAMPLES = r"""
- name: The shop, HTTPS with a certificate requested on first run
  selfhosted.platform.npm_proxy_host:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    domain_names: [shop.example.test, www.shop.example.test]
    forward_host: shop-web
    forward_port: 8080
    certificate: new
    ssl_forced: true
    http2_support: true
    hsts_enabled: true
    block_exploits: true
    allow_websocket_upgrade: true

- name: An internal tool behind an access list, with an existing wildcard certificate
  selfhosted.platform.npm_proxy_host:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    domain_names: [grafana.example.test]
    forward_host: grafana
    forward_port: 3000
    certificate: {match: grafana.example.test}
    access_list: staff
    locations:
      - path: /api/live
        forward_host: grafana
        forward_port: 3000
        advanced_config: proxy_read_timeout 1h;

- name: Take a site offline without deleting it
  selfhosted.platform.npm_proxy_host:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    domain_names: [old.example.test]
    state: disabled
"""

RETURN = r"""
proxy_host:
  description: The host's managed fields after the run (before it, in check mode); none once deleted.
  returned: success
  type: dict
  sample: {"id": 7, "domain_names": ["shop.example.test", "www.shop.example.test"], "forward_scheme": "http",
           "forward_host": "shop-web", "forward_port": 8080, "certificate_id": 3, "ssl_forced": true,
           "enabled": true}
action:
  description: What the run did (or would do), one of create, update, enable, disable, delete or unchanged.
  returned: always
  type: str
  sample: update
changes:
  description: The changes made or, in check mode, to make, one per field with old and new value.
  returned: always
  type: list
  elements: str
  sample: ["forward_port: 8080 -> 8081", "block_exploits: false -> true"]
requests:
  description: Number of HTTP requests the run made.
  returned: always
  type: int
  sample: 2
request_counts:
  description: Requests per method and path.
  returned: always
  type: dict
  sample: {"GET /api/": 1, "GET /api/nginx/proxy-hosts": 1}
npm_version:
  description: The server's version.
  returned: always
  type: str
  sample: 2.13.5
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import connection_spec, run
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_proxy_host import HOST_SPEC, run_proxy_host


def main():
    argument_spec = connection_spec()
    argument_spec.update(HOST_SPEC)
    argument_spec.update(certificate_timeout=dict(type="int", default=900))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, run_proxy_host)


if __name__ == "__main__":
    main()
