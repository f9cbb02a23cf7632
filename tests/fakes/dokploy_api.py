r"""A fake Dokploy server (the environment-era API, v0.25+) for unit and integration tests.

Stdlib only (http.server). Run it in a thread from tests (``FakeDokploy().start()``) or on its own::

    python -m tests.fakes.dokploy_api --port 3000 --api-key test-key --version v0.30.2

What it reproduces, from Dokploy's source (apps/dokploy/pages/api/[...trpc].ts, the trpc-openapi
node-http adapter Dokploy uses, the routers under apps/dokploy/server/api/routers/ and the zod
schemas under packages/server/src/db/schema/):

- ``<url>/api/<router>.<procedure>``: queries are GET with *flat* query parameters (``?applicationId=x``,
  not tRPC's ``?input=``), mutations are POST with a JSON body (``Content-Type: application/json``,
  else 415). A procedure called with the other method is not found (404), as the adapter keys its
  procedure cache by method.
- Authentication first: the ``x-api-key`` header is checked before routing; a missing, wrong or
  exhausted key gets ``401 {"message": "Unauthorized"}``. Keys in ``limited_keys`` have a rate limit
  (Dokploy's ``rateLimitEnabled`` keys: 10 a day by default) and answer exactly like a bad key once it
  is used up. The key is checked twice per request and each check counts against the limit, so a key
  with limit 10 allows 5 requests, as measured on v0.30.2 (``key_usage`` counts the checks).
- Errors in the adapter's shape: ``{"message", "code": "BAD_REQUEST", "data": {"code", "httpStatus",
  "path", "zodError"}, "issues": [...]}``; input validation fails with 400 "Input validation failed"
  and zod v4's issues (``path`` names the field; "Invalid input: expected string, received
  undefined", "Invalid option: expected one of ...", "Too small: ..."); unknown ids are TRPCError NOT_FOUND (404
  "Application not found", ...), except where the router wraps every error (``domain.create``,
  ``project.create``: 400 with the inner message).
- Zod-like validation of the input schemas the module uses: required keys, types, ``min``, enums
  (certificateType none|letsencrypt|custom, buildType, sourceType), regexes (appName, database
  passwords); unknown keys are stripped as zod does.
- Application names are not unique; ``appName`` is the given slug plus ``-`` and 6 random characters
  (``buildAppName``), or ``app-<verb>-<adjective>-<noun>-<6 chars>`` without one.
- ``project.create`` returns ``{project, environment}`` and creates the default ``production``
  environment; ``environment.create`` refuses the name ``production``.
- ``application.deploy`` returns nothing (an empty 200 body). The deployment row appears a moment later
  (the queue worker), ``running``, and moves to ``done``, or to ``error`` (with ``errorMessage`` null,
  as the real rows mostly have it) when its image name contains ``fail`` (an image that cannot be
  pulled: the log ends with ``docker pull``'s ``dial tcp: lookup <registry> ...: no such host`` and
  "Error occurred", as on an offline server) or the app's env holds ``FAKE_DEPLOY_FAIL=1`` ("manifest
  unknown"). Rows are listed newest first by ``deployment.all`` (an unknown ``applicationId`` is
  ``[]``, not an error). The log is the query ``deployment.readLogs?deploymentId=&tail=`` answering a
  JSON string, on v0.29.5 and newer only (the fake's ``version`` decides; older answer 404 "Not
  found"); there is no ``/api/logs/...`` route. ``logPath`` names the file it would be on the server.
- ``saveDockerProvider``/``saveGitProvider`` set ``applicationStatus`` to ``idle``; ``start`` sets
  ``done``, ``stop`` ``idle``, and both answer the row as it was *before* the change (application and
  databases). Without Swarm (``no_swarm``, on by default, as on a host whose Docker is not a swarm
  manager) ``application.start``, ``postgres.start`` and ``redis.start`` answer 500 "This node is not a
  swarm manager..." and change nothing, while stop succeeds (it ignores Docker's errors). Postgres and
  Redis ``deploy`` are synchronous.
- Env text is read with a port of dotenv 16.4.5's ``parse`` (``dotenv_parse``: its LINE regex verbatim,
  with JavaScript's ``\s``, ``\w``, ``.``, ``^``/``$`` spelled for Python): ``container_env()`` is what a
  service's container would get, and ``FAKE_DEPLOY_FAIL`` is looked up in it.

Known differences from the real server (chosen where the source cannot tell or does not matter):

- One organisation and one owner-role user; no per-member service access (``application.search``
  therefore finds every application, where a real owner may get an empty list).
- The application and database rows carry the columns the module reads, not every column.
- ``VALID_BRANCH_REGEX`` is approximated by ``^[A-Za-z0-9._/-]+$``; the random ``appName`` suffix uses
  lower-case letters and digits.
- Deployment logs live in memory; ``logPath`` is a path string only. The ``readLogs`` input schema
  (``deploymentId``, optional ``tail`` >= 1) and its answer for an unknown id (404 "Deployment not
  found") are assumptions; the real log lines differ in wording beyond the pull error.
- Deploys succeed without Swarm (``no_swarm`` only affects start); a real server without Swarm would
  fail them too when it creates the service. Stop does not touch any container.
- The rate limit never resets (the real one is per window, a day by default).
- Dokploy's ``${{project.X}}``/``${{environment.X}}`` references in env are not substituted.
- ``environment.create`` with an unknown ``projectId`` answers 404 "Project not found" (the real server
  fails on the foreign key with a 400).
- Postgres/Redis deploys fail (500) when the image name contains ``fail``; nothing is started.
- At most 10 deployments are kept per application, like ``removeLastTenDeployments``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import secrets
import string
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

try:
    from tests.fakes.server import FakeServer
except ImportError:  # run as a script (the npm stand-in image): server.py sits next to this file
    from server import FakeServer

HTTP_STATUS = {
    "PARSE_ERROR": 400, "BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
    "METHOD_NOT_SUPPORTED": 405, "CONFLICT": 409, "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL_SERVER_ERROR": 500,
}
CERTIFICATE_TYPES = ["letsencrypt", "none", "custom"]
BUILD_TYPES = ["dockerfile", "heroku_buildpacks", "paketo_buildpacks", "nixpacks", "static", "railpack"]
SOURCE_TYPES = ["github", "docker", "git", "gitlab", "bitbucket", "gitea", "drop"]
APP_NAME_RE = r"^[a-zA-Z0-9._-]+$"
APP_NAME_MESSAGE = "App name can only contain letters, numbers, dots, underscores and hyphens"
DB_PASSWORD_RE = r"^[a-zA-Z0-9@#%^&*()_+\-=[\]{}|;:,.<>?~`]*$"
DB_PASSWORD_MESSAGE = ("Password contains invalid characters. Please avoid: $ ! ' \" \\ / and space characters "
                       "for database compatibility")
BRANCH_RE = r"^[A-Za-z0-9._/-]+$"
TERMINAL = ("done", "error", "cancelled")
HACKER_WORDS = (["parse", "index", "compress", "bypass", "hack", "calculate", "navigate"],
                ["digital", "virtual", "redundant", "primary", "optical", "bluetooth", "neural"],
                ["driver", "protocol", "bandwidth", "panel", "microchip", "array", "pixel"])
MISSING = object()


class ApiError(Exception):
    """A TRPCError: code is the tRPC code name (NOT_FOUND, BAD_REQUEST, ...)."""

    def __init__(self, code, message, issues=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.issues = issues


# ---------------------------------------------------------------------------------------------
# A small zod: the field kinds Dokploy's input schemas use, with zod's issue shapes
# ---------------------------------------------------------------------------------------------

class Field:
    def __init__(self, kind, required=True, nullable=False, min_len=None, min_msg=None, regex=None,
                 regex_msg=None, choices=None, minimum=None, maximum=None, min_num_msg=None, max_num_msg=None,
                 no_trim_msg=None):
        self.kind = kind
        self.required = required
        self.nullable = nullable
        self.min_len = min_len
        self.min_msg = min_msg
        self.regex = re.compile(regex) if regex else None
        self.regex_msg = regex_msg
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.min_num_msg = min_num_msg
        self.max_num_msg = max_num_msg
        self.no_trim_msg = no_trim_msg


def S(required=True, **kw):
    return Field("string", required=required, **kw)


def N(required=True, **kw):
    return Field("number", required=required, **kw)


def B(required=True, **kw):
    return Field("boolean", required=required, **kw)


def E(choices, required=True, **kw):
    return Field("enum", required=required, choices=choices, **kw)


def A(required=True, **kw):
    return Field("array", required=required, **kw)


def js_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def received_type(value):
    """zod v4's name of the type it got (the ``received`` of its invalid_type message)."""
    if value is MISSING:
        return "undefined"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return js_type(value)


def invalid_type(key, expected, value):
    """zod v4's invalid_type issue: the message names what it expected and received; the issue has no
    ``received`` key any more."""
    return {"expected": expected, "code": "invalid_type", "path": key if isinstance(key, list) else [key],
            "message": "Invalid input: expected %s, received %s" % (expected, received_type(value))}


def check_field(key, field, value, coerce):
    """zod v4's verdict on one field: (value, issues)."""
    if value is MISSING:
        if field.required:
            return None, [invalid_type(key, "string" if field.kind == "enum" else field.kind, value)]
        return MISSING, []
    if value is None:
        if field.nullable:
            return None, []
        return None, [invalid_type(key, "string" if field.kind == "enum" else field.kind, value)]
    if coerce and isinstance(value, str):
        if field.kind == "number":
            try:
                value = float(value) if value.strip() else 0.0
            except ValueError:
                value = math.nan
            if not math.isnan(value) and value == int(value):
                value = int(value)
        elif field.kind == "boolean":
            value = bool(value)  # z.coerce.boolean: any non-empty string is true
    kind = field.kind
    if kind == "enum":
        if value not in field.choices:
            options = "|".join(json.dumps(c) for c in field.choices)
            return None, [{"code": "invalid_value", "values": field.choices, "path": [key],
                           "message": "Invalid option: expected one of %s" % options}]
        return value, []
    if kind == "number" and isinstance(value, float) and math.isnan(value):
        return None, [invalid_type(key, "number", value)]
    if js_type(value) != kind:
        return None, [invalid_type(key, kind, value)]
    issues = []
    if kind == "string":
        if field.min_len is not None and len(value) < field.min_len:
            issues.append({"origin": "string", "code": "too_small", "minimum": field.min_len, "inclusive": True,
                           "path": [key], "message": field.min_msg
                           or "Too small: expected string to have >=%d characters" % field.min_len})
        if field.no_trim_msg and value != value.strip():
            issues.append({"code": "custom", "path": [key], "message": field.no_trim_msg})
        if field.regex and not field.regex.match(value):
            pattern = "/%s/" % field.regex.pattern
            issues.append({"origin": "string", "code": "invalid_format", "format": "regex", "pattern": pattern,
                           "path": [key], "message": field.regex_msg or "Invalid string: must match pattern %s"
                           % pattern})
    elif kind == "number":
        if field.minimum is not None and value < field.minimum:
            issues.append({"origin": "number", "code": "too_small", "minimum": field.minimum, "inclusive": True,
                           "path": [key], "message": field.min_num_msg
                           or "Too small: expected number to be >=%s" % field.minimum})
        if field.maximum is not None and value > field.maximum:
            issues.append({"origin": "number", "code": "too_big", "maximum": field.maximum, "inclusive": True,
                           "path": [key], "message": field.max_num_msg
                           or "Too big: expected number to be <=%s" % field.maximum})
    elif kind == "array":
        for index, item in enumerate(value):
            if not isinstance(item, str):
                issues.append(invalid_type([key, index], "string", item))
    return value, issues


def validate(schema, data, coerce=False):
    """Parse data with a schema (dict of Field): (clean input without unknown keys, zod issues)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return {}, [invalid_type([], "object", data)]
    clean, issues = {}, []
    for key, field in schema.items():
        value, found = check_field(key, field, data.get(key, MISSING), coerce)
        issues += found
        if value is not MISSING and not found:
            clean[key] = value
    return clean, issues


def flatten(issues):
    """ZodError.flatten(), as Dokploy's errorFormatter puts it in data.zodError."""
    field_errors, form_errors = {}, []
    for issue in issues:
        if issue["path"]:
            field_errors.setdefault(str(issue["path"][0]), []).append(issue["message"])
        else:
            form_errors.append(issue["message"])
    return {"formErrors": form_errors, "fieldErrors": field_errors}


def error_body(code, message, path, issues=None):
    """The trpc-openapi error response: the tRPC error shape with message/code overwritten."""
    data = {"code": code, "httpStatus": HTTP_STATUS.get(code, 500)}
    if path:
        data["path"] = path
    data["zodError"] = flatten(issues) if issues else None
    body = {"message": message, "code": code, "data": data}
    if issues:
        body["issues"] = issues
    return body


# ---------------------------------------------------------------------------------------------
# dotenv 16.4.5's parse() (lib/main.js), how Dokploy turns a service's env text into variables
# ---------------------------------------------------------------------------------------------

# The regex as dotenv's source spells it (a JavaScript literal with the m and g flags) ...
DOTENV_LINE_JS = r"""(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)"""  # noqa: E501
DOTENV_QUOTES_JS = r"""^(['"`])([\s\S]*)\1$"""
# ... and what its JavaScript classes and multiline anchors mean, spelled for Python's re.
JS_WHITESPACE = ("\t\n\x0b\x0c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                 "\u2028\u2029\u202f\u205f\u3000\ufeff")
JS_LINE_TERMINATORS = "\n\r\u2028\u2029"


def js_regex(source):
    r"""A JavaScript regex source (flag m, no u) as a Python pattern: \s, \w, ., ^ and $ as JavaScript reads them."""
    ws = "[" + "".join("\\u%04x" % ord(c) for c in JS_WHITESPACE) + "]"
    lt = "".join("\\u%04x" % ord(c) for c in JS_LINE_TERMINATORS)
    out, i = [], 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            pair = source[i:i + 2]
            out.append({"\\s": ws, "\\S": ws.replace("[", "[^", 1), "\\w": "[A-Za-z0-9_]"}.get(pair, pair))
            i += 2
            continue
        if char == "[":  # a class is copied (its \s / \S are only used inside [\s\S], "anything")
            end = source.index("]", i + 1)
            while source[end - 1] == "\\":
                end = source.index("]", end + 1)
            out.append("[\\s\\S]" if source[i:end + 1] == "[\\s\\S]" else source[i:end + 1])
            i = end + 1
            continue
        out.append({"^": "(?:(?<=[%s])|\\A)" % lt, "$": "(?=[%s]|\\Z)" % lt, ".": "[^%s]" % lt}.get(char, char))
        i += 1
    return re.compile("".join(out))


DOTENV_LINE = js_regex(DOTENV_LINE_JS)
DOTENV_QUOTES = js_regex(DOTENV_QUOTES_JS)


def dotenv_parse(src):
    r"""dotenv.parse(src), line for line:
    lines = src.replace(/\r\n?/mg, '\n'); for each LINE match: value = (match[2] || '').trim();
    maybeQuote = value[0]; value = value.replace(/^(['"`])([\s\S]*)\1$/mg, '$2'); if maybeQuote === '"':
    expand \n and \r; obj[key] = value."""
    obj = {}
    lines = re.sub(r"\r\n?", "\n", src or "")
    for match in DOTENV_LINE.finditer(lines):
        key = match.group(1)
        value = (match.group(2) or "").strip(JS_WHITESPACE)
        maybe_quote = value[:1]
        value = DOTENV_QUOTES.sub(lambda m: m.group(2), value)
        if maybe_quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        obj[key] = value
    return obj


# ---------------------------------------------------------------------------------------------
# Input schemas (packages/server/src/db/schema/*.ts, as the routers pick them)
# ---------------------------------------------------------------------------------------------

SCHEMAS = {
    "project.one": {"projectId": S(min_len=1)},
    "project.create": {"name": S(min_len=1), "description": S(False), "env": S(False)},
    "project.update": {"projectId": S(min_len=1), "name": S(False, min_len=1), "description": S(False),
                       "env": S(False)},
    "project.remove": {"projectId": S()},
    "environment.one": {"environmentId": S(min_len=1)},
    "environment.byProjectId": {"projectId": S()},
    "environment.create": {"name": S(min_len=1), "description": S(False), "projectId": S(),
                           "color": S(False, nullable=True)},
    "application.create": {"name": S(min_len=1), "appName": S(False, min_len=1, regex=APP_NAME_RE,
                                                              regex_msg=APP_NAME_MESSAGE),
                           "description": S(False), "environmentId": S(), "serverId": S(False, nullable=True),
                           "sourceType": E(SOURCE_TYPES, False)},
    "application.one": {"applicationId": S(min_len=1)},
    "application.delete": {"applicationId": S(min_len=1)},
    "application.start": {"applicationId": S(min_len=1)},
    "application.stop": {"applicationId": S(min_len=1)},
    "application.deploy": {"applicationId": S(min_len=1), "title": S(False), "description": S(False)},
    "application.redeploy": {"applicationId": S(min_len=1), "title": S(False), "description": S(False)},
    "application.update": {"applicationId": S(min_len=1), "name": S(False, min_len=1), "description": S(False),
                           "command": S(False), "replicas": N(False), "autoDeploy": B(False)},
    "application.saveDockerProvider": {"dockerImage": S(), "applicationId": S(), "username": S(), "password": S(),
                                       "registryUrl": S()},
    "application.saveGitProvider": {"applicationId": S(), "customGitBuildPath": S(), "customGitUrl": S(),
                                    "watchPaths": A(), "enableSubmodules": B(False),
                                    "customGitBranch": S(min_len=1, regex=BRANCH_RE, regex_msg="Invalid branch name"),
                                    "customGitSSHKeyId": S(False)},
    "application.saveBuildType": {"applicationId": S(), "buildType": E(BUILD_TYPES), "dockerfile": S(),
                                  "dockerContextPath": S(nullable=True), "dockerBuildStage": S(nullable=True),
                                  "herokuVersion": S(), "railpackVersion": S(), "publishDirectory": S(False),
                                  "isStaticSpa": B(False)},
    "application.saveEnvironment": {"applicationId": S(), "env": S(), "buildArgs": S(), "buildSecrets": S(),
                                    "createEnvFile": B()},
    "application.search": {"q": S(False), "name": S(False), "appName": S(False), "environmentId": S(False),
                           "projectId": S(False), "limit": N(False, minimum=1, maximum=100),
                           "offset": N(False, minimum=0)},
    "domain.create": {"host": S(min_len=1, min_msg="Add a hostname",
                                no_trim_msg="Domain name cannot have leading or trailing spaces"),
                      "path": S(False, min_len=1),
                      "port": N(False, minimum=1, maximum=65535, min_num_msg="Port must be at least 1",
                                max_num_msg="Port must be 65535 or below"),
                      "https": B(False), "applicationId": S(False, nullable=True),
                      "certificateType": E(CERTIFICATE_TYPES, False), "composeId": S(False, nullable=True),
                      "serviceName": S(False, nullable=True),
                      "domainType": E(["compose", "application", "preview"], False, nullable=True)},
    "domain.update": {"host": S(min_len=1, min_msg="Add a hostname",
                                no_trim_msg="Domain name cannot have leading or trailing spaces"),
                      "path": S(False, min_len=1),
                      "port": N(False, minimum=1, maximum=65535, min_num_msg="Port must be at least 1",
                                max_num_msg="Port must be 65535 or below"),
                      "https": B(False), "certificateType": E(CERTIFICATE_TYPES, False),
                      "serviceName": S(False, nullable=True),
                      "domainType": E(["compose", "application", "preview"], False, nullable=True),
                      "domainId": S()},
    "domain.one": {"domainId": S()},
    "domain.delete": {"domainId": S()},
    "domain.byApplicationId": {"applicationId": S(min_len=1)},
    "deployment.all": {"applicationId": S(min_len=1)},
    "deployment.readLogs": {"deploymentId": S(min_len=1), "tail": N(False, minimum=1)},
}
for _kind in ("postgres", "redis"):
    _id = _kind + "Id"
    SCHEMAS.update({
        _kind + ".one": {_id: S(min_len=1)},
        _kind + ".remove": {_id: S(min_len=1)},
        _kind + ".start": {_id: S(min_len=1)},
        _kind + ".stop": {_id: S(min_len=1)},
        _kind + ".deploy": {_id: S()},
        _kind + ".saveEnvironment": {_id: S(), "env": S()},
        _kind + ".saveExternalPort": {_id: S(), "externalPort": N()},
        _kind + ".update": {_id: S(min_len=1), "name": S(False, min_len=1), "description": S(False),
                            "dockerImage": S(False), "command": S(False), "env": S(False),
                            "memoryLimit": S(False), "cpuLimit": S(False)},
    })
SCHEMAS["postgres.create"] = {
    "name": S(min_len=1), "appName": S(False, min_len=1, regex=APP_NAME_RE, regex_msg=APP_NAME_MESSAGE),
    "databaseName": S(min_len=1), "databaseUser": S(min_len=1),
    "databasePassword": S(regex=DB_PASSWORD_RE, regex_msg=DB_PASSWORD_MESSAGE),
    "dockerImage": S(False), "environmentId": S(), "description": S(False), "serverId": S(False)}
SCHEMAS["redis.create"] = {
    "name": S(min_len=1), "appName": S(False, min_len=1, regex=APP_NAME_RE, regex_msg=APP_NAME_MESSAGE),
    "databasePassword": S(), "dockerImage": S(False), "environmentId": S(), "description": S(False),
    "serverId": S(False)}

QUERIES = {"settings.getDokployVersion", "project.all", "project.one", "environment.one", "environment.byProjectId",
           "application.one", "application.search", "domain.one", "domain.byApplicationId", "deployment.all",
           "deployment.readLogs", "postgres.one", "redis.one"}
# Procedures by the release that added them (the fake answers 404 "Not found" to them on older versions).
SINCE = {"deployment.readLogs": (0, 29, 5)}
NOT_A_SWARM_MANAGER = ("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to "
                       "connect this node to swarm and try again.")


def parse_version(text):
    match = re.match(r"^\s*v?(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None


# ---------------------------------------------------------------------------------------------
# State and procedures
# ---------------------------------------------------------------------------------------------

def nanoid():
    alphabet = string.ascii_letters + string.digits + "_-"
    return "".join(secrets.choice(alphabet) for dummy in range(21))


def random_suffix():
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for dummy in range(6))


def build_app_name(kind, base=None):
    """buildAppName: the cleaned slug plus 6 random characters, or a faker name."""
    if base:
        return "%s-%s" % (base.strip().replace(" ", "-").lower(), random_suffix())
    words = [secrets.choice(group) for group in HACKER_WORDS]
    return "%s-%s-%s" % (kind, "-".join(words), random_suffix())


class FakeDokploy(FakeServer):
    """The fake server's state and procedures. start() serves it on 127.0.0.1 in a thread."""

    HANDLER_ATTR = "dokploy"
    NAME = "fake-dokploy"

    def __init__(self, api_key="test-key", version="v0.30.2", limited_keys=None, deploy_delay=0.3,
                 queue_delay=0.05, max_deployments=10, no_swarm=True):
        self.api_key = api_key
        self.version = version
        self.limited_keys = dict(limited_keys or {})
        self.key_usage = Counter()
        self.deploy_delay = deploy_delay
        self.queue_delay = queue_delay
        # Without Swarm (the default, as on a host where Docker is not a swarm manager) application.start and
        # the database starts answer 500 "This node is not a swarm manager"; tests that need start turn it off.
        self.no_swarm = no_swarm
        self.max_deployments = max_deployments
        self.init_server()
        self.organization_id = nanoid()
        self.projects, self.environments, self.applications = {}, {}, {}
        self.domains, self.deployments, self.postgres, self.redis = {}, {}, {}, {}
        self.logs = {}
        self._last_ts = ""
        self._timers = []

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self):
        for timer in self._timers:
            timer.cancel()
        super().stop()

    # -- helpers for tests ----------------------------------------------------------------------

    def mutations(self):
        """Names of the POST procedures called so far (check mode must make none)."""
        return [name for method, name in self.calls if method == "POST"]

    def wait_idle(self, timeout=10.0):
        """Wait until no deployment is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                busy = [t for t in self._timers if t.is_alive()]
            if not busy:
                return True
            time.sleep(0.02)
        return False

    def has_procedure(self, name):
        """Whether this server's version has the procedure (see SINCE)."""
        since = SINCE.get(name)
        version = parse_version(self.version)
        return since is None or version is None or version >= since

    def container_env(self, application_id=None, kind=None, service_id=None):
        """The variables the service's container gets: its env text as dotenv 16.4.5 parses it."""
        with self.lock:
            row = self.applications[application_id] if kind is None else self.db_table(kind)[service_id]
            return dotenv_parse(row.get("env") or "")

    def find_applications(self, name, environment_id=None):
        with self.lock:
            return [a for a in self.applications.values()
                    if a["name"] == name and (environment_id is None or a["environmentId"] == environment_id)]

    def now(self):
        """createdAt values as Date.toISOString(), strictly increasing so rows sort by creation."""
        with self.lock:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if stamp <= self._last_ts:
                last = datetime.strptime(self._last_ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                stamp = datetime.fromtimestamp(last.timestamp() + 0.001, UTC)
                stamp = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self._last_ts = stamp
            return stamp

    # -- auth -----------------------------------------------------------------------------------

    def authenticate(self, key):
        with self.lock:
            if not key:
                return False
            if key == self.api_key:
                return True
            if key in self.limited_keys:
                return self._check_limited(key) and self._check_limited(key)  # checked twice per request
            return False

    def _check_limited(self, key):
        """One check of a rate-limited key, counted against its limit."""
        if self.key_usage[key] >= self.limited_keys[key]:
            return False
        self.key_usage[key] += 1
        return True

    # -- the procedures -------------------------------------------------------------------------

    DB_OPS: ClassVar[dict] = {"create": "db_create", "one": "db_one", "update": "db_update", "deploy": "db_deploy",
                              "saveEnvironment": "db_save_env", "saveExternalPort": "db_save_port",
                              "remove": "db_remove", "start": "db_start", "stop": "db_stop"}

    def dispatch(self, name, inp):
        router, proc = [*name.split(".", 1), ""][:2]
        with self.lock:
            if router in ("postgres", "redis") and proc in self.DB_OPS:
                return getattr(self, self.DB_OPS[proc])(router, inp)
            handler = getattr(self, "p_" + name.replace(".", "_"), None)
            if handler is None:
                raise ApiError("NOT_FOUND", "Not found")
            return handler(inp)

    def p_settings_getDokployVersion(self, inp):
        return self.version

    # projects and environments

    def project_or_404(self, project_id):
        project = self.projects.get(project_id)
        if project is None:
            raise ApiError("NOT_FOUND", "Project not found")
        return project

    def environment_or_404(self, environment_id):
        environment = self.environments.get(environment_id)
        if environment is None:
            raise ApiError("NOT_FOUND", "Environment not found")
        return environment

    def add_project(self, name, description=None):
        project = {"projectId": nanoid(), "name": name, "description": description, "createdAt": self.now(),
                   "organizationId": self.organization_id, "env": "", "wildcardDomain": None,
                   "useOrganizationWildcard": True}
        self.projects[project["projectId"]] = project
        environment = self.add_environment(project["projectId"], "production", "Production environment",
                                           is_default=True)
        return project, environment

    def add_environment(self, project_id, name, description=None, is_default=False):
        environment = {"environmentId": nanoid(), "name": name, "description": description, "createdAt": self.now(),
                       "env": "", "projectId": project_id, "isDefault": is_default, "color": None}
        self.environments[environment["environmentId"]] = environment
        return environment

    def services_of(self, environment_id, columns):
        apps = sorted((a for a in self.applications.values() if a["environmentId"] == environment_id),
                      key=lambda a: a["createdAt"])
        pgs = [p for p in self.postgres.values() if p["environmentId"] == environment_id]
        rds = [r for r in self.redis.values() if r["environmentId"] == environment_id]
        full = columns == "full"
        app_cols = (["name", "applicationId", "createdAt", "applicationStatus", "description", "serverId", "icon"]
                    if full else ["applicationId", "name", "applicationStatus"])
        db_cols = ["name", "createdAt", "applicationStatus", "description", "serverId"] if full else []
        out = {"applications": [{k: a.get(k) for k in app_cols} for a in apps],
               "postgres": [dict({k: p.get(k) for k in db_cols}, postgresId=p["postgresId"]) for p in pgs],
               "redis": [dict({k: r.get(k) for k in db_cols}, redisId=r["redisId"]) for r in rds],
               "mariadb": [], "mongo": [], "mysql": [], "compose": [], "libsql": []}
        if full:
            for group in ("applications", "postgres", "redis"):
                for row in out[group]:
                    row["server"] = None
        return out

    def p_project_all(self, inp):
        out = []
        for project in sorted(self.projects.values(), key=lambda p: p["createdAt"], reverse=True):
            envs = []
            for env in sorted((e for e in self.environments.values() if e["projectId"] == project["projectId"]),
                              key=lambda e: e["createdAt"]):
                row = {"name": env["name"], "environmentId": env["environmentId"], "isDefault": env["isDefault"]}
                row.update(self.services_of(env["environmentId"], "ids"))
                envs.append(row)
            out.append(dict(project, environments=envs, projectTags=[]))
        return out

    def p_project_one(self, inp):
        project = self.project_or_404(inp["projectId"])
        envs = []
        for env in sorted((e for e in self.environments.values() if e["projectId"] == project["projectId"]),
                          key=lambda e: e["createdAt"]):
            envs.append(dict(env, **self.services_of(env["environmentId"], "full")))
        return dict(project, environments=envs, projectTags=[])

    def p_project_create(self, inp):
        project, environment = self.add_project(inp["name"], inp.get("description"))
        if "env" in inp:
            project["env"] = inp["env"]
        return {"project": project, "environment": environment}

    def p_project_update(self, inp):
        project = self.project_or_404(inp["projectId"])
        project.update({k: v for k, v in inp.items() if k != "projectId"})
        return project

    def p_project_remove(self, inp):
        project = self.project_or_404(inp["projectId"])
        for env in [e for e in self.environments.values() if e["projectId"] == project["projectId"]]:
            for app in [a for a in self.applications.values() if a["environmentId"] == env["environmentId"]]:
                self.remove_application(app)
            del self.environments[env["environmentId"]]
        return self.projects.pop(project["projectId"])

    def p_environment_one(self, inp):
        env = self.environment_or_404(inp["environmentId"])
        row = {k: env[k] for k in ("name", "description", "environmentId", "isDefault", "projectId", "env")}
        row.update(self.services_of(env["environmentId"], "full"))
        row["project"] = self.projects[env["projectId"]]
        return row

    def p_environment_byProjectId(self, inp):
        envs = [e for e in self.environments.values() if e["projectId"] == inp["projectId"]]
        return [dict({k: e[k] for k in ("name", "description", "environmentId", "isDefault")},
                     project=self.projects[e["projectId"]], **self.services_of(e["environmentId"], "full"))
                for e in sorted(envs, key=lambda e: e["createdAt"])]

    def p_environment_create(self, inp):
        if inp["name"] == "production":
            raise ApiError("BAD_REQUEST", "You cannot create a environment with the name 'production'")
        self.project_or_404(inp["projectId"])
        return self.add_environment(inp["projectId"], inp["name"], inp.get("description"))

    # applications

    def app_or_404(self, application_id):
        app = self.applications.get(application_id)
        if app is None:
            raise ApiError("NOT_FOUND", "Application not found")
        return app

    def add_application(self, environment_id, name, app_name=None, description=None, **fields):
        if any(a["appName"] == app_name for a in self.applications.values()) and app_name:
            raise ApiError("CONFLICT", "Application with this 'AppName' already exists")
        app = {
            "applicationId": nanoid(), "name": name, "appName": build_app_name("app", app_name),
            "description": description, "env": None, "previewEnv": None, "buildArgs": None, "buildSecrets": None,
            "createEnvFile": True, "memoryReservation": None, "memoryLimit": None, "cpuReservation": None,
            "cpuLimit": None, "title": None, "enabled": None, "subtitle": None, "command": None, "args": None,
            "icon": None, "refreshToken": nanoid(), "sourceType": "github", "cleanCache": False,
            "repository": None, "owner": None, "branch": None, "buildPath": "/", "triggerType": "push",
            "autoDeploy": True, "username": None, "password": None, "dockerImage": None, "registryUrl": None,
            "customGitUrl": None, "customGitBranch": None, "customGitBuildPath": None, "customGitSSHKeyId": None,
            "watchPaths": None, "enableSubmodules": False, "dockerfile": "Dockerfile", "dockerContextPath": None,
            "dockerBuildStage": None, "dropBuildPath": None, "replicas": 1, "applicationStatus": "idle",
            "buildType": "nixpacks", "buildArchitecture": "host", "railpackVersion": "0.15.4", "herokuVersion": "24",
            "publishDirectory": None, "isStaticSpa": None, "createdAt": self.now(), "registryId": None,
            "environmentId": environment_id, "serverId": None, "buildServerId": None, "networkIds": [],
            "detachDokployNetwork": False,
        }
        app.update(fields)
        self.applications[app["applicationId"]] = app
        return app

    def p_application_create(self, inp):
        self.environment_or_404(inp["environmentId"])
        app = self.add_application(inp["environmentId"], inp["name"], inp.get("appName"), inp.get("description"))
        if inp.get("sourceType"):
            app["sourceType"] = inp["sourceType"]
        return dict(app)

    def full_application(self, app):
        env = self.environments[app["environmentId"]]
        out = dict(app)
        out["environment"] = dict(env, project=self.projects[env["projectId"]])
        out["domains"] = [dict(d) for d in sorted(self.domains.values(), key=lambda d: d["createdAt"])
                          if d["applicationId"] == app["applicationId"]]
        out["deployments"] = self.deployments_of(app["applicationId"])
        out.update({"mounts": [], "redirects": [], "security": [], "ports": [], "registry": None, "server": None,
                    "previewDeployments": [], "github": None, "gitlab": None, "gitea": None, "bitbucket": None,
                    "buildRegistry": None, "rollbackRegistry": None, "hasGitProviderAccess": True,
                    "unauthorizedProvider": None})
        return out

    def p_application_one(self, inp):
        return self.full_application(self.app_or_404(inp["applicationId"]))

    def p_application_search(self, inp):
        items = []
        for app in sorted(self.applications.values(), key=lambda a: a["createdAt"], reverse=True):
            env = self.environments[app["environmentId"]]
            if inp.get("environmentId") and app["environmentId"] != inp["environmentId"]:
                continue
            if inp.get("projectId") and env["projectId"] != inp["projectId"]:
                continue
            if inp.get("name", "").strip() and inp["name"].strip().lower() not in app["name"].lower():
                continue
            items.append({k: app[k] for k in ("applicationId", "name", "appName", "description", "environmentId",
                                              "applicationStatus", "sourceType", "createdAt")})
        offset, limit = inp.get("offset", 0), inp.get("limit", 20)
        return {"items": items[offset:offset + limit], "total": len(items)}

    def p_application_update(self, inp):
        app = self.app_or_404(inp["applicationId"])
        app.update({k: v for k, v in inp.items() if k != "applicationId"})
        return True

    def p_application_saveDockerProvider(self, inp):
        app = self.app_or_404(inp["applicationId"])
        app.update(dockerImage=inp["dockerImage"], username=inp["username"], password=inp["password"],
                   registryUrl=inp["registryUrl"], sourceType="docker", applicationStatus="idle")
        return True

    def p_application_saveGitProvider(self, inp):
        app = self.app_or_404(inp["applicationId"])
        # drizzle's update skips undefined keys: optional inputs left out keep their value
        app.update({k: v for k, v in inp.items() if k != "applicationId"})
        app.update(sourceType="git", applicationStatus="idle")
        return True

    def p_application_saveBuildType(self, inp):
        app = self.app_or_404(inp["applicationId"])
        app.update({k: v for k, v in inp.items() if k != "applicationId"})
        return True

    def p_application_saveEnvironment(self, inp):
        app = self.app_or_404(inp["applicationId"])
        app.update(env=inp["env"], buildArgs=inp["buildArgs"], buildSecrets=inp["buildSecrets"],
                   createEnvFile=inp["createEnvFile"])
        return True

    def p_application_start(self, inp):
        app = self.app_or_404(inp["applicationId"])
        before = dict(app)  # the router answers the row it read before the status change
        if self.no_swarm:
            raise ApiError("INTERNAL_SERVER_ERROR", NOT_A_SWARM_MANAGER)
        app["applicationStatus"] = "done"
        return before

    def p_application_stop(self, inp):
        app = self.app_or_404(inp["applicationId"])
        before = dict(app)  # stop ignores Docker's errors (no service, no swarm)
        app["applicationStatus"] = "idle"
        return before

    def remove_application(self, app):
        for domain_id in [d for d, row in self.domains.items() if row["applicationId"] == app["applicationId"]]:
            del self.domains[domain_id]
        for dep_id in [d for d, row in self.deployments.items() if row["applicationId"] == app["applicationId"]]:
            del self.deployments[dep_id]
        return self.applications.pop(app["applicationId"])

    def p_application_delete(self, inp):
        return self.remove_application(self.app_or_404(inp["applicationId"]))

    def p_application_deploy(self, inp):
        app = self.app_or_404(inp["applicationId"])
        self.enqueue(app["applicationId"], inp.get("title") or "Manual deployment", inp.get("description") or "")

    def p_application_redeploy(self, inp):
        app = self.app_or_404(inp["applicationId"])
        self.enqueue(app["applicationId"], inp.get("title") or "Rebuild deployment", inp.get("description") or "")

    # deployments

    def deployments_of(self, application_id):
        rows = [d for d in self.deployments.values() if d["applicationId"] == application_id]
        return [dict(d) for d in sorted(rows, key=lambda d: d["createdAt"], reverse=True)]

    def timer(self, delay, func, *args):
        timer = threading.Timer(delay, func, args)
        timer.daemon = True
        with self.lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()
        return timer

    def enqueue(self, application_id, title, description):
        self.timer(self.queue_delay, self._start_deployment, application_id, title, description)

    def _start_deployment(self, application_id, title, description):
        with self.lock:
            app = self.applications.get(application_id)
            if app is None:
                return
            rows = self.deployments_of(application_id)
            for old in rows[self.max_deployments - 1:]:
                self.deployments.pop(old["deploymentId"], None)
                self.logs.pop(old["deploymentId"], None)
            created = self.now()
            stamp = created.replace("T", ":")[:19]
            dep = {"deploymentId": nanoid(), "title": title, "description": description, "status": "running",
                   "logPath": "/etc/dokploy/logs/%s/%s-%s.log" % (app["appName"], app["appName"], stamp),
                   "pid": None, "applicationId": application_id, "composeId": None, "serverId": None,
                   "isPreviewDeployment": False, "previewDeploymentId": None, "createdAt": created,
                   "startedAt": created, "finishedAt": None, "errorMessage": None, "scheduleId": None,
                   "backupId": None, "rollbackId": None, "volumeBackupId": None}
            self.deployments[dep["deploymentId"]] = dep
            self.logs[dep["deploymentId"]] = ["Initializing deployment"]
            app["applicationStatus"] = "running"
            image = app.get("dockerImage") or app.get("customGitUrl") or "source"
            if "fail" in (app.get("dockerImage") or ""):
                fail = "pull"
            elif dotenv_parse(app.get("env") or "").get("FAKE_DEPLOY_FAIL") == "1":
                fail = "manifest"
            else:
                fail = None
            self.logs[dep["deploymentId"]] += ["Source: %s" % app["sourceType"], "Pulling %s" % image]
        self.timer(self.deploy_delay, self._finish_deployment, dep["deploymentId"], fail, image)

    def _finish_deployment(self, deployment_id, fail, image):
        with self.lock:
            dep = self.deployments.get(deployment_id)
            if dep is None:
                return
            app = self.applications.get(dep["applicationId"])
            log = self.logs.setdefault(deployment_id, [])
            if fail:
                if fail == "pull":  # what an offline Dokploy logs for an image it cannot pull
                    registry = image.split("/")[0] if "/" in image and "." in image.split("/")[0] \
                        else "registry-1.docker.io"
                    log += ["Error response from daemon: Get \"https://%s/v2/\": dial tcp: lookup %s on "
                            "127.0.0.11:53: no such host" % (registry, registry)]
                else:
                    log += ["Error response from daemon: manifest for %s not found: manifest unknown" % image]
                log += ["Error occurred \u274c, check the logs for details."]
                dep["status"] = "error"
            else:
                log += ["Starting service %s" % (app["appName"] if app else "?"), "Docker Deployed: \u2705"]
                dep["status"] = "done"
            dep["finishedAt"] = self.now()
            if app is not None:
                app["applicationStatus"] = dep["status"]

    def p_deployment_all(self, inp):
        return self.deployments_of(inp["applicationId"])  # an unknown id is an empty list, not an error

    def p_deployment_readLogs(self, inp):
        """The log as one JSON string (v0.29.5+), its last ``tail`` lines."""
        if inp["deploymentId"] not in self.deployments:
            raise ApiError("NOT_FOUND", "Deployment not found")
        lines = list(self.logs.get(inp["deploymentId"], []))
        if inp.get("tail"):
            lines = lines[-inp["tail"]:]
        return "\n".join(lines) + "\n"

    # domains

    def domain_or_404(self, domain_id):
        domain = self.domains.get(domain_id)
        if domain is None:
            raise ApiError("NOT_FOUND", "Domain not found")
        return domain

    def p_domain_create(self, inp):
        try:
            if inp.get("applicationId"):
                self.app_or_404(inp["applicationId"])
        except ApiError as exc:  # the router turns every error into BAD_REQUEST
            raise ApiError("BAD_REQUEST", exc.message) from exc
        domain = {"domainId": nanoid(), "host": inp["host"], "https": inp.get("https", False),
                  "port": inp.get("port", 3000), "path": inp.get("path", "/"), "serviceName": inp.get("serviceName"),
                  "domainType": inp.get("domainType") or "application", "uniqueConfigKey": len(self.domains) + 1,
                  "createdAt": self.now(), "composeId": inp.get("composeId"),
                  "applicationId": inp.get("applicationId"), "certificateType": inp.get("certificateType", "none"),
                  "customCertResolver": None, "internalPath": "/", "stripPath": False, "previewDeploymentId": None}
        self.domains[domain["domainId"]] = domain
        return dict(domain)

    def p_domain_update(self, inp):
        domain = self.domain_or_404(inp["domainId"])
        domain.update({k: v for k, v in inp.items() if k != "domainId"})
        return dict(domain)

    def p_domain_one(self, inp):
        return dict(self.domain_or_404(inp["domainId"]))

    def p_domain_delete(self, inp):
        self.domain_or_404(inp["domainId"])
        return self.domains.pop(inp["domainId"])

    def p_domain_byApplicationId(self, inp):
        self.app_or_404(inp["applicationId"])
        return [dict(d) for d in self.domains.values() if d["applicationId"] == inp["applicationId"]]

    # databases

    def db_table(self, kind):
        return self.postgres if kind == "postgres" else self.redis

    def db_or_404(self, kind, db_id):
        row = self.db_table(kind).get(db_id)
        if row is None:
            raise ApiError("NOT_FOUND", "%s not found" % ("Postgres" if kind == "postgres" else "Redis"))
        return row

    def db_create(self, kind, inp):
        self.environment_or_404(inp["environmentId"])
        row = {kind + "Id": nanoid(), "name": inp["name"], "appName": build_app_name(kind, inp.get("appName")),
               "databasePassword": inp["databasePassword"], "description": inp.get("description"),
               "dockerImage": inp.get("dockerImage") or ("postgres:18" if kind == "postgres" else "redis:8"),
               "command": None, "args": None, "env": None, "memoryReservation": None, "memoryLimit": None,
               "cpuReservation": None, "cpuLimit": None, "externalPort": None, "applicationStatus": "idle",
               "replicas": 1, "createdAt": self.now(), "environmentId": inp["environmentId"], "serverId": None}
        if kind == "postgres":
            row.update(databaseName=inp["databaseName"], databaseUser=inp["databaseUser"])
        self.db_table(kind)[row[kind + "Id"]] = row
        return dict(row)

    def db_one(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        env = self.environments[row["environmentId"]]
        return dict(row, environment=dict(env, project=self.projects[env["projectId"]]), mounts=[], backups=[],
                    server=None)

    def db_update(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        row.update({k: v for k, v in inp.items() if k != kind + "Id"})
        return True

    def db_deploy(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        if "fail" in (row.get("dockerImage") or ""):
            row["applicationStatus"] = "error"
            raise ApiError("INTERNAL_SERVER_ERROR", "Error on deploy %s: image %s not found"
                           % (kind, row["dockerImage"]))
        row["applicationStatus"] = "done"
        return dict(row)

    def db_start(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        before = dict(row)
        if self.no_swarm:
            raise ApiError("INTERNAL_SERVER_ERROR", NOT_A_SWARM_MANAGER)
        row["applicationStatus"] = "done"
        return before

    def db_stop(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        before = dict(row)
        row["applicationStatus"] = "idle"
        return before

    def db_save_env(self, kind, inp):
        self.db_or_404(kind, inp[kind + "Id"])["env"] = inp["env"]
        return True

    def db_save_port(self, kind, inp):
        row = self.db_or_404(kind, inp[kind + "Id"])
        row["externalPort"] = inp["externalPort"]
        row["applicationStatus"] = "done"
        return dict(row)

    def db_remove(self, kind, inp):
        self.db_or_404(kind, inp[kind + "Id"])
        return self.db_table(kind).pop(inp[kind + "Id"])


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

class RequestHandler(BaseHTTPRequestHandler):
    dokploy: FakeDokploy = None
    protocol_version = "HTTP/1.1"
    server_version = "FakeDokploy/1.0"

    def log_message(self, format, *args):
        return

    def send(self, status, body=None, content_type="application/json"):
        if isinstance(body, (dict, list, str, bool, int, float)) and content_type == "application/json":
            payload = json.dumps(body).encode()
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = b""  # JSON.stringify(undefined): an empty body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_any(self):
        fake = self.dokploy
        url = urlsplit(self.path)
        raw = self.read_body()
        if not url.path.startswith("/api/"):
            self.send(404, "Not Found", "text/plain")
            return
        name = url.path[len("/api/"):].strip("/")
        with fake.lock:
            fake.counts[name] += 1
            fake.calls.append((self.command, name))
        if not fake.authenticate(self.headers.get("x-api-key")):
            self.send(401, {"message": "Unauthorized"})
            return
        wants = "GET" if name in QUERIES else "POST"
        known = (name in SCHEMAS or name in QUERIES) and fake.has_procedure(name)
        if not known or self.command != wants:
            if self.command == "HEAD":
                self.send(204)
                return
            self.send(404, error_body("NOT_FOUND", "Not found", None))
            return
        try:
            if wants == "POST":
                ctype = self.headers.get("Content-Type")
                if not ctype or not ctype.startswith("application/json"):
                    raise ApiError("UNSUPPORTED_MEDIA_TYPE",
                                   'Unsupported content-type "%s' % ctype if ctype else "Missing content-type header")
                try:
                    data = json.loads(raw) if raw else None
                except ValueError as exc:
                    raise ApiError("PARSE_ERROR", "Failed to parse request body") from exc
                coerce = False
            else:
                data = {}
                for key, value in parse_qsl(url.query, keep_blank_values=True):
                    if key in data:
                        data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [value]
                    else:
                        data[key] = value
                coerce = True
            schema = SCHEMAS.get(name)
            inp = {}
            if schema is not None:
                inp, issues = validate(schema, data, coerce=coerce)
                if issues:
                    raise ApiError("BAD_REQUEST", "Input validation failed", issues)
            result = fake.dispatch(name, inp)
        except ApiError as exc:
            self.send(HTTP_STATUS.get(exc.code, 500), error_body(exc.code, exc.message, name, exc.issues))
            return
        self.send(200, result)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def main(argv=None):
    parser = argparse.ArgumentParser(description="A fake Dokploy API server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--limited-key", action="append", default=[], metavar="KEY:QUOTA",
                        help="a rate-limited key and its limit (two checks per request; repeatable)")
    parser.add_argument("--version", default="v0.30.2", help="what settings.getDokployVersion returns")
    parser.add_argument("--deploy-delay", type=float, default=2.0, help="seconds a deployment stays running")
    parser.add_argument("--swarm", action="store_true",
                        help="behave as a swarm manager (start works); default: start answers 500 as without Swarm")
    args = parser.parse_args(argv)
    limited = {}
    for item in args.limited_key:
        key, quota = item.rsplit(":", 1)
        limited[key] = int(quota)
    fake = FakeDokploy(api_key=args.api_key, version=args.version, limited_keys=limited,
                       deploy_delay=args.deploy_delay, no_swarm=not args.swarm)
    fake.start(port=args.port, host=args.host)
    print("fake Dokploy %s on %s (x-api-key: %s)" % (args.version, fake.url, args.api_key), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


FakeDokploy.HANDLER = RequestHandler

if __name__ == "__main__":
    main()
