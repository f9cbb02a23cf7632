"""Ports 80 and 443 of the NPM stand-in: a reverse proxy that behaves like the nginx configuration Nginx Proxy
Manager generates for the proxy hosts in its database (here the fake API's ``/data/database.json``, re-read when it
changes). Stdlib only (the image has Debian's python3 and no pip), one thread per connection.

What it reproduces, from NPM's templates (``backend/templates/proxy_host.conf``, ``_listen.conf``,
``_certificates.conf``, ``_exploits.conf``, ``_hsts.conf``/``_hsts_map.conf``, ``_forced_ssl.conf``,
``_access.conf``, ``_location.conf``) and includes (``conf.d/include/proxy.conf``, ``force-ssl.conf``,
``block-exploits.conf``, ``letsencrypt-acme-challenge.conf``, ``nginx.conf``), with nginx's own semantics:

- Server selection by ``Host`` (port and trailing dot ignored, case-insensitive) among the hosts nginx serves (the
  state's ``live`` ids, which the fake keeps as NPM's nginx would: ``/disable`` takes a host out, ``PUT
  {"enabled": false}`` does not - BRIEF; a state without ``live`` uses ``enabled``): exact names first, then the
  longest ``*.example.test`` / ``.example.test`` wildcard, then the longest ``www.example.*``. Port 443 only knows
  hosts with a certificate (``_listen.conf`` adds ``listen 443 ssl`` only then). Unknown hosts get NPM's default
  site, as before (see the differences).
- ``proxy_pass $forward_scheme://$server:$port$request_uri`` with proxy.conf's headers: ``Host $host``,
  ``X-Forwarded-Scheme``/``-Proto`` (``$scheme``; with 2.14's ``trust_forwarded_proto`` a client's ``http``/``https``
  is kept), ``X-Forwarded-For $proxy_add_x_forwarded_for``, ``X-Real-IP $remote_addr``, and ``add_header
  X-Served-By $host``. The client's other headers pass; hop-by-hop ones are dropped as nginx does (``Connection:
  close``, no ``Upgrade``/``TE``/``Keep-Alive``/``Expect``). The method, the raw request URI and the body (streamed;
  a chunked body is spooled first so the upstream gets a ``Content-Length``, as nginx buffers it) are kept;
  ``client_max_body_size`` is 2000m (``nginx.conf``) or the advanced config's. Container names resolve through
  Docker's DNS. Upstream unreachable or not resolvable: 502; no answer within 90 s: 504 (nginx's pages).
- ``$remote_addr`` as NPM's ``nginx.conf`` makes it: ``X-Real-IP`` is believed from 10/8, 172.16/12 and
  192.168/16 (``set_real_ip_from``; Docker's published ports arrive from there).
- Forced SSL (``ssl_forced`` with an existing certificate): 301 to ``https://$host$request_uri`` on HTTP, except
  ``/.well-known/acme-challenge/test-challenge`` (force-ssl.conf) and, with ``trust_forwarded_proto``, requests
  that say ``X-Forwarded-Proto: https``. HSTS (``hsts_enabled``, needs forced SSL and a certificate):
  ``Strict-Transport-Security: max-age=63072000; preload`` (``max-age=63072000;includeSubDomains; preload`` with
  ``hsts_subdomains``) on every HTTPS answer (``always``), never over HTTP (the ``map $scheme`` of
  ``_hsts_map.conf``). nginx's ``add_header`` inheritance is kept: a location with its own ``add_header`` (the
  default location and every location that includes proxy.conf add ``X-Served-By``) only sends its own headers.
- Block exploits: every rule of NPM's classic ``block-exploits.conf`` (SQL/file injection, common exploits and spam
  patterns on the query string, the user agents), 403, at server level before the redirect.
- Access lists (``_access.conf``, in the default location and in custom locations): ``allow``/``deny`` rules in
  order, then ``deny all``; basic auth against the list's users (realm "Authorization required"; the fake keeps the
  passwords, as NPM's database does before it writes the htpasswd file); ``satisfy any|all`` with nginx's
  semantics (all: rules then auth, 403/401; any: one of them suffices, 401 wins over 403); without ``pass_auth``
  the ``Authorization`` header is not passed on. A host whose access list does not exist is denied (403).
- Websockets (``allow_websocket_upgrade``): ``Upgrade``/``Connection`` passed on and, on a 101, a two-way tunnel.
- Custom ``locations`` (``_location.conf``): prefix (or ``=``/``^~``/``~``/``~*``) matches, proxied to their own
  ``forward_scheme://forward_host:forward_port[forward_path]`` (a path in ``forward_host`` is split off as NPM
  does; a URI part replaces the matched prefix), with their own headers (``X-Forwarded-For $remote_addr``), the
  host's access list, exploit block, forced SSL, HSTS and websocket settings.
- ``advanced_config``: NPM puts it in the server block and leaves out its own ``location /`` when the text has one.
  The edge interprets this subset of nginx: ``location`` blocks (with ``internal``, ``proxy_pass``,
  ``proxy_set_header``, ``proxy_pass_request_body``, ``proxy_method``, ``auth_request``, ``auth_request_set``,
  ``error_page`` redirects, ``add_header``, ``return``, ``client_max_body_size`` and ``include``s of proxy.conf,
  block-exploits.conf and force-ssl.conf), server-level ``proxy_set_header``/``add_header``/``client_max_body_size``
  and a list of tuning directives it ignores (timeouts, buffers, ...). That covers Authelia's auth_request snippet
  (/tmp/authelia_snippet.md): the subrequest is a GET without body to the internal location's ``proxy_pass`` with
  the client's headers plus that location's ``proxy_set_header``s; 2xx lets the request through with the
  ``auth_request_set`` variables (``$upstream_http_*`` of the auth answer), 401 answers the ``error_page 401 =302
  $redirection_url`` redirect, 403 is 403, anything else (auth server down included) 500. An advanced config with
  another shape (an unknown directive or variable, ``if``, named locations, ...) is ignored: the host is served
  with its default location and the edge logs a warning on stderr.
- Let's Encrypt hosts serve ``/.well-known/acme-challenge/`` from ``/data/letsencrypt-acme-challenge`` (404 when
  absent).

Consequences of nginx's inheritance that the edge reproduces because NPM's nginx has them too: under an
advanced ``location /`` (the Authelia snippet) the host's access list is not applied (``_access.conf`` lives in
the default location only), no HSTS header is sent (proxy.conf's ``add_header X-Served-By`` replaces the server's
``add_header``s) and websocket upgrades do not reach the upstream (the location's ``proxy_set_header``s replace the
server's ``Upgrade``/``Connection``). Forced SSL and the exploit block are server-level and still apply.

Known differences from NPM's nginx:

- TLS: every host is served with the dummy certificate ``/init`` made (``/data/nginx/dummycert.pem``); NPM serves
  the host's own (Let's Encrypt or custom) certificate. SNI plays no part; ``Host`` selects the server.
- HTTP/2 (``http2_support``) is not emulated: HTTP/1.0 and 1.1 only. ``caching_enabled`` (assets.conf's proxy
  cache) is not emulated: every request goes upstream.
- Unknown hosts: HTTP and HTTPS both answer NPM's default page (200, GET/HEAD/POST; 405 otherwise), as the stand-in
  did before; NPM's default HTTPS server answers 444 (closes the connection) or rejects the handshake, and its
  default HTTP server also applies block-exploits.conf.
- NPM defines ``map $scheme $hsts_header`` once per host at http level, so with several hosts the last file's
  ``includeSubDomains`` choice wins for all (fixed in later releases with one variable per host); the edge uses
  each host's own setting.
- ``pass_auth``: NPM releases differ (some templates strip ``Authorization`` when ``pass_auth`` is true, the
  opposite of its meaning); the edge does what the setting says.
- A custom location's URI part replaces the matched prefix of the raw (not decoded) path. Access logs are not
  written to /data/logs.

Environment (the defaults are the container's): NPM_EDGE_BIND (0.0.0.0), NPM_EDGE_HTTP_PORT (80),
NPM_EDGE_HTTPS_PORT (443; for either, 0 picks a free port; the ports are printed on stdout), NPM_EDGE_STATE_FILE
(/data/database.json), NPM_EDGE_CERT / NPM_EDGE_KEY (/data/nginx/dummycert.pem, dummykey.pem),
NPM_EDGE_ACME_ROOT (/data/letsencrypt-acme-challenge), NPM_EDGE_PROXY_TIMEOUT (90 seconds),
NPM_EDGE_REAL_IP_FROM (10.0.0.0/8,172.16.0.0/12,192.168.0.0/16).
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

PAGE = (b"<!doctype html><html><head><title>Default Site</title></head><body><h1>Congratulations!</h1>"
        b"<p>You've successfully started the Nginx Proxy Manager.</p></body></html>\n")

MIB = 1024 * 1024
DEFAULT_MAX_BODY = 2000 * MIB  # nginx.conf: client_max_body_size 2000m
HSTS_MAX_AGE = 63072000
ADD_HEADER_STATUSES = frozenset((200, 201, 204, 206, 301, 302, 303, 304, 307, 308))
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
NGINX_REASONS = {301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
                 308: "Permanent Redirect", 400: "Bad Request", 401: "Authorization Required", 403: "Forbidden",
                 404: "Not Found", 405: "Not Allowed", 413: "Request Entity Too Large",
                 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable",
                 504: "Gateway Time-out"}
ACME_PREFIX = "/.well-known/acme-challenge/"
ACME_TEST = "/.well-known/acme-challenge/test-challenge"

# Headers nginx's proxy module sets itself unless proxy_set_header names them (ngx_http_proxy_headers), and the
# response headers it does not pass on (hop-by-hop, plus proxy_hide_header's defaults).
PROXY_OWN_HEADERS = frozenset(("host", "connection", "content-length", "transfer-encoding", "te", "keep-alive",
                               "expect", "upgrade"))
HIDDEN_RESPONSE_HEADERS = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                                     "proxy-connection", "date", "server", "x-pad", "x-accel-expires",
                                     "x-accel-redirect", "x-accel-limit-rate", "x-accel-buffering",
                                     "x-accel-charset"))
# conf.d/include/proxy.conf (v2.12/2.13)
PROXY_CONF_HEADERS = (("Host", "$host"), ("X-Forwarded-Scheme", "$x_forwarded_scheme"),
                      ("X-Forwarded-Proto", "$x_forwarded_proto"),
                      ("X-Forwarded-For", "$proxy_add_x_forwarded_for"), ("X-Real-IP", "$remote_addr"))
PROXY_CONF_PASS = "$forward_scheme://$server:$port$request_uri"
# nginx.conf's http-level proxy_set_header (inherited only by locations and servers that set none).
HTTP_LEVEL_HEADERS = (("X-Forwarded-Scheme", "$scheme"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                      ("Accept-Encoding", ""))
WEBSOCKET_HEADERS = (("Upgrade", "$http_upgrade"), ("Connection", "$http_connection"))

# Directives an advanced config may carry that change nothing the edge emulates.
IGNORED_DIRECTIVES = frozenset((
    "proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout", "send_timeout", "keepalive_timeout",
    "client_body_timeout", "client_header_timeout", "proxy_buffering", "proxy_request_buffering",
    "proxy_buffer_size", "proxy_buffers", "proxy_busy_buffers_size", "proxy_max_temp_file_size",
    "proxy_temp_file_write_size", "client_body_buffer_size", "large_client_header_buffers", "proxy_http_version",
    "proxy_redirect", "proxy_cache", "proxy_cache_bypass", "proxy_no_cache", "proxy_ssl_verify",
    "proxy_ssl_server_name", "proxy_intercept_errors", "proxy_ignore_client_abort", "gzip", "gzip_types",
    "gzip_proxied", "gzip_vary", "gzip_min_length", "access_log", "error_log", "log_not_found", "tcp_nodelay",
    "tcp_nopush", "sendfile", "chunked_transfer_encoding", "server_tokens", "charset", "etag",
))
BUILTIN_VARIABLES = frozenset((
    "scheme", "host", "request_uri", "uri", "document_uri", "args", "query_string", "is_args", "request_method",
    "remote_addr", "remote_port", "server_port", "server_name", "server_protocol", "https",
    "proxy_add_x_forwarded_for", "forward_scheme", "server", "port", "proxy_host", "content_length",
    "content_type", "x_forwarded_proto", "x_forwarded_scheme", "hsts_header", "request_id",
))
VARIABLE_PREFIXES = ("http_", "cookie_", "arg_", "upstream_http_")
VAR_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")

# NPM's block-exploits.conf (all its rules; nginx's "~" is a case-sensitive PCRE match).
EXPLOIT_QUERY = [re.compile(p) for p in (
    r"union.*select.*\(", r"union.*all.*select.*", r"concat.*\(",
    r"[a-zA-Z0-9_]=http://", r"[a-zA-Z0-9_]=(\.\.//?)+", r"[a-zA-Z0-9_]=/([a-z0-9_.]//?)+",
    r"(<|%3C).*script.*(>|%3E)", r"GLOBALS(=|\[|\%[0-9A-Z]{0,2})", r"_REQUEST(=|\[|\%[0-9A-Z]{0,2})",
    r"proc/self/environ", r"mosConfig_[a-zA-Z_]{1,21}(=|\%3D)", r"base64_(en|de)code\(.*\)",
    r"\b(ultram|unicauca|valium|viagra|vicodin|xanax|ypxaieo)\b",
    r"\b(erections|hoodia|huronriveracres|impotence|levitra|libido)\b",
    r"\b(ambien|blue\spill|cialis|cocaine|ejaculation|erectile)\b",
    r"\b(lipitor|phentermin|pro[sz]ac|sandyauer|tramadol|troyhamby)\b",
)]
EXPLOIT_AGENTS = ("Indy Library", "libwww-perl", "GetRight", "GetWeb!", "Go!Zilla", "Download Demon",
                  "Go-Ahead-Got-It", "TurnitinBot", "GrabNet")

_warned: set[str] = set()
_warn_lock = threading.Lock()


def log(message: str) -> None:
    sys.stderr.write("npm-edge: %s\n" % message)
    sys.stderr.flush()


def warn_once(message: str) -> None:
    with _warn_lock:
        if message in _warned:
            return
        if len(_warned) > 10000:
            _warned.clear()
        _warned.add(message)
    log("[warn] " + message)


class Settings:
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.bind = environ.get("NPM_EDGE_BIND") or "0.0.0.0"
        self.http_port = int(environ.get("NPM_EDGE_HTTP_PORT") or 80)
        self.https_port = int(environ.get("NPM_EDGE_HTTPS_PORT") or 443)
        self.state_file = environ.get("NPM_EDGE_STATE_FILE") or "/data/database.json"
        self.cert = environ.get("NPM_EDGE_CERT") or "/data/nginx/dummycert.pem"
        self.key = environ.get("NPM_EDGE_KEY") or "/data/nginx/dummykey.pem"
        self.acme_root = environ.get("NPM_EDGE_ACME_ROOT") or "/data/letsencrypt-acme-challenge"
        self.timeout = float(environ.get("NPM_EDGE_PROXY_TIMEOUT") or 90)
        nets = environ.get("NPM_EDGE_REAL_IP_FROM") or "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
        self.real_ip_from = [ipaddress.ip_network(n.strip(), strict=False) for n in nets.split(",") if n.strip()]


# ---------------------------------------------------------------------------------------------
# A subset of nginx's configuration language (for advanced_config)
# ---------------------------------------------------------------------------------------------

class Unsupported(Exception):
    """An advanced config the edge cannot interpret faithfully."""


class Punct:
    def __init__(self, char):
        self.char = char

    def __repr__(self):
        return self.char


SEMI, OPEN, CLOSE = Punct(";"), Punct("{"), Punct("}")
Directive = collections.namedtuple("Directive", "name args block")


def tokenize(text):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in ";{}":
            out.append({";": SEMI, "{": OPEN, "}": CLOSE}[c])
            i += 1
        elif c in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise Unsupported("unterminated quoted string")
            out.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}\"'":
                if text[j] == "$" and text[j + 1:j + 2] == "{":
                    k = text.find("}", j)
                    if k < 0:
                        raise Unsupported("unterminated ${...}")
                    j = k + 1
                    continue
                j += 1
            out.append(text[i:j])
            i = j
    return out


def parse_config(text):
    """nginx syntax -> [Directive(name, args, block or None)]; Unsupported on a syntax error."""
    tokens = tokenize(text)
    pos = 0

    def block(depth):
        nonlocal pos
        items = []
        while pos < len(tokens):
            token = tokens[pos]
            if token is CLOSE:
                if depth == 0:
                    raise Unsupported('unexpected "}"')
                pos += 1
                return items
            if not isinstance(token, str):
                raise Unsupported('unexpected "%s"' % token)
            words = []
            while pos < len(tokens) and isinstance(tokens[pos], str):
                words.append(tokens[pos])
                pos += 1
            if pos >= len(tokens):
                raise Unsupported('unexpected end of text after "%s"' % words[0])
            token = tokens[pos]
            pos += 1
            if token is SEMI:
                items.append(Directive(words[0], words[1:], None))
            elif token is OPEN:
                items.append(Directive(words[0], words[1:], block(depth + 1)))
            else:
                raise Unsupported('unexpected "}" after "%s"' % words[0])
        if depth:
            raise Unsupported('unexpected end of text, expecting "}"')
        return items

    return block(0)


def parse_size(text):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    if not m:
        raise Unsupported('invalid size "%s"' % text)
    return int(m[1]) * {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[m[2].lower()]


def expand(template, ctx):
    if "$" not in template:
        return template
    return VAR_RE.sub(lambda m: ctx.get(m[1] or m[2]), template)


def variables_of(template):
    return [m[1] or m[2] for m in VAR_RE.finditer(template)]


class Location:
    """One nginx location of a proxy host (NPM's default one, a custom location, one of the advanced config's)."""

    def __init__(self, modifier, path, origin):
        self.modifier, self.path, self.origin = modifier, path, origin
        self.regex = None
        if modifier in ("~", "~*"):
            try:
                self.regex = re.compile(path, re.IGNORECASE if modifier == "~*" else 0)
            except re.error as exc:
                raise Unsupported('location "%s": %s' % (path, exc)) from None
        self.internal = False
        self.proxy_pass = None
        self.set_headers = []
        self.add_headers = []
        self.pass_body = True
        self.method = None
        self.auth_request = None
        self.auth_request_set = []
        self.error_pages = {}
        self.access = None  # AccessList, or MISSING_ACL
        self.block_exploits = False
        self.force_ssl = False
        self.ret = None
        self.static_root = None
        self.max_body = None
        self.templates = []

    def include_proxy_conf(self):
        self.add_headers.append(("X-Served-By", "$host", False))
        self.set_headers.extend(PROXY_CONF_HEADERS)
        self.proxy_pass = PROXY_CONF_PASS

    def apply(self, directive, user_vars):
        """One directive of a location block (advanced config); Unsupported for anything the edge cannot do."""
        name, args = directive.name, directive.args
        if directive.block is not None:
            raise Unsupported('"%s { ... }" inside a location is not emulated' % name)

        def want(count):
            if len(args) not in (count if isinstance(count, tuple) else (count,)):
                raise Unsupported('"%s" with %d arguments' % (name, len(args)))

        if name == "internal":
            want(0)
            self.internal = True
        elif name == "proxy_pass":
            want(1)
            if not re.match(r"^(https?://|\$)", args[0]):
                raise Unsupported('proxy_pass "%s" (http:// or https:// only)' % args[0])
            self.proxy_pass = args[0]
            self.templates.append(args[0])
        elif name == "proxy_set_header":
            want(2)
            self.set_headers.append((args[0], args[1]))
            self.templates.append(args[1])
        elif name == "proxy_pass_request_body":
            want(1)
            self.pass_body = args[0] == "on"
        elif name == "proxy_method":
            want(1)
            self.method = args[0]
        elif name == "auth_request":
            want(1)
            if args[0] != "off" and not args[0].startswith("/"):
                raise Unsupported('auth_request "%s"' % args[0])
            self.auth_request = None if args[0] == "off" else args[0]
        elif name == "auth_request_set":
            want(2)
            if not re.fullmatch(r"\$\w+", args[0]):
                raise Unsupported('auth_request_set "%s"' % args[0])
            self.auth_request_set.append((args[0][1:], args[1]))
            user_vars.add(args[0][1:])
            self.templates.append(args[1])
        elif name == "error_page":
            self.add_error_page(args)
        elif name == "include":
            want(1)
            if args[0].endswith("include/proxy.conf"):
                self.include_proxy_conf()
            elif args[0].endswith("include/block-exploits.conf"):
                self.block_exploits = True
            elif args[0].endswith("include/force-ssl.conf"):
                self.force_ssl = True
            else:
                raise Unsupported('include "%s"' % args[0])
        elif name == "add_header":
            want((2, 3))
            if len(args) == 3 and args[2] != "always":
                raise Unsupported('add_header "%s"' % " ".join(args))
            self.add_headers.append((args[0], args[1], len(args) == 3))
            self.templates.append(args[1])
        elif name == "return":
            want((1, 2))
            if len(args) == 1 and not args[0].isdigit():
                self.ret = (302, args[0])
            elif args[0].isdigit():
                self.ret = (int(args[0]), args[1] if len(args) == 2 else "")
            else:
                raise Unsupported('return "%s"' % " ".join(args))
            self.templates.append(self.ret[1])
        elif name == "client_max_body_size":
            want(1)
            self.max_body = parse_size(args[0])
        elif name not in IGNORED_DIRECTIVES:
            raise Unsupported('directive "%s" is not emulated' % name)

    def add_error_page(self, args):
        codes, overwrite = [], None
        for arg in args[:-1]:
            if arg.isdigit():
                codes.append(int(arg))
            elif re.fullmatch(r"=\d*", arg):
                overwrite = int(arg[1:]) if len(arg) > 1 else 0
            else:
                raise Unsupported('error_page "%s"' % " ".join(args))
        if not codes or not args:
            raise Unsupported('error_page "%s"' % " ".join(args))
        if args[-1].startswith(("/", "@")):
            raise Unsupported("error_page to a local URI (%s) is not emulated" % args[-1])
        for code in codes:
            self.error_pages[code] = (overwrite, args[-1])
        self.templates.append(args[-1])

    def matches_prefix(self, uri):
        return self.modifier in ("", "^~") and uri.startswith(self.path)


def find_location(locations, uri):
    """nginx's location search: exact, longest prefix (^~ stops there), first regex, the longest prefix."""
    best = None
    for loc in locations:
        if loc.modifier == "=" and loc.path == uri:
            return loc
        if loc.matches_prefix(uri) and (best is None or len(loc.path) > len(best.path)):
            best = loc
    if best is not None and best.modifier == "^~":
        return best
    for loc in locations:
        if loc.regex is not None and loc.regex.search(uri):
            return loc
    return best


def split_location_path(text):
    parts = text.split(None, 1)
    if len(parts) == 2 and parts[0] in ("=", "^~", "~", "~*"):
        return parts[0], parts[1].strip()
    return "", text.strip()


# ---------------------------------------------------------------------------------------------
# The database: proxy hosts, certificates, access lists
# ---------------------------------------------------------------------------------------------

class AccessList:
    def __init__(self, row, host_id):
        self.id = row.get("id")
        self.satisfy_any = bool(row.get("satisfy_any"))
        self.pass_auth = bool(row.get("pass_auth"))
        self.users = {}
        for item in row.get("items") or []:
            if item.get("username"):
                self.users[str(item["username"])] = str(item.get("password") or "")
        self.rules = []
        for client in row.get("clients") or []:
            directive, address = client.get("directive"), client.get("address")
            if not directive or not address:  # nginxAccessRule renders nothing for these
                continue
            if address == "all":
                self.rules.append((directive, None))
                continue
            try:
                self.rules.append((directive, ipaddress.ip_network(address, strict=False)))
            except ValueError:
                warn_once("proxy host %s: access list %s: address %r is not an address; rule left out"
                          % (host_id, self.id, address))

    def rules_allow(self, address):
        ip = parse_ip(address)
        for directive, net in self.rules:
            if net is None or (ip is not None and ip.version == net.version and ip in net):
                return directive == "allow"
        return False  # deny all;

    def credentials_ok(self, header):
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not sep or user not in self.users:
            return False
        return hmac.compare_digest(self.users[user].encode(), password.encode())


MISSING_ACL = AccessList({"id": 0}, 0)  # access_list_id points nowhere: "deny all; satisfy all"


def parse_ip(text):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def truthy(value):
    return bool(value) and value not in ("0", "false")


class ProxyHost:
    """One proxy host as nginx serves it (its server block)."""

    def __init__(self, row, certificates, access_lists, settings):
        self.id = row["id"]
        self.names = [str(n).lower().rstrip(".") for n in row.get("domain_names") or []]
        self.forward_scheme = row.get("forward_scheme") or "http"
        self.forward_host = str(row.get("forward_host") or "")
        self.forward_port = int(row.get("forward_port") or 80)
        cert_id = int(row.get("certificate_id") or 0) if str(row.get("certificate_id") or 0).isdigit() else 0
        cert = certificates.get(cert_id) if cert_id > 0 else None
        self.tls = cert is not None
        self.ssl_forced = self.tls and truthy(row.get("ssl_forced"))
        self.hsts = self.ssl_forced and truthy(row.get("hsts_enabled"))
        self.hsts_value = "max-age=%d;%s preload" % (
            HSTS_MAX_AGE, "includeSubDomains;" if truthy(row.get("hsts_subdomains")) else "")
        self.trust_forwarded_proto = truthy(row.get("trust_forwarded_proto"))
        self.websocket = truthy(row.get("allow_websocket_upgrade"))
        self.block_exploits = truthy(row.get("block_exploits"))
        acl_id = int(row.get("access_list_id") or 0)
        self.acl = None
        if acl_id > 0:
            acl_row = access_lists.get(acl_id)
            if acl_row is None:
                warn_once("proxy host %s: access list %s does not exist: every request is denied" % (self.id, acl_id))
                self.acl = MISSING_ACL
            else:
                self.acl = AccessList(acl_row, self.id)
        self.max_body = DEFAULT_MAX_BODY
        # server-level proxy_set_header / add_header (None: inherited from nginx.conf's http level / none)
        self.set_headers = list(WEBSOCKET_HEADERS) if self.websocket else []
        hsts = [("Strict-Transport-Security", "$hsts_header", True)] if self.hsts else []
        self.add_headers = list(hsts)
        self.locations = []
        if cert is not None and cert.get("provider") == "letsencrypt":
            acme = Location("^~", ACME_PREFIX, "letsencrypt-acme-challenge.conf")
            acme.static_root = settings.acme_root
            exact = Location("=", ACME_PREFIX, "letsencrypt-acme-challenge.conf")
            exact.ret = (404, "")
            self.locations += [acme, exact]
        advanced = self.advanced_locations(row.get("advanced_config") or "")
        self.locations += advanced
        for index, spec in enumerate(row.get("locations") or []):
            try:
                self.locations.append(self.custom_location(spec, hsts))
            except (Unsupported, KeyError, TypeError, ValueError) as exc:
                warn_once("proxy host %s: custom location %d left out: %s" % (self.id, index, exc))
        if not any(loc.modifier == "" and loc.path == "/" for loc in self.locations):
            self.locations.append(self.default_location(hsts))

    def advanced_locations(self, text):
        if not text.strip():
            return []
        try:
            return self.interpret_advanced(text)
        except Unsupported as exc:
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            warn_once("proxy host %s (%s): advanced_config %s is not emulated (%s); the host is served without it "
                      "(no auth_request)" % (self.id, ", ".join(self.names), digest, exc))
            return []

    def interpret_advanced(self, text):
        user_vars = set()
        locations, set_headers, add_headers, max_body = [], [], [], None
        templates = []
        for directive in parse_config(text):
            if directive.name == "location":
                if directive.block is None or len(directive.args) not in (1, 2):
                    raise Unsupported("location without a block")
                modifier, path = ("", directive.args[0]) if len(directive.args) == 1 else directive.args
                if modifier not in ("", "=", "^~", "~", "~*") or path.startswith("@"):
                    raise Unsupported('location "%s" is not emulated' % " ".join(directive.args))
                loc = Location(modifier, path, "advanced_config")
                for inner in directive.block:
                    loc.apply(inner, user_vars)
                locations.append(loc)
                templates += loc.templates
            elif directive.block is not None:
                raise Unsupported('"%s { ... }" at server level is not emulated' % directive.name)
            elif directive.name == "proxy_set_header" and len(directive.args) == 2:
                set_headers.append(tuple(directive.args))
                templates.append(directive.args[1])
            elif directive.name == "add_header" and len(directive.args) in (2, 3):
                if len(directive.args) == 3 and directive.args[2] != "always":
                    raise Unsupported('add_header "%s"' % " ".join(directive.args))
                add_headers.append((directive.args[0], directive.args[1], len(directive.args) == 3))
                templates.append(directive.args[1])
            elif directive.name == "client_max_body_size" and len(directive.args) == 1:
                max_body = parse_size(directive.args[0])
            elif directive.name not in IGNORED_DIRECTIVES:
                raise Unsupported('directive "%s" at server level is not emulated' % directive.name)
        for template in templates:
            for var in variables_of(template):
                if var not in BUILTIN_VARIABLES and var not in user_vars and not var.startswith(VARIABLE_PREFIXES):
                    raise Unsupported('unknown variable "$%s"' % var)
        for loc in locations:
            if loc.auth_request is not None and find_location(locations, loc.auth_request) is None:
                raise Unsupported('auth_request "%s" matches no location' % loc.auth_request)
        self.set_headers += set_headers
        self.add_headers += add_headers
        if max_body is not None:
            self.max_body = max_body
        return locations

    def custom_location(self, spec, hsts):
        modifier, path = split_location_path(str(spec["path"]))
        loc = Location(modifier, path, "custom location")
        if (spec.get("advanced_config") or "").strip():
            user_vars = set()
            for directive in parse_config(spec["advanced_config"]):
                loc.apply(directive, user_vars)
        forward_host, forward_path = str(spec["forward_host"]), str(spec.get("forward_path") or "")
        if "/" in forward_host:
            forward_host, _sep, rest = forward_host.partition("/")
            forward_path = "/" + rest
        loc.set_headers += [("Host", "$host"), ("X-Forwarded-Scheme", "$scheme"), ("X-Forwarded-Proto", "$scheme"),
                            ("X-Forwarded-For", "$remote_addr"), ("X-Real-IP", "$remote_addr")]
        loc.proxy_pass = "%s://%s:%d%s" % (spec.get("forward_scheme") or "http", forward_host,
                                           int(spec["forward_port"]), forward_path)
        loc.access = self.acl
        loc.block_exploits = loc.block_exploits or self.block_exploits
        loc.force_ssl = loc.force_ssl or self.ssl_forced
        loc.add_headers += hsts
        if self.websocket:
            loc.set_headers += WEBSOCKET_HEADERS
        return loc

    def default_location(self, hsts):
        loc = Location("", "/", "default location")
        loc.access = self.acl
        if self.acl is not None and self.acl.users and not self.acl.pass_auth:
            loc.set_headers.append(("Authorization", ""))
        loc.add_headers += hsts
        if self.websocket:
            loc.set_headers += WEBSOCKET_HEADERS
        loc.include_proxy_conf()
        return loc


class Config:
    """The hosts nginx serves, indexed as server_name lookups per listening port."""

    def __init__(self, hosts=()):
        self.hosts = list(hosts)
        self.index = {False: self._index(self.hosts), True: self._index([h for h in self.hosts if h.tls])}

    @staticmethod
    def _index(hosts):
        exact, head, tail = {}, [], []
        for host in hosts:
            for name in host.names:
                if name.startswith("*."):
                    head.append((name[1:], False, host))
                elif name.startswith("."):
                    head.append((name, True, host))
                elif name.endswith(".*"):
                    tail.append((name[:-1], host))
                else:
                    exact.setdefault(name, host)
        head.sort(key=lambda entry: -len(entry[0]))
        tail.sort(key=lambda entry: -len(entry[0]))
        return exact, head, tail

    def lookup(self, name, https):
        exact, head, tail = self.index[https]
        if name in exact:
            return exact[name]
        for suffix, bare_too, host in head:
            if (name.endswith(suffix) and len(name) > len(suffix)) or (bare_too and name == suffix[1:]):
                return host
        for prefix, host in tail:
            if name.startswith(prefix) and len(name) > len(prefix):
                return host
        return None


def load_config(raw, settings):
    data = json.loads(raw)
    certificates = {row["id"]: row for row in data.get("certificates") or []}
    access_lists = {row["id"]: row for row in data.get("access_lists") or []}
    live = set(data["live"]) if isinstance(data.get("live"), list) else None
    hosts = []
    for row in data.get("proxy_hosts") or []:
        served = row.get("id") in live if live is not None else truthy(row.get("enabled", True))
        if not served:
            continue
        try:
            hosts.append(ProxyHost(row, certificates, access_lists, settings))
        except (KeyError, TypeError, ValueError) as exc:
            warn_once("proxy host %s left out: %s: %s" % (row.get("id"), exc.__class__.__name__, exc))
    return Config(hosts)


class State:
    """The database file, re-read when it changes (inode, size, mtime; a file modified within the last two seconds
    is compared by content too, as mtime granularity can hide a second write)."""

    def __init__(self, settings):
        self.settings = settings
        self.path = settings.state_file
        self.lock = threading.Lock()
        self.signature = None
        self.digest = None
        self.config = Config()

    def current(self):
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            recent = time.time() - st.st_mtime < 2
        except FileNotFoundError:
            signature, recent = None, False
        if signature == self.signature and not recent:
            return self.config
        with self.lock:
            if signature is None:
                if self.signature is not None:
                    log("%s is gone: no proxy hosts" % self.path)
                self.signature, self.digest, self.config = None, None, Config()
                return self.config
            try:
                with open(self.path, "rb") as handle:
                    raw = handle.read()
            except OSError as exc:
                log("[error] cannot read %s: %s" % (self.path, exc))
                return self.config
            digest = hashlib.sha256(raw).hexdigest()
            if digest != self.digest:
                try:
                    config = load_config(raw, self.settings) if raw.strip() else Config()
                except (ValueError, OSError, TypeError, AttributeError) as exc:
                    log("[error] %s not loaded (%s); keeping the previous configuration" % (self.path, exc))
                    self.signature = signature
                    return self.config
                self.config, self.digest = config, digest
                log("loaded %s: %d proxy host(s) served" % (self.path, len(config.hosts)))
            self.signature = signature
            return self.config


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

class UpstreamError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client connection broke mid-request."""


def normalize_uri(path):
    """nginx's URI normalization: decoded, slashes merged, dot segments resolved; None above the root."""
    decoded = unquote(path)
    segments = []
    for seg in decoded.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not segments:
                return None
            segments.pop()
        else:
            segments.append(seg)
    out = "/" + "/".join(segments)
    if out != "/" and re.search(r"/(\.{0,2})$", decoded):
        out += "/"
    return out


def iter_chunked(rfile, limit=None):
    """The data of a chunked body (trailers skipped)."""
    total = 0
    while True:
        line = rfile.readline(65537)
        if not line:
            raise ClientGone("chunked body cut short")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise UpstreamError(400, "bad chunk size") from None
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return
        total += size
        if limit and total > limit:
            raise UpstreamError(413, "chunked body larger than client_max_body_size")
        remaining = size
        while remaining:
            data = rfile.read(min(remaining, 65536))
            if not data:
                raise ClientGone("chunked body cut short")
            remaining -= len(data)
            yield data
        rfile.readline(3)


class RequestBody:
    """The client's request body: none, Content-Length or chunked (spooled when it is sent on)."""

    def __init__(self, headers):
        te = (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        self.chunked = "chunked" in te
        self.length = None
        self.consumed = False
        if not self.chunked and length is not None:
            if not length.strip().isdigit():
                raise ValueError("bad Content-Length")
            self.length = int(length)
        self.remaining = self.length or 0
        self.present = self.chunked or bool(self.length)

    def read(self, rfile, size):
        """Up to size bytes of a Content-Length body; ClientGone when the client stops sending."""
        try:
            data = rfile.read(min(size, self.remaining)) if self.remaining else b""
        except OSError:
            data = b""
        if self.remaining and not data:
            raise ClientGone("client closed the request body early")
        self.remaining -= len(data)
        if not self.remaining:
            self.consumed = True
        return data

    def spool(self, rfile, limit):
        """(length, file) of a chunked body, read to the end."""
        spool = tempfile.SpooledTemporaryFile(max_size=8 * MIB)  # noqa: SIM115 - handed to the caller
        size = 0
        try:
            for data in iter_chunked(rfile, limit):
                spool.write(data)
                size += len(data)
        except BaseException:
            spool.close()
            raise
        self.consumed = True
        spool.seek(0)
        return size, spool

    def discard(self, rfile, limit=MIB):
        """Read and drop a small unread body so the connection can be kept; False when it is not worth it."""
        if self.consumed or not self.present:
            return True
        try:
            if self.chunked:
                for _data in iter_chunked(rfile, limit):
                    pass
            else:
                if self.remaining > limit:
                    return False
                while self.remaining:
                    self.read(rfile, 65536)
        except (UpstreamError, ClientGone, OSError):
            return False
        self.consumed = True
        return True


class Request:
    def __init__(self, handler, settings):
        self.handler = handler
        self.method = handler.command
        self.scheme = handler.scheme
        self.headers = handler.headers
        self.server_port = handler.server.server_address[1]
        self.peer = handler.client_address[0]
        self.bad = None
        target = handler.path
        host_from_line = None
        m = re.match(r"^(https?)://([^/?#]*)(.*)$", target, re.IGNORECASE)
        if m:
            host_from_line, target = m[2], m[3] or "/"
        if not target.startswith("/"):
            self.bad = "request target %r" % target
            target = "/"
        self.request_uri = target
        self.path, sep, self.args = target.partition("?")
        self.is_args = sep
        self.uri = normalize_uri(self.path)
        if self.uri is None:
            self.bad = "URI above the root"
            self.uri = "/"
        self.http_host = self.headers.get("Host") or ""
        raw = host_from_line if host_from_line is not None else self.http_host
        if not raw and handler.request_version == "HTTP/1.1":
            self.bad = "no Host header"
        self.host = self.clean_host(raw)
        if self.host is None:
            self.bad = "bad Host %r" % raw
            self.host = ""
        ip = parse_ip(self.peer)
        self.remote_addr = str(ip) if ip is not None else self.peer
        real = (self.headers.get("X-Real-IP") or "").strip()
        if ip is not None and real and any(ip.version == n.version and ip in n for n in settings.real_ip_from):
            real_ip = parse_ip(real)
            if real_ip is not None:
                self.remote_addr = str(real_ip)
        try:
            self.body = RequestBody(self.headers)
        except ValueError as exc:
            self.bad = str(exc)
            self.body = RequestBody({})

    @staticmethod
    def clean_host(raw):
        host = raw.strip().lower()
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                return None
            rest, host = host[end + 1:], host[:end + 1]
            if rest and not re.fullmatch(r":\d*", rest):
                return None
        elif ":" in host:
            host, _sep, port = host.rpartition(":")
            if not port.isdigit() and port:
                return None
        host = host.rstrip(".")
        if not re.fullmatch(r"[a-z0-9._\-\[\]:]*", host) or ".." in host:
            return None
        return host

    def header(self, name):
        """$http_<name>: the first such header (Cookie and X-Forwarded-For joined, as nginx does)."""
        name = name.lower().replace("_", "-")
        values = [v for k, v in self.headers.items() if k.lower() == name]
        if not values:
            return ""
        if name == "cookie":
            return "; ".join(values)
        if name == "x-forwarded-for":
            return ", ".join(values)
        return values[0]


class Context:
    """nginx variables of one request (user variables set by auth_request_set included)."""

    def __init__(self, request, host):
        self.req, self.host = request, host
        self.vars = {}
        self.upstream = None
        self.uri = request.uri
        self.proxy_host = ""
        self.extra_headers = []

    def sub(self, uri):
        other = Context(self.req, self.host)
        other.vars = self.vars
        other.uri = uri
        return other

    def get(self, name):
        if name in self.vars:
            return self.vars[name]
        req = self.req
        if name.startswith("http_"):
            return req.header(name[5:])
        if name.startswith("upstream_http_"):
            if self.upstream is None:
                return ""
            return self.upstream.get(name[14:].replace("_", "-"), "")
        if name.startswith("cookie_"):
            for part in req.header("cookie").split(";"):
                key, _sep, value = part.strip().partition("=")
                if key == name[7:]:
                    return value
            return ""
        if name.startswith("arg_"):
            for key, value in parse_qsl(req.args, keep_blank_values=True):
                if key == name[4:]:
                    return value
            return ""
        getter = BUILTINS.get(name)
        return getter(self) if getter else ""


def forwarded_proto(ctx, header):
    value = ctx.req.header(header)
    if ctx.host.trust_forwarded_proto and value in ("http", "https"):
        return value
    return ctx.req.scheme


def proxy_add_x_forwarded_for(ctx):
    xff = ctx.req.header("x-forwarded-for")
    return "%s, %s" % (xff, ctx.req.remote_addr) if xff else ctx.req.remote_addr


BUILTINS = {
    "scheme": lambda c: c.req.scheme,
    "https": lambda c: "on" if c.req.scheme == "https" else "",
    "host": lambda c: c.req.host or (c.host.names[0] if c.host.names else ""),
    "request_uri": lambda c: c.req.request_uri,
    "uri": lambda c: c.uri,
    "document_uri": lambda c: c.uri,
    "args": lambda c: c.req.args,
    "query_string": lambda c: c.req.args,
    "is_args": lambda c: c.req.is_args,
    "request_method": lambda c: c.req.method,
    "remote_addr": lambda c: c.req.remote_addr,
    "remote_port": lambda c: str(c.req.handler.client_address[1]),
    "server_port": lambda c: str(c.req.server_port),
    "server_name": lambda c: c.host.names[0] if c.host.names else "",
    "server_protocol": lambda c: c.req.handler.request_version,
    "proxy_add_x_forwarded_for": proxy_add_x_forwarded_for,
    "forward_scheme": lambda c: c.host.forward_scheme,
    "server": lambda c: c.host.forward_host,
    "port": lambda c: str(c.host.forward_port),
    "proxy_host": lambda c: c.proxy_host,
    "content_length": lambda c: c.req.headers.get("Content-Length") or "",
    "content_type": lambda c: c.req.headers.get("Content-Type") or "",
    "x_forwarded_proto": lambda c: forwarded_proto(c, "x-forwarded-proto"),
    "x_forwarded_scheme": lambda c: forwarded_proto(c, "x-forwarded-scheme"),
    "hsts_header": lambda c: c.host.hsts_value if c.req.scheme == "https" else "",
    "request_id": lambda c: hashlib.md5(repr((id(c.req), time.time())).encode()).hexdigest(),
}


def blocked_by_exploit_rules(req):
    query = req.args
    if query and any(rule.search(query) for rule in EXPLOIT_QUERY):
        return True
    agent = req.headers.get("User-Agent") or ""
    return any(bad in agent for bad in EXPLOIT_AGENTS)


def nginx_page(status):
    reason = NGINX_REASONS.get(status) or BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    return ("<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n"
            "<hr><center>openresty</center>\r\n</body>\r\n</html>\r\n" % (status, reason, status, reason)).encode()


def split_url(url):
    """scheme, host, port, uri ('' when the URL has no path) of a proxy_pass URL."""
    m = re.match(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[^/:?#]+)(?::(\d+))?(.*)$", url)
    if not m or not m[2]:
        raise UpstreamError(500, "invalid proxy_pass URL %r" % url)
    scheme, host = m[1].lower(), m[2]
    port = int(m[3]) if m[3] else (443 if scheme == "https" else 80)
    default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    proxy_host = host if default or not m[3] else "%s:%d" % (host, port)
    return scheme, host.strip("[]"), port, m[4], proxy_host


class Upstream:
    """One HTTP/1.1 connection to an upstream."""

    def __init__(self, scheme, host, port, timeout):
        self.sock = None
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out (connecting to %s:%d)" % (host, port)) from None
        except socket.gaierror as exc:
            raise UpstreamError(502, "%s could not be resolved (%s)" % (host, exc.strerror)) from None
        except OSError as exc:
            raise UpstreamError(502, "connect() to %s:%d failed (%s)" % (host, port, exc.strerror or exc)) from None
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":  # proxy_ssl_verify off, proxy_ssl_server_name off: nginx's defaults
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                sock = context.wrap_socket(sock)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise UpstreamError(502, "SSL handshake with %s:%d failed (%s)" % (host, port, exc)) from None
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def send(self, data):
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out (sending the request)") from None
        except OSError as exc:
            raise UpstreamError(502, "sending the request upstream failed (%s)" % exc) from None

    def read_head(self):
        try:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise UpstreamError(502, "upstream prematurely closed connection while reading response header")
                parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise UpstreamError(502, "upstream sent an invalid status line %r" % line[:80])
                status = int(parts[1])
                headers = http.client.parse_headers(self.rfile)
                if 100 <= status < 200 and status != 101:
                    continue
                return status, headers
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out while reading response header") from None
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(502, "reading the upstream's response header failed (%s)" % exc) from None

    def iter_body(self, headers, no_body):
        if no_body:
            return
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            yield from iter_chunked(self.rfile)
            return
        length = headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            remaining = int(length)
            while remaining:
                data = self.rfile.read1(min(remaining, 65536))
                if not data:
                    raise ClientGone("upstream closed the body early")
                remaining -= len(data)
                yield data
            return
        while True:
            data = self.rfile.read1(65536)
            if not data:
                return
            yield data

    def close(self):
        if self.sock is not None:
            for closing in (self.rfile, self.sock):
                with contextlib.suppress(OSError):
                    closing.close()


# ---------------------------------------------------------------------------------------------
# HTTP servers
# ---------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = "openresty"
    protocol_version = "HTTP/1.1"
    timeout = 90  # keepalive_timeout 90s
    disable_nagle_algorithm = True  # tcp_nodelay on
    scheme = "http"
    settings: Settings = None
    state: State = None

    def log_message(self, format, *args):
        return

    def version_string(self):
        return self.server_version

    def __getattr__(self, name):
        # Every method goes to dispatch (BaseHTTPRequestHandler looks for do_<METHOD>).
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        # Parse errors (400, 414, 431, 505) with nginx's page; the connection is closed after them.
        self.close_connection = True
        try:
            body = nginx_page(code)
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self):
        req = None
        try:
            req = Request(self, self.settings)
            if req.bad:
                self.close_connection = True
                self.special(400, req, None, None)
                return
            config = self.state.current()
            host = config.lookup(req.host, self.scheme == "https")
            if host is None:
                self.default_site(req)
                return
            Exchange(self, req, host).run()
        except (ClientGone, ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except OSError:
            self.close_connection = True
        except Exception:  # a bug of the edge: logged, the connection closed
            log("[error] %s %s: %s" % (self.command, self.path, traceback.format_exc().strip()))
            self.close_connection = True
        finally:
            if req is not None and req.body.present and not req.body.consumed:
                self.close_connection = True

    def default_site(self, req):
        """NPM's default site (its "Congratulations" page), as the stand-in has always answered."""
        if self.command not in ("GET", "HEAD", "POST"):
            self.special(405, req, None, None)
            return
        if not req.body.discard(self.rfile):
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Connection", "close" if self.close_connection else "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(PAGE)

    # -- answers nginx makes itself -----------------------------------------------------------

    def special(self, status, req, ctx, add_headers, headers=()):
        """An nginx-generated answer (redirect or error page) with the location's add_header lines."""
        if req is not None and not req.body.discard(self.rfile):
            self.close_connection = True
        body = nginx_page(status)
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if ctx is not None:
            self.send_add_headers(status, ctx, add_headers)
        self.send_header("Connection", "close" if self.close_connection else "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_add_headers(self, status, ctx, add_headers):
        for name, template, always in add_headers or ():
            if always or status in ADD_HEADER_STATUSES:
                value = expand(template, ctx)
                if value:
                    self.send_header(name, value)


class TlsHandler(Handler):
    scheme = "https"

    def setup(self):
        # The handshake runs here, in the connection's thread, not in the accept loop.
        self.request.settimeout(10)
        self.request.do_handshake()
        super().setup()


class Exchange:
    """One request to a proxy host, through nginx's phases."""

    def __init__(self, handler, req, host):
        self.h, self.req, self.host = handler, req, host
        self.ctx = Context(req, host)
        self.settings = handler.settings

    def add_headers_of(self, loc):
        if loc is not None and loc.add_headers:
            return loc.add_headers
        return self.host.add_headers

    def run(self):
        req, host, ctx = self.req, self.host, self.ctx
        # server rewrite phase: NPM's server-level includes, in the template's order
        if host.block_exploits and blocked_by_exploit_rules(req):
            self.h.special(403, req, ctx, host.add_headers)
            return
        if host.ssl_forced and self.wants_https():
            self.h.special(301, req, ctx, host.add_headers, [("Location", self.https_url())])
            return
        loc = find_location(host.locations, req.uri)
        if loc is None or loc.internal:
            self.h.special(404, req, ctx, self.add_headers_of(loc))
            return
        limit = loc.max_body if loc.max_body is not None else host.max_body
        if limit and req.body.length is not None and req.body.length > limit:
            self.h.close_connection = True
            self.h.special(413, req, ctx, self.add_headers_of(loc))
            return
        # location rewrite phase
        if loc.block_exploits and not host.block_exploits and blocked_by_exploit_rules(req):
            self.h.special(403, req, ctx, self.add_headers_of(loc))
            return
        if loc.force_ssl and self.wants_https():
            self.h.special(301, req, ctx, self.add_headers_of(loc), [("Location", self.https_url())])
            return
        if loc.ret is not None:
            self.answer_return(loc)
            return
        # access phase
        status = self.access_phase(loc)
        if status:
            self.error(loc, status)
            return
        # content phase
        if loc.static_root is not None:
            self.serve_static(loc)
        elif loc.proxy_pass is not None:
            status = self.proxy(loc)
            if status:
                self.error(loc, status)
        else:
            self.error(loc, 404)

    # -- rewrite --------------------------------------------------------------------------------

    def wants_https(self):
        req = self.req
        if req.scheme != "http" or req.request_uri == ACME_TEST:
            return False
        return not (self.host.trust_forwarded_proto and req.header("x-forwarded-proto") == "https")

    def https_url(self):
        return "https://%s%s" % (self.ctx.get("host"), self.req.request_uri)

    def answer_return(self, loc):
        status, template = loc.ret
        value = expand(template, self.ctx)
        if status in REDIRECT_STATUSES:
            self.h.special(status, self.req, self.ctx, self.add_headers_of(loc), [("Location", value)])
        elif value:
            if not self.req.body.discard(self.h.rfile):
                self.h.close_connection = True
            body = value.encode()
            self.h.send_response(status)
            self.h.send_header("Content-Type", "application/octet-stream")
            self.h.send_header("Content-Length", str(len(body)))
            self.h.send_add_headers(status, self.ctx, self.add_headers_of(loc))
            self.h.send_header("Connection", "close" if self.h.close_connection else "keep-alive")
            self.h.end_headers()
            if self.req.method != "HEAD":
                self.h.wfile.write(body)
        else:
            self.h.special(status, self.req, self.ctx, self.add_headers_of(loc))

    # -- access ---------------------------------------------------------------------------------

    def access_phase(self, loc):
        """0 when the request may proceed, else the status (nginx's access phase: allow/deny, auth_basic,
        auth_request, combined by satisfy)."""
        acl = loc.access
        checks = []
        if acl is not None:
            checks.append(lambda: 0 if acl.rules_allow(self.req.remote_addr) else 403)
            if acl.users:
                checks.append(lambda: self.basic_auth(acl))
        if loc.auth_request is not None:
            checks.append(lambda: self.auth_request(loc))
        if acl is not None and acl.satisfy_any:
            code = 0
            for check in checks:
                status = check()
                if status == 0:
                    self.ctx.extra_headers = []
                    return 0
                if status not in (401, 403):
                    return status
                if code != 401:
                    code = status
            return code
        for check in checks:
            status = check()
            if status:
                return status
        return 0

    def basic_auth(self, acl):
        if acl.credentials_ok(self.req.headers.get("Authorization")):
            return 0
        self.ctx.extra_headers.append(("WWW-Authenticate", 'Basic realm="Authorization required"'))
        return 401

    def auth_request(self, loc):
        ctx = self.ctx
        sub_loc = find_location(self.host.locations, loc.auth_request)
        sub = ctx.sub(loc.auth_request)
        headers = None
        if sub_loc is None or (sub_loc.proxy_pass is None and sub_loc.ret is None):
            status = 404
        elif sub_loc.ret is not None:
            status = sub_loc.ret[0]
        else:
            try:
                status, headers = self.subrequest(sub_loc, sub)
            except UpstreamError as exc:
                log("[error] auth request to %s for %s: %s" % (loc.auth_request, self.req.host, exc))
                status = exc.status
        sub.upstream = headers
        for var, template in loc.auth_request_set:
            ctx.vars[var] = expand(template, sub)
        if status == 403:
            return 403
        if status == 401:
            if headers is not None and headers.get("WWW-Authenticate"):
                ctx.extra_headers.append(("WWW-Authenticate", headers["WWW-Authenticate"]))
            return 401
        if 200 <= status < 300:
            return 0
        log("[error] auth request unexpected status: %d (%s %s)" % (status, self.req.host, self.req.request_uri))
        return 500

    # -- content --------------------------------------------------------------------------------

    def error(self, loc, status):
        """An error of this request, through the location's error_page."""
        page = loc.error_pages.get(status) if loc is not None else None
        headers = list(self.ctx.extra_headers)
        if page is not None:
            overwrite, template = page
            target = expand(template, self.ctx)
            code = overwrite if overwrite in REDIRECT_STATUSES else 302
            self.h.special(code, self.req, self.ctx, self.add_headers_of(loc),
                           [*(h for h in headers if h[0].lower() != "location"), ("Location", target)])
            return
        self.h.special(status, self.req, self.ctx, self.add_headers_of(loc), headers)

    def serve_static(self, loc):
        root = os.path.realpath(loc.static_root)
        path = os.path.realpath(os.path.join(root, self.req.uri.lstrip("/")))
        if self.req.method not in ("GET", "HEAD"):
            self.error(loc, 405)
            return
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            self.error(loc, 404)
            return
        with open(path, "rb") as handle:
            body = handle.read()
        self.h.send_response(200)
        self.h.send_header("Content-Type", "text/plain")
        self.h.send_header("Content-Length", str(len(body)))
        self.h.send_add_headers(200, self.ctx, self.add_headers_of(loc))
        self.h.send_header("Connection", "close" if self.h.close_connection else "keep-alive")
        self.h.end_headers()
        if self.req.method != "HEAD":
            self.h.wfile.write(body)

    def upstream_request(self, loc, ctx, method, body_length):
        """(connection, request head bytes) for loc's proxy_pass."""
        url = expand(loc.proxy_pass, ctx)
        scheme, host, port, uri, proxy_host = split_url(url)
        ctx.proxy_host = proxy_host
        req = self.req
        main = ctx.uri == req.uri  # False in a subrequest: its URI, no arguments
        if not uri:
            target = req.request_uri if main else ctx.uri
        elif "$" in loc.proxy_pass:
            target = uri
        elif loc.modifier in ("", "^~") and ctx.uri.startswith(loc.path):
            raw = req.path if main else ctx.uri
            rest = raw[len(loc.path):] if raw.startswith(loc.path) else ctx.uri[len(loc.path):]
            target = uri + rest + (("?" + req.args) if main and req.is_args else "")
        else:
            target = uri
        sets = loc.set_headers or self.host.set_headers or list(HTTP_LEVEL_HEADERS)
        named = {name.lower() for name, _value in sets}
        lines = []
        seen = set()
        for name, template in [*sets, ("Host", "$proxy_host"), ("Connection", "close")]:
            if name.lower() in seen:
                continue
            seen.add(name.lower())
            value = expand(template, ctx)
            if value and name.lower() not in ("content-length", "transfer-encoding"):
                lines.append((name, value))
        if body_length is not None:
            lines.append(("Content-Length", str(body_length)))
        for name, value in req.headers.items():
            if name.lower() not in named and name.lower() not in PROXY_OWN_HEADERS:
                lines.append((name, value))
        head = "%s %s HTTP/1.1\r\n%s\r\n" % (method, target, "".join("%s: %s\r\n" % kv for kv in lines))
        upstream = Upstream(scheme, host, port, self.settings.timeout)
        return upstream, head.encode("latin-1", "replace")

    def subrequest(self, loc, ctx):
        """auth_request's subrequest: GET (or proxy_method) without a body; (status, headers)."""
        upstream, head = self.upstream_request(loc, ctx, loc.method or "GET", None)
        try:
            upstream.send(head)
            status, headers = upstream.read_head()
            try:
                received = 0
                for data in upstream.iter_body(headers, status in (204, 304)):
                    received += len(data)
                    if received > 16 * MIB:
                        break
            except (ClientGone, OSError):
                pass
            return status, headers
        finally:
            upstream.close()

    def proxy(self, loc):
        """Send the request to loc's upstream and relay the answer; a status when nginx would answer itself."""
        req, h = self.req, self.h
        body_length, body_source = None, None
        send_body = loc.pass_body and req.body.present
        limit = loc.max_body if loc.max_body is not None else self.host.max_body
        try:
            if send_body and req.body.chunked:
                body_length, body_source = req.body.spool(h.rfile, limit)
            elif send_body:
                body_length = req.body.length
        except UpstreamError as exc:
            h.close_connection = True
            return exc.status
        if not send_body and req.body.present and not req.body.discard(h.rfile):
            h.close_connection = True
        try:
            upstream, head = self.upstream_request(loc, self.ctx, loc.method or req.method, body_length)
        except UpstreamError as exc:
            log("[error] %s while connecting to upstream, client: %s, host: %s, request: %s %s"
                % (exc, req.remote_addr, req.host, req.method, req.request_uri))
            return exc.status
        try:
            upstream.send(head)
            if send_body:
                self.send_body(upstream, body_source)
            status, headers = upstream.read_head()
        except UpstreamError as exc:
            upstream.close()
            log("[error] %s, client: %s, host: %s, request: %s %s"
                % (exc, req.remote_addr, req.host, req.method, req.request_uri))
            return exc.status
        except BaseException:
            upstream.close()
            raise
        try:
            if status == 101 and req.headers.get("Upgrade"):  # nginx tunnels a 101 to a client that asked for it
                self.tunnel(upstream, headers, loc)
            else:
                self.relay(upstream, status, headers, loc)
        finally:
            upstream.close()
        return 0

    def send_body(self, upstream, spool):
        if spool is not None:
            with spool:
                while True:
                    data = spool.read(65536)
                    if not data:
                        break
                    upstream.send(data)
            return
        while self.req.body.remaining:
            upstream.send(self.req.body.read(self.h.rfile, 65536))

    def relay(self, upstream, status, headers, loc):
        h, req = self.h, self.req
        no_body = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked_in = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        known = not chunked_in and length is not None and length.strip().isdigit()
        chunked_out = not no_body and not known and req.handler.request_version == "HTTP/1.1"
        if not no_body and not known and not chunked_out:
            h.close_connection = True
        h.send_response(status)
        for name, value in headers.items():
            lower = name.lower()
            if lower in HIDDEN_RESPONSE_HEADERS or (lower == "content-length" and not known and not no_body):
                continue
            h.send_header(name, value)
        h.send_add_headers(status, self.ctx, self.add_headers_of(loc))
        if chunked_out:
            h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close" if h.close_connection else "keep-alive")
        h.end_headers()
        try:
            for data in upstream.iter_body(headers, no_body):
                if chunked_out:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    h.wfile.write(data)
        except (UpstreamError, ClientGone, TimeoutError, OSError) as exc:
            log("[error] relaying the answer of %s %s: %s" % (req.host, req.request_uri, exc))
            h.close_connection = True
            return
        if chunked_out:
            h.wfile.write(b"0\r\n\r\n")

    def tunnel(self, upstream, headers, loc):
        """A 101 answer: pass it on, then copy bytes both ways until one side closes."""
        h = self.h
        h.close_connection = True
        h.send_response(101)
        for name, value in headers.items():
            lower = name.lower()
            if lower not in HIDDEN_RESPONSE_HEADERS or lower == "upgrade":
                h.send_header(name, value)
        h.send_add_headers(101, self.ctx, self.add_headers_of(loc))
        h.send_header("Connection", "upgrade")
        h.end_headers()
        h.wfile.flush()

        def client_to_upstream():
            try:
                while True:
                    data = h.rfile.read1(65536)
                    if not data:
                        break
                    upstream.sock.sendall(data)
            except (OSError, ValueError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    upstream.sock.shutdown(socket.SHUT_WR)

        pump = threading.Thread(target=client_to_upstream, daemon=True)
        pump.start()
        try:
            while True:
                data = upstream.rfile.read1(65536)
                if not data:
                    break
                h.wfile.write(data)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            pump.join(timeout=5)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        return


def main():
    settings = Settings()
    state = State(settings)
    state.current()
    attrs = {"settings": settings, "state": state}
    http_server = Server((settings.bind, settings.http_port), type("HttpHandler", (Handler,), attrs))
    https_server = Server((settings.bind, settings.https_port), type("HttpsHandler", (TlsHandler,), attrs))
    https_server.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    https_server.context.load_cert_chain(settings.cert, settings.key)
    print("npm-edge: http on %s:%d, https on %s:%d, hosts from %s" % (
        settings.bind, http_server.server_address[1], settings.bind, https_server.server_address[1],
        settings.state_file), flush=True)
    threading.Thread(target=https_server.serve_forever, daemon=True).start()
    http_server.serve_forever()


if __name__ == "__main__":
    main()
