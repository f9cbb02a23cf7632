#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: npm_proxy_hosts
short_description: Reconcile many Nginx Proxy Manager proxy hosts at once, optionally purging the undeclared ones
version_added: 0.1.0
description:
  - Declares a list of Nginx Proxy Manager proxy hosts in one task, with the same fields and semantics as
    M(selfhosted.platform.npm_proxy_host) (each host is identified by its set of domain names).
  - The server is read once, whatever the number of hosts - the version (C(GET /api/)), one list of proxy hosts
    with their certificates and access lists expanded, and the certificate and access-list lists only when a
    declared reference cannot be settled from that list - plus a login when no cached token is valid. A run that
    changes nothing makes no other request.
  - With O(purge=true), hosts NPM has that are not declared are deleted (before declared hosts are created, so a
    domain can move from a purged host to a declared one).
  - Declared hosts are checked together before anything is written; a domain declared twice is an error.
  - A host nginx refuses (NPM saves it, then sets C(meta.nginx_online=false) and stops serving it) does not stop
    the others - the task fails at the end naming each such host and nginx's message, and the next run saves those
    hosts again (see M(selfhosted.platform.npm_proxy_host)).
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
extends_documentation_fragment:
  - selfhosted.platform.npm
requirements:
  - Nginx Proxy Manager 2.12 or newer reachable from where the module runs.
attributes:
  check_mode:
    description: Reads NPM and reports the changes per host; writes nothing.
    support: full
  diff_mode:
    description: One before/after diff per changed host.
    support: full
options:
  hosts:
    description: The proxy hosts.
    type: list
    elements: dict
    required: true
    suboptions:
      domain_names:
        description: The host's domain names; together they identify the host.
        type: list
        elements: str
        required: true
      state:
        description: V(present), V(enabled), V(disabled) or V(absent), as in M(selfhosted.platform.npm_proxy_host).
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
          - V(new) keeps an attached certificate that covers every domain, else uses an existing one that does and
            that O(hosts[].certificate_reuse) accepts (by default issued Let's Encrypt certificates only), else
            requests a Let's Encrypt certificate for the host's domains (see O(hosts[].new_certificate)). Attaching an
            existing certificate is reported as a warning naming it. When issuance fails, the host NPM already
            created is deleted and the task fails.
        type: raw
      certificate_reuse:
        description:
          - Which existing certificates O(hosts[].certificate=new) may attach instead of requesting one.
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
        description: How a certificate requested by O(hosts[].certificate=new) is obtained.
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
        description: HSTS header. Off unless O(hosts[].ssl_forced). Left alone when omitted.
        type: bool
      hsts_subdomains:
        description: HSTS C(includeSubDomains). Off unless O(hosts[].hsts_enabled). Left alone when omitted.
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
  purge:
    description: Delete the proxy hosts NPM has that O(hosts) does not declare.
    type: bool
    default: false
  certificate_timeout:
    description: Seconds to wait for NPM on a request that makes it obtain a Let's Encrypt certificate.
    type: int
    default: 900
notes:
  - Tested against a fake of NPM's API built from NPM's source (C(tests/fakes/npm_api.py)); its docstring lists its
    known differences.
seealso:
  - module: selfhosted.platform.npm_proxy_host
"""

EXAMPLES = r"""
- name: Seed 003's public sites, nothing else
  selfhosted.platform.npm_proxy_hosts:
    url: http://127.0.0.1:81
    username: ops@example.test
    password: "{{ vault_npm_admin_password }}"
    purge: true
    hosts:
      - domain_names: [app.example.test]
        forward_host: app-web
        forward_port: 3000
        certificate: new
        ssl_forced: true
        http2_support: true
        hsts_enabled: true
        block_exploits: true
      - domain_names: [api.example.test]
        forward_host: app-api
        forward_port: 5001
        certificate: {match: api.example.test}
        ssl_forced: true
        allow_websocket_upgrade: true
      - domain_names: [legacy.example.test]
        state: disabled
"""

RETURN = r"""
hosts:
  description: One entry per declared host, then one per purged host.
  returned: always
  type: list
  elements: dict
  contains:
    domain_names:
      description: The host's domains.
      type: list
      elements: str
    id:
      description: NPM's id of the host (none for a host still to be created in check mode).
      type: int
    action:
      description: create, update, enable, disable, delete or unchanged.
      type: str
    changes:
      description: Field changes, with old and new values.
      type: list
      elements: str
    changed:
      description: Whether this host changed.
      type: bool
    nginx_online:
      description: V(false) for a host NPM saved but nginx refused (not served); absent otherwise.
      type: bool
      returned: when nginx refused the host
    nginx_err:
      description: nginx's message for a refused host.
      type: str
      returned: when nginx refused the host
  sample: [{"domain_names": ["app.example.test"], "id": 4, "action": "update", "changed": true,
            "changes": ["forward_port: 3000 -> 3001"]}]
summary:
  description: Number of hosts per action.
  returned: success
  type: dict
  sample: {"create": 0, "update": 1, "enable": 0, "disable": 0, "delete": 0, "unchanged": 20}
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
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_proxy_host import HOST_SPEC, run_proxy_hosts


def main():
    argument_spec = connection_spec()
    argument_spec.update(
        hosts=dict(type="list", elements="dict", required=True, options=HOST_SPEC),
        purge=dict(type="bool", default=False),
        certificate_timeout=dict(type="int", default=900),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run(module, run_proxy_hosts)


if __name__ == "__main__":
    main()
