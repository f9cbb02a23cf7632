"""Stand-in for the ``authelia`` binary of authelia/authelia:4.38 (see the Dockerfile for what it keeps and what it
does not). Stdlib plus PyYAML and argon2-cffi (Debian's python3-yaml and python3-argon2).

    authelia [--config FILE ...]      validate, run the startup checks, then serve on server.address (default :9091)
    authelia validate-config [--config FILE ...]

Configuration errors are reported the way Authelia reports them (``level=error msg="Configuration: ..."`` for each,
then ``level=fatal``) and the process exits 1, so a container restart loop shows the cause in ``docker logs``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import hashlib
import hmac
import http.cookies
import ipaddress
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

try:  # python3-argon2 (argon2-cffi)
    import argon2
    from argon2.low_level import Type as Argon2Type
    from argon2.low_level import verify_secret
except ImportError:  # pragma: no cover - the image always has it
    argon2 = None

DEFAULT_CONFIG = os.environ.get("X_AUTHELIA_CONFIG", "/config/configuration.yml")
HEALTHCHECK_ENV = "/app/.healthcheck.env"
HEALTHCHECK_SCRIPT = "/app/healthcheck.sh"
POLICIES = {"bypass": 0, "one_factor": 1, "two_factor": 2, "deny": 3}
NOT_AUTHENTICATED, ONE_FACTOR, TWO_FACTOR = 0, 1, 2
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "OPTIONS", "COPY", "LOCK", "MKCOL",
           "MOVE", "PROPFIND", "PROPPATCH", "UNLOCK"}
STRATEGIES = {"HeaderAuthorization", "HeaderProxyAuthorization", "HeaderAuthRequestProxyAuthorization",
              "HeaderLegacy", "CookieSession"}
HEADER_STRATEGIES = {"HeaderAuthorization", "HeaderProxyAuthorization", "HeaderAuthRequestProxyAuthorization"}
IMPLEMENTATIONS = {"AuthRequest", "ForwardAuth", "ExtAuthz", "Legacy"}
# Authelia 4.38's defaults for the authz endpoints (internal/configuration/schema/server.go).
DEFAULT_AUTHZ = {
    "auth-request": {"implementation": "AuthRequest",
                     "authn_strategies": [{"name": "HeaderAuthorization", "schemes": ["basic"]},
                                          {"name": "CookieSession"}]},
    "forward-auth": {"implementation": "ForwardAuth",
                     "authn_strategies": [{"name": "HeaderAuthorization", "schemes": ["basic"]},
                                          {"name": "CookieSession"}]},
    "ext-authz": {"implementation": "ExtAuthz",
                  "authn_strategies": [{"name": "HeaderAuthorization", "schemes": ["basic"]},
                                       {"name": "CookieSession"}]},
    "legacy": {"implementation": "Legacy", "authn_strategies": [{"name": "HeaderLegacy"}, {"name": "CookieSession"}]},
}
TOP_LEVEL_KEYS = {
    "theme", "certificates_directory", "default_2fa_method", "log", "telemetry", "server", "totp", "webauthn",
    "duo_api", "ntp", "authentication_backend", "password_policy", "privacy_policy", "session", "regulation",
    "storage", "notifier", "identity_validation", "identity_providers", "access_control", "definitions",
    # Deprecated in 4.38 but still read (mapped to their new keys with a warning).
    "jwt_secret", "default_redirection_url",
}
# Secrets Authelia reads from AUTHELIA_<KEY>_FILE (or AUTHELIA_<KEY>) environment variables.
SECRET_ENV = {
    "IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": ("identity_validation", "reset_password", "jwt_secret"),
    "JWT_SECRET": ("identity_validation", "reset_password", "jwt_secret"),
    "SESSION_SECRET": ("session", "secret"),
    "SESSION_REDIS_PASSWORD": ("session", "redis", "password"),
    "STORAGE_ENCRYPTION_KEY": ("storage", "encryption_key"),
    "STORAGE_MYSQL_PASSWORD": ("storage", "mysql", "password"),
    "STORAGE_POSTGRES_PASSWORD": ("storage", "postgres", "password"),
    "NOTIFIER_SMTP_PASSWORD": ("notifier", "smtp", "password"),
    "AUTHENTICATION_BACKEND_LDAP_PASSWORD": ("authentication_backend", "ldap", "password"),
}
ARGON2_HASH = re.compile(r"^\$argon2(id|i|d)\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")
UNSUPPORTED_DIGESTS = {"pbkdf2": "pbkdf2", "2a": "bcrypt", "2b": "bcrypt", "2y": "bcrypt", "5": "sha2crypt",
                       "6": "sha2crypt", "scrypt": "scrypt"}
WWW_AUTHENTICATE = 'Basic realm="Authentication required"'
FAILED_1FA = "Authentication failed. Check your credentials."
PORTAL = (b"<!DOCTYPE html><html><head><title>Login - Authelia</title></head><body>"
          b"<h1>Authelia (stand-in)</h1><p>Sign in with POST /api/firstfactor.</p></body></html>\n")


# --------------------------------------------------------------------------------------------------
# logging, Authelia's text format
# --------------------------------------------------------------------------------------------------

LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4, "fatal": 5}
_log_level = LEVELS["info"]
_log_lock = threading.Lock()


def log(level, msg, **fields):
    if LEVELS[level] < _log_level:
        return
    now = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")
    parts = ['time="%s"' % now, "level=%s" % level, "msg=%s" % json.dumps(msg)]
    parts += ["%s=%s" % (k, json.dumps(str(v))) for k, v in fields.items()]
    with _log_lock:
        sys.stdout.write(" ".join(parts) + "\n")
        sys.stdout.flush()


class ConfigErrors(Exception):
    def __init__(self, errors, warnings=()):
        super().__init__("; ".join(errors))
        self.errors = list(errors)
        self.warnings = list(warnings)


class StartupError(Exception):
    def __init__(self, provider, message):
        super().__init__(message)
        self.provider = provider


# --------------------------------------------------------------------------------------------------
# durations ("1h", "5 minutes", "1M", 3600)
# --------------------------------------------------------------------------------------------------

UNITS = {"y": 365 * 86400, "year": 365 * 86400, "years": 365 * 86400, "M": 30 * 86400, "month": 30 * 86400,
         "months": 30 * 86400, "w": 7 * 86400, "week": 7 * 86400, "weeks": 7 * 86400, "d": 86400, "day": 86400,
         "days": 86400, "h": 3600, "hour": 3600, "hours": 3600, "m": 60, "minute": 60, "minutes": 60, "s": 1,
         "second": 1, "seconds": 1, "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001}
DURATION_TOKEN = re.compile(r"\s*(\d+)\s*([A-Za-z]+)")


def parse_duration(value):
    """Seconds of an Authelia duration; ValueError when it is not one."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    pos, total = 0, 0.0
    while pos < len(text):
        m = DURATION_TOKEN.match(text, pos)
        if not m or m.group(2) not in UNITS:
            raise ValueError("could not parse '%s' as a duration" % text)
        total += int(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty duration")
    return total


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------

def deep_merge(base, extra):
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(doc, path, value):
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _get_path(doc, path):
    node = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def load_documents(paths, environ):
    """The merged configuration of PATHS plus the secrets from the environment; ConfigErrors on read errors."""
    errors = []
    doc = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except FileNotFoundError:
            errors.append("error loading configuration: file '%s' does not exist" % path)
            continue
        except (OSError, yaml.YAMLError) as exc:
            errors.append("error loading configuration: file '%s': %s" % (path, exc))
            continue
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            errors.append("error loading configuration: file '%s': the document is not a map" % path)
            continue
        doc = deep_merge(doc, loaded)
    for name, key_path in SECRET_ENV.items():
        key = ".".join(key_path)
        file_var, value_var = "AUTHELIA_%s_FILE" % name, "AUTHELIA_%s" % name
        if file_var in environ:
            secret_path = environ[file_var]
            if _get_path(doc, key_path) not in (None, ""):
                errors.append("secrets: error loading secret into key '%s': it's already defined in other "
                              "configuration sources" % key)
                continue
            try:
                with open(secret_path, encoding="utf-8") as fh:
                    value = fh.read()
            except OSError as exc:
                errors.append("secrets: error loading secret path %s into key '%s': %s" % (secret_path, key, exc))
                continue
            _set_path(doc, key_path, value.rstrip("\n"))
        elif environ.get(value_var):
            if _get_path(doc, key_path) not in (None, ""):
                errors.append("secrets: error loading secret into key '%s': it's already defined in other "
                              "configuration sources" % key)
                continue
            _set_path(doc, key_path, environ[value_var])
    if errors:
        raise ConfigErrors(errors)
    return doc


def _str_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _url(value):
    if not isinstance(value, str) or not value:
        return None
    parts = urllib.parse.urlsplit(value)
    if not parts.scheme or not parts.netloc:
        return None
    return parts


def has_domain_suffix(host, domain):
    host, domain = host.lower().rstrip("."), domain.lower().lstrip(".")
    return host == domain or host.endswith("." + domain)


def rule_descriptor(position, rule):
    domains = (_str_list(rule.get("domain")) or []) + (_str_list(rule.get("domain_regex")) or [])
    return "#%d (domain '%s')" % (position, ",".join(domains))


class Config:
    """The validated configuration (only what the stand-in uses is kept as attributes)."""

    def __init__(self, doc):
        self.doc = doc
        errors, warnings = [], []
        for key in doc:
            if key not in TOP_LEVEL_KEYS:
                errors.append("configuration key not expected: %s" % key)
        if doc.get("jwt_secret") not in (None, ""):
            warnings.append("configuration key 'jwt_secret' is deprecated in 4.38.0 and has been replaced by "
                            "'identity_validation.reset_password.jwt_secret'")
            if _get_path(doc, ("identity_validation", "reset_password", "jwt_secret")) in (None, ""):
                _set_path(doc, ("identity_validation", "reset_password", "jwt_secret"), doc["jwt_secret"])
        self._server(doc.get("server") or {}, errors)
        self._log(doc.get("log") or {}, errors)
        self._authentication(doc.get("authentication_backend"), errors)
        self._identity_validation(doc, errors)
        self._access_control(doc.get("access_control") or {}, errors, warnings)
        self._session(doc.get("session"), errors)
        self._storage(doc.get("storage"), errors)
        self._notifier(doc.get("notifier"), errors)
        if errors:
            raise ConfigErrors(errors, warnings)
        self.warnings = warnings

    # --- server -----------------------------------------------------------------------------------
    def _server(self, server, errors):
        address = server.get("address") or "tcp://:9091/"
        m = re.fullmatch(r"tcp://(\[[^\]]*\]|[^:/]*)(?::(\d+))?(/[^?#]*)?", str(address))
        if not m:
            errors.append("server: option 'address' with value '%s' is invalid: could not parse the address (the "
                          "stand-in supports tcp:// addresses)" % address)
            self.host, self.port, self.path = "", 9091, "/"
        else:
            self.host = m.group(1).strip("[]")
            self.port = int(m.group(2) or 9091)
            self.path = m.group(3) or "/"
            if self.path not in ("", "/"):
                errors.append("server: option 'address' with value '%s': a path prefix is not supported by the "
                              "stand-in" % address)
        self.disable_healthcheck = bool(server.get("disable_healthcheck", False))
        authz = (server.get("endpoints") or {}).get("authz")
        self.authz = copy.deepcopy(DEFAULT_AUTHZ) if not authz else {}
        for name, endpoint in (authz or {}).items():
            if not isinstance(endpoint, dict) or endpoint.get("implementation") not in IMPLEMENTATIONS:
                errors.append("server: endpoints: authz: %s: option 'implementation' must be one of %s but it's "
                              "configured as '%s'" % (name, ", ".join(sorted(IMPLEMENTATIONS)),
                                                      (endpoint or {}).get("implementation", "")))
                continue
            strategies = endpoint.get("authn_strategies") or DEFAULT_AUTHZ.get(
                name, DEFAULT_AUTHZ["auth-request"])["authn_strategies"]
            for position, strategy in enumerate(strategies, 1):
                sname = (strategy or {}).get("name")
                if sname not in STRATEGIES:
                    errors.append("server: endpoints: authz: %s: authn_strategies: strategy #%d: option 'name' must "
                                  "be one of %s but it's configured as '%s'"
                                  % (name, position, ", ".join(sorted(STRATEGIES)), sname))
                    continue
                schemes = strategy.get("schemes")
                if sname in HEADER_STRATEGIES:
                    for scheme in schemes or []:
                        if str(scheme).lower() not in ("basic", "bearer"):
                            errors.append("server: endpoints: authz: %s: authn_strategies: strategy #%d (%s): option "
                                          "'schemes' must only include the values 'basic' or 'bearer' but has '%s'"
                                          % (name, position, sname, scheme))
                elif schemes:
                    errors.append("server: endpoints: authz: %s: authn_strategies: strategy #%d (%s): option "
                                  "'schemes' is not valid for the strategy" % (name, position, sname))
            self.authz[name] = {"implementation": endpoint["implementation"], "authn_strategies": strategies}

    def _log(self, logc, errors):
        level = str(logc.get("level", "info"))
        if level not in ("trace", "debug", "info", "warn", "error"):
            errors.append("log: option 'level' must be one of 'trace', 'debug', 'info', 'warn' or 'error' but it's "
                          "configured as '%s'" % level)
            level = "info"
        self.log_level = level

    # --- authentication backend --------------------------------------------------------------------
    def _authentication(self, backend, errors):
        self.users_path, self.watch, self.reset_disabled = None, False, False
        if not isinstance(backend, dict):
            errors.append("authentication_backend: you must ensure either the 'file' or 'ldap' authentication "
                          "backend is configured")
            return
        self.reset_disabled = bool((backend.get("password_reset") or {}).get("disable", False))
        has_file, has_ldap = backend.get("file") is not None, backend.get("ldap") is not None
        if has_file and has_ldap:
            errors.append("authentication_backend: please ensure only one of the 'file' or 'ldap' backend is "
                          "configured")
            return
        if not has_file and not has_ldap:
            errors.append("authentication_backend: you must ensure either the 'file' or 'ldap' authentication "
                          "backend is configured")
            return
        if has_ldap:
            errors.append("authentication_backend: ldap: not supported by the stand-in (file backend only)")
            return
        fileb = backend["file"] or {}
        if not fileb.get("path"):
            errors.append("authentication_backend: file: option 'path' is required")
        self.users_path = fileb.get("path")
        self.watch = bool(fileb.get("watch", False))
        password = fileb.get("password") or {}
        algorithm = password.get("algorithm", "argon2")
        if algorithm not in ("argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt", "argon2id"):
            errors.append("authentication_backend: file: password: option 'algorithm' must be one of 'argon2', "
                          "'sha2crypt', 'pbkdf2', 'bcrypt' or 'scrypt' but it's configured as '%s'" % algorithm)
        variant = (password.get("argon2") or {}).get("variant", "argon2id")
        if variant not in ("argon2id", "id", "argon2i", "i", "argon2d", "d"):
            errors.append("authentication_backend: file: password: argon2: option 'variant' must be one of "
                          "'argon2id', 'id', 'argon2i', 'i', 'argon2d' or 'd' but it's configured as '%s'" % variant)
        refresh = backend.get("refresh_interval", "5m")
        if refresh not in ("always", "disable"):
            try:
                parse_duration(refresh)
            except ValueError as exc:
                errors.append("authentication_backend: option 'refresh_interval' is invalid: %s" % exc)

    def _identity_validation(self, doc, errors):
        reset = _get_path(doc, ("identity_validation", "reset_password")) or {}
        if not self.reset_disabled and not reset.get("jwt_secret"):
            errors.append("identity_validation: reset_password: option 'jwt_secret' is required when the reset "
                          "password functionality isn't disabled")

    # --- access control ----------------------------------------------------------------------------
    def _access_control(self, acl, errors, warnings):
        default = acl.get("default_policy") or "deny"
        if default not in POLICIES:
            errors.append("access_control: option 'default_policy' must be one of 'bypass', 'one_factor', "
                          "'two_factor' or 'deny' but it's configured as '%s'" % default)
        self.default_policy = default
        networks = {}
        for group in acl.get("networks") or []:
            name = (group or {}).get("name")
            nets = []
            for net in _str_list(group.get("networks")) or []:
                try:
                    nets.append(ipaddress.ip_network(net, strict=False))
                except ValueError:
                    errors.append("access_control: networks: network group '%s' is invalid: the network '%s' is not "
                                  "a valid IP or CIDR notation" % (name, net))
            networks[name] = nets
        rules = acl.get("rules") or []
        if not isinstance(rules, list):
            errors.append("access_control: option 'rules' must be a list")
            rules = []
        if not rules:
            if default not in ("one_factor", "two_factor"):
                errors.append("access_control: 'default_policy' option '%s' is invalid: when no rules are specified "
                              "it must be 'two_factor' or 'one_factor'" % default)
            else:
                warnings.append("access_control: no rules have been specified so the 'default_policy' of '%s' is "
                                "going to be applied to all requests" % default)
        self.rules = []
        for position, rule in enumerate(rules, 1):
            if not isinstance(rule, dict):
                errors.append("access_control: rule #%d: must be a map" % position)
                continue
            try:
                self.rules.append(Rule(position, rule, networks))
            except ConfigErrors as exc:
                errors.extend(exc.errors)

    # --- session -----------------------------------------------------------------------------------
    def _session(self, session, errors):
        self.cookies = []
        if not isinstance(session, dict):
            errors.append("session: option 'cookies' is required")
            return
        if session.get("redis") is not None and not session.get("secret"):
            errors.append("session: option 'secret' is required when using the 'redis' provider")
        durations = {}
        for key, default in (("expiration", "1h"), ("inactivity", "5m"), ("remember_me", "1M")):
            value = session.get(key, default)
            if key == "remember_me" and value in (-1, "-1"):
                durations[key] = -1.0
                continue
            try:
                durations[key] = parse_duration(value)
            except ValueError as exc:
                errors.append("session: option '%s' is invalid: %s" % (key, exc))
                durations[key] = parse_duration(default)
        name = session.get("name") or "authelia_session"
        same_site = session.get("same_site") or "lax"
        cookies = session.get("cookies")
        if cookies and session.get("domain"):
            errors.append("session: option 'domain' and option 'cookies' can't be specified at the same time")
        if not cookies and session.get("domain"):
            cookies = [{"domain": session["domain"], "legacy": True}]
        if not cookies:
            errors.append("session: option 'cookies' is required")
            return
        seen = []
        for i, declared in enumerate(cookies):
            cookie = declared or {}
            domain = str(cookie.get("domain") or "")
            desc = "#%d (domain '%s')" % (i + 1, domain)
            if not domain:
                errors.append("session: domain config %s: option 'domain' is required" % desc)
                continue
            if domain.startswith("*."):
                errors.append("session: domain config %s: option 'domain' must be the domain you wish to protect not "
                              "a wildcard domain but it's configured as '%s'" % (desc, domain))
                continue
            if "." not in domain:
                errors.append("session: domain config %s: option 'domain' is not a valid cookie domain: must have at "
                              "least a single period or be an ip address" % desc)
                continue
            if any(has_domain_suffix(domain, d) or has_domain_suffix(d, domain) for d in seen):
                errors.append("session: domain config %s: option 'domain' shares the same cookie domain scope as "
                              "another configured session domain" % desc)
            seen.append(domain)
            portal = _url(cookie.get("authelia_url"))
            if cookie.get("authelia_url") is None:
                if not cookie.get("legacy"):
                    errors.append("session: domain config %s: option 'authelia_url' is required" % desc)
            elif portal is None:
                errors.append("session: domain config %s: option 'authelia_url' is not absolute with a value of '%s'"
                              % (desc, cookie.get("authelia_url")))
            elif portal.scheme not in ("https", "wss"):
                errors.append("session: domain config %s: option 'authelia_url' does not have a secure scheme with a "
                              "value of '%s'" % (desc, cookie.get("authelia_url")))
            elif not has_domain_suffix(portal.hostname or "", domain):
                errors.append("session: domain config %s: option 'authelia_url' does not share a cookie scope with "
                              "domain '%s' with a value of '%s'" % (desc, domain, cookie.get("authelia_url")))
            redirect = cookie.get("default_redirection_url")
            if redirect is not None:
                parts = _url(redirect)
                if parts is None:
                    errors.append("session: domain config %s: option 'default_redirection_url' is not absolute with "
                                  "a value of '%s'" % (desc, redirect))
                elif parts.scheme not in ("https", "wss"):
                    errors.append("session: domain config %s: option 'default_redirection_url' does not have a secure "
                                  "scheme with a value of '%s'" % (desc, redirect))
                elif not has_domain_suffix(parts.hostname or "", domain):
                    errors.append("session: domain config %s: option 'default_redirection_url' does not share a "
                                  "cookie scope with domain '%s' with a value of '%s'" % (desc, domain, redirect))
                elif portal is not None and redirect.rstrip("/") == str(cookie.get("authelia_url")).rstrip("/"):
                    errors.append("session: domain config %s: option 'default_redirection_url' with value '%s' is "
                                  "effectively equal to option 'authelia_url' with value '%s' which is not permitted"
                                  % (desc, redirect, cookie.get("authelia_url")))
            url = str(cookie.get("authelia_url") or "")
            if url and urllib.parse.urlsplit(url).path == "":
                url += "/"
            self.cookies.append({
                "domain": domain.lstrip(".").lower(), "authelia_url": url or None,
                "default_redirection_url": redirect, "name": cookie.get("name") or name,
                "same_site": cookie.get("same_site") or same_site,
                "expiration": _cookie_duration(cookie, "expiration", durations, errors, desc),
                "inactivity": _cookie_duration(cookie, "inactivity", durations, errors, desc),
                "remember_me": _cookie_duration(cookie, "remember_me", durations, errors, desc),
            })

    # --- storage and notifier -----------------------------------------------------------------------
    def _storage(self, storage, errors):
        self.storage_path, self.encryption_key = None, None
        if not isinstance(storage, dict):
            storage = {}
        providers = [p for p in ("local", "mysql", "postgres") if storage.get(p) is not None]
        if not providers:
            errors.append("storage: configuration for a 'local', 'mysql' or 'postgres' database must be provided")
        elif len(providers) > 1:
            errors.append("storage: option 'local', 'mysql' and 'postgres' are mutually exclusive but %s have been "
                          "configured" % " and ".join("'%s'" % p for p in providers))
        elif providers[0] != "local":
            errors.append("storage: %s: not supported by the stand-in (local SQLite only)" % providers[0])
        elif not (storage["local"] or {}).get("path"):
            errors.append("storage: local: option 'path' is required")
        else:
            self.storage_path = storage["local"]["path"]
        key = storage.get("encryption_key")
        if not key:
            errors.append("storage: option 'encryption_key' is required")
        elif len(str(key)) < 20:
            errors.append("storage: option 'encryption_key' must be 20 characters or longer")
        self.encryption_key = str(key or "")

    def _notifier(self, notifier, errors):
        self.notifier_file = None
        if not isinstance(notifier, dict) or (notifier.get("filesystem") is None and notifier.get("smtp") is None):
            errors.append("notifier: you must ensure either the 'smtp' or 'filesystem' notifier is configured")
            return
        if notifier.get("filesystem") is not None and notifier.get("smtp") is not None:
            errors.append("notifier: please ensure only one of the 'smtp' or 'filesystem' notifier is configured")
            return
        if notifier.get("filesystem") is not None:
            filename = (notifier["filesystem"] or {}).get("filename")
            if not filename:
                errors.append("notifier: filesystem: option 'filename' is required")
            self.notifier_file = filename

    def cookie_for_host(self, host):
        """The session cookie configuration covering HOST (the longest matching domain), or None."""
        best = None
        for cookie in self.cookies:
            if has_domain_suffix(host, cookie["domain"]) and (best is None or len(cookie["domain"]) > len(
                    best["domain"])):
                best = cookie
        return best


def _cookie_duration(cookie, key, durations, errors, desc):
    if cookie.get(key) is None:
        return durations[key]
    if key == "remember_me" and cookie[key] in (-1, "-1"):
        return -1.0
    try:
        return parse_duration(cookie[key])
    except ValueError as exc:
        errors.append("session: domain config %s: option '%s' is invalid: %s" % (desc, key, exc))
        return durations[key]


# --------------------------------------------------------------------------------------------------
# access control rules
# --------------------------------------------------------------------------------------------------

class Subject:
    def __init__(self, username="", groups=(), ip=None):
        self.username = username or ""
        self.groups = list(groups or [])
        self.ip = ip

    @property
    def anonymous(self):
        return self.username == ""


class DomainMatcher:
    def __init__(self, text):
        text = text.lower()
        self.kind, self.name = "exact", text
        if text.startswith("*."):
            self.kind, self.name = "wildcard", text[1:]
        elif text.startswith("{user}"):
            self.kind, self.name = "user", text[len("{user}"):]
        elif text.startswith("{group}"):
            self.kind, self.name = "group", text[len("{group}"):]

    @property
    def identity(self):
        return self.kind in ("user", "group")

    def match(self, domain, subject):
        if self.kind == "wildcard":
            return domain.endswith(self.name)
        if self.kind in ("user", "group"):
            if subject.anonymous and domain.endswith(self.name):
                return len(domain) > len(self.name)
            if self.kind == "user":
                return domain == subject.username.lower() + self.name
            head, dot, tail = domain.partition(".")
            return bool(dot) and "." + tail == self.name and head in (g.lower() for g in subject.groups)
        return domain == self.name


class Rule:
    """One access_control rule (validated like Authelia 4.38's validator, matched like its authorizer)."""

    def __init__(self, position, rule, networks):
        errors = []
        desc = rule_descriptor(position, rule)
        self.position, self.desc = position, desc
        self.policy = rule.get("policy")
        if self.policy is None:
            errors.append("access_control: rule %s: option 'policy' must be present but it's absent" % desc)
        elif self.policy not in POLICIES:
            errors.append("access_control: rule %s: option 'policy' must be one of 'bypass', 'one_factor', "
                          "'two_factor' or 'deny' but it's configured as '%s'" % (desc, self.policy))
        domains, regexes = _str_list(rule.get("domain")), _str_list(rule.get("domain_regex"))
        if domains is None or regexes is None:
            errors.append("access_control: rule %s: option 'domain' and 'domain_regex' must be strings or lists of "
                          "strings" % desc)
            domains, regexes = domains or [], regexes or []
        if not domains and not regexes:
            errors.append("access_control: rule %s: option 'domain' or 'domain_regex' must be present but are both "
                          "absent" % desc)
        self.domains = [DomainMatcher(d) for d in domains]
        self.domain_regexes = []
        for pattern in regexes:
            try:
                self.domain_regexes.append(re.compile(pattern))
            except re.error as exc:
                errors.append("access_control: rule %s: option 'domain_regex' with value '%s' is invalid: %s"
                              % (desc, pattern, exc))
        self.resources = []
        for pattern in _str_list(rule.get("resources")) or []:
            try:
                self.resources.append(re.compile(pattern))
            except re.error as exc:
                errors.append("access_control: rule %s: 'resources' option '%s' is an invalid regex: %s"
                              % (desc, pattern, exc))
        self.methods = []
        for method in _str_list(rule.get("methods")) or []:
            if method not in METHODS:
                errors.append("access_control: rule %s: 'methods' option '%s' is invalid: must be one of %s"
                              % (desc, method, ", ".join(sorted(METHODS))))
            self.methods.append(method)
        self.networks = []
        for net in _str_list(rule.get("networks")) or []:
            if net in networks:
                self.networks.extend(networks[net])
                continue
            try:
                self.networks.append(ipaddress.ip_network(net, strict=False))
            except ValueError:
                errors.append("access_control: rule %s: the network '%s' is not a valid Group Name, IP, or CIDR "
                              "notation" % (desc, net))
        subjects = rule.get("subject")
        self.subjects = []
        if subjects is not None:
            for group in [subjects] if isinstance(subjects, str) else subjects:
                items = _str_list(group) or []
                for item in items:
                    if not item.startswith(("user:", "group:", "oauth2:client:")):
                        errors.append("access_control: rule %s: 'subject' option '%s' is invalid: must start with "
                                      "'user:', 'group:', or 'oauth2:client:'" % (desc, item))
                self.subjects.append(items)
        if rule.get("query") is not None:
            errors.append("access_control: rule %s: option 'query' is not supported by the stand-in" % desc)
        if self.policy == "bypass" and self.subjects:
            errors.append("access_control: rule %s: 'policy' option 'bypass' is not supported when 'subject' option "
                          "is configured: see https://www.authelia.com/c/acl#bypass" % desc)
        if self.policy == "bypass" and any({"User", "Group"} & set(r.groupindex) for r in self.domain_regexes):
            errors.append("access_control: rule %s: 'policy' option 'bypass' is not supported when 'domain_regex' "
                          "option contains the user or group named matches. For more information see: "
                          "https://www.authelia.com/c/acl-match-concept-2" % desc)
        if errors:
            raise ConfigErrors(errors)
        self.has_subjects = bool(self.subjects) or any(d.identity for d in self.domains) or any(
            {"User", "Group"} & set(r.groupindex) for r in self.domain_regexes)

    def _match_domain(self, domain, subject):
        if any(m.match(domain, subject) for m in self.domains):
            return True
        for regex in self.domain_regexes:
            found = regex.search(domain)
            if not found:
                continue
            names = set(regex.groupindex)
            if not names & {"User", "Group"}:
                return True
            if subject.anonymous:
                return True
            user = found.groupdict().get("User")
            group = found.groupdict().get("Group")
            if user is not None and user.lower() == subject.username.lower():
                return True
            if group is not None and group.lower() in (g.lower() for g in subject.groups):
                return True
        return False

    def _match_subject_item(self, item, subject):
        if item.startswith("user:"):
            return item[5:].lower() == subject.username.lower()
        if item.startswith("group:"):
            return item[6:].lower() in (g.lower() for g in subject.groups)
        return False  # oauth2:client: - no OpenID Connect in the stand-in

    def match(self, subject, method, domain, path):
        if not self._match_domain(domain, subject):
            return False
        if self.resources and not any(r.search(path) for r in self.resources):
            return False
        if self.methods and method not in self.methods:
            return False
        if self.networks:
            try:
                address = ipaddress.ip_address(subject.ip or "")
            except ValueError:
                return False
            if not any(address in net for net in self.networks):
                return False
        if not self.subjects or subject.anonymous:
            return True
        return any(all(self._match_subject_item(item, subject) for item in group) for group in self.subjects)


def required_level(config, subject, method, domain, path):
    """(rule has subjects, required policy) of the first matching rule, or the default policy."""
    for rule in config.rules:
        if rule.match(subject, method, domain, path):
            return rule.has_subjects, rule.policy, rule.desc
    return False, config.default_policy, "default policy"


def authz_result(level, required, has_subjects):
    """Authelia's isAuthzResult: 'authorized', 'forbidden' or 'unauthorized'."""
    if required == "bypass":
        return "authorized"
    if required == "deny" and (level != NOT_AUTHENTICATED or not has_subjects):
        return "forbidden"
    if has_subjects and level == NOT_AUTHENTICATED:
        return "unauthorized"
    if (required == "one_factor" and level >= ONE_FACTOR) or (required == "two_factor" and level >= TWO_FACTOR):
        return "authorized"
    return "unauthorized"


# --------------------------------------------------------------------------------------------------
# users database (file backend)
# --------------------------------------------------------------------------------------------------

def decode_digest(name, digest):
    """The parsed argon2 digest of a user, or ValueError with Authelia's wording."""
    prefix = "error occurred decoding the password hash for '%s': " % name
    if not isinstance(digest, str) or not digest.startswith("$"):
        raise ValueError(prefix + "provided encoded hash has an invalid format: the digest doesn't begin with the "
                         "delimiter '$' and is not one of the other understood formats")
    identifier = digest.split("$")[1]
    if identifier in UNSUPPORTED_DIGESTS:
        raise ValueError(prefix + "%s digests are valid for Authelia but not supported by the stand-in (argon2 only)"
                         % UNSUPPORTED_DIGESTS[identifier])
    if not identifier.startswith("argon2"):
        raise ValueError(prefix + "provided encoded hash has an invalid identifier: the identifier '%s' is unknown to "
                         "the global decoder" % identifier)
    m = ARGON2_HASH.match(digest)
    if not m:
        raise ValueError(prefix + "argon2 decode error: provided encoded hash has an invalid format")
    if m.group(2) != "19":
        raise ValueError(prefix + "argon2 decode error: provided encoded hash has an invalid version: %s"
                         % m.group(2))
    for part in (m.group(6), m.group(7)):
        try:
            base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(prefix + "argon2 decode error: provided encoded hash has an invalid salt or key: %s"
                             % exc) from exc
    kind = {"id": Argon2Type.ID, "i": Argon2Type.I, "d": Argon2Type.D}[m.group(1)]
    return digest, kind


def load_users(path):
    """{name: {...}} from Authelia's users_database.yml; StartupError(provider='user') like Authelia's checks."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise StartupError("user", "user authentication database file doesn't exist at path '%s'" % path) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise StartupError("user", "error reading the authentication database: %s" % exc) from exc
    if not isinstance(doc, dict) or not doc.get("users"):
        raise StartupError("user", "error reading the authentication database: could not validate the schema: "
                                   "users: non zero value required")
    if not isinstance(doc["users"], dict):
        raise StartupError("user", "error reading the authentication database: could not validate the schema: "
                                   "users: must be a map of user names")
    users = {}
    for key, details in doc["users"].items():
        name = str(key)
        if not isinstance(details, dict):
            raise StartupError("user", "error reading the authentication database: could not validate the schema: "
                                       "users.%s: must be a map" % name)
        for field in ("password", "displayname"):
            if not details.get(field):
                raise StartupError("user", "error reading the authentication database: could not validate the "
                                           "schema: users.%s.%s: non zero value required" % (name, field))
        try:
            digest, kind = decode_digest(name, details["password"])
        except ValueError as exc:
            raise StartupError("user", "error decoding the authentication database: %s" % exc) from exc
        groups = details.get("groups") or []
        if not isinstance(groups, list):
            raise StartupError("user", "error reading the authentication database: could not validate the schema: "
                                       "users.%s.groups: must be a list" % name)
        users[name] = {"digest": digest, "type": kind, "displayname": str(details["displayname"]),
                       "email": str(details.get("email") or ""), "groups": [str(g) for g in groups],
                       "disabled": bool(details.get("disabled", False))}
    return users


class UserProvider:
    """The file backend; with ``watch: true`` the file is re-read when it changes (as Authelia's watcher does),
    otherwise it is read once at startup."""

    def __init__(self, path, watch):
        self.path, self.watch = path, watch
        self.lock = threading.Lock()
        self.users = load_users(path)
        self.stamp = self._stamp()

    def _stamp(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self):
        if not self.watch:
            return
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        try:
            users = load_users(self.path)
        except StartupError as exc:
            log("error", "Error occurred reloading the authentication database", error=str(exc))
            self.stamp = stamp
            return
        with self.lock:
            self.users, self.stamp = users, stamp
        log("info", "Reloaded the authentication database", path=self.path)

    def details(self, username):
        """The user's details, None when unknown or disabled."""
        self._refresh()
        with self.lock:
            user = self.users.get(username)
        if user is None or user["disabled"]:
            return None
        return {"username": username, "displayname": user["displayname"], "email": user["email"],
                "groups": list(user["groups"])}

    def check_password(self, username, password):
        self._refresh()
        with self.lock:
            user = self.users.get(username)
        if user is None or user["disabled"]:
            return False
        try:
            return verify_secret(user["digest"].encode(), password.encode("utf-8"), user["type"])
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHash:
            return False


# --------------------------------------------------------------------------------------------------
# storage (local SQLite): the encryption key check, as Authelia's storage provider does at startup
# --------------------------------------------------------------------------------------------------

def check_storage(path, key):
    """Authelia refuses to start when the encryption key does not match the one the database was created with."""
    check = hmac.new(key.encode("utf-8"), b"authelia-standin-encryption-check", hashlib.sha256).hexdigest()
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise StartupError("storage", "unable to open database file '%s': %s" % (path, exc)) from exc
    try:
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS encryption (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM encryption WHERE name = 'check'").fetchone()
            if row is None:
                db.execute("INSERT INTO encryption (name, value) VALUES ('check', ?)", (check,))
            elif not hmac.compare_digest(row[0], check):
                raise StartupError("storage", "the configured encryption key does not appear to be valid for this "
                                              "database which may occur if the encryption key was changed in the "
                                              "configuration without using the cli to change it in the database")
    except sqlite3.Error as exc:
        raise StartupError("storage", "unable to use database file '%s': %s" % (path, exc)) from exc
    finally:
        db.close()


def check_notifier(filename):
    if not filename:
        return
    try:
        with open(filename, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise StartupError("notification", "error performing the startup check for the filesystem notifier: %s"
                           % exc) from exc


# --------------------------------------------------------------------------------------------------
# sessions (memory provider: lost on restart, as with Authelia without Redis)
# --------------------------------------------------------------------------------------------------

class Sessions:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = {}

    def create(self, cookie, username, remember):
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.lock:
            self.items[token] = {"username": username, "level": ONE_FACTOR, "domain": cookie["domain"],
                                 "created": now, "last": now, "remember": remember}
        return token

    def get(self, token, cookie):
        """The live session of TOKEN for COOKIE's domain (refreshing its activity), or None."""
        now = time.time()
        with self.lock:
            item = self.items.get(token)
            if item is None:
                return None
            lifetime = cookie["remember_me"] if item["remember"] else cookie["expiration"]
            expired = now - item["created"] > lifetime
            inactive = not item["remember"] and now - item["last"] > cookie["inactivity"]
            if item["domain"] != cookie["domain"] or expired or inactive:
                del self.items[token]
                return None
            item["last"] = now
            return dict(item)

    def destroy(self, token):
        with self.lock:
            self.items.pop(token, None)


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------

class App:
    def __init__(self, config, users):
        self.config = config
        self.users = users
        self.sessions = Sessions()

    # --- identity -----------------------------------------------------------------------------------
    def session_cookie(self, headers, cookie):
        raw = headers.get("Cookie")
        if not raw:
            return None
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(raw)
        except http.cookies.CookieError:
            return None
        morsel = jar.get(cookie["name"])
        return morsel.value if morsel else None

    def strategy_get(self, strategy, headers, cookie):
        """(authn dict, error) of one authn strategy, like Authelia's AuthnStrategy.Get."""
        anonymous = {"username": "", "level": NOT_AUTHENTICATED, "details": None}
        name = strategy["name"]
        if name == "CookieSession":
            token = self.session_cookie(headers, cookie)
            if not token:
                return anonymous, None
            session = self.sessions.get(token, cookie)
            if session is None:
                return anonymous, None
            details = self.users.details(session["username"])
            if details is None:  # deleted or disabled since the login: the session is destroyed
                self.sessions.destroy(token)
                return anonymous, None
            return {"username": details["username"], "level": session["level"], "details": details}, None
        header = {"HeaderAuthorization": "Authorization", "HeaderLegacy": "Proxy-Authorization"}.get(
            name, "Proxy-Authorization")
        value = headers.get(header)
        if value is None:
            return anonymous, None
        scheme, _sep, token = value.strip().partition(" ")
        schemes = [s.lower() for s in strategy.get("schemes") or ["basic"]]
        if scheme.lower() not in schemes:
            return anonymous, "invalid scheme: scheme with name '%s' isn't available on this endpoint" % scheme
        if scheme.lower() != "basic":
            return anonymous, "failed to validate %s header with bearer scheme: the bearer scheme requires an " \
                              "OpenID Connect 1.0 configuration but it's absent" % header
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return anonymous, "failed to parse content of %s header" % header
        username, sep, password = decoded.partition(":")
        if not sep or not username or not password:
            return anonymous, "failed to parse content of %s header: format of header must be <user>:<password>" \
                % header
        if not self.users.check_password(username, password):
            return anonymous, "validated parsed credentials of %s header but they are not valid for user '%s'" % (
                header, username)
        details = self.users.details(username)
        if details is None:
            return anonymous, "the user '%s' was not found" % username
        return {"username": username, "level": ONE_FACTOR, "details": details}, None

    def authn(self, strategies, headers, cookie):
        """Authelia's Authz.authn: (authn, strategy that handles unauthorized or None, error)."""
        authn, strategy = None, None
        for strategy in strategies:
            authn, error = self.strategy_get(strategy, headers, cookie)
            if error:
                anonymous = {"username": "", "level": NOT_AUTHENTICATED, "details": None}
                handles = strategy["name"] in HEADER_STRATEGIES or strategy["name"] == "HeaderLegacy"
                return anonymous, (strategy if handles else None), error
            if authn["level"] != NOT_AUTHENTICATED:
                break
        if strategy is not None and strategy["name"] != "CookieSession":
            return authn, strategy, None
        return authn, None, None

    # --- /api/authz/<endpoint> (AuthRequest) -----------------------------------------------------
    def authz(self, endpoint, handler):
        headers = handler.headers
        raw_url = headers.get("X-Original-URL")
        method = headers.get("X-Original-Method")
        if not raw_url:
            log("error", "Error getting Target URL and Request Method", error="header 'X-Original-URL' is empty")
            return 400, {}, b""
        target = _url(raw_url)
        if target is None:
            log("error", "Error getting Target URL and Request Method",
                error="failed to parse X-Original-URL header")
            return 400, {}, b""
        if not method:
            log("error", "Error getting Target URL and Request Method", error="header 'X-Original-Method' is empty")
            return 400, {}, b""
        if target.scheme not in ("https", "wss"):
            log("error", "Target URL '%s' has an insecure scheme '%s', only the 'https' and 'wss' schemes are "
                         "supported so session cookies can be transmitted securely" % (raw_url, target.scheme))
            return 400, {}, b""
        domain = (target.hostname or "").lower()
        cookie = self.config.cookie_for_host(domain)
        if cookie is None:
            log("error", "Target URL does not appear to have a relevant session cookies configuration",
                target_url=raw_url)
            return 400, {}, b""
        portal = cookie["authelia_url"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        if query.get("authelia_url"):
            candidate = _url(query["authelia_url"][0])
            if candidate is None or not has_domain_suffix(candidate.hostname or "", cookie["domain"]):
                log("error", "Error occurred trying to determine the external Authelia URL for Target URL",
                    target_url=raw_url)
                return 400, {}, b""
            portal = query["authelia_url"][0]
        if not portal:
            log("error", "Error occurred trying to determine the external Authelia URL for Target URL",
                target_url=raw_url)
            return 400, {}, b""
        path = urllib.parse.unquote(target.path or "/") + ("?" + target.query if target.query else "")
        forwarded = (headers.get("X-Forwarded-For") or "").split(",")[0].strip()
        ip = forwarded or handler.client_address[0]

        authn, strategy, error = self.authn(endpoint["authn_strategies"], headers, cookie)
        details = authn["details"] or {}
        subject = Subject(authn["username"], details.get("groups"), ip)
        has_subjects, required, matched = required_level(self.config, subject, method.upper(), domain, path)
        log("debug", "Check authorization of subject", username=authn["username"] or "<anonymous>",
            method=method, url=raw_url, rule=matched, required=required)
        if error:
            log("debug", "Error occurred while attempting to authenticate a request", error=error)
            if not has_subjects and required != "bypass":
                if strategy is None:
                    return 401, {}, b""
                return 401, {"WWW-Authenticate": WWW_AUTHENTICATE}, b""
        result = authz_result(authn["level"], required, has_subjects)
        if result == "forbidden":
            log("info", "Access to '%s' is forbidden to user '%s'" % (raw_url, authn["username"] or "<anonymous>"))
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, b"403 Forbidden"
        if result == "unauthorized":
            if strategy is not None:
                return 401, {"WWW-Authenticate": WWW_AUTHENTICATE}, b""
            parts = urllib.parse.urlsplit(portal)
            # Go's url.Values.Encode(): one value per key, keys sorted.
            query_pairs = sorted(dict([*urllib.parse.parse_qsl(parts.query), ("rd", raw_url), ("rm", method)]).items())
            location = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/",
                                                urllib.parse.urlencode(query_pairs), ""))
            log("info", "Access to %s (method %s) is not authorized to user %s, responding with status code 401"
                % (raw_url, method, authn["username"] or "<anonymous>"))
            body = b"" if method.upper() == "HEAD" else (
                '<a href="%s">401 Unauthorized</a>' % location.replace("&", "&amp;")).encode()
            return 401, {"Location": location, "Content-Type": "text/html; charset=utf-8"}, body
        out = {}
        if details:
            out = {"Remote-User": details["username"], "Remote-Groups": ",".join(details["groups"]),
                   "Remote-Name": details["displayname"], "Remote-Email": details["email"]}
        return 200, out, b""

    # --- /api/firstfactor -------------------------------------------------------------------------
    def request_host(self, handler):
        host = handler.headers.get("X-Forwarded-Host") or handler.headers.get("Host") or ""
        return host.split(",")[0].strip().rsplit(":", 1)[0].strip("[]").lower()

    def firstfactor(self, handler, body):
        failed = (401, {"Content-Type": "application/json; charset=utf-8"},
                  json.dumps({"status": "KO", "message": FAILED_1FA}).encode())
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            log("error", "Failed to parse 1FA request body")
            return failed
        if not isinstance(data, dict) or not isinstance(data.get("username"), str) or not isinstance(
                data.get("password"), str):
            log("error", "Failed to parse 1FA request body")
            return failed
        cookie = self.config.cookie_for_host(self.request_host(handler))
        if cookie is None:
            log("error", "Unable to retrieve the session cookie domain of the request", host=self.request_host(handler))
            return failed
        username = data["username"]
        if not self.users.check_password(username, data["password"]):
            log("error", "Unsuccessful 1FA authentication attempt by user '%s'" % username)
            return failed
        remember = bool(data.get("keepMeLoggedIn")) and cookie["remember_me"] > 0
        token = self.sessions.create(cookie, username, remember)
        morsel = "%s=%s; Path=/; Domain=%s; HttpOnly; Secure; SameSite=%s" % (
            cookie["name"], token, cookie["domain"], str(cookie["same_site"]).capitalize())
        if remember:
            morsel += "; Max-Age=%d" % int(cookie["remember_me"])
        log("debug", "Successful 1FA authentication attempt made by user '%s'" % username)
        reply = {"status": "OK"}
        target = data.get("targetURL")
        parts = _url(target) if isinstance(target, str) else None
        if parts is not None and parts.scheme == "https" and has_domain_suffix(parts.hostname or "", cookie["domain"]):
            reply["data"] = {"redirect": target}
        elif cookie["default_redirection_url"]:
            reply["data"] = {"redirect": cookie["default_redirection_url"]}
        return 200, {"Content-Type": "application/json; charset=utf-8", "Set-Cookie": morsel}, \
            json.dumps(reply).encode()

    def state(self, handler):
        cookie = self.config.cookie_for_host(self.request_host(handler))
        data = {"username": "", "authentication_level": NOT_AUTHENTICATED}
        if cookie is not None:
            token = self.session_cookie(handler.headers, cookie)
            session = self.sessions.get(token, cookie) if token else None
            if session is not None and self.users.details(session["username"]) is not None:
                data = {"username": session["username"], "authentication_level": session["level"]}
            if cookie["default_redirection_url"]:
                data["default_redirection_url"] = cookie["default_redirection_url"]
        return 200, {"Content-Type": "application/json; charset=utf-8"}, \
            json.dumps({"status": "OK", "data": data}).encode()

    def logout(self, handler):
        cookie = self.config.cookie_for_host(self.request_host(handler))
        if cookie is not None:
            token = self.session_cookie(handler.headers, cookie)
            if token:
                self.sessions.destroy(token)
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps({"status": "OK"}).encode()

    def dispatch(self, handler, body):
        path = urllib.parse.urlsplit(handler.path).path
        method = handler.command
        if path == "/api/health" and method in ("GET", "HEAD"):
            return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps({"status": "OK"}).encode()
        if path.startswith("/api/authz/"):
            endpoint = self.config.authz.get(path[len("/api/authz/"):])
            if endpoint is not None and endpoint["implementation"] == "AuthRequest":
                return self.authz(endpoint, handler)
            return 404, {"Content-Type": "text/plain"}, b"404 Not Found"
        if path == "/api/firstfactor" and method == "POST":
            return self.firstfactor(handler, body)
        if path == "/api/state" and method == "GET":
            return self.state(handler)
        if path == "/api/logout" and method == "POST":
            return self.logout(handler)
        if path.startswith("/api/"):
            return 404, {"Content-Type": "text/plain"}, b"404 Not Found"
        if method in ("GET", "HEAD"):
            return 200, {"Content-Type": "text/html; charset=utf-8"}, PORTAL
        return 405, {"Content-Type": "text/plain"}, b"405 Method Not Allowed"


class Handler(BaseHTTPRequestHandler):
    server_version = "authelia-standin"
    protocol_version = "HTTP/1.1"
    app = None

    def log_message(self, format, *args):
        return

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            status, headers, payload = self.app.dispatch(self, body)
        except Exception as exc:  # a stand-in answers 500 like any server, and says why
            log("error", "Unhandled error", error=repr(exc))
            status, headers, payload = 500, {"Content-Type": "text/plain"}, b"500 Internal Server Error"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

def parse_args(argv):
    command, configs, rest = "serve", [], list(argv)
    if rest and rest[0] == "validate-config":
        command = "validate-config"
        rest = rest[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("--config", "-c") and rest:
            configs.extend(p for p in rest.pop(0).split(",") if p)
        elif arg.startswith("--config="):
            configs.extend(p for p in arg.split("=", 1)[1].split(",") if p)
        else:
            raise SystemExit("Error: unknown flag: %s" % arg)
    return command, configs or [DEFAULT_CONFIG]


def load_config(paths, environ):
    doc = load_documents(paths, environ)
    return Config(doc)


def report_config_errors(exc):
    for warning in exc.warnings:
        log("warn", "Configuration: %s" % warning)
    for error in exc.errors:
        log("error", "Configuration: %s" % error)
    log("fatal", "Can't continue due to the errors loading the configuration")


def startup(config):
    """The startup checks of the providers; StartupError on the first that fails."""
    users = UserProvider(config.users_path, config.watch)
    if config.storage_path:
        check_storage(config.storage_path, config.encryption_key)
    check_notifier(config.notifier_file)
    return users


def write_healthcheck_env(config):
    """Tell the image's healthcheck where Authelia listens, as Authelia's writeHealthCheckEnv does: nothing when
    the healthcheck is disabled or the image has no /app/healthcheck.sh or /app/.healthcheck.env; otherwise the
    file is rewritten, and a failure (a read-only root filesystem without a writable file mounted there) is
    returned, which Authelia treats as fatal ("unable to configure healthcheck")."""
    if config.disable_healthcheck or not os.path.exists(HEALTHCHECK_SCRIPT) or not os.path.exists(HEALTHCHECK_ENV):
        return None
    host = config.host if config.host not in ("", "0.0.0.0", "::") else "localhost"
    try:
        with open(HEALTHCHECK_ENV, "w", encoding="utf-8") as fh:
            fh.write("X_AUTHELIA_HEALTHCHECK=1\nX_AUTHELIA_HEALTHCHECK_SCHEME=http\nX_AUTHELIA_HEALTHCHECK_HOST=%s\n"
                     "X_AUTHELIA_HEALTHCHECK_PORT=%d\nX_AUTHELIA_HEALTHCHECK_PATH=\n" % (host, config.port))
    except OSError as exc:
        return "open %s: %s" % (HEALTHCHECK_ENV, (exc.strerror or str(exc)).lower())
    return None


def main(argv=None):
    global _log_level
    command, paths = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(paths, os.environ)
    except ConfigErrors as exc:
        report_config_errors(exc)
        return 1
    _log_level = LEVELS[config.log_level]
    for warning in config.warnings:
        log("warn", "Configuration: %s" % warning)
    if command == "validate-config":
        print("Configuration parsed and loaded successfully without errors.")
        return 0
    log("info", "Authelia stand-in (4.38 contract) is starting")
    try:
        users = startup(config)
    except StartupError as exc:
        log("error", "Error occurred running a startup check", error=str(exc), provider=exc.provider)
        log("fatal", "The following providers had errors during startup: %s" % exc.provider)
        return 1
    Handler.app = App(config, users)
    server = Server((config.host or "0.0.0.0", config.port), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    problem = write_healthcheck_env(config)
    if problem:
        log("fatal", "Create Server Service (main) returned error",
            error="unable to configure healthcheck: %s" % problem)
        server.server_close()
        return 1
    log("info", "Listening for non-TLS connections on '%s:%d' path '/'" % (config.host or "[::]", config.port),
        server="main", service="server")
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    log("info", "Authelia stand-in stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
