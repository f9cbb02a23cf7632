# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One client for Nginx Proxy Manager's REST API (the ``/api`` of the admin port, 2.12 to 2.14+).

Authentication: ``POST /api/tokens {identity, secret}`` answers ``{token, expires}`` (a JWT valid one day);
every other call sends ``Authorization: Bearer <token>`` (without it NPM answers 404). An account with two-factor
authentication (2.14+) gets ``{requires_2fa: true, challenge_token}`` instead, and the token comes from
``POST /api/tokens/2fa {challenge_token, code}`` with the RFC 6238 code of ``totp_secret`` (computed here).

The token is obtained once and reused by every task and host of a run, and by later runs while it is valid: it is
kept in a cache file (mode 0600, in a 0700 directory of the user running the module, under the temporary directory
of the machine the module runs on; usually the controller) with its expiry. The file is named after a slow hash
(PBKDF2) of the URL, identity *and password*, so a changed password never finds the token of the old one: it logs
in, and a wrong password fails at once instead of hiding behind a valid token for a day.

A refused token is dropped and the login done once more, then the request is repeated once. NPM refuses a token
with 401 up to 2.12; from 2.13 (measured on v2.15.1) an expired token is 400 "Token has expired" and a token signed
by another key (NPM reinstalled, new ``/data/keys.json``) is 500 "Internal Error". A 500 is ambiguous (a failed
certbot run is also 500 "Internal Error"), so it counts as a refused token only for a token from the cache that
``GET /api/users/me`` also refuses; a request is never repeated after a 500 of its own.

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

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import struct
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
    totp_secret=dict(type="str", no_log=True),
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

    def __init__(self, msg, status=None, method=None, path=None, body=None, api_message=None, option=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.api_message = api_message
        self.option = option


def totp(secret, at=None, step=30, digits=6):
    """RFC 6238 TOTP (HMAC-SHA1) of a base32 secret (spaces, dashes, lower case and missing padding accepted) at
    epoch second ``at`` (now by default): the code an authenticator app shows."""
    text = re.sub(r"[\s-]", "", secret or "").upper().rstrip("=")
    try:
        if not text or not re.match(r"^[A-Z2-7]+$", text):
            raise ValueError(text)
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise NpmError("totp_secret: not a base32 TOTP secret (letters A-Z and digits 2-7, as the authenticator "
                       "set-up of NPM shows it)", option="totp_secret") from None
    counter = int(time.time() if at is None else at) // step
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return "%0*d" % (digits, value)


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
    """Tokens kept between tasks, hosts and runs: one 0600 JSON file per (URL, identity, password) in a 0700
    directory owned by the current user. A directory that is not ours or is open to others is not used. The file
    name is a PBKDF2 hash, so it does not give the password away cheaply."""

    ROUNDS = 20000

    def __init__(self, directory=None):
        self.directory = directory or os.path.join(tempfile.gettempdir(), "selfhosted-npm-%s" % os.getuid())

    def usable(self):
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError:
            return False
        return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077

    def path(self, url, identity, secret):
        salt = ("selfhosted-npm\n%s\n%s" % (url, identity.lower())).encode("utf-8")
        digest = hashlib.pbkdf2_hmac("sha256", (secret or "").encode("utf-8"), salt, self.ROUNDS, 16).hex()
        return os.path.join(self.directory, "token-%s.json" % digest)

    def get(self, url, identity, secret, now=None):
        if not self.usable():
            return None
        path = self.path(url, identity, secret)
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

    def put(self, url, identity, secret, token, expires_at, version=None):
        if not self.usable():
            return False
        path = self.path(url, identity, secret)
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

    def drop(self, url, identity, secret):
        with contextlib.suppress(OSError):
            os.unlink(self.path(url, identity, secret))


def template(path):
    """'/api/nginx/proxy-hosts/12/enable' -> '/api/nginx/proxy-hosts/{id}/enable' (request counts)."""
    return re.sub(r"/\d+(?=/|$)", "/{id}", path)


class NpmClient:
    """Calls NPM's API with a cached token; counts requests per 'METHOD /path/{id}'."""

    def __init__(self, url, identity, secret, validate_certs=True, timeout=30, token_cache=True, cache_dir=None,
                 transport=None, clock=time.time, totp_secret=None):
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
        self.totp_secret = totp_secret or None
        if self.totp_secret:
            totp(self.totp_secret, 0)  # a secret that is not base32 fails before any request
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
        """An authenticated JSON call; logs in first when needed, and once more when the token is refused."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        raw = self._authed(method, path, data, query=query, timeout=timeout)
        return self._decode("%s %s" % (method, path), raw)

    def _authed(self, method, path, data, query=None, timeout=None, content_type="application/json"):
        self.ensure_token()
        try:
            return self._send(method, path, data, query, content_type=content_type, timeout=timeout)
        except NpmError as exc:
            if not self.token_refused(exc):
                raise
        self.forget_token()
        self.login()
        return self._send(method, path, data, query, content_type=content_type, timeout=timeout)

    def token_refused(self, exc):
        """Whether an error means NPM refused our token (see the module docstring): 401 (<= 2.12); 400 about the
        token (2.13+: "Token has expired"); 500 for a cached token that GET /api/users/me refuses as well."""
        if exc.status == 401:
            return True
        if exc.status == 400 and re.search(r"\btoken\b", exc.api_message or "", re.IGNORECASE):
            return True
        if exc.status == 500 and self.token_source == "cache":
            self.token_source = "cache, checked"
            try:
                self._send("GET", "/api/users/me")
            except NpmError as probe:
                return probe.status in (400, 401, 500)
        return False

    def public_call(self, method, path, body=None):
        """A JSON call without a token (the health and first-user setup endpoints)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        return self._decode("%s %s" % (method, path), self._send(method, path, data, auth=False))

    def upload(self, path, files, timeout=None):
        """An authenticated multipart/form-data POST of text files {field: text}."""
        boundary = "----selfhosted%s" % secrets.token_hex(12)
        chunks = []
        for name, text in files.items():
            chunks.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s.pem\"\r\n"
                           "Content-Type: application/x-pem-file\r\n\r\n" % (boundary, name, name)).encode())
            chunks.append(text.encode("utf-8") + b"\r\n")
        chunks.append(("--%s--\r\n" % boundary).encode())
        body = b"".join(chunks)
        ctype = "multipart/form-data; boundary=%s" % boundary
        raw = self._authed("POST", path, body, content_type=ctype, timeout=timeout)
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
            cached = self.cache.get(self.base, self.identity, self.secret, now=self.clock())
            if cached:
                self.token = cached["token"]
                self.token_source = "cache"
                return
        self.login()

    def request_token(self, identity, secret):
        """POST /api/tokens (and /api/tokens/2fa for a two-factor account); returns (token, expires_at) or raises
        NpmError (400 for wrong credentials from 2.13, 401 before; option totp_secret for the second factor)."""
        body = json.dumps({"identity": identity, "secret": secret}).encode("utf-8")
        data = self._decode("POST /api/tokens", self._send("POST", "/api/tokens", body, auth=False)) or {}
        if isinstance(data, dict) and data.get("requires_2fa"):
            data = self.second_factor(identity, data.get("challenge_token"))
        token = data.get("token") if isinstance(data, dict) else None
        if not token:
            raise NpmError("POST /api/tokens: the answer has no token (%s); this NPM release may need a login this "
                           "client does not do" % ", ".join(sorted(data or {})))
        expires_at = parse_expiry(data.get("expires")) or (self.clock() + 3600)
        return token, expires_at

    def second_factor(self, identity, challenge):
        """POST /api/tokens/2fa with the current TOTP code of totp_secret."""
        if not self.totp_secret:
            raise NpmError("totp_secret: the NPM account %s has two-factor authentication turned on; set totp_secret "
                           "to the base32 secret of its authenticator (from vault)" % identity, option="totp_secret")
        body = json.dumps({"challenge_token": challenge or "", "code": totp(self.totp_secret, self.clock())})
        try:
            raw = self._send("POST", "/api/tokens/2fa", body.encode("utf-8"), auth=False)
        except NpmError as exc:
            if exc.status not in (400, 401, 403):
                raise
            raise NpmError("totp_secret: NPM refused the two-factor code of %s (HTTP %s: %s); check totp_secret and "
                           "the clock of the machine the module runs on" % (identity, exc.status, exc.api_message),
                           exc.status, "POST", "/api/tokens/2fa", option="totp_secret") from None
        return self._decode("POST /api/tokens/2fa", raw) or {}

    def login(self):
        try:
            token, expires_at = self.request_token(self.identity, self.secret)
        except NpmError as exc:
            if exc.status in (400, 401, 403) and not exc.option:
                hint = ""
                try:
                    if not self.is_setup:
                        hint = (" This NPM (%s) has no user yet: create the first admin with "
                                "selfhosted.platform.npm_admin." % self.version_text)
                except NpmError:
                    pass
                raise NpmError("username/password: NPM refused the login of %r (HTTP %s: %s).%s"
                               % (self.identity, exc.status, exc.api_message, hint), exc.status, "POST",
                               "/api/tokens", api_message=exc.api_message, option="password") from None
            raise
        self.token = token
        self.token_source = "login"
        if self.cache is not None:
            self.cache.put(self.base, self.identity, self.secret, token, expires_at, self.version_text)
        return token

    def forget_token(self):
        self.token = None
        if self.cache is not None:
            self.cache.drop(self.base, self.identity, self.secret)

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
                     cache_dir=params.get("token_cache_dir"), totp_secret=params.get("totp_secret"))


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
