# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx router's routes, name-based sites and TLS (roles/proxy, mode nginx): checked and planned in one place.

The router has always had one server block answering on port 80 for every name, with the routes of
``proxy_nginx_routes``. ``proxy_nginx_sites`` adds server blocks chosen by the request's host name, each with its own
routes and, optionally, TLS from a certificate and key the inventory gives (PEM, the key from vault):

  - :func:`problems` - everything wrong with the routes, the sites and the ports at once, each naming the option (the
    role asserts none; site.yml's preflight reports them before any host is touched);
  - :func:`plan` - what the template and the tasks render: the routes of each server block with their htpasswd file
    names, each site's certificate files named by their content, and whether the router publishes TLS at all.

A certificate and its key are written as ``<first server name>.<12 hex digits of the SHA-256 of both>.crt/.key``: a
renewed certificate is a new file that the new configuration names, so ``nginx -t`` validates configuration and
certificate together before either is live, and a reload switches both at once.

A route with ``resolve: true`` names its upstream through a variable, so nginx asks Docker's DNS
(``proxy_nginx_resolver``) at request time instead of once at (re)load: the addresses of a Swarm service's tasks
change with every rolling update and scaling, and a router whose upstream has no task at that moment still starts.

Pure functions, no I/O and no Ansible imports (the filter plugin nginx_router.py exposes them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

ROUTE_KINDS = ("upstream", "alias", "return")
MATCHES = ("prefix", "exact", "regex")
HTTP_MODES = ("redirect", "serve")
# An upstream that can be resolved at request time: scheme, host and port, no URI (a URI with a variable in
# proxy_pass would replace the whole request URI).
RESOLVABLE = re.compile(r"^(https?)://([A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?$")
SERVER_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
PEM_CERT = "-----BEGIN CERTIFICATE-----"
PEM_KEY = re.compile(r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----")
TLS_PORT = 443


class RouterError(ValueError):
    """Routes, sites or ports the router cannot serve; the message lists every problem."""


def _md5(text):
    # Ansible's hash('md5') of the same text: the htpasswd files keep the names they always had.
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _route_problems(routes, where):
    out = []
    if not isinstance(routes, list):
        return ["%s: expected a list of routes, got %r" % (where, routes)]
    seen = set()
    for i, route in enumerate(routes):
        at = "%s[%d]" % (where, i)
        if not isinstance(route, Mapping):
            out.append("%s: a route must be a dict, got %r" % (at, route))
            continue
        path = route.get("path")
        if not path or not isinstance(path, str):
            out.append("%s: a route needs a path" % at)
        elif path in seen:
            out.append("%s: the path %s is routed twice" % (at, path))
        else:
            seen.add(path)
        at = "%s (%s)" % (at, path) if isinstance(path, str) and path else at
        kinds = [k for k in ROUTE_KINDS if route.get(k) not in (None, "")]
        if len(kinds) != 1:
            out.append("%s: give exactly one of upstream, alias or return, got %s"
                       % (at, ", ".join(kinds) if kinds else "none"))
        if route.get("match", "prefix") not in MATCHES:
            out.append("%s: match must be one of %s, got %r" % (at, ", ".join(MATCHES), route.get("match")))
        auth = route.get("auth")
        if auth is not None:
            users = auth.get("users") if isinstance(auth, Mapping) else None
            if not isinstance(users, list) or not users or not all(
                    isinstance(u, Mapping) and u.get("name") and u.get("password") not in (None, "") for u in users):
                out.append("%s: auth.users must be a list of {name, password}, at least one" % at)
        if route.get("resolve"):
            if route.get("upstream") in (None, ""):
                out.append("%s: resolve needs an upstream" % at)
            elif not RESOLVABLE.match(str(route["upstream"])):
                out.append("%s: resolve needs an upstream of the form http://name:port without a path, got %s"
                           % (at, route["upstream"]))
    return out


def _publishes(ports, target):
    """Whether compose PORTS publish the container port TARGET (short or long form)."""
    for entry in ports or []:
        if isinstance(entry, Mapping):
            if str(entry.get("target")) == str(target):
                return True
            continue
        text = str(entry).partition("/")[0]
        if text.rsplit(":", 1)[-1] == str(target):
            return True
    return False


def problems(routes=None, sites=None, ports=None, require_routes=True):
    """Every problem of the default server's ROUTES, the SITES and, when a site has TLS, the router's PORTS; with
    REQUIRE_ROUTES also a router with nothing to route (the role's check; the preflight leaves that one to it)."""
    routes = [] if routes is None else routes
    sites = [] if sites is None else sites
    out = _route_problems(routes, "proxy_nginx_routes")
    if not isinstance(sites, list):
        return out + ["proxy_nginx_sites: expected a list of sites, got %r" % (sites,)]
    if require_routes and not routes and not sites:
        out.append("proxy_nginx_routes: the router has nothing to route - declare routes or proxy_nginx_sites")
    names = {}
    tls = False
    for i, site in enumerate(sites):
        at = "proxy_nginx_sites[%d]" % i
        if not isinstance(site, Mapping):
            out.append("%s: a site must be a dict, got %r" % (at, site))
            continue
        server_names = site.get("server_names")
        if not isinstance(server_names, list) or not server_names:
            out.append("%s: server_names must be a non-empty list of host names" % at)
            server_names = []
        for name in server_names:
            if not isinstance(name, str) or not SERVER_NAME.match(name):
                out.append("%s: %r is not a host name nginx can match exactly (or *.domain)" % (at, name))
            elif name.lower() in names:
                out.append("%s: %s is already served by proxy_nginx_sites[%d]" % (at, name, names[name.lower()]))
            else:
                names[name.lower()] = i
        if server_names and isinstance(server_names[0], str):
            at = "%s (%s)" % (at, server_names[0])
        site_routes = site.get("routes")
        if not site_routes:
            out.append("%s: routes must be a non-empty list" % at)
        else:
            out.extend(_route_problems(site_routes, at + ".routes"))
        http = site.get("http", "redirect")
        if http not in HTTP_MODES:
            out.append("%s: http must be redirect or serve, got %r" % (at, http))
        cert = site.get("tls")
        if cert is None:
            if http == "redirect" and "http" in site:
                out.append("%s: http redirect needs tls (without it the site is served on port 80)" % at)
            continue
        tls = True
        if not isinstance(cert, Mapping):
            out.append("%s: tls must be a dict {certificate, key}" % at)
            continue
        if PEM_CERT not in str(cert.get("certificate") or ""):
            out.append("%s: tls.certificate must be a PEM certificate (%s ...), the server's first" % (at, PEM_CERT))
        if not PEM_KEY.search(str(cert.get("key") or "")):
            out.append("%s: tls.key must be a PEM private key (the value is not shown)" % at)
        elif "ENCRYPTED" in str(cert.get("key")):
            out.append("%s: tls.key is encrypted; nginx cannot ask for its passphrase" % at)
    if tls and not _publishes(ports, TLS_PORT):
        out.append("proxy_nginx_ports: a site has tls, but no port publishes the router's %d (add \"443:443\")"
                   % TLS_PORT)
    return out


def tls_name(site):
    """The base name of SITE's certificate and key files: its first server name and 12 hex digits of their content."""
    digest = hashlib.sha256((site["tls"]["certificate"].strip() + "\n" + site["tls"]["key"].strip()).encode("utf-8"))
    return "%s.%s" % (site["server_names"][0].replace("*", "_"), digest.hexdigest()[:12])


def _planned_routes(routes, prefix):
    out = []
    for route in routes or []:
        item = dict(route)
        item["auth_file"] = _md5(prefix + route["path"])
        if route.get("resolve"):
            scheme, host, port = RESOLVABLE.match(str(route["upstream"])).groups()
            item["resolve_host"] = host
            item["resolve_pass"] = "%s://$selfhosted_upstream%s" % (scheme, ":" + port if port else "")
        out.append(item)
    return out


def plan(routes=None, sites=None, ports=None):
    """What the router renders: ``default_routes`` (the port-80 catch-all server's), ``sites`` (each with
    ``server_names``, ``routes``, ``http``, ``directives``, ``tls_name`` or None), ``auth_routes`` (every route with
    basic auth and its ``auth_file``), ``tls_files`` (``{name, content, key}`` per certificate and key file; the
    keys' contents are secrets), ``tls`` (whether any site has TLS). Raises RouterError listing every problem."""
    found = problems(routes, sites, ports)
    if found:
        raise RouterError("; ".join(found))
    default_routes = _planned_routes(routes, "")
    planned, files = [], []
    for site in sites or []:
        name = tls_name(site) if site.get("tls") else None
        # The htpasswd file of a site's route is named by its first server name and path (paths repeat across sites).
        site_routes = _planned_routes(site["routes"], site["server_names"][0] + " ")
        planned.append({"server_names": list(site["server_names"]), "routes": site_routes,
                        "http": site.get("http", "redirect") if name else "serve",
                        "directives": list(site.get("directives") or []),
                        "client_max_body_size": site.get("client_max_body_size"), "tls_name": name})
        if name:
            files.append({"name": name + ".crt", "content": site["tls"]["certificate"].strip() + "\n", "key": False})
            files.append({"name": name + ".key", "content": site["tls"]["key"].strip() + "\n", "key": True})
    auth = [r for r in default_routes + [r for s in planned for r in s["routes"]] if r.get("auth") is not None]
    return {"default_routes": default_routes, "sites": planned, "auth_routes": auth, "tls_files": files,
            "tls": bool(files)}
