# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for Dokploy's REST API (v0.25+, the environment era).

Dokploy exposes every tRPC procedure at ``<url>/api/<router>.<procedure>`` through trpc-openapi:
queries are GET with flat query parameters, mutations are POST with a JSON body, and the
``x-api-key`` header authenticates. Errors come back as JSON ``{"message", "code", "data":
{"httpStatus", "path", "zodError"}, "issues"}``; input validation failures (400) list zod issues
whose ``path`` names the field. A key created with rate limiting (``rateLimitEnabled``, the
default: 10 requests a day) answers ``401 Unauthorized`` once its quota is used, exactly like a
bad key, so a 401 explains both. Dokploy checks a key twice per request (measured on v0.30.2), so
a rate-limited key gets half its nominal limit: 5 requests with the default 10.

The deployment log is the query ``deployment.readLogs`` (v0.29.5+; the log as a JSON string).

The client counts its requests per procedure, so a module can report what a run cost.
"""

from __future__ import annotations

import json
import re
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request

try:
    from ansible.module_utils.urls import make_context
except ImportError:  # older ansible-core: Request builds a context per request
    make_context = None

MIN_VERSION = (0, 25, 0)
READ_LOGS_VERSION = (0, 29, 5)
USER_AGENT = "selfhosted.platform-dokploy"

UNAUTHORIZED_HELP = (
    "Dokploy answered 401 Unauthorized to %s: the x-api-key is wrong, revoked or for another organisation, "
    "or it is a rate-limited key whose quota is used up. Keys created with rate limiting on (rateLimitEnabled, "
    "Dokploy's default: 10 requests a day) get exactly this answer once the quota is spent, and Dokploy checks a "
    "key twice per request, so such a key allows only half its nominal limit (5 requests with the default 10); "
    "create the key for automation with rateLimitEnabled: false (Settings > Profile > API keys, or the api-key "
    "endpoint)."
)


def connection_spec(timeout=30):
    """argument_spec entries every dokploy_* module takes: the server, and where the service lives."""
    return dict(
        url=dict(type="str", required=True),
        api_key=dict(type="str", required=True, no_log=True),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=timeout),
        project=dict(type="str", required=True),
        project_description=dict(type="str"),
        environment=dict(type="str", default="production"),
        name=dict(type="str", required=True),
    )


class DokployError(Exception):
    """A failed call, with a message naming the procedure and, for validation errors, the fields."""

    def __init__(self, msg, procedure=None, status=None, code=None, fields=None, body=None):
        super().__init__(msg)
        self.msg = msg
        self.procedure = procedure
        self.status = status
        self.code = code
        self.fields = fields or []
        self.body = body


class UrlsTransport:
    """The real transport (ansible.module_utils.urls): (status, body bytes); raises HTTPError/URLError.
    The TLS context is built once per run; building one per request costs ~80 ms of CA loading."""

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


def parse_version(text):
    """'v0.30.2' (or '0.25.0-canary.3') -> (0, 30, 2); None when it is not a version."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def format_issues(issues):
    """zod issues -> ['field: message', ...]."""
    out = []
    for issue in issues or []:
        path = ".".join(str(p) for p in issue.get("path") or []) or "(input)"
        out.append("%s: %s" % (path, issue.get("message", "invalid")))
    return out


def error_for(procedure, status, raw):
    """A DokployError for an HTTP error answer of procedure."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {"message": text.strip()[:500]}
    if not isinstance(body, dict):
        body = {"message": str(body)[:500]}
    message = body.get("message") or ""
    code = body.get("code") if isinstance(body.get("code"), str) else None
    if status == 401:
        return DokployError(UNAUTHORIZED_HELP % procedure, procedure, status, code or "UNAUTHORIZED", body=body)
    issues = body.get("issues") or []
    if status == 400 and issues:
        fields = [".".join(str(p) for p in i.get("path") or []) for i in issues]
        return DokployError("%s: input validation failed: %s" % (procedure, "; ".join(format_issues(issues))),
                            procedure, status, code, fields=fields, body=body)
    if status == 404 and message == "Not found":
        return DokployError("%s: the server has no such procedure (404 Not found); it may be older or newer than "
                            "this module expects" % procedure, procedure, status, code, body=body)
    hint = ""
    if "not a swarm manager" in message:
        hint = (" (Dokploy runs every service on Docker Swarm: the Docker Engine of the Dokploy server is not a "
                "swarm manager; run 'docker swarm init' there, as Dokploy's installer does)")
    return DokployError("%s: HTTP %s %s: %s%s" % (procedure, status, code or "", message or text.strip()[:500], hint),
                        procedure, status, code, body=body)


class DokployClient:
    """Calls Dokploy procedures and counts them."""

    def __init__(self, url, api_key, validate_certs=True, timeout=30, transport=None):
        base = (url or "").rstrip("/")
        if base.endswith("/api"):
            base = base[:-4]
        if not re.match(r"^https?://[^/]+", base):
            raise DokployError("url: %r is not an http(s) URL of a Dokploy server" % url)
        self.base = base
        self.api_key = api_key
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.transport = transport or UrlsTransport()
        self.counts = {}
        self.version = None

    @property
    def requests(self):
        return sum(self.counts.values())

    def _send(self, procedure, method, url, body=None, accept="application/json"):
        headers = {"x-api-key": self.api_key, "Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.counts[procedure] = self.counts.get(procedure, 0) + 1
        try:
            return self.transport(method, url, body, headers, self.timeout, self.validate_certs)[1]
        except HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, ValueError, HTTPException):  # the body only serves the message
                raw = b""
            raise error_for(procedure, exc.code, raw) from None
        except URLError as exc:
            raise DokployError("cannot reach Dokploy at %s (%s): %s" % (self.base, procedure, exc.reason),
                               procedure) from None
        except (OSError, UrlsConnectionError) as exc:  # timeouts, resets, certificate errors from open_url
            raise DokployError("cannot reach Dokploy at %s (%s): %s" % (self.base, procedure, exc),
                               procedure) from None

    @staticmethod
    def _decode(procedure, raw):
        if not raw:
            return None  # a procedure returning undefined answers with an empty body
        try:
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except ValueError:
            raise DokployError("%s: the answer is not JSON: %r" % (procedure, raw[:200])) from None

    def query(self, procedure, **params):
        """A GET procedure; params become flat query parameters (None values are left out)."""
        params = dict((k, v) for k, v in params.items() if v is not None)
        url = "%s/api/%s" % (self.base, procedure)
        if params:
            url += "?" + urlencode(params)
        return self._decode(procedure, self._send(procedure, "GET", url))

    def mutate(self, procedure, payload):
        """A POST procedure with a JSON body."""
        body = json.dumps(payload).encode("utf-8")
        return self._decode(procedure, self._send(procedure, "POST", "%s/api/%s" % (self.base, procedure), body))

    def read_logs_supported(self):
        """Whether the server has deployment.readLogs (v0.29.5+); None when the version is not known or not a
        release number (a canary build: try it)."""
        parsed = parse_version(self.version)
        if parsed is None:
            return None
        return parsed >= READ_LOGS_VERSION

    def deployment_log(self, deployment_id, tail=50):
        """The last lines of a deployment's log: GET deployment.readLogs?deploymentId=&tail= (v0.29.5+), which
        answers the log as one JSON string."""
        text = self.query("deployment.readLogs", deploymentId=deployment_id, tail=tail)
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        return text.splitlines()[-tail:] if tail else text.splitlines()

    def check_version(self, minimum=MIN_VERSION):
        """settings.getDokployVersion; fails clearly on servers older than the environment-era API."""
        version = self.query("settings.getDokployVersion")
        self.version = version if isinstance(version, str) else str(version)
        parsed = parse_version(self.version)
        if parsed is not None and parsed < minimum:
            raise DokployError(
                "Dokploy %s is too old: this module needs v%s or newer, the API where projects contain environments "
                "and every service is created in an environment (environmentId). Upgrade Dokploy."
                % (self.version, ".".join(str(p) for p in minimum)), "settings.getDokployVersion")
        return self.version
