# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of npm_proxy_host and npm_proxy_hosts: Nginx Proxy Manager proxy hosts as code.

A proxy host is identified by its set of domain names (lower-cased, order-free). A run reads the server once
(``GET /api/nginx/proxy-hosts?expand=certificate,access_list``), and the certificate and access-list lists only when
a declared reference cannot be settled from that answer; it compares every declared field with the stored one
after applying the server's own normalisation, and only then writes. So a second run reads and changes nothing,
whatever the number of hosts.

The server's normalisation (NPM ``internal/host.js`` ``cleanSslHstsData``, ``models/proxy_host.js``): domain
names sorted; no certificate => ``ssl_forced`` and ``http2_support`` off; ``ssl_forced`` off => ``hsts_enabled`` off
=> ``hsts_subdomains`` off. A declared value the server would drop is reported as a warning, never as a change
that comes back on every run.

nginx may refuse what NPM stored (a bad ``advanced_config``, a location upstream that does not resolve, a custom
certificate whose key does not match): NPM still answers 201/200, then sets ``meta.nginx_online: false`` with
nginx's message in ``meta.nginx_err``, removes the host's conf file and stops serving it. The PUT answer carries
that ``meta``, the POST answer does not (``meta: {}``): a created host is read back. Such a host fails the task,
naming its domains and nginx's message; the row stays, and an offline (enabled) host is drift the next run repairs
by saving it again (a PUT), failing again while nginx still refuses it.

``certificate: new`` asks NPM for a Let's Encrypt certificate (``certificate_id: "new"``) unless a certificate
covering every domain of the host is attached or available; which existing certificates count is
``certificate_reuse``: ``letsencrypt`` (default; issued Let's Encrypt certificates only, never a custom one such as
a self-signed wildcard), ``any``, or ``never`` (only the Let's Encrypt certificate already attached). Attaching an
existing certificate is reported as a warning naming it. NPM creates the host before requesting the certificate and
keeps it when issuance fails; the module then deletes that half-created host (and the failed certificate row)
and fails. NPM also drops ``ssl_forced``/``http2_support``/HSTS on a host created with ``"new"`` (they are cleaned
while the host has no certificate yet), so the module re-applies them after the certificate is attached.
"""

from __future__ import annotations

import re

from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import NpmError, Outcome, option_of

DOMAIN_RE = re.compile(r"^[^&| @!#%^();:/\\}{=+?<>,~`'\"]+$")
BOOL_FIELDS = ("ssl_forced", "http2_support", "hsts_enabled", "hsts_subdomains", "block_exploits", "caching_enabled",
               "allow_websocket_upgrade", "trust_forwarded_proto")
COMPARED = ("domain_names", "forward_scheme", "forward_host", "forward_port", "certificate_id", "access_list_id",
            "ssl_forced", "http2_support", "hsts_enabled", "hsts_subdomains", "block_exploits", "caching_enabled",
            "allow_websocket_upgrade", "trust_forwarded_proto", "advanced_config", "locations")
CREATE_DEFAULTS = {"forward_scheme": "http", "certificate_id": 0, "access_list_id": 0, "ssl_forced": False,
                   "http2_support": False, "hsts_enabled": False, "hsts_subdomains": False, "block_exploits": False,
                   "caching_enabled": False, "allow_websocket_upgrade": False, "trust_forwarded_proto": False,
                   "advanced_config": "", "locations": []}
OPTION_OF_FIELD = {"certificate_id": "certificate", "access_list_id": "access_list"}
NONE_WORDS = ("", "none", "0")

# Module options of one host (npm_proxy_host top level, npm_proxy_hosts hosts[] items).
LOCATION_SPEC = dict(
    path=dict(type="str", required=True),
    forward_scheme=dict(type="str", default="http", choices=["http", "https"]),
    forward_host=dict(type="str", required=True),
    forward_port=dict(type="int", required=True),
    forward_path=dict(type="str", default=""),
    advanced_config=dict(type="str", default=""),
)
NEW_CERTIFICATE_SPEC = dict(
    email=dict(type="str"),
    dns_provider=dict(type="str"),
    dns_credentials=dict(type="str", no_log=True),
    propagation_seconds=dict(type="int"),
)
CERTIFICATE_REUSE = ("letsencrypt", "any", "never")
HOST_SPEC = dict(
    domain_names=dict(type="list", elements="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent", "enabled", "disabled"]),
    forward_scheme=dict(type="str", choices=["http", "https"]),
    forward_host=dict(type="str"),
    forward_port=dict(type="int"),
    certificate=dict(type="raw"),
    new_certificate=dict(type="dict", options=NEW_CERTIFICATE_SPEC),
    certificate_reuse=dict(type="str", default="letsencrypt", choices=list(CERTIFICATE_REUSE)),
    ssl_forced=dict(type="bool"),
    http2_support=dict(type="bool"),
    hsts_enabled=dict(type="bool"),
    hsts_subdomains=dict(type="bool"),
    block_exploits=dict(type="bool"),
    caching_enabled=dict(type="bool"),
    allow_websocket_upgrade=dict(type="bool"),
    trust_forwarded_proto=dict(type="bool"),
    access_list=dict(type="raw"),
    advanced_config=dict(type="str"),
    locations=dict(type="list", elements="dict", options=LOCATION_SPEC),
)


def as_bool(value):
    """NPM booleans: true/false, or 0/1 from older releases."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def as_int(value, default=0):
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def domain_key(names):
    return tuple(sorted({(n or "").strip().lower() for n in names or []}))


def covers(cert_domains, domain):
    """True when a certificate for cert_domains is valid for domain (exact or one-label wildcard)."""
    domain = domain.lower()
    for raw in cert_domains or []:
        name = (raw or "").lower()
        if name == domain:
            return True
        if name.startswith("*.") and domain.endswith(name[1:]) and "." not in domain[:-len(name) + 1]:
            return True
    return False


def covers_all(cert_domains, domains):
    return bool(domains) and all(covers(cert_domains, d) for d in domains)


def issued(cert):
    """False for a Let's Encrypt row certbot never filled (its expiry never moved past its creation)."""
    return cert.get("provider") != "letsencrypt" or (cert.get("expires_on") or "") > (cert.get("created_on") or "")


def offline(row):
    """An enabled host whose last config nginx refused (NPM: meta.nginx_online false)."""
    meta = (row or {}).get("meta")
    return bool(row) and as_bool(row.get("enabled", True)) and isinstance(meta, dict) and \
        meta.get("nginx_online") is False


def nginx_message(row):
    """nginx's own lines of meta.nginx_err (the [emerg] ones), without the command NPM ran."""
    text = str(((row or {}).get("meta") or {}).get("nginx_err") or "").strip()
    lines = [line.strip() for line in text.splitlines() if "[emerg]" in line or "[crit]" in line]
    return "; ".join(lines) if lines else (text or "no message")


class NginxRejected(NpmError):
    """NPM saved the host but nginx refused its configuration: the host is not served."""


# ---------------------------------------------------------------------------------------------
# Input: validation and normalisation of one declared host
# ---------------------------------------------------------------------------------------------

def normalize_location(item, where):
    path = item.get("path")
    if not isinstance(path, str) or not path.strip():
        raise NpmError("%s.path: must not be empty" % where)
    port = item.get("forward_port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise NpmError("%s.forward_port: %r is not a port (1-65535)" % (where, port))
    host = item.get("forward_host")
    if not isinstance(host, str) or not host.strip() or len(host) > 255 or re.search(r"\s", host):
        raise NpmError("%s.forward_host: %r is not a host name or address" % (where, host))
    scheme = item.get("forward_scheme") or "http"
    if scheme not in ("http", "https"):
        raise NpmError("%s.forward_scheme: %r is not http or https" % (where, scheme))
    return {"path": path, "forward_scheme": scheme, "forward_host": host, "forward_port": port,
            "forward_path": item.get("forward_path") or "", "advanced_config": item.get("advanced_config") or ""}


def parse_certificate(value, where):
    """The certificate option -> ('keep', None) | ('none', None) | ('id', n) | ('new', None) | ('match', domain)."""
    if value is None:
        return ("keep", None)
    if value is False or (isinstance(value, str) and value.strip().lower() in NONE_WORDS) or value == 0:
        return ("none", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return ("id", value)
    if isinstance(value, str) and value.strip().isdigit():
        return ("id", int(value.strip()))
    if isinstance(value, str) and value.strip().lower() == "new":
        return ("new", None)
    if isinstance(value, dict) and set(value) <= {"match", "new_if_missing"}:
        match = value.get("match")
        if match is not None and (not isinstance(match, str) or not DOMAIN_RE.match(match.strip())):
            raise NpmError("%s.match: %r is not a domain name" % (where, match))
        return ("match", (match.strip().lower() if match else None, bool(value.get("new_if_missing"))))
    raise NpmError("%s: %r is not a certificate id, 'none', 'new' or {match: <domain>, new_if_missing: <bool>}"
                   % (where, value))


def parse_access_list(value, where):
    """The access_list option -> ('keep', None) | ('none', None) | ('id', n) | ('name', name)."""
    if value is None:
        return ("keep", None)
    if value is False or value == 0 or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return ("none", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return ("id", value)
    if isinstance(value, str) and value.strip().isdigit():
        return ("id", int(value.strip()))
    if isinstance(value, str) and value.strip():
        return ("name", value.strip())
    raise NpmError("%s: %r is not an access list name, id or 'none'" % (where, value))


def validate_host(p, prefix=""):
    """One declared host (module params or a hosts[] item) -> a normalised spec; NpmError names the option."""
    names = []
    for index, raw in enumerate(p.get("domain_names") or []):
        name = (raw or "").strip().lower() if isinstance(raw, str) else raw
        if not isinstance(name, str) or not name or not DOMAIN_RE.match(name):
            raise NpmError("%sdomain_names[%d]: %r is not a domain name" % (prefix, index, raw))
        if name not in names:
            names.append(name)
    if not names:
        raise NpmError("%sdomain_names: at least one domain name is required" % prefix)
    if len(names) > 100:
        raise NpmError("%sdomain_names: NPM takes at most 100 names per host" % prefix)
    spec = {"domain_names": sorted(names), "state": p.get("state") or "present"}
    port = p.get("forward_port")
    if port is not None and (isinstance(port, bool) or not 1 <= port <= 65535):
        raise NpmError("%sforward_port: %r is not a port (1-65535)" % (prefix, port))
    host = p.get("forward_host")
    if host is not None and (not host.strip() or len(host) > 255 or re.search(r"\s", host)):
        raise NpmError("%sforward_host: %r is not a host name or address" % (prefix, host))
    for key in ("forward_scheme", "forward_host", "forward_port", "advanced_config", *BOOL_FIELDS):
        spec[key] = p.get(key)
    if spec["forward_scheme"] not in (None, "http", "https"):
        raise NpmError("%sforward_scheme: %r is not http or https" % (prefix, spec["forward_scheme"]))
    spec["locations"] = None
    if p.get("locations") is not None:
        spec["locations"] = [normalize_location(item, "%slocations[%d]" % (prefix, i))
                             for i, item in enumerate(p["locations"])]
    spec["certificate"] = parse_certificate(p.get("certificate"), prefix + "certificate")
    spec["access_list"] = parse_access_list(p.get("access_list"), prefix + "access_list")
    spec["certificate_reuse"] = p.get("certificate_reuse") or "letsencrypt"
    if spec["certificate_reuse"] not in CERTIFICATE_REUSE:
        raise NpmError("%scertificate_reuse: %r is not one of %s" % (prefix, spec["certificate_reuse"],
                                                                     ", ".join(CERTIFICATE_REUSE)))
    spec["new_certificate"] = dict(p.get("new_certificate") or {})
    nc = spec["new_certificate"]
    if nc.get("dns_provider") and not nc.get("dns_credentials"):
        raise NpmError("%snew_certificate.dns_credentials: required with new_certificate.dns_provider" % prefix)
    if nc.get("propagation_seconds") is not None and nc["propagation_seconds"] < 0:
        raise NpmError("%snew_certificate.propagation_seconds: must be 0 or more" % prefix)
    spec["prefix"] = prefix
    return spec


# ---------------------------------------------------------------------------------------------
# Server rows as comparable views
# ---------------------------------------------------------------------------------------------

def current_view(row):
    """A proxy host row -> the compared fields, normalised (booleans, ids, nulls)."""
    view = {"domain_names": sorted((d or "").lower() for d in row.get("domain_names") or []),
            "forward_scheme": row.get("forward_scheme") or "http", "forward_host": row.get("forward_host") or "",
            "forward_port": as_int(row.get("forward_port")), "certificate_id": as_int(row.get("certificate_id")),
            "access_list_id": as_int(row.get("access_list_id")), "advanced_config": row.get("advanced_config") or "",
            "locations": [normalize_row_location(item) for item in row.get("locations") or []]}
    for key in BOOL_FIELDS:
        view[key] = as_bool(row.get(key))
    return view


def normalize_row_location(item):
    return {"path": item.get("path") or "", "forward_scheme": item.get("forward_scheme") or "http",
            "forward_host": item.get("forward_host") or "", "forward_port": as_int(item.get("forward_port")),
            "forward_path": item.get("forward_path") or "", "advanced_config": item.get("advanced_config") or ""}


def clean_ssl_hsts(view):
    """NPM's cleanSslHstsData on a view (certificate 'new' counts as a certificate)."""
    out = dict(view)
    if not out.get("certificate_id"):
        out["ssl_forced"] = False
        out["http2_support"] = False
    if not out.get("ssl_forced"):
        out["hsts_enabled"] = False
    if not out.get("hsts_enabled"):
        out["hsts_subdomains"] = False
    return out


def describe(field, before, after):
    if field in ("advanced_config",):
        return "%s (changed)" % field
    if field == "locations":
        return "locations (%d -> %d entries)" % (len(before or []), len(after or []))
    return "%s: %s -> %s" % (field, shown(before), shown(after))


def shown(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[%s]" % ", ".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------
# The reconciler: one read of the server, plans for any number of hosts, then the writes
# ---------------------------------------------------------------------------------------------

class Reconciler:
    """Plans and applies declared hosts against one listing of the server."""

    def __init__(self, client, check_mode=False, diff_mode=False, certificate_timeout=None):
        self.client = client
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.certificate_timeout = certificate_timeout
        self.warnings = []
        self.wrote = False
        self._hosts = None
        self._certs = None
        self._acls = None

    # -- lazy reads -----------------------------------------------------------------------------

    def hosts(self, refresh=False):
        if self._hosts is None or refresh:
            self._hosts = self.client.proxy_hosts()
        return self._hosts

    def certificates(self):
        if self._certs is None:
            self._certs = self.client.certificates()
        return self._certs

    def access_lists(self):
        if self._acls is None:
            self._acls = self.client.access_lists()
        return self._acls

    # -- lookups --------------------------------------------------------------------------------

    def find(self, spec):
        """(exact match or None, [other hosts sharing a domain])."""
        key = tuple(spec["domain_names"])
        exact = [h for h in self.hosts() if domain_key(h.get("domain_names")) == key]
        if len(exact) > 1:
            ids = ", ".join(str(h["id"]) for h in exact)
            raise NpmError("%sdomain_names: %d proxy hosts have exactly these domains (ids %s); NPM should not "
                           "allow this. Delete the extra ones." % (spec["prefix"], len(exact), ids))
        wanted = set(key)
        others = [h for h in self.hosts() if h not in exact and wanted & set(domain_key(h.get("domain_names")))]
        return (exact[0] if exact else None), others

    def resolve_certificate(self, spec, row):
        """The certificate_id to declare: an int, 'new', or None (leave alone)."""
        kind, value = spec["certificate"]
        where = spec["prefix"] + "certificate"
        if kind == "keep":
            return None
        if kind == "none":
            return 0
        attached = row.get("certificate") if row else None
        if kind == "id":
            if attached and as_int(attached.get("id")) == value:
                return value
            if not any(as_int(c.get("id")) == value for c in self.certificates()):
                raise NpmError("%s: NPM has no certificate with id %d" % (where, value))
            return value
        domains = spec["domain_names"]
        if kind == "new":
            return self.resolve_new(spec, attached)
        match, new_if_missing = value
        wanted = [match] if match else domains
        if attached and covers_all(attached.get("domain_names"), wanted):
            return as_int(attached.get("id"))
        # a Let's Encrypt row whose expiry never moved past its creation is one certbot failed to fill
        candidates = [c for c in self.certificates() if covers_all(c.get("domain_names"), wanted) and issued(c)]
        if candidates:
            best = max(candidates, key=lambda c: (c.get("expires_on") or "", as_int(c.get("id"))))
            return as_int(best.get("id"))
        if new_if_missing:
            return "new"
        raise NpmError("%s: no NPM certificate covers %s; upload or request one (npm_certificate), or use "
                       "certificate: new" % (where, ", ".join(wanted)))

    def resolve_new(self, spec, attached):
        """certificate: new -> the attached or an existing certificate certificate_reuse accepts, else 'new'."""
        policy = spec["certificate_reuse"]
        domains = spec["domain_names"]

        def acceptable(cert):
            if not covers_all(cert.get("domain_names"), domains) or not issued(cert):
                return False
            return policy == "any" or cert.get("provider") == "letsencrypt"

        if attached and acceptable(attached):
            return as_int(attached.get("id"))
        if policy == "never":
            return "new"
        candidates = [c for c in self.certificates() if acceptable(c)]
        if not candidates:
            return "new"
        best = max(candidates, key=lambda c: (c.get("expires_on") or "", as_int(c.get("id"))))
        self.warnings.append(
            "%scertificate: new reuses NPM's certificate #%s %r (%s, for %s, expires %s) for %s instead of requesting "
            "one; set certificate_reuse: never to get a certificate of its own" % (
                spec["prefix"], best.get("id"), best.get("nice_name") or "",
                "Let's Encrypt" if best.get("provider") == "letsencrypt" else "custom",
                ", ".join(best.get("domain_names") or []), best.get("expires_on"), ", ".join(domains)))
        return as_int(best.get("id"))

    def resolve_access_list(self, spec, row):
        kind, value = spec["access_list"]
        where = spec["prefix"] + "access_list"
        if kind == "keep":
            return None
        if kind == "none":
            return 0
        attached = row.get("access_list") if row else None
        if kind == "id":
            if attached and as_int(attached.get("id")) == value:
                return value
            if not any(as_int(a.get("id")) == value for a in self.access_lists()):
                raise NpmError("%s: NPM has no access list with id %d" % (where, value))
            return value
        if attached and attached.get("name") == value:
            return as_int(attached.get("id"))
        found = [a for a in self.access_lists() if a.get("name") == value]
        if len(found) > 1:
            raise NpmError("%s: %d access lists are named %r (ids %s); use the id" % (
                where, len(found), value, ", ".join(str(a["id"]) for a in found)))
        if not found:
            raise NpmError("%s: NPM has no access list named %r (create it with npm_access_list first)"
                           % (where, value))
        return as_int(found[0].get("id"))

    # -- planning -------------------------------------------------------------------------------

    def plan(self, spec):
        """{'spec', 'row', 'action', 'changes', 'payload', 'before', 'after', 'enable'} for one declared host."""
        row, others = self.find(spec)
        prefix = spec["prefix"]
        plan = {"spec": spec, "row": row, "changes": [], "payload": {}, "enable": None, "before": None,
                "after": None}
        if spec["state"] == "absent":
            plan["action"] = "delete" if row else "unchanged"
            if row:
                plan["changes"].append("proxy host %s (delete)" % ", ".join(spec["domain_names"]))
                plan["before"] = dict(current_view(row), enabled=as_bool(row.get("enabled")), id=row.get("id"))
                plan["after"] = {}
            return plan
        if others:
            other = others[0]
            taken = sorted(set(spec["domain_names"]) & set(domain_key(other.get("domain_names"))))
            raise NpmError("%sdomain_names: %s already belongs to proxy host #%s (%s). A host is identified by its "
                           "exact set of domains: declare that host with all its domains, or remove it first "
                           "(state: absent with its domain_names)" % (
                               prefix, ", ".join(taken), other.get("id"), ", ".join(other.get("domain_names") or [])))
        if row is None:
            for opt in ("forward_host", "forward_port"):
                if spec.get(opt) is None:
                    raise NpmError("%s%s: required to create the proxy host %s" % (
                        prefix, opt, ", ".join(spec["domain_names"])))
        self.check_version_fields(spec)
        have = current_view(row) if row else dict(CREATE_DEFAULTS, domain_names=spec["domain_names"],
                                                  forward_host="", forward_port=0)
        want = dict(have)
        want["domain_names"] = spec["domain_names"]
        for key in ("forward_scheme", "forward_host", "forward_port", "advanced_config", "locations", *BOOL_FIELDS):
            if spec.get(key) is not None:
                want[key] = spec[key]
        if not self.client.supports_trust_forwarded_proto:
            want.pop("trust_forwarded_proto", None)
            have.pop("trust_forwarded_proto", None)
        cert = self.resolve_certificate(spec, row)
        if cert is not None:
            want["certificate_id"] = cert
        acl = self.resolve_access_list(spec, row)
        if acl is not None:
            want["access_list_id"] = acl
        effective = clean_ssl_hsts(want)
        self.warn_dropped(spec, want, effective)
        managed = self.managed_fields(spec, row)
        fields = [f for f in COMPARED if f in managed and f in effective and effective[f] != have.get(f)]
        plan["action"] = "create" if row is None else ("update" if fields else "unchanged")
        if row is None:
            plan["changes"].append("proxy host %s (create)" % ", ".join(spec["domain_names"]))
            plan["payload"] = dict((f, effective[f]) for f in COMPARED if f in effective and f in managed)
            plan["payload"].update(domain_names=spec["domain_names"], forward_scheme=effective["forward_scheme"],
                                   forward_host=effective["forward_host"], forward_port=effective["forward_port"])
        else:
            plan["changes"] += [describe(OPTION_OF_FIELD.get(f, f), have.get(f), effective[f]) for f in fields]
            plan["payload"] = dict((f, effective[f]) for f in fields)
        if effective.get("certificate_id") == "new":
            plan["payload"]["meta"] = self.new_certificate_meta(spec)
        enabled = as_bool(row.get("enabled")) if row else True
        if spec["state"] == "enabled" and not enabled:
            plan["enable"] = True
            plan["changes"].append("enable")
        elif spec["state"] == "disabled" and enabled:
            plan["enable"] = False
            plan["changes"].append("disable")
        if plan["enable"] is not None and plan["action"] == "unchanged":
            plan["action"] = "enable" if plan["enable"] else "disable"
        plan["resave"] = bool(row) and offline(row) and spec["state"] != "disabled" and not plan["enable"]
        if plan["resave"]:
            plan["changes"].append("nginx_online: false -> true (save again; nginx refused the last config: %s)"
                                   % nginx_message(row))
            if not plan["payload"]:
                plan["payload"] = {"domain_names": list(row.get("domain_names") or spec["domain_names"])}
            if plan["action"] == "unchanged":
                plan["action"] = "update"
        if self.diff_mode:
            shown_fields = [f for f in COMPARED if f in managed and f in effective]
            before = dict((f, have.get(f)) for f in shown_fields) if row else {}
            after = dict((f, effective[f]) for f in shown_fields)
            if row:
                before["enabled"] = enabled
            after["enabled"] = enabled if plan["enable"] is None else plan["enable"]
            if plan["resave"]:
                before["nginx_online"], after["nginx_online"] = False, True
            plan["before"], plan["after"] = before, after
        plan["effective"] = effective
        return plan

    def managed_fields(self, spec, row):
        """The fields this declaration manages: those it sets; on creation, every field."""
        managed = {"domain_names"}
        for key in ("forward_scheme", "forward_host", "forward_port", "advanced_config", "locations", *BOOL_FIELDS):
            if spec.get(key) is not None or row is None:
                managed.add(key)
        if spec["certificate"][0] != "keep" or row is None:
            managed.add("certificate_id")
        if spec["access_list"][0] != "keep" or row is None:
            managed.add("access_list_id")
        if spec["certificate"][0] != "keep":  # the certificate decides what survives of SSL and HSTS
            managed.update(("ssl_forced", "http2_support", "hsts_enabled", "hsts_subdomains"))
        if not self.client.supports_trust_forwarded_proto:
            managed.discard("trust_forwarded_proto")
        return managed

    def check_version_fields(self, spec):
        if spec.get("trust_forwarded_proto") and not self.client.supports_trust_forwarded_proto:
            raise NpmError("%strust_forwarded_proto: needs Nginx Proxy Manager 2.14 or newer; this server is %s"
                           % (spec["prefix"], self.client.version_text or "older"))

    def warn_dropped(self, spec, want, effective):
        for key in ("ssl_forced", "http2_support", "hsts_enabled", "hsts_subdomains"):
            if spec.get(key) and not effective.get(key):
                reason = "the host has no certificate" if key in ("ssl_forced", "http2_support") else \
                    ("ssl_forced is off" if key == "hsts_enabled" else "hsts_enabled is off")
                self.warnings.append("%s%s: NPM turns it off because %s; declared true for %s" % (
                    spec["prefix"], key, reason, ", ".join(spec["domain_names"])))

    def new_certificate_meta(self, spec):
        nc = spec["new_certificate"]
        meta = {}
        if self.client.needs_letsencrypt_email:
            if not nc.get("email"):
                raise NpmError("%snew_certificate.email: Nginx Proxy Manager %s needs a Let's Encrypt account email "
                               "to request a certificate" % (spec["prefix"], self.client.version_text))
            meta.update(letsencrypt_email=nc["email"], letsencrypt_agree=True)
        if nc.get("dns_provider"):
            meta.update(dns_challenge=True, dns_provider=nc["dns_provider"],
                        dns_provider_credentials=nc.get("dns_credentials") or "")
            if nc.get("propagation_seconds") is not None:
                meta["propagation_seconds"] = nc["propagation_seconds"]
        else:
            meta["dns_challenge"] = False
        return meta

    # -- applying -------------------------------------------------------------------------------

    def apply(self, plan):
        """Carry out one plan; returns the host row after the change (None when deleted)."""
        row = plan["row"]
        if plan["action"] == "delete":
            self.client.call("DELETE", "/api/nginx/proxy-hosts/%s" % row["id"])
            self.wrote = True
            return None
        if plan["action"] == "create":
            row = self.create(plan)
        elif plan["payload"]:
            row = self.update(plan, row)
        if plan["enable"] is not None:
            self.client.call("POST", "/api/nginx/proxy-hosts/%s/%s" % (row["id"],
                                                                       "enable" if plan["enable"] else "disable"))
            self.wrote = True
            row = dict(row, enabled=plan["enable"])
            if plan["enable"]:  # /enable answers true only: nginx's verdict is in the row
                row = self.client.call("GET", "/api/nginx/proxy-hosts/%s" % row["id"]) or row
        if offline(row):
            spec = plan["spec"]
            raise NginxRejected(
                "%sdomain_names: nginx refused the configuration of proxy host %s (#%s), so NPM saved it but does not "
                "serve it: %s. Check advanced_config, locations (their forward_host must resolve when nginx loads) "
                "and the certificate's key; the next run saves the host again." % (
                    spec["prefix"], ", ".join(spec["domain_names"]), row.get("id"), nginx_message(row)),
                api_message=nginx_message(row))
        return row

    def write(self, method, path, payload, spec):
        timeout = self.certificate_timeout if payload.get("certificate_id") == "new" else None
        try:
            answer = self.client.call(method, path, payload, timeout=timeout) or {}
        except NpmError as exc:
            raise self.explain(exc, spec) from None
        self.wrote = True
        return answer

    def explain(self, exc, spec):
        """A server refusal as a message naming the option."""
        message = exc.api_message or ""
        prefix = spec["prefix"]
        if exc.status == 400 and message.endswith("is already in use"):
            return NpmError("%sdomain_names: NPM refused %s: %s (by another proxy, redirection or 404 host)" % (
                prefix, ", ".join(spec["domain_names"]), message), exc.status, exc.method, exc.path)
        if exc.status == 400 and message.startswith("data"):
            option = option_of(message) or "(host)"
            return NpmError("%s%s: NPM rejected the value (%s): %s" % (prefix, option, exc.path, message), exc.status,
                            exc.method, exc.path)
        return exc

    def create(self, plan):
        spec = plan["spec"]
        payload = dict(plan["payload"])
        new_cert = payload.get("certificate_id") == "new"
        known_hosts = set(h.get("id") for h in self.hosts())
        known_certs = set(c.get("id") for c in self.certificates()) if new_cert else set()
        try:
            row = self.write("POST", "/api/nginx/proxy-hosts", payload, spec)
        except NpmError as exc:
            if not new_cert or exc.status in (400, 401, 403, 404):
                raise
            raise self.cleanup_failed_new(spec, exc, known_hosts, known_certs) from None
        if new_cert:  # NPM cleaned SSL/HSTS while the host had no certificate yet: put them back
            wanted = clean_ssl_hsts(dict(plan["effective"], certificate_id=as_int(row.get("certificate_id"))))
            have = current_view(row)
            fix = dict((f, wanted[f]) for f in ("ssl_forced", "http2_support", "hsts_enabled", "hsts_subdomains")
                       if wanted[f] != have[f])
            if fix:
                return self.write("PUT", "/api/nginx/proxy-hosts/%s" % row["id"], fix, spec)
        # The POST answer is the row as inserted (meta {}): nginx's verdict is in the row read back.
        return self.client.call("GET", "/api/nginx/proxy-hosts/%s" % row["id"]) or row

    def update(self, plan, row):
        spec = plan["spec"]
        payload = dict(plan["payload"])
        new_cert = payload.get("certificate_id") == "new"
        known_certs = set(c.get("id") for c in self.certificates()) if new_cert else set()
        try:
            return self.write("PUT", "/api/nginx/proxy-hosts/%s" % row["id"], payload, spec)
        except NpmError as exc:
            if not new_cert or exc.status in (400, 401, 403, 404):
                raise
            raise self.cleanup_failed_new(spec, exc, None, known_certs) from None

    def cleanup_failed_new(self, spec, exc, known_hosts, known_certs):
        """After a failed 'new' certificate: delete the host NPM created anyway and the failed certificate row."""
        removed = []
        key = tuple(spec["domain_names"])
        if known_hosts is not None:
            for host in self.client.proxy_hosts():
                if host.get("id") not in known_hosts and domain_key(host.get("domain_names")) == key:
                    self.client.call("DELETE", "/api/nginx/proxy-hosts/%s" % host["id"])
                    removed.append("the half-created proxy host #%s" % host["id"])
        for cert in self.client.certificates():
            if cert.get("id") not in known_certs and domain_key(cert.get("domain_names")) == key:
                self.client.call("DELETE", "/api/nginx/certificates/%s" % cert["id"])
                removed.append("the failed certificate #%s" % cert["id"])
        self._hosts = None
        self._certs = None
        detail = exc.api_message or exc.msg
        cleaned = (" Removed %s (NPM creates the host before it requests the certificate and keeps both when "
                   "issuance fails)." % " and ".join(removed)) if removed else ""
        return NpmError("%scertificate: NPM could not obtain a Let's Encrypt certificate for %s (HTTP %s: %s).%s "
                        "Check that the names resolve to this server and port 80 reaches NPM (or use "
                        "new_certificate.dns_provider); npm_certificate shows certbot's own output."
                        % (spec["prefix"], ", ".join(spec["domain_names"]), exc.status, detail, cleaned),
                        exc.status, exc.method, exc.path)


def summary(plan, row=None):
    """The per-host result."""
    spec = plan["spec"]
    out = {"domain_names": spec["domain_names"], "action": plan["action"], "changes": plan["changes"],
           "changed": bool(plan["changes"])}
    target = row if row is not None else plan["row"]
    out["id"] = target.get("id") if target else None
    if target and plan["action"] != "delete":
        out["certificate_id"] = as_int(target.get("certificate_id"))
        out["enabled"] = as_bool(target.get("enabled"))
    if plan.get("before") is not None or plan.get("after") is not None:
        out["diff"] = {"before": plan["before"], "after": plan["after"]}
    return out


def result_row(row):
    """The proxy_host return value."""
    if not row:
        return None
    view = current_view(row)
    view.update(id=row.get("id"), enabled=as_bool(row.get("enabled")))
    if "trust_forwarded_proto" not in row:
        view.pop("trust_forwarded_proto", None)
    return view


# ---------------------------------------------------------------------------------------------
# Module entry points
# ---------------------------------------------------------------------------------------------

def run_proxy_host(client, module):
    p = module.params
    spec = validate_host(p)
    client.health()
    rec = Reconciler(client, module.check_mode, module._diff, p.get("certificate_timeout"))
    result = {"changed": False, "changes": [], "warnings": rec.warnings}
    plan = rec.plan(spec)
    result["changes"] = plan["changes"]
    result["changed"] = bool(plan["changes"])
    result["action"] = plan["action"]
    if module._diff and (plan["before"] is not None or plan["after"] is not None):
        result["diff"] = {"before": plan["before"], "after": plan["after"]}
    row = plan["row"]
    if plan["changes"] and not module.check_mode:
        try:
            row = rec.apply(plan)
        except NpmError as exc:
            raise Outcome(exc.msg, dict(result, changed=rec.wrote)) from None
    result["proxy_host"] = result_row(row) if plan["action"] != "delete" or module.check_mode else None
    return result


def run_proxy_hosts(client, module):
    p = module.params
    specs = []
    seen = {}
    for index, item in enumerate(p.get("hosts") or []):
        spec = validate_host(item, prefix="hosts[%d]." % index)
        for name in spec["domain_names"]:
            if name in seen:
                raise NpmError("hosts[%d].domain_names: %s is also declared in hosts[%d]" % (index, name, seen[name]))
            seen[name] = index
        specs.append(spec)
    client.health()
    rec = Reconciler(client, module.check_mode, module._diff, p.get("certificate_timeout"))
    declared = set(tuple(s["domain_names"]) for s in specs)
    purge = []
    if p.get("purge"):
        for host in rec.hosts():
            if domain_key(host.get("domain_names")) not in declared:
                purge.append({"spec": {"domain_names": list(domain_key(host.get("domain_names"))), "prefix": "purge "},
                              "row": host, "action": "delete",
                              "changes": ["proxy host %s (purge)" % ", ".join(host.get("domain_names") or [])],
                              "payload": {}, "enable": None,
                              "before": dict(current_view(host), id=host.get("id")) if module._diff else None,
                              "after": {} if module._diff else None})
    purged_ids = set(pl["row"]["id"] for pl in purge)
    kept = [h for h in rec.hosts() if h.get("id") not in purged_ids]
    rec._hosts = kept  # planning sees the server as it will be after the purge
    plans = [rec.plan(spec) for spec in specs]
    rec._hosts = kept + [pl["row"] for pl in purge]
    ordered = purge + [pl for pl in plans if pl["action"] == "delete"] + \
        [pl for pl in plans if pl["action"] not in ("delete", "create")] + \
        [pl for pl in plans if pl["action"] == "create"]
    result = {"changed": any(pl["changes"] for pl in ordered), "warnings": rec.warnings}
    summaries = {}
    done = []
    rejected = []
    try:
        for plan in ordered:
            row = None
            if plan["changes"] and not module.check_mode:
                try:
                    row = rec.apply(plan)
                except NginxRejected as exc:  # saved but not served: go on with the others, fail at the end
                    rejected.append(exc.msg)
                    summaries[id(plan)] = dict(summary(plan), nginx_online=False, nginx_err=exc.api_message)
                    done.append(plan)
                    continue
            summaries[id(plan)] = summary(plan, row)
            done.append(plan)
    except NpmError as exc:
        result["hosts"] = [summaries[id(pl)] for pl in done]
        result["changed"] = rec.wrote
        raise Outcome("\n".join([*rejected, exc.msg]), result) from None
    result["hosts"] = [summaries[id(pl)] for pl in plans] + [summaries[id(pl)] for pl in purge]
    result["summary"] = dict((action, sum(1 for s in result["hosts"] if s["action"] == action))
                             for action in ("create", "update", "enable", "disable", "delete", "unchanged"))
    if module._diff:
        result["diff"] = [{"before_header": "proxy host %s" % ", ".join(s["domain_names"]),
                           "after_header": "proxy host %s" % ", ".join(s["domain_names"]),
                           "before": s["diff"]["before"] or {}, "after": s["diff"]["after"] or {}}
                          for s in result["hosts"] if s.get("diff") and s["changed"]]
    for s in result["hosts"]:
        s.pop("diff", None)
    if rejected:
        result["changed"] = rec.wrote
        raise Outcome("%d proxy host(s) not served: %s" % (len(rejected), "\n".join(rejected)), result)
    return result
