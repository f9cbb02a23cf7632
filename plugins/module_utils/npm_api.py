# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One client for Nginx Proxy Manager's REST API (the ``/api`` of the admin port, 2.12 to 2.14+).

Authentication: ``POST /api/tokens {identity, secret}`` answers ``{token, expires}`` (a JWT valid one day);
every other call sends ``Authorization: Bearer <token>`` (without it NPM answers 404, with a bad or expired one
401). The token is obtained once and reused by every task and host of a run, and by later runs while it is
valid: it is kept in a cache file (mode 0600, in a 0700 directory of the user running the module, under the
temporary directory of the machine the module runs on; usually the controller) named after a hash of the
URL and identity, with its expiry. A 401 drops the cached token and logs in once more.

Versions: ``GET /api/`` (no auth) gives ``version {major, minor, revision}`` and, from 2.13, ``setup`` (false on a
fresh install until the first user exists). The differences the modules care about:

- 2.12 and older create ``admin@example.com`` / ``changeme``; 2.13+ has no default admin.
- ``meta.letsencrypt_email`` / ``meta.letsencrypt_agree`` are required for Let's Encrypt before 2.13 and refused
  (400) from 2.13.
- ``trust_forwarded_proto`` exists on proxy hosts from 2.14 (400 before).

Errors come back as ``{"error": {"code", "message"}}``; the client raises NpmError with the method, path and
message, and the request counts per method and path template so modules can report what a run cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
from calendar import timegm
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request

try:
    from ansible.module_utils.urls import make_context
except ImportError:  # older ansible-core: Request builds a context per request
    make_context = None

USER_AGENT = "selfhosted.platform-npm"
TOKEN_MARGIN = 300  # seconds: a cached token this close to its expiry is renewed first
DEFAULT_EMAIL = "admin@example.com"
DEFAULT_PASSWORD = "changeme"

# Module options every NPM module takes (merged into each module's argument_spec).
CONNECTION_SPEC = dict(
    url=dict(type="str", required=True),
    username=dict(type="str", required=True, aliases=["identity", "email"]),
    password=dict(type="str", required=True, no_log=True, aliases=["secret"]),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
    token_cache=dict(type="bool", default=True),
    token_cache_dir=dict(type="path"),
)

# API field -> module option, to name the option in the server's validation errors.
FIELD_OPTIONS = {
    "domain_names": "domain_names", "forward_scheme": "forward_scheme", "forward_host": "forward_host",
    "forward_port": "forward_port", "certificate_id": "certificate", "access_list_id": "access_list",
    "ssl_forced": "ssl_forced", "hsts_enabled": "hsts_enabled", "hsts_subdomains": "hsts_subdomains",
    "http2_support": "http2_support", "block_exploits": "block_exploits", "caching_enabled": "caching_enabled",
    "allow_websocket_upgrade": "allow_websocket_upgrade", "advanced_config": "advanced_config",
    "locations": "locations", "trust_forwarded_proto": "trust_forwarded_proto", "items": "users",
    "clients": "clients", "satisfy_any": "satisfy_any", "pass_auth": "pass_auth", "name": "name",
}


class NpmError(Exception):
    """A failed call or bad input, with a message that names the option or the request."""

    def __init__(self, msg, status=None, method=None, path=None, body=None, api_message=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.api_message = api_message


def parse_version(value):
    """{'major': 2, 'minor': 13, 'revision': 5} or '2.13.5' / 'v2.13.5' -> (2, 13, 5); None when unknown."""
    if isinstance(value, dict):
        try:
            return (int(value.get("major")), int(value.get("minor")), int(value.get("revision") or 0))
        except (TypeError, ValueError):
            return parse_version(value.get("string"))
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", value or "") if isinstance(value, str) else None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)) if match else None


def parse_expiry(text):
    """NPM's ``expires`` ('2025-06-02T10:00:00.000Z') -> epoch seconds; None when unreadable."""
    match = re.match(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)", text or "") if isinstance(text, str) else None
    if not match:
        return None
    return timegm(tuple(int(g) for g in match.groups()) + (0, 0, 0))


def api_error_message(raw):
    """The message of an NPM error body ({"error": {"code", "message"}, "debug": ...}) and the debug text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        return text.strip()[:500], None, None
    if not isinstance(body, dict):
        return str(body)[:500], None, body
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = error.get("message") or body.get("message") or text.strip()[:500]
    debug = None
    if isinstance(body.get("debug"), dict):
        previous = body["debug"].get("previous")
        debug = previous.get("message") if isinstance(previous, dict) else None
        if not debug and body["debug"].get("stack"):
            debug = "\n".join(str(line) for line in body["debug"]["stack"][:5])
    return message, debug, body


def option_of(message):
    """The module option an ajv message ('data/forward_port must be <= 65535') is about, or None."""
    match = re.match(r"^data/([a-z_]+)", message or "")
    return FIELD_OPTIONS.get(match.group(1), match.group(1)) if match else None


class UrlsTransport:
    """The real transport (ansible.module_utils.urls): (status, body bytes); raises HTTPError/URLError.
    The TLS context is built once per run."""

    def __init__(self):
        self.request = None

    def __call__(self, method, url, body, headers, timeout, validate_certs):
        if self.request is None:
            context = make_context(validate_certs=validate_certs) if make_context else None
            self.request = Request(http_agent=USER_AGENT, follow_redirects="safe", context=context)
        resp = self.request.open(method, url, data=body, headers=headers, timeout=timeout,
                                 validate_certs=validate_certs)
        try:
            return resp.getcode(), resp.read()
        finally:
            resp.close()


class TokenCache:
    """Tokens kept between tasks, hosts and runs: one 0600 JSON file per (URL, identity) in a 0700 directory
    owned by the current user. A directory that is not ours or is open to others is not used."""

    def __init__(self, directory=None):
        self.directory = directory or os.path.join(tempfile.gettempdir(), "selfhosted-npm-%s" % os.getuid())

    def usable(self):
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError:
            return False
        return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077

    def path(self, url, identity):
        digest = hashlib.sha256(("%s\n%s" % (url, identity.lower())).encode("utf-8")).hexdigest()[:32]
        return os.path.join(self.directory, "token-%s.json" % digest)

    def get(self, url, identity, now=None):
        if not self.usable():
            return None
        path = self.path(url, identity)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                return None
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not data.get("token") or data.get("url") != url:
            return None
        if (data.get("expires_at") or 0) - TOKEN_MARGIN <= (now if now is not None else time.time()):
            return None
        return data

    def put(self, url, identity, token, expires_at, version=None):
        if not self.usable():
            return False
        path = self.path(url, identity)
        tmp = "%s.%s.tmp" % (path, secrets.token_hex(4))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"url": url, "token": token, "expires_at": expires_at, "version": version}, handle)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        return True

    def drop(self, url, identity):
        with contextlib.suppress(OSError):
            os.unlink(self.path(url, identity))


def template(path):
    """'/api/nginx/proxy-hosts/12/enable' -> '/api/nginx/proxy-hosts/{id}/enable' (request counts)."""
    return re.sub(r"/\d+(?=/|$)", "/{id}", path)


class NpmClient:
    """Calls NPM's API with a cached token; counts requests per 'METHOD /path/{id}'."""

    def __init__(self, url, identity, secret, validate_certs=True, timeout=30, token_cache=True, cache_dir=None,
                 transport=None, clock=time.time):
        base = (url or "").strip().rstrip("/")
        if base.endswith("/api"):
            base = base[:-4]
        if not re.match(r"^https?://[^/\s]+$", base):
            raise NpmError("url: %r is not the http(s) URL of an Nginx Proxy Manager (for example "
                           "http://127.0.0.1:81)" % url)
        if not identity:
            raise NpmError("username: must not be empty (the NPM user's email address)")
        if not secret:
            raise NpmError("password: must not be empty")
        self.base = base
        self.identity = identity
        self.secret = secret
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.transport = transport or UrlsTransport()
        self.cache = TokenCache(cache_dir) if token_cache else None
        self.clock = clock
        self.token = None
        self.token_source = None
        self.counts = {}
        self.health_info = None
        self.version = None

    # -- bookkeeping ----------------------------------------------------------------------------

    @property
    def requests(self):
        return sum(self.counts.values())

    @property
    def version_text(self):
        return ".".join(str(p) for p in self.version) if self.version else None

    def at_least(self, *version):
        return self.version is not None and self.version >= tuple(version)

    @property
    def supports_trust_forwarded_proto(self):
        return self.at_least(2, 14)

    @property
    def needs_letsencrypt_email(self):
        return self.version is not None and self.version < (2, 13)

    # -- HTTP -----------------------------------------------------------------------------------

    def _send(self, method, path, body=None, query=None, auth=True, content_type="application/json",
              timeout=None):
        url = self.base + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if auth:
            headers["Authorization"] = "Bearer %s" % self.token
        key = "%s %s" % (method, template(path))
        self.counts[key] = self.counts.get(key, 0) + 1
        where = "%s %s" % (method, path)
        try:
            return self.transport(method, url, body, headers, timeout or self.timeout, self.validate_certs)[1]
        except HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, ValueError, HTTPException):
                raw = b""
            message, debug, parsed = api_error_message(raw)
            text = "%s: HTTP %s: %s" % (where, exc.code, message)
            if debug:
                text += "\n%s" % debug
            raise NpmError(text, exc.code, method, path, parsed, message) from None
        except URLError as exc:
            raise NpmError("cannot reach Nginx Proxy Manager at %s (%s): %s" % (self.base, where, exc.reason),
                           None, method, path) from None
        except (OSError, UrlsConnectionError) as exc:  # timeouts, resets, certificate errors
            raise NpmError("cannot reach Nginx Proxy Manager at %s (%s): %s" % (self.base, where, exc),
                           None, method, path) from None

    @staticmethod
    def _decode(where, raw):
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except ValueError:
            raise NpmError("%s: the answer is not JSON: %r" % (where, raw[:200])) from None

    def call(self, method, path, body=None, query=None, timeout=None):
        """An authenticated JSON call; logs in first when needed and once more after a 401."""
        self.ensure_token()
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            raw = self._send(method, path, data, query, timeout=timeout)
        except NpmError as exc:
            if exc.status != 401:
                raise
            self.forget_token()
            self.login()
            raw = self._send(method, path, data, query, timeout=timeout)
        return self._decode("%s %s" % (method, path), raw)

    def public_call(self, method, path, body=None):
        """A JSON call without a token (the health and first-user setup endpoints)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        return self._decode("%s %s" % (method, path), self._send(method, path, data, auth=False))

    def upload(self, path, files, timeout=None):
        """An authenticated multipart/form-data POST of text files {field: text}."""
        self.ensure_token()
        boundary = "----selfhosted%s" % secrets.token_hex(12)
        chunks = []
        for name, text in files.items():
            chunks.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s.pem\"\r\n"
                           "Content-Type: application/x-pem-file\r\n\r\n" % (boundary, name, name)).encode())
            chunks.append(text.encode("utf-8") + b"\r\n")
        chunks.append(("--%s--\r\n" % boundary).encode())
        body = b"".join(chunks)
        ctype = "multipart/form-data; boundary=%s" % boundary
        try:
            raw = self._send("POST", path, body, content_type=ctype, timeout=timeout)
        except NpmError as exc:
            if exc.status != 401:
                raise
            self.forget_token()
            self.login()
            raw = self._send("POST", path, body, content_type=ctype, timeout=timeout)
        return self._decode("POST %s" % path, raw)

    # -- health, version, tokens ----------------------------------------------------------------

    def health(self, refresh=False):
        """GET /api/ once per client: status, version and (2.13+) setup."""
        if self.health_info is None or refresh:
            info = self._decode("GET /api/", self._send("GET", "/api/", auth=False)) or {}
            if not isinstance(info, dict) or info.get("status") != "OK":
                raise NpmError("GET /api/: %s does not answer like Nginx Proxy Manager (%r)" % (self.base, info))
            self.health_info = info
            self.version = parse_version(info.get("version"))
        return self.health_info

    @property
    def is_setup(self):
        """False on a 2.13+ install without any user yet; True otherwise (2.12 always has its default admin)."""
        info = self.health()
        return info.get("setup") is not False

    def ensure_token(self):
        if self.token:
            return
        if self.cache is not None:
            cached = self.cache.get(self.base, self.identity, now=self.clock())
            if cached:
                self.token = cached["token"]
                self.token_source = "cache"
                return
        self.login()

    def request_token(self, identity, secret):
        """POST /api/tokens; returns (token, expires_at) or raises NpmError (401 for wrong credentials)."""
        body = json.dumps({"identity": identity, "secret": secret}).encode("utf-8")
        data = self._decode("POST /api/tokens", self._send("POST", "/api/tokens", body, auth=False)) or {}
        token = data.get("token")
        if not token:
            raise NpmError("POST /api/tokens: the answer has no token (%s); this NPM release may need a second "
                           "factor or cookie login, which this client does not do" % ", ".join(sorted(data)))
        expires_at = parse_expiry(data.get("expires")) or (self.clock() + 3600)
        return token, expires_at

    def login(self):
        try:
            token, expires_at = self.request_token(self.identity, self.secret)
        except NpmError as exc:
            if exc.status in (400, 401, 403):
                hint = ""
                try:
                    if not self.is_setup:
                        hint = (" This NPM (%s) has no user yet: create the first admin with "
                                "selfhosted.platform.npm_admin." % self.version_text)
                except NpmError:
                    pass
                raise NpmError("username/password: NPM refused the login of %r (HTTP %s: %s).%s"
                               % (self.identity, exc.status, exc.api_message, hint), exc.status, "POST",
                               "/api/tokens") from None
            raise
        self.token = token
        self.token_source = "login"
        if self.cache is not None:
            self.cache.put(self.base, self.identity, token, expires_at, self.version_text)
        return token

    def forget_token(self):
        self.token = None
        if self.cache is not None:
            self.cache.drop(self.base, self.identity)

    # -- lists ----------------------------------------------------------------------------------

    def proxy_hosts(self):
        return self.call("GET", "/api/nginx/proxy-hosts", query={"expand": "certificate,access_list"}) or []

    def certificates(self):
        return self.call("GET", "/api/nginx/certificates") or []

    def access_lists(self):
        return self.call("GET", "/api/nginx/access-lists", query={"expand": "items,clients"}) or []


def make_client(params, timeout=None):
    return NpmClient(params["url"], params["username"], params["password"], validate_certs=params["validate_certs"],
                     timeout=timeout or params["timeout"], token_cache=params["token_cache"],
                     cache_dir=params.get("token_cache_dir"))


def connection_spec(**overrides):
    """The connection options, with per-module default overrides (for example a longer timeout)."""
    spec = dict((k, dict(v)) for k, v in CONNECTION_SPEC.items())
    for key, default in overrides.items():
        spec[key]["default"] = default
    return spec


class Outcome(Exception):
    """Raised by module logic to end with a failure after something may have changed."""

    def __init__(self, msg, result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def finish(client, result):
    """Add the request counts and version to a result."""
    if client is not None:
        result["requests"] = client.requests
        result["request_counts"] = dict(client.counts)
        result["npm_version"] = client.version_text
    return result


def run(module, logic, client_factory=None):
    """Build the client from the module's params, run logic(client, module) -> result, exit or fail."""
    client = None
    try:
        client = (client_factory or make_client)(module.params)
        result = logic(client, module)
    except Outcome as exc:
        for warning in exc.result.pop("warnings", []):
            module.warn(warning)
        module.fail_json(msg=exc.msg, **finish(client, exc.result))
    except NpmError as exc:
        module.fail_json(msg=exc.msg, **finish(client, {"changed": False}))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**finish(client, result))
