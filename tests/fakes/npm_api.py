"""A fake Nginx Proxy Manager (NPM) backend for unit and integration tests.

Stdlib only (http.server, threaded, 127.0.0.1 on an ephemeral port; ``cryptography`` is used, when present, to read
uploaded certificates). Run it from tests (``FakeNpm(version="2.13.5").start()``) or on its own::

    python -m tests.fakes.npm_api --port 8181 --version 2.12.6
    python3 npm_api.py --host 0.0.0.0 --port 81 --state-file /data/database.json   # as in shp-test/npm

On its own, the version defaults to ``NPM_FAKE_VERSION`` (else 2.13.5) and the first admin of 2.13+ to
``INITIAL_ADMIN_EMAIL`` / ``INITIAL_ADMIN_PASSWORD``, as the real image reads them; with ``--state-file`` (or
``FakeNpm(state_file=...)``) users, tokens, hosts, certificates and access lists are loaded from that JSON file at
start and written back after every write request, so a restarted server keeps them (the real one keeps them in
``/data/database.sqlite``). SIGTERM stops it cleanly (it can run as a container's PID 1).

What it reproduces. The facts come from BRIEF section 3 (measured on the real backend) and, where the brief is
silent, from NPM's own source (NginxProxyManager/nginx-proxy-manager, ``backend/``), read file by file:

- Routing (``routes/main.js``, ``routes/nginx/*.js``): ``GET /api/`` (health, unauthenticated):
  ``{status: "OK", version: {major, minor, revision}}``; from 2.13 also ``setup`` (false until a user exists).
  ``GET /api/schema`` answers without auth. Any other ``/api/*`` path or method NPM has no route for is
  ``404 {"error": {"code": 404, "message": "Item Not Found - <path>"}}`` (the catch-all ItemNotFoundError); so is
  the certificates' ``PUT`` (NPM has none).
- Errors (``lib/error.js`` and the app's error handler): ``{"error": {"code", "message"}}``; non-public errors
  (a failed certbot run) say ``"Internal Error"``; under ``/api/nginx/certificates`` a ``debug`` object with the
  certbot output is added, as NPM does for that path only.
- Auth (BRIEF, measured on v2.15.1): ``POST /api/tokens {identity, secret}`` -> ``{token, expires}`` (a JWT-shaped
  token, 1 day); a request without an ``Authorization: Bearer`` header to a protected route is ``404``. From 2.13:
  wrong credentials 400 "Invalid email or password", an expired token 400 "Token has expired", a token the server
  did not sign (NPM reinstalled with a new ``/data/keys.json``: ``rotate_keys()``; or a malformed one) 500
  "Internal Error". Up to 2.12 (``version="2.12.x"``) all of these are 401 ("No relevant user found" / "Invalid
  password" / "Token has expired" / "Invalid token", ``internal/token.js`` of that time). ``GET /api/tokens``
  refreshes a token.
- Two-factor authentication (2.14+): a user with a TOTP secret (``set_totp(email, secret)``) gets
  ``{requires_2fa: true, challenge_token}`` from ``POST /api/tokens``; ``POST /api/tokens/2fa {challenge_token,
  code}`` answers the token when the code is the RFC 6238 code (SHA1, 6 digits, 30 s) of the current or an
  adjacent window, else 400 "Invalid verification code" (a challenge is valid 5 minutes and used once).
- Both API generations: ``version="2.12.x"`` starts with the default admin ``admin@example.com`` / ``changeme``
  (BRIEF); ``2.13.x`` and later start with no user and ``setup: false`` until ``POST /api/users`` (unauthenticated,
  first user only, made admin: ``routes/users.js``) or ``initial_admin=(email, password)`` (the
  ``INITIAL_ADMIN_EMAIL/PASSWORD`` env). ``trust_forwarded_proto`` exists from 2.14 (400 before, BRIEF);
  ``meta.letsencrypt_email`` / ``letsencrypt_agree`` are required for Let's Encrypt before 2.13 and refused (400)
  from 2.13 (BRIEF; the 2.13 ``certificate-object.json`` meta is ``additionalProperties: false``).
- Validation (``lib/validator/api.js``: ajv, ``coerceTypes: true``, ``allErrors: false``): bodies are checked
  against the schemas of ``schema/paths/nginx/**`` and ``schema/common.json`` with ``additionalProperties:
  false``; the first error is returned as ajv's ``errorsText`` (``"data/forward_port must be <= 65535"``,
  ``"data must NOT have additional properties"``, ``"data must have required property 'forward_host'"``) in a 400.
  Scalars are coerced as ajv does (``"8080"`` -> 8080).
- Proxy hosts (``internal/proxy-host.js``, ``internal/host.js``, ``models/proxy_host.js``): list ordered by
  ``domain_names`` with ``?expand=owner,certificate,access_list`` (a certificate's ``meta`` is emptied in host
  rows: ``cleanRowCertificateMeta``); domain names stored as sent (case kept) and sorted; defaults filled
  in on create (``forward_scheme`` http, ids 0, booleans false, ``enabled`` true, ``advanced_config`` "",
  ``meta`` {}; ``locations`` null when not sent); ``cleanSslHstsData``: no certificate => ``ssl_forced`` and
  ``http2_support`` false, no ``ssl_forced`` => ``hsts_enabled`` false => ``hsts_subdomains`` false (on update
  merged with the stored row first); a domain used by another host (case-insensitive) => 400 "X is already in use";
  after nginx is configured ``meta`` gains ``nginx_online`` / ``nginx_err``: nginx rejecting the config (BRIEF) is
  ``nginx_online: false`` with nginx's message in ``nginx_err``, the host no longer served (out of
  ``live_host_ids()``), the row kept as saved; the fake rejects an ``advanced_config`` (host or location) with a
  directive not in ``NGINX_DIRECTIVES`` or unbalanced braces, a location ``forward_host`` that does not resolve
  (under ``.invalid`` or in ``unresolvable_hosts``) and a custom certificate whose key does not match it. The
  ``POST`` answer carries the ``meta`` as inserted (``{}``: read the row back for the verdict), the ``PUT`` answer
  the verdict. ``certificate_id: "new"`` inserts the
  host first and then requests the certificate, so a failed issuance leaves the host row (with certificate 0) and
  answers 500; on ``PUT`` the certificate is requested before the row is patched. ``/enable`` and ``/disable``
  answer 400 "Host is already enabled|disabled"; ``PUT {"enabled": false}`` stores the flag but leaves the site
  live (BRIEF): ``live_host_ids()`` shows which hosts nginx serves.
- Certificates (``internal/certificate.js``, ``models/certificate.js``): Let's Encrypt is synchronous (``issue_delay``
  seconds); ``nice_name`` becomes the joined domain names; the row is inserted before certbot runs and deleted
  when certbot fails (v2.15.1, BRIEF; also for a host's ``"new"`` certificate); HTTP challenge fails for domains
  under ``.invalid`` or in ``fail_domains``; DNS challenge (``meta.dns_challenge``) needs a known ``dns_provider``
  and non-empty ``dns_provider_credentials``. ``provider: "other"`` is created empty and filled by ``POST /{id}/upload``
  (multipart ``certificate``, ``certificate_key``, ``intermediate_certificate``): the key must be a private key,
  the certificate a valid, unexpired one; ``domain_names`` becomes ``[cn]``, ``expires_on`` its notAfter; the answer
  is the three PEM texts. Certificate rows keep their ``meta`` (PEM texts included) in ``GET`` answers, as
  ``getAll`` does no masking.
- Access lists (``internal/access-list.js``): passwords are masked on every read (``password: ""``, ``hint``: first
  character + ``*`` x (length - 1)); on ``PUT`` an item with an empty password keeps the stored one, an item with a
  password replaces that user, users not sent are deleted; ``satisfy_any`` and ``pass_auth`` are only patched
  together with ``name`` (keys not sent are left as they are); ``clients`` are replaced when sent; ``PUT``
  answers with the list after the update, items (masked) and clients expanded (v2.15.1, BRIEF);
  ``proxy_host_count`` is in every row; deleting a list sets ``access_list_id`` 0 on its hosts.
- Users: ``GET /api/users/me``, ``PUT /api/users/{id|me}`` (email, name, nickname), ``PUT
  /api/users/{id|me}/auth {type: "password", current, secret}`` (``current`` must match for one's own account).

Known differences from the real backend (where the source could not settle it, or it does not matter here):

- Only proxy hosts take part in the duplicate-domain check; NPM also checks redirection and dead hosts, which the
  fake does not implement (nor streams, settings, reports, audit log, OIDC, turning 2FA on through the API:
  ``set_totp`` stands for the UI's enrolment, and backup codes).
- ``lowercase_domains=True`` lower-cases domain names on write (what NPM's UI does before sending); the API keeps
  them as sent, which is the default.
- nginx is not run: ``nginx -t`` is approximated by the rules above. A directive nginx knows but
  ``NGINX_DIRECTIVES`` lacks is reported unknown; arguments are not checked (``proxy_buffering offf;`` passes);
  the line in ``nginx_err`` is the line in the advanced config, not in the generated file. The key/certificate
  comparison uses ``cryptography`` or, without it, ``openssl``; with neither the pair is taken as matching.
  Main ``forward_host`` names are never resolved (NPM puts them in a variable, resolved per request).
- A request without a token is 404 as the brief measured; every token the fake did not issue is 500 on 2.13+.
  ``int_booleans=True`` returns booleans as 0/1, as releases whose models did not convert the database's integers
  did (the current models use ``convertIntFieldsToBool``).
- Token ``expires`` is an ISO timestamp; the token is not a verifiable JWT; ``token_ttl`` shortens its life.
- certificate_id and access_list_id are not checked for existence (NPM does not check them either; it fails
  later when rendering nginx config, which the fake does not render).
- A certbot failure never reaches the network: the outcome is decided from the domain names and credentials.
  Custom certificates are parsed with ``cryptography`` when it is importable, else only their PEM markers are
  checked and ``cn`` / ``expires_on`` come from ``custom_cert_info``.
- Timestamps are ``YYYY-MM-DD HH:MM:SS`` UTC strings (the MySQL/SQLite shape); ids are sequential per table.
"""

from __future__ import annotations

import argparse
import base64
import copy
import email.parser
import email.policy
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    from tests.fakes.server import FakeServer
except ImportError:  # run as a script (the npm stand-in image): server.py sits next to this file
    from server import FakeServer

DEFAULT_ADMIN = ("admin@example.com", "changeme")
DNS_PROVIDERS = ("cloudflare", "route53", "digitalocean", "hetzner", "ovh", "gandi", "linode", "rfc2136",
                 "powerdns", "duckdns", "acmedns", "transip", "inwx", "ionos", "porkbun", "namecheap")
HOST_BOOLS = ("ssl_forced", "hsts_enabled", "hsts_subdomains", "http2_support", "block_exploits", "caching_enabled",
              "allow_websocket_upgrade", "enabled", "trust_forwarded_proto")

# ---------------------------------------------------------------------------------------------
# Schemas (schema/common.json, schema/paths/nginx/**): the parts the API validates
# ---------------------------------------------------------------------------------------------

DOMAIN_PATTERN = r"^[^&| @!#%^();:/\\}{=+?<>,~`'\"]+$"
IPV4_PATTERN = r"^([0-9]{1,3}\.){3}[0-9]{1,3}(/([0-9]|[1-2][0-9]|3[0-2]))?$"
IPV6_PATTERN = r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%.+)?(/([0-9]|[1-9][0-9]|1[0-1][0-9]|12[0-8]))?$"
DOMAIN_NAMES = {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                "items": {"type": "string", "pattern": DOMAIN_PATTERN}}
BOOL = {"type": "boolean"}
FORWARD_SCHEME = {"type": "string", "enum": ["http", "https"]}
FORWARD_HOST = {"type": "string", "minLength": 1, "maxLength": 255}
FORWARD_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
CERTIFICATE_ID = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^new$"}]}
LOCATION = {"type": "object", "required": ["forward_scheme", "forward_host", "forward_port", "path"],
            "additionalProperties": False,
            "properties": {"id": {"type": ["integer", "null"]}, "path": {"type": "string", "minLength": 1},
                           "forward_scheme": FORWARD_SCHEME, "forward_host": FORWARD_HOST,
                           "forward_port": FORWARD_PORT, "forward_path": {"type": "string"},
                           "advanced_config": {"type": "string"}}}


def proxy_host_properties(generation):
    props = {"domain_names": DOMAIN_NAMES, "forward_scheme": FORWARD_SCHEME, "forward_host": FORWARD_HOST,
             "forward_port": FORWARD_PORT, "certificate_id": CERTIFICATE_ID, "ssl_forced": BOOL,
             "hsts_enabled": BOOL, "hsts_subdomains": BOOL, "http2_support": BOOL, "block_exploits": BOOL,
             "caching_enabled": BOOL, "allow_websocket_upgrade": BOOL,
             "access_list_id": {"type": "integer", "minimum": 0}, "advanced_config": {"type": "string"},
             "enabled": BOOL, "meta": {"type": "object"}, "locations": {"type": "array", "items": LOCATION}}
    if generation >= (2, 14):
        props["trust_forwarded_proto"] = BOOL
    return props


def certificate_meta(generation):
    props = {"certificate": {"type": "string", "minLength": 1}, "certificate_key": {"type": "string", "minLength": 1},
             "dns_challenge": BOOL, "dns_provider": {"type": "string"}, "dns_provider_credentials": {"type": "string"},
             "letsencrypt_certificate": {"type": "object"},
             "propagation_seconds": {"type": "integer", "minimum": 0}}
    if generation < (2, 13):
        props.update(letsencrypt_email={"type": "string"}, letsencrypt_agree=BOOL)
    return {"type": "object", "additionalProperties": False, "properties": props}


def schemas(generation):
    host = proxy_host_properties(generation)
    return {
        "tokens.post": {"type": "object", "additionalProperties": False, "required": ["identity", "secret"],
                        "properties": {"identity": {"type": "string", "minLength": 1},
                                       "secret": {"type": "string", "minLength": 1},
                                       "scope": {"type": "string", "enum": ["user"]},
                                       "expiry": {"type": "string"}}},
        "tokens.2fa": {"type": "object", "additionalProperties": False, "required": ["challenge_token", "code"],
                       "properties": {"challenge_token": {"type": "string", "minLength": 1},
                                      "code": {"type": "string", "minLength": 6, "maxLength": 8}}},
        "users.post": {"type": "object", "additionalProperties": False, "required": ["name", "nickname", "email"],
                       "properties": {"name": {"type": "string", "minLength": 1},
                                      "nickname": {"type": "string", "minLength": 1},
                                      "email": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
                                      "roles": {"type": "array", "items": {"type": "string",
                                                                           "enum": ["admin"]}},
                                      "is_disabled": BOOL, "auth": {"type": "object"}}},
        "users.put": {"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": {"name": {"type": "string", "minLength": 1},
                                     "nickname": {"type": "string", "minLength": 1},
                                     "email": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
                                     "roles": {"type": "array", "items": {"type": "string", "enum": ["admin"]}},
                                     "is_disabled": BOOL}},
        "users.auth": {"type": "object", "additionalProperties": False, "required": ["type", "secret"],
                       "properties": {"type": {"type": "string", "pattern": "^password$"},
                                      "current": {"type": "string", "minLength": 1},
                                      "secret": {"type": "string", "minLength": 1}}},
        "proxy-hosts.post": {"type": "object", "additionalProperties": False,
                             "required": ["domain_names", "forward_scheme", "forward_host", "forward_port"],
                             "properties": host},
        "proxy-hosts.put": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": host},
        "certificates.post": {"type": "object", "additionalProperties": False, "required": ["provider"],
                              "properties": {"provider": {"type": "string", "pattern": "^(letsencrypt|other)$"},
                                             "nice_name": {"type": "string"},
                                             "domain_names": dict(DOMAIN_NAMES, minItems=0),
                                             "meta": certificate_meta(generation)}},
        "access-lists.post": access_list_schema(password_min=1, required=["name"]),
        "access-lists.put": access_list_schema(password_min=0, required=[]),
    }


def access_list_schema(password_min, required):
    item = {"type": "object", "additionalProperties": False,
            "properties": {"username": {"type": "string", "minLength": 1},
                           "password": {"type": "string", "minLength": password_min}}}
    client = {"type": "object", "additionalProperties": False,
              "properties": {"address": {"oneOf": [{"type": "string", "pattern": IPV4_PATTERN},
                                                   {"type": "string", "pattern": IPV6_PATTERN},
                                                   {"type": "string", "pattern": "^all$"}]},
                             "directive": {"type": "string", "enum": ["allow", "deny"]}}}
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"name": {"type": "string", "minLength": 1}, "satisfy_any": BOOL, "pass_auth": BOOL,
                           "items": {"type": "array", "items": item}, "clients": {"type": "array", "items": client},
                           "meta": {"type": "object"}}}


# ---------------------------------------------------------------------------------------------
# A small ajv: the keywords these schemas use, coerceTypes, first error only, errorsText wording
# ---------------------------------------------------------------------------------------------

class Invalid(Exception):
    def __init__(self, path, message):
        super().__init__("data%s %s" % (path, message))
        self.text = "data%s %s" % (path, message)


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value == int(value) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def coerce(value, wanted):
    """ajv's coerceTypes for scalars; returns (ok, value)."""
    have = json_type(value)
    if have == wanted or (wanted == "number" and have == "integer"):
        return True, value
    if wanted in ("integer", "number"):
        if isinstance(value, bool):
            return True, int(value)
        if isinstance(value, str) and re.match(r"^-?\d+(\.\d+)?$", value.strip() or "x"):
            number = float(value)
            if wanted == "integer" and number != int(number):
                return False, value
            return True, int(number) if number == int(number) else number
        if value is None:
            return True, 0
    if wanted == "boolean":
        if value in ("true", 1) and not isinstance(value, bool):
            return True, True
        if value in ("false", 0, None) and not isinstance(value, bool):
            return True, False
    if wanted == "string":
        if isinstance(value, bool):
            return True, "true" if value else "false"
        if isinstance(value, (int, float)):
            return True, str(value)
        if value is None:
            return True, ""
    if wanted == "null" and value in ("", 0, False):
        return True, None
    return False, value


def check(schema, value, path=""):
    """Validate (and coerce) value; returns the value; raises Invalid with ajv's message."""
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf")
        matches = []
        for option in options:
            try:
                matches.append(check(option, copy.deepcopy(value), path))
            except Invalid:
                continue
        if not matches:
            raise Invalid(path, "must match a schema in anyOf" if "anyOf" in schema else
                          "must match exactly one schema in oneOf")
        if "oneOf" in schema and len(matches) > 1:
            raise Invalid(path, "must match exactly one schema in oneOf")
        return matches[0]
    wanted = schema.get("type")
    if wanted is not None:
        types = wanted if isinstance(wanted, list) else [wanted]
        for kind in types:
            ok, coerced = coerce(value, kind)
            if ok:
                value = coerced
                break
        else:
            raise Invalid(path, "must be %s" % ",".join(types))
    if "enum" in schema and value not in schema["enum"]:
        raise Invalid(path, "must be equal to one of the allowed values")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise Invalid(path, "must NOT have fewer than %d characters" % schema["minLength"])
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise Invalid(path, "must NOT have more than %d characters" % schema["maxLength"])
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise Invalid(path, 'must match pattern "%s"' % schema["pattern"])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise Invalid(path, "must be >= %s" % schema["minimum"])
        if "maximum" in schema and value > schema["maximum"]:
            raise Invalid(path, "must be <= %s" % schema["maximum"])
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise Invalid(path, "must NOT have fewer than %d items" % schema["minItems"])
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise Invalid(path, "must NOT have more than %d items" % schema["maxItems"])
        if schema.get("uniqueItems"):
            for i, item in enumerate(value):
                for j in range(i):
                    if value[j] == item:
                        raise Invalid(path, "must NOT have duplicate items (items ## %d and %d are identical)"
                                      % (j, i))
        if "items" in schema:
            value = [check(schema["items"], item, "%s/%d" % (path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise Invalid(path, "must have required property '%s'" % key)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            raise Invalid(path, "must NOT have fewer than %d properties" % schema["minProperties"])
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            for key in value:
                if key not in props:
                    raise Invalid(path, "must NOT have additional properties")
        value = {k: check(props[k], v, "%s/%s" % (path, k)) if k in props else v for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

class ApiError(Exception):
    """An NPM error: status, public message and, for certbot failures, the debug text."""

    def __init__(self, status, message, debug=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.debug = debug


def parse_version(text):
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(([*parts, 0, 0, 0])[:3])


def now_text(offset_days=0):
    return (datetime.now(UTC) + timedelta(days=offset_days)).strftime("%Y-%m-%d %H:%M:%S")


def totp(secret, at, step=30, digits=6):
    """RFC 6238 TOTP (HMAC-SHA1) of a base32 secret at epoch second at; "" for an unreadable secret."""
    text = re.sub(r"[\s-]", "", secret or "").upper()
    try:
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return ""
    mac = hmac.new(key, struct.pack(">Q", int(at) // step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return "%0*d" % (digits, value)


def key_matches(cert_pem, key_pem):
    """Whether the private key belongs to the certificate (their public keys are equal): cryptography when it is
    importable, else openssl (the key on stdin); True when neither can tell."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        pubs = []
        for args, text in ((["x509", "-noout", "-pubkey"], cert_pem), (["pkey", "-pubout"], key_pem)):
            try:
                res = subprocess.run(["openssl", *args], input=text.encode(), capture_output=True, timeout=10,
                                     check=False)
            except (OSError, subprocess.SubprocessError):
                return True
            if res.returncode != 0:
                return False
            pubs.append(res.stdout.strip())
        return pubs[0] == pubs[1]
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


# Directives nginx (NPM's openresty build) knows in the server/location contexts an advanced config lands in; any
# other name is nginx's 'unknown directive'. Generous on purpose: a real directive missing here would take a test
# host offline, so the list errs on the side of accepting.
NGINX_DIRECTIVES = frozenset((
    "access_log", "add_header", "add_trailer", "alias", "allow", "auth_basic", "auth_basic_user_file", "auth_request",
    "auth_request_set", "autoindex", "break", "charset", "chunked_transfer_encoding", "client_body_buffer_size",
    "client_body_timeout", "client_header_buffer_size", "client_header_timeout", "client_max_body_size",
    "default_type", "deny", "error_log", "error_page", "etag", "expires", "gzip", "gzip_comp_level",
    "gzip_min_length", "gzip_proxied", "gzip_types", "gzip_vary", "if", "include", "index", "internal",
    "keepalive_timeout", "large_client_header_buffers", "limit_conn", "limit_except", "limit_rate", "limit_req",
    "location", "log_not_found", "more_clear_headers", "more_set_headers", "open_file_cache", "proxy_buffer_size",
    "proxy_buffering", "proxy_buffers", "proxy_busy_buffers_size", "proxy_cache", "proxy_cache_bypass",
    "proxy_cache_valid", "proxy_connect_timeout", "proxy_cookie_domain", "proxy_cookie_path", "proxy_hide_header",
    "proxy_http_version", "proxy_ignore_client_abort", "proxy_ignore_headers", "proxy_intercept_errors",
    "proxy_max_temp_file_size", "proxy_next_upstream", "proxy_no_cache", "proxy_pass", "proxy_pass_header",
    "proxy_pass_request_body", "proxy_pass_request_headers", "proxy_read_timeout", "proxy_redirect",
    "proxy_request_buffering", "proxy_send_timeout", "proxy_set_body", "proxy_set_header", "proxy_ssl_server_name",
    "proxy_ssl_verify", "proxy_temp_file_write_size", "real_ip_header", "real_ip_recursive", "resolver",
    "resolver_timeout", "return", "rewrite", "root", "satisfy", "send_timeout", "sendfile", "server_tokens", "set",
    "set_real_ip_from", "ssl_protocols", "ssl_ciphers", "sub_filter", "sub_filter_once", "sub_filter_types",
    "tcp_nodelay", "tcp_nopush", "try_files", "underscores_in_headers", "uwsgi_pass", "fastcgi_pass", "fastcgi_param",
    "grpc_pass", "websocket_read_timeout",
))


def nginx_config_problem(text):
    """nginx -t on an advanced config, roughly: ('unknown directive "x"', line) or an unbalanced block, or None."""
    depth, line, start = 0, 1, True
    tokens = re.finditer(r"#[^\n]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|[{};]|[^\s{};\"'#]+|\n", text)
    for match in tokens:
        token = match.group(0)
        if token == "\n":
            line += 1
            continue
        line += token.count("\n")
        if token.startswith("#"):
            continue
        if token in ("{", ";"):
            depth += token == "{"
            start = True
            continue
        if token == "}":
            if depth == 0:
                return ('unexpected "}"', line)
            depth -= 1
            start = True
            continue
        if start:
            start = False
            if token not in NGINX_DIRECTIVES:
                return ('unknown directive "%s"' % token, line)
    if depth or not start:
        return ('unexpected end of file, expecting "%s"' % ("}" if depth and start else ";\" or \"}"), line)
    return None


class FakeNpm(FakeServer):
    """The fake server's state and endpoints. start() serves it on 127.0.0.1 in a thread."""

    HANDLER_ATTR = "npm"
    NAME = "fake-npm"

    def __init__(self, version="2.13.5", initial_admin=None, token_ttl=86400, issue_delay=0.05, fail_domains=(),
                 lowercase_domains=False, int_booleans=False, custom_cert_info=None, state_file=None,
                 unresolvable_hosts=()):
        self.version = version
        self.state_file = state_file
        self.generation = parse_version(version)[:2]
        self.token_ttl = token_ttl
        self.issue_delay = issue_delay
        self.fail_domains = set(fail_domains)
        self.lowercase_domains = lowercase_domains
        self.unresolvable_hosts = set(unresolvable_hosts)
        self.challenges = {}
        self.int_booleans = int_booleans
        self.custom_cert_info = custom_cert_info or {}
        self.schemas = schemas(self.generation)
        self.init_server()
        self.users, self.proxy_hosts, self.certificates, self.access_lists = {}, {}, {}, {}
        self.tokens = {}
        self.live = set()
        self.next_id = Counter()
        if self.generation < (2, 13):
            self.add_user(*DEFAULT_ADMIN, name="Administrator", nickname="Admin")
        elif initial_admin:
            self.add_user(*initial_admin, name="Administrator", nickname="Admin")
        if state_file and os.path.exists(state_file):
            self.load_state()

    # -- persistence ----------------------------------------------------------------------------

    TABLES = ("users", "proxy_hosts", "certificates", "access_lists")

    def save_state(self):
        """Write the database to state_file (atomically: a temporary file renamed over it)."""
        if not self.state_file:
            return
        with self.lock:
            state = {name: list(getattr(self, name).values()) for name in self.TABLES}
            state.update(version=self.version, live=sorted(self.live), next_id=dict(self.next_id),
                         tokens={t: list(v) for t, v in self.tokens.items()})
            text = json.dumps(state, indent=1, sort_keys=True)
        tmp = "%s.tmp" % self.state_file
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.state_file)

    def load_state(self):
        """Replace the in-memory database with state_file's (the seeded admin included)."""
        with open(self.state_file, encoding="utf-8") as handle:
            state = json.load(handle)
        with self.lock:
            for name in self.TABLES:
                setattr(self, name, {row["id"]: row for row in state.get(name, [])})
            self.live = set(state.get("live", []))
            self.next_id = Counter(state.get("next_id", {}))
            self.tokens = {t: tuple(v) for t, v in state.get("tokens", {}).items()}

    # -- lifecycle ------------------------------------------------------------------------------

    # -- helpers for tests ----------------------------------------------------------------------

    def count(self, method, path):
        """Requests made with method to exactly path (query string excluded)."""
        return self.counts.get("%s %s" % (method, path), 0)

    def mutations(self):
        """'METHOD path' of every write so far (tokens excluded: a login changes nothing)."""
        return ["%s %s" % (m, p) for m, p, q in self.calls
                if m in ("POST", "PUT", "DELETE") and p != "/api/tokens"]

    def live_host_ids(self):
        with self.lock:
            return set(self.live)

    def hosts_with(self, domain):
        with self.lock:
            return [copy.deepcopy(h) for h in self.proxy_hosts.values() if domain.lower() in
                    [d.lower() for d in h["domain_names"]]]

    def new_id(self, table):
        self.next_id[table] += 1
        return self.next_id[table]

    def add_user(self, email, password, name="Administrator", nickname="Admin", roles=("admin",)):
        with self.lock:
            user = {"id": self.new_id("user"), "created_on": now_text(), "modified_on": now_text(),
                    "is_disabled": False, "email": email, "name": name, "nickname": nickname,
                    "avatar": "", "roles": list(roles)}
            self.users[user["id"]] = dict(user, password=password)
            return user

    def expire_tokens(self):
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = (self.tokens[token][0], time.time() - 1)

    def add_proxy_host(self, domain_names, forward_host="app", forward_port=80, **fields):
        """Insert a host as another client would (no validation); returns it."""
        with self.lock:
            row = self.host_defaults()
            row.update(fields, domain_names=self.clean_domains(domain_names), forward_host=forward_host,
                       forward_port=forward_port)
            row.update(id=self.new_id("proxy_host"), owner_user_id=1)
            row = self.clean_ssl_hsts(row)
            self.proxy_hosts[row["id"]] = row
            self.configure(row)
            return copy.deepcopy(row)

    def add_certificate(self, domain_names, provider="letsencrypt", nice_name=None, meta=None):
        with self.lock:
            row = {"id": self.new_id("certificate"), "created_on": now_text(), "modified_on": now_text(),
                   "owner_user_id": 1, "provider": provider, "domain_names": sorted(domain_names),
                   "nice_name": nice_name or ", ".join(sorted(domain_names)), "expires_on": now_text(90),
                   "meta": dict(meta or {})}
            self.certificates[row["id"]] = row
            return copy.deepcopy(row)

    # -- auth -----------------------------------------------------------------------------------

    def user_for(self, header):
        """The user a request acts for. Without a token 404. From 2.13 (BRIEF, measured on v2.15.1): an expired
        token 400 "Token has expired", a token this server did not sign (another /data/keys.json, a malformed one)
        500 "Internal Error". Up to 2.12: 401 for both."""
        if not header or not header.startswith("Bearer ") or not header[7:].strip():
            raise ApiError(404, "Not Found")
        old = self.generation < (2, 13)
        entry = self.tokens.get(header[7:].strip())
        if entry is None:
            raise ApiError(401, "Invalid token") if old else ApiError(500, "Internal Error")
        user_id, expires = entry
        if expires < time.time():
            raise ApiError(401 if old else 400, "Token has expired")
        user = self.users.get(user_id)
        if user is None or user["is_disabled"]:
            raise ApiError(401 if old else 400, "User cannot be loaded for Token")
        return user

    def rotate_keys(self):
        """NPM reinstalled (a new /data/keys.json): no token signed before verifies any more."""
        with self.lock:
            self.tokens.clear()
            self.challenges.clear()

    def set_totp(self, email, secret):
        """Turn on two-factor authentication (v2.14+) for a user, with a base32 TOTP secret (None: off)."""
        with self.lock:
            user = next(u for u in self.users.values() if u["email"].lower() == email.lower())
            user["totp_secret"] = secret

    def issue_token(self, user):
        expires = time.time() + self.token_ttl
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps({"attrs": {"id": user["id"]}, "scope": ["user"],
                                                    "exp": int(expires)}).encode()).rstrip(b"=").decode()
        token = "%s.%s.%s" % (header, body, secrets.token_urlsafe(32))
        self.tokens[token] = (user["id"], expires)
        stamp = datetime.fromtimestamp(expires, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"token": token, "expires": stamp}

    def login(self, data):
        data = self.validate("tokens.post", data)
        user = next((u for u in self.users.values() if u["email"].lower() == data["identity"].lower()), None)
        old = self.generation < (2, 13)
        if user is None or user["is_disabled"]:
            raise ApiError(401, "No relevant user found") if old else ApiError(400, "Invalid email or password")
        if user["password"] != data["secret"]:
            raise ApiError(401, "Invalid password") if old else ApiError(400, "Invalid email or password")
        if user.get("totp_secret") and self.generation >= (2, 14):
            challenge = secrets.token_urlsafe(24)
            self.challenges[challenge] = (user["id"], time.time() + 300)
            return {"requires_2fa": True, "challenge_token": challenge}
        return self.issue_token(user)

    def login_2fa(self, data):
        """POST /api/tokens/2fa {challenge_token, code}: the TOTP code of the current or an adjacent 30 s window."""
        data = self.validate("tokens.2fa", data)
        entry = self.challenges.get(data["challenge_token"])
        if entry is None or entry[1] < time.time():
            raise ApiError(400, "Invalid or expired challenge token")
        user = self.users.get(entry[0])
        now = time.time()
        if user is None or not any(totp(user.get("totp_secret") or "", now + 30 * step) == data["code"]
                                   for step in (-1, 0, 1)):
            raise ApiError(400, "Invalid verification code")
        del self.challenges[data["challenge_token"]]
        return self.issue_token(user)

    def validate(self, name, data):
        if data is None:
            raise ApiError(400, "Payload is undefined")
        try:
            return check(self.schemas[name], copy.deepcopy(data))
        except Invalid as exc:
            raise ApiError(400, exc.text) from None

    # -- health and users -----------------------------------------------------------------------

    def health(self):
        major, minor, revision = parse_version(self.version)
        out = {"status": "OK", "version": {"major": major, "minor": minor, "revision": revision}}
        if self.generation >= (2, 13):
            out = {"status": "OK", "setup": bool(self.users), "version": out["version"]}
        return out

    def public_user(self, user):
        return {k: v for k, v in user.items() if k not in ("password", "totp_secret")}

    def create_user(self, actor, data):
        setup_mode = self.generation >= (2, 13) and not self.users
        if actor is None and not setup_mode:
            raise ApiError(404, "Not Found")
        data = dict(data or {})
        if setup_mode:
            data["is_disabled"] = False
            roles = data.get("roles") if isinstance(data.get("roles"), list) else []
            data["roles"] = [*roles, "admin"] if "admin" not in roles else roles
        data = self.validate("users.post", data)
        if any(u["email"].lower() == data["email"].lower() for u in self.users.values()):
            raise ApiError(400, "Email address already in use")
        auth = data.get("auth") or {}
        user = self.add_user(data["email"], auth.get("secret") or secrets.token_hex(8), name=data["name"],
                             nickname=data["nickname"], roles=data.get("roles") or [])
        return user

    def user_target(self, actor, ident):
        user_id = actor["id"] if ident == "me" else int(ident) if ident.isdigit() else -1
        if user_id != actor["id"] and "admin" not in actor["roles"]:
            raise ApiError(403, "Permission Denied")
        if user_id not in self.users:
            raise ApiError(404, "Item Not Found - %s" % ident)
        return self.users[user_id]

    def update_user(self, actor, ident, data):
        user = self.user_target(actor, ident)
        data = self.validate("users.put", data)
        if "email" in data and any(u["email"].lower() == data["email"].lower() and u["id"] != user["id"]
                                   for u in self.users.values()):
            raise ApiError(400, "Email address already in use")
        user.update(data, modified_on=now_text())
        return self.public_user(user)

    def set_password(self, actor, ident, data):
        user = self.user_target(actor, ident)
        data = self.validate("users.auth", data)
        if user["id"] == actor["id"] and data.get("current") != user["password"]:
            raise ApiError(400, "Current password was not correct")
        user["password"] = data["secret"]
        return True

    # -- proxy hosts ----------------------------------------------------------------------------

    def host_defaults(self):
        row = {"created_on": now_text(), "modified_on": now_text(), "owner_user_id": 1, "domain_names": [],
               "forward_scheme": "http", "forward_host": "", "forward_port": 80, "access_list_id": 0,
               "certificate_id": 0, "ssl_forced": False, "caching_enabled": False, "block_exploits": False,
               "advanced_config": "", "meta": {}, "allow_websocket_upgrade": False, "http2_support": False,
               "enabled": True, "locations": None, "hsts_enabled": False, "hsts_subdomains": False}
        if self.generation >= (2, 14):
            row["trust_forwarded_proto"] = False
        return row

    def clean_domains(self, names):
        names = [n.lower() for n in names] if self.lowercase_domains else list(names)
        return sorted(names)

    @staticmethod
    def clean_ssl_hsts(data, existing=None):
        """internal/host.js cleanSslHstsData."""
        combined = dict(existing or {}, **data)
        if not combined.get("certificate_id"):
            combined["ssl_forced"] = False
            combined["http2_support"] = False
        if not combined.get("ssl_forced"):
            combined["hsts_enabled"] = False
        if not combined.get("hsts_enabled"):
            combined["hsts_subdomains"] = False
        return combined

    def hostname_taken(self, name, ignore_id=0):
        for row in self.proxy_hosts.values():
            if row["id"] != ignore_id and name.lower() in [d.lower() for d in row["domain_names"]]:
                return True
        return False

    def configure(self, row):
        """internalNginx.configure: nginx -t on the host's config; meta records the verdict. A rejected config is
        removed (renamed .err) and the host is no longer served; the row stays as saved."""
        problem = self.nginx_problem(row)
        row["meta"] = dict(row.get("meta") or {}, nginx_online=problem is None, nginx_err=problem)
        if problem is None:
            self.live.add(row["id"])
        else:
            self.live.discard(row["id"])

    def nginx_problem(self, row):
        """nginx's message for a config it refuses (see nginx_config_problem), or None."""
        conf = "/data/nginx/proxy_host/%s.conf" % row["id"]
        lines = []
        problem = nginx_config_problem(row.get("advanced_config") or "")
        if problem:
            lines.append("%s in %s:%d" % (problem[0], conf, problem[1]))
        for location in row.get("locations") or []:
            name = location.get("forward_host") or ""
            if name.endswith(".invalid") or name in self.unresolvable_hosts:
                lines.append('host not found in upstream "%s" in %s' % (name, conf))
            problem = nginx_config_problem(location.get("advanced_config") or "")
            if problem:
                lines.append("%s in %s:%d" % (problem[0], conf, problem[1]))
        cert = self.certificates.get(row.get("certificate_id"))
        if cert and cert["provider"] == "other":
            meta = cert.get("meta") or {}
            if meta.get("certificate") and meta.get("certificate_key") and \
                    not key_matches(meta["certificate"], meta["certificate_key"]):
                lines.append('SSL_CTX_use_PrivateKey("/data/custom_ssl/npm-%s/privkey.pem") failed (SSL: '
                             'error:05800074:x509 certificate routines::key values mismatch)' % cert["id"])
        if not lines:
            return None
        return ('Command failed: /usr/sbin/nginx -t -g "error_log off;"\nnginx: [emerg] %s\n'
                "nginx: configuration file /etc/nginx/nginx.conf test failed\n" % lines[0])

    def host_out(self, row, expand=()):
        out = copy.deepcopy(row)
        if "certificate" in expand:
            cert = self.certificates.get(row["certificate_id"])
            out["certificate"] = dict(self.cert_out(cert), meta={}) if cert else None
        if "access_list" in expand:
            acl = self.access_lists.get(row["access_list_id"])
            out["access_list"] = self.acl_out(acl, ("items", "clients")) if acl else None
        if "owner" in expand:
            out["owner"] = self.public_user(self.users.get(row["owner_user_id"]) or next(iter(self.users.values())))
        if self.int_booleans:
            for key in HOST_BOOLS:
                if key in out:
                    out[key] = int(bool(out[key]))
        return out

    def host_or_404(self, host_id):
        row = self.proxy_hosts.get(host_id)
        if row is None:
            raise ApiError(404, "Item Not Found - %s" % host_id)
        return row

    def list_hosts(self, expand):
        rows = sorted(self.proxy_hosts.values(), key=lambda r: json.dumps(r["domain_names"]))
        return [self.host_out(r, expand) for r in rows]

    def create_host(self, actor, data):
        data = self.validate("proxy-hosts.post", data)
        new_cert = data.get("certificate_id") == "new"
        if new_cert:
            del data["certificate_id"]
        for name in data["domain_names"]:
            if self.hostname_taken(name):
                raise ApiError(400, "%s is already in use" % name)
        row = self.host_defaults()
        row.update(self.clean_ssl_hsts(data), owner_user_id=actor["id"], id=self.new_id("proxy_host"))
        row["domain_names"] = self.clean_domains(row["domain_names"])
        self.proxy_hosts[row["id"]] = row
        sent_meta = copy.deepcopy(row["meta"])
        if new_cert:
            cert = self.quick_certificate(actor, row["domain_names"], data.get("meta") or {})
            self.update_host(actor, row["id"], {"certificate_id": cert["id"]}, validated=True)
        self.configure(row)
        # The answer is the row as inserted: meta without nginx's verdict (BRIEF: "the POST answer has meta: {}").
        return dict(self.host_out(row, ("certificate", "owner", "access_list")), meta=sent_meta)

    def update_host(self, actor, host_id, data, validated=False):
        if not validated:
            data = self.validate("proxy-hosts.put", data)
        row = self.host_or_404(host_id)
        new_cert = data.get("certificate_id") == "new"
        if new_cert:
            del data["certificate_id"]
        for name in data.get("domain_names", []):
            if self.hostname_taken(name, ignore_id=host_id):
                raise ApiError(400, "%s is already in use" % name)
        if new_cert:
            meta = dict(row.get("meta") or {}, **(data.get("meta") or {}))
            cert = self.quick_certificate(actor, data.get("domain_names") or row["domain_names"], meta)
            data["certificate_id"] = cert["id"]
        merged = self.clean_ssl_hsts(data, row)
        if "domain_names" in merged:
            merged["domain_names"] = self.clean_domains(merged["domain_names"])
        row.update(merged, modified_on=now_text())
        if row["enabled"]:
            self.configure(row)
        return self.host_out(row, ("owner", "certificate", "access_list"))

    def delete_host(self, host_id):
        self.host_or_404(host_id)
        del self.proxy_hosts[host_id]
        self.live.discard(host_id)
        return True

    def enable_host(self, host_id, enable):
        row = self.host_or_404(host_id)
        if bool(row["enabled"]) == enable:
            raise ApiError(400, "Host is already %s" % ("enabled" if enable else "disabled"))
        row["enabled"] = enable
        if enable:
            self.configure(row)
        else:
            self.live.discard(host_id)
        return True

    # -- certificates ---------------------------------------------------------------------------

    def cert_out(self, row, expand=()):
        out = copy.deepcopy(row)
        if "proxy_hosts" in expand:
            out["proxy_hosts"] = [self.host_out(h) for h in self.proxy_hosts.values()
                                  if h["certificate_id"] == row["id"]]
        if "owner" in expand:
            out["owner"] = self.public_user(self.users.get(row["owner_user_id"]) or next(iter(self.users.values())))
        return out

    def cert_or_404(self, cert_id):
        row = self.certificates.get(cert_id)
        if row is None:
            raise ApiError(404, "Item Not Found - %s" % cert_id)
        return row

    def quick_certificate(self, actor, domain_names, meta):
        """createQuickCertificate: a Let's Encrypt certificate with the host's meta (not validated by a route)."""
        keep = ("dns_challenge", "dns_provider", "dns_provider_credentials", "propagation_seconds",
                "letsencrypt_email", "letsencrypt_agree")
        return self.create_certificate(actor, {"provider": "letsencrypt", "domain_names": list(domain_names),
                                               "meta": {k: v for k, v in meta.items() if k in keep}},
                                       validated=True)

    def create_certificate(self, actor, data, validated=False):
        if not validated:
            data = self.validate("certificates.post", data)
        meta = dict(data.get("meta") or {})
        if data["provider"] == "letsencrypt":
            if not data.get("domain_names"):
                raise ApiError(400, "data/domain_names must NOT have fewer than 1 items")
            if self.generation < (2, 13) and not validated:
                for key in ("letsencrypt_email", "letsencrypt_agree"):
                    if key not in meta:
                        raise ApiError(400, "data/meta must have required property '%s'" % key)
        row = {"id": self.new_id("certificate"), "created_on": now_text(), "modified_on": now_text(),
               "owner_user_id": actor["id"], "provider": data["provider"],
               "nice_name": data.get("nice_name") or "", "domain_names": sorted(data.get("domain_names") or []),
               "expires_on": now_text(), "meta": meta}
        if row["provider"] == "letsencrypt":
            row["nice_name"] = ", ".join(data["domain_names"])
        self.certificates[row["id"]] = row
        if row["provider"] != "letsencrypt":
            return self.cert_out(row)
        self.lock.release()  # certbot takes its time; other requests go on meanwhile
        try:
            time.sleep(self.issue_delay)
        finally:
            self.lock.acquire()
        problem = self.certbot_problem(row)
        if problem:
            del self.certificates[row["id"]]  # v2.15.1 hard-deletes the row of a failed request (BRIEF)
            debug = {"stack": ["CommandError: %s" % problem], "previous": {"message": problem}}
            raise ApiError(500, "Internal Error", debug=debug)
        row["expires_on"] = now_text(90)
        out = self.cert_out(row)
        out["meta"] = dict(out["meta"], letsencrypt_certificate={
            "cn": row["domain_names"][0], "issuer": "C = US, O = Let's Encrypt, CN = E5",
            "dates": {"from": int(time.time()), "to": int(time.time()) + 90 * 86400}})
        return out

    def certbot_problem(self, row):
        meta = row["meta"]
        if self.generation < (2, 13) and not meta.get("letsencrypt_email"):
            return "certbot: error: argument --email: expected one argument"
        if meta.get("dns_challenge"):
            if meta.get("dns_provider") not in DNS_PROVIDERS:
                return "Unknown DNS provider '%s'" % meta.get("dns_provider")
            if not meta.get("dns_provider_credentials"):
                return "Missing credentials for %s" % meta["dns_provider"]
        for name in row["domain_names"]:
            if name.endswith(".invalid") or name in self.fail_domains:
                return ("Certbot failed to authenticate some domains (authenticator: %s). The Certificate "
                        "Authority reported these problems:\n  Domain: %s\n  Type:   dns\n  Detail: no valid A "
                        "records found for %s" % ("dns" if meta.get("dns_challenge") else "webroot", name, name))
        return None

    def delete_certificate(self, cert_id):
        self.cert_or_404(cert_id)
        del self.certificates[cert_id]
        return True

    def upload_certificate(self, cert_id, files):
        row = self.cert_or_404(cert_id)
        if row["provider"] != "other":
            raise ApiError(400, "Cannot upload certificates for this type of provider")
        if "certificate" not in files:
            raise ApiError(400, "Certificate file was not provided")
        key = files.get("certificate_key")
        if key is not None and not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", key):
            raise ApiError(400, "Certificate Key is not valid (Result Validation Error: Could not read key)")
        info = self.certificate_info(files["certificate"])
        for name in ("certificate", "certificate_key", "intermediate_certificate"):
            if name in files:
                row["meta"][name] = files[name]
        row.update(domain_names=[info["cn"]], expires_on=info["expires_on"], modified_on=now_text())
        names = ("certificate", "certificate_key", "intermediate_certificate")
        return {k: row["meta"][k] for k in names if k in row["meta"]}

    def certificate_info(self, pem):
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ApiError(400, "Certificate is not valid (unable to load certificate)")
        try:
            from cryptography import x509
            from cryptography.x509.oid import NameOID
        except ImportError:
            return {"cn": self.custom_cert_info.get("cn", "custom.example.test"),
                    "expires_on": self.custom_cert_info.get("expires_on", now_text(365))}
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise ApiError(400, "Certificate is not valid (%s)" % exc) from None
        not_after = cert.not_valid_after_utc
        if not_after < datetime.now(UTC):
            raise ApiError(400, "Certificate is not valid (Certificate has expired)")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return {"cn": names[0].value if names else "", "expires_on": not_after.strftime("%Y-%m-%d %H:%M:%S")}

    # -- access lists ---------------------------------------------------------------------------

    def acl_out(self, row, expand=()):
        out = {k: copy.deepcopy(v) for k, v in row.items() if k not in ("items", "clients")}
        out["proxy_host_count"] = sum(1 for h in self.proxy_hosts.values() if h["access_list_id"] == row["id"])
        if "items" in expand:
            out["items"] = []
            for item in row["items"]:
                password = item["password"]
                hint = (password[0] + "*" * (len(password) - 1)) if password else "*" * 8
                out["items"].append(dict(item, password="", hint=hint))
        if "clients" in expand:
            out["clients"] = copy.deepcopy(row["clients"])
        if self.int_booleans:
            for key in ("satisfy_any", "pass_auth"):
                out[key] = int(bool(out[key]))
        return out

    def acl_or_404(self, acl_id):
        row = self.access_lists.get(acl_id)
        if row is None:
            raise ApiError(404, "Item Not Found - %s" % acl_id)
        return row

    def acl_item(self, acl_id, item):
        return {"id": self.new_id("access_list_auth"), "created_on": now_text(), "modified_on": now_text(),
                "access_list_id": acl_id, "username": item["username"], "password": item.get("password", ""),
                "meta": {}}

    def acl_client(self, acl_id, client):
        return {"id": self.new_id("access_list_client"), "created_on": now_text(), "modified_on": now_text(),
                "access_list_id": acl_id, "address": client["address"], "directive": client["directive"],
                "meta": {}}

    def create_acl(self, actor, data):
        data = self.validate("access-lists.post", data)
        acl_id = self.new_id("access_list")
        row = {"id": acl_id, "created_on": now_text(), "modified_on": now_text(), "owner_user_id": actor["id"],
               "name": data["name"], "meta": {}, "satisfy_any": bool(data.get("satisfy_any", False)),
               "pass_auth": bool(data.get("pass_auth", False)),
               "items": [self.acl_item(acl_id, i) for i in data.get("items") or []],
               "clients": [self.acl_client(acl_id, c) for c in data.get("clients") or []]}
        self.access_lists[acl_id] = row
        return self.acl_out(row, ("items", "clients"))

    def update_acl(self, acl_id, data):
        data = self.validate("access-lists.put", data)
        row = self.acl_or_404(acl_id)
        if data.get("name"):  # one patch of the three; keys not sent are left alone (undefined in knex)
            row.update({k: data[k] for k in ("name", "satisfy_any", "pass_auth") if k in data})
        if data.get("items") is not None:
            keep = [i["username"] for i in data["items"] if not i.get("password")]
            row["items"] = [i for i in row["items"] if i["username"] in keep]
            row["items"] += [self.acl_item(acl_id, i) for i in data["items"] if i.get("password")]
        if data.get("clients") is not None:
            row["clients"] = [self.acl_client(acl_id, c) for c in data["clients"] if c.get("address")]
        row["modified_on"] = now_text()
        return self.acl_out(row, ("items", "clients"))  # v2.15.1: the list after the update (BRIEF)

    def delete_acl(self, acl_id):
        self.acl_or_404(acl_id)
        del self.access_lists[acl_id]
        for host in self.proxy_hosts.values():
            if host["access_list_id"] == acl_id:
                host["access_list_id"] = 0
        return True

    def schema_document(self):
        paths = {"/nginx/proxy-hosts": {"post": {"requestBody": {"content": {"application/json": {
            "schema": self.schemas["proxy-hosts.post"]}}}}}}
        return {"openapi": "3.1.0", "info": {"title": "Nginx Proxy Manager API", "version": self.version},
                "paths": paths}


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

def parse_multipart(content_type, body):
    """multipart/form-data -> {field: text}."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    out = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[name] = part.get_payload(decode=True).decode("utf-8", "replace")
    return out


class RequestHandler(BaseHTTPRequestHandler):
    npm: FakeNpm = None
    protocol_version = "HTTP/1.1"
    server_version = "FakeNPM/1.0"

    def log_message(self, format, *args):
        return

    def send(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def handle_any(self):
        npm = self.npm
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = unquote(url.path)
        with npm.lock:
            npm.counts["%s %s" % (self.command, path)] += 1
            npm.calls.append((self.command, path, url.query))
        query = dict(parse_qsl(url.query))
        ctype = self.headers.get("Content-Type") or ""
        try:
            status, body = self.dispatch(npm, path, query, ctype, raw)
        finally:
            # Saved before the answer goes out; a failed write may still have changed rows (the non-atomic "new"
            # certificate), so either way.
            if npm.state_file and self.command in ("POST", "PUT", "DELETE", "PATCH"):
                npm.save_state()
        self.send(status, body)

    def dispatch(self, npm, path, query, ctype, raw):
        """(status, body) of one request: the route's answer or NPM's error object."""
        try:
            if ctype.startswith("multipart/form-data"):
                data = parse_multipart(ctype, raw)
            else:
                try:
                    data = json.loads(raw) if raw else None
                except ValueError:
                    raise ApiError(400, "Unexpected token in JSON") from None
            with npm.lock:
                return self.route(self.command, path.rstrip("/") or "/", query, data)
        except ApiError as exc:
            body = {"error": {"code": exc.status, "message": exc.message}}
            if exc.debug is not None and path.startswith("/api/nginx/certificates"):
                body["debug"] = exc.debug
            return exc.status, body

    def route(self, method, path, query, data):
        npm = self.npm
        expand = tuple(x for x in (query.get("expand") or "").split(",") if x)
        if path == "/api" and method == "GET":
            return 200, npm.health()
        if path == "/api/schema" and method == "GET":
            return 200, npm.schema_document()
        if path == "/api/tokens" and method == "POST":
            return 200, npm.login(data)
        if path == "/api/tokens/2fa" and method == "POST" and npm.generation >= (2, 14):
            return 200, npm.login_2fa(data)
        if path == "/api/users" and method == "POST":
            actor = npm.user_for(self.headers.get("Authorization")) if self.headers.get("Authorization") else None
            return 201, npm.create_user(actor, data)
        parts = path.split("/")[2:]  # after /api
        known = self.known_route(method, parts)
        if not known:
            raise ApiError(404, "Item Not Found - %s" % path[len("/api/"):])
        actor = npm.user_for(self.headers.get("Authorization"))
        return known(actor, parts, expand, data)

    def known_route(self, method, parts):
        """The handler for an authenticated route, or None (NPM's catch-all 404)."""
        npm = self.npm
        ident = parts[-1] if parts else ""

        def num(text):
            if not text.isdigit():
                raise ApiError(400, "data/host_id must be integer")
            return int(text)

        table = {
            ("GET", "tokens"): lambda a, p, e, d: (200, npm.issue_token(a)),
            ("GET", "users/*"): lambda a, p, e, d: (200, npm.public_user(npm.user_target(a, p[1]))),
            ("PUT", "users/*"): lambda a, p, e, d: (200, npm.update_user(a, p[1], d)),
            ("PUT", "users/*/auth"): lambda a, p, e, d: (200, npm.set_password(a, p[1], d)),
            ("GET", "nginx/proxy-hosts"): lambda a, p, e, d: (200, npm.list_hosts(e)),
            ("POST", "nginx/proxy-hosts"): lambda a, p, e, d: (201, npm.create_host(a, d)),
            ("GET", "nginx/proxy-hosts/*"): lambda a, p, e, d: (200, npm.host_out(npm.host_or_404(num(ident)), e)),
            ("PUT", "nginx/proxy-hosts/*"): lambda a, p, e, d: (200, npm.update_host(a, num(ident), d)),
            ("DELETE", "nginx/proxy-hosts/*"): lambda a, p, e, d: (200, npm.delete_host(num(ident))),
            ("POST", "nginx/proxy-hosts/*/enable"): lambda a, p, e, d: (200, npm.enable_host(num(p[2]), True)),
            ("POST", "nginx/proxy-hosts/*/disable"): lambda a, p, e, d: (200, npm.enable_host(num(p[2]), False)),
            ("GET", "nginx/certificates"): lambda a, p, e, d: (200, [
                npm.cert_out(c, e) for c in sorted(npm.certificates.values(), key=lambda c: c["nice_name"])]),
            ("POST", "nginx/certificates"): lambda a, p, e, d: (201, npm.create_certificate(a, d)),
            ("GET", "nginx/certificates/*"): lambda a, p, e, d: (200, npm.cert_out(npm.cert_or_404(num(ident)), e)),
            ("DELETE", "nginx/certificates/*"): lambda a, p, e, d: (200, npm.delete_certificate(num(ident))),
            ("POST", "nginx/certificates/*/upload"): lambda a, p, e, d: (200, npm.upload_certificate(
                num(p[2]), d if isinstance(d, dict) else {})),
            ("GET", "nginx/access-lists"): lambda a, p, e, d: (200, [
                npm.acl_out(r, e) for r in sorted(npm.access_lists.values(), key=lambda r: r["name"])]),
            ("POST", "nginx/access-lists"): lambda a, p, e, d: (201, npm.create_acl(a, d)),
            ("GET", "nginx/access-lists/*"): lambda a, p, e, d: (200, npm.acl_out(npm.acl_or_404(num(ident)), e)),
            ("PUT", "nginx/access-lists/*"): lambda a, p, e, d: (200, npm.update_acl(num(ident), d)),
            ("DELETE", "nginx/access-lists/*"): lambda a, p, e, d: (200, npm.delete_acl(num(ident))),
        }
        shape = "/".join(parts)
        if parts[:1] == ["users"] and len(parts) >= 2:
            shape = "/".join(["users", "*", *parts[2:]])
        elif parts[:1] == ["nginx"] and len(parts) >= 3:
            shape = "/".join(["nginx", parts[1], "*", *parts[3:]])
        return table.get((method, shape))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main(argv=None):
    parser = argparse.ArgumentParser(description="A fake Nginx Proxy Manager API server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--version", default=os.environ.get("NPM_FAKE_VERSION") or "2.13.5",
                        help="2.12.x (default admin) or 2.13+ (first-user setup); default: $NPM_FAKE_VERSION or 2.13.5")
    parser.add_argument("--initial-admin", metavar="EMAIL:PASSWORD",
                        help="like INITIAL_ADMIN_EMAIL/PASSWORD (also read from the environment)")
    parser.add_argument("--state-file", help="JSON file the database is loaded from and saved to (e.g. in /data)")
    args = parser.parse_args(argv)
    initial = tuple(args.initial_admin.split(":", 1)) if args.initial_admin else None
    if initial is None and os.environ.get("INITIAL_ADMIN_EMAIL") and os.environ.get("INITIAL_ADMIN_PASSWORD"):
        initial = (os.environ["INITIAL_ADMIN_EMAIL"], os.environ["INITIAL_ADMIN_PASSWORD"])
    fake = FakeNpm(version=args.version, initial_admin=initial, state_file=args.state_file)
    if args.state_file and not os.path.exists(args.state_file):
        fake.save_state()
    fake.start(port=args.port, host=args.host)
    print("fake NPM %s on %s" % (args.version, fake.url), flush=True)
    stop = threading.Event()
    # As PID 1 a process ignores SIGTERM without a handler; docker stop would wait for its SIGKILL.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *args: stop.set())
    try:
        stop.wait()
    finally:
        fake.stop()


FakeNpm.HANDLER = RequestHandler

if __name__ == "__main__":
    main()
