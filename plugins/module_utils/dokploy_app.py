# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the dokploy_app and dokploy_database modules: Dokploy applications and databases as code.

A run reads the server (version, the project by exact name, the environment, the service by exact
name inside that environment), compares it field by field with the wanted state, and only then
writes. Dokploy allows duplicate names, so a service is identified by (project, environment, exact
name); two services matching that are an error, never a guess. Registry and database passwords and
``secret_env`` values are compared but never shown; ``env`` values (declared as not secret) appear in
diffs. Env text is written so that dotenv 16.4.5, the parser Dokploy uses, reads every value back
byte for byte (``parse_env`` is a port of it); a value no quoting can carry is refused.

Deployments: ``application.deploy`` returns no id. The newest row of ``deployment.all`` is recorded
before deploying; the deployment that deploy started is the first row that is newer, and it is
polled until done, error or cancelled (or the timeout). A failed deployment fails the task with
the tail of its log (``deployment.readLogs``, v0.29.5+; on older servers the row's errorMessage and
logPath, and a note that the log is not available through the API).

Start and stop: Dokploy answers ``*.start``/``*.stop`` with the row as it was before the change, so
the status is read again afterwards.
"""

from __future__ import annotations

import re
import time

from ansible_collections.selfhosted.platform.plugins.module_utils.dokploy_api import DokployClient, DokployError

TERMINAL = ("done", "error", "cancelled")
DEFAULT_PORT = 3000
SET, CHANGED, ADDED = "(set)", "(changed)", "(added)"
DB_IMAGES = {"postgres": "postgres:18", "redis": "redis:8"}
DB_PASSWORD_RE = re.compile(r"^[a-zA-Z0-9@#%^&*()_+\-=[\]{}|;:,.<>?~`]*$")


class ModuleFailure(Exception):
    """A failure after something may have changed: the message plus the result so far."""

    def __init__(self, msg, result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


# ---------------------------------------------------------------------------------------------
# Pure helpers: env files, slugs, domains, masking
# ---------------------------------------------------------------------------------------------

# dotenv 16.4.5 (the parser Dokploy reads env text with), ported exactly: JavaScript's \s, ^ and $ (multiline)
# and String.prototype.trim differ from Python's, so they are spelled out.
JS_SPACE = ("\t\n\x0b\x0c\r \u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
            + "\u2028\u2029\u202f\u205f\u3000\ufeff")
_S = "[" + re.escape(JS_SPACE) + "]"
_LT = "\n\r\u2028\u2029"
_BOL = r"(?:(?<=[" + _LT + r"])|\A)"
_EOL = r"(?=[" + _LT + r"]|\Z)"
DOTENV_LINE = re.compile(
    _BOL + _S + r"*(?:export" + _S + r"+)?([A-Za-z0-9_.-]+)(?:" + _S + r"*=" + _S + r"*?|:" + _S + r"+?)("
    + _S + r"*'(?:\\'|[^'])*'|" + _S + r'*"(?:\\"|[^"])*"|' + _S + r"*`(?:\\`|[^`])*`|[^#\r\n]+)?"
    + _S + r"*(?:#[^" + _LT + r"]*)?" + _EOL)
DOTENV_QUOTED = re.compile(_BOL + r"(['\"`])([\s\S]*)\1" + _EOL)
ENV_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")  # what dotenv reads as a key; anything else would be lost
UNQUOTED_RE = re.compile(r"^[A-Za-z0-9_./:@,+=%?&~^*!()\[\]{}<>|;$-]+$")


def parse_env(text):
    r"""Dokploy's env text -> dict, exactly as dotenv 16.4.5's parse() reads it: \r\n and \r become \n first;
    a value is trimmed and loses one pair of surrounding quotes (', " or `); only inside double quotes are
    \n and \r expanded; nothing else is unescaped; # starts a comment in an unquoted value."""
    out = {}
    src = re.sub(r"\r\n?", "\n", text or "")
    for match in DOTENV_LINE.finditer(src):
        value = (match.group(2) or "").strip(JS_SPACE)
        maybe_quote = value[:1]
        value = DOTENV_QUOTED.sub(lambda m: m.group(2), value)
        if maybe_quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        out[match.group(1)] = value
    return out


def quote_env_value(key, value, option="env"):
    r"""The text after KEY= that dotenv reads back as exactly value: bare when it is plain, else single quotes
    (no ' and no line break), double quotes (line breaks as \n/\r escapes; no " and no backslash), backticks (no
    backtick and no carriage return; newlines kept), or bare as a last resort. Raises DokployError naming the
    variable (never the value) when none of them round-trips."""
    candidates = []
    if value and UNQUOTED_RE.match(value):
        candidates.append(value)
    if "'" not in value and "\n" not in value and "\r" not in value:
        candidates.append("'%s'" % value)
    if '"' not in value and "\\" not in value:
        candidates.append('"%s"' % value.replace("\n", "\\n").replace("\r", "\\r"))
    if "`" not in value and "\r" not in value:
        candidates.append("`%s`" % value)
    candidates.append(value)
    for text in candidates:
        if parse_env("%s=%s" % (key, text)) == {key: value}:
            return text
    raise DokployError(
        "%s.%s: the value cannot be written so that Dokploy reads it back unchanged. Dokploy parses env with "
        "dotenv, which has no escape characters except \\n and \\r inside double quotes: no quoting carries a value "
        "holding a single quote or line break, a double quote or backslash, and a backtick or carriage return, and "
        "such a value is read back unchanged bare only without #, line breaks, surrounding spaces or a leading "
        "quote. Change the value (for example base64-encode it)."
        % (option, key))


def env_value(key, value, option="env"):
    """An env value from YAML as the string Dokploy stores (booleans the way shells spell them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple, set)):
        raise DokployError("%s.%s: must be a string, number or boolean, not a %s"
                           % (option, key, "dict" if isinstance(value, dict) else "list"))
    return str(value)


def render_env(env):
    """dict -> env text (one KEY=value per variable) that dotenv reads back as exactly env."""
    text = "\n".join("%s=%s" % (key, quote_env_value(key, value)) for key, value in env.items())
    back = parse_env(text)
    if back != env:  # a guard: quote_env_value checked each line on its own
        bad = [k for k in env if back.get(k) != env[k]] or sorted(set(back) - set(env))
        raise DokployError("env.%s: the env text would not read back unchanged" % bad[0])
    return text


def desired_env_of(p):
    """env and secret_env (validated, values as strings) -> (merged dict or None, the secret keys).
    Raises DokployError naming the option and the variable, before anything is read or written."""
    if p.get("env") is None and p.get("secret_env") is None:
        return None, set()
    merged, secret = {}, set()
    for option in ("env", "secret_env"):
        value = p.get(option)
        if value is None:
            continue
        if isinstance(value, str):
            raise DokployError(
                "%s: must be a dict of NAME: value, got a string. A string such as \"A=1\\nB=2\" is not parsed (it "
                "would be one variable); write each variable as a key of the dict." % option)
        if not isinstance(value, dict):
            raise DokployError("%s: must be a dict of NAME: value, got %s" % (option, type(value).__name__))
        for raw_key, item in value.items():
            key = str(raw_key)
            if not ENV_KEY_RE.match(key):
                raise DokployError("%s: %r is not a variable name Dokploy reads (letters, digits, _ . -)"
                                   % (option, key))
            if key in merged:
                raise DokployError("secret_env: %s is also in env; give each variable once" % key)
            merged[key] = env_value(key, item, option)
            quote_env_value(key, merged[key], option)
            if option == "secret_env":
                secret.add(key)
    return merged, secret


def env_changes(current, desired):
    """[(key, 'added'|'changed'|'removed')] in a stable order; values are never returned."""
    out = []
    for key in desired:
        if key not in current:
            out.append((key, "added"))
        elif current[key] != desired[key]:
            out.append((key, "changed"))
    out += [(key, "removed") for key in current if key not in desired]
    return out


def masked_env(current, desired, plain=()):
    """(before, after) views of an env for diffs: the values of the keys in plain (declared in env, not
    secret_env) as they are; every other value as a marker."""
    before = dict((key, current[key] if key in plain else SET) for key in current)
    after = {}
    for key in desired:
        if key in plain:
            after[key] = desired[key]
        elif key not in current:
            after[key] = ADDED
        elif current[key] != desired[key]:
            after[key] = CHANGED
        else:
            after[key] = SET
    return before, after


def mask_secret(current, desired=None):
    """A password as a diff shows it."""
    if desired is None:
        return SET if current else ""
    if not desired:
        return ""
    return SET if desired == current else CHANGED


def slug(text, limit=56):
    """Dokploy appName base: lower case, [a-z0-9._-], no leading/trailing dashes (the server adds a suffix)."""
    out = re.sub(r"[^a-z0-9._-]+", "-", (text or "").lower()).strip("-.")
    out = re.sub(r"-{2,}", "-", out)[:limit].strip("-.")
    return out or "app"


def domain_key(domain):
    return "%s%s" % (domain["host"], domain["path"])


def normalize_domain(item, index=None):
    """A domains[] option item -> the fields Dokploy stores; raises DokployError naming the option."""
    where = "domains[%s]" % index if index is not None else "domains"
    host = item.get("host")
    if not host or not isinstance(host, str) or host != host.strip() or re.search(r"\s|/", host):
        raise DokployError("%s.host: %r is not a host name" % (where, host))
    path = item.get("path") or "/"
    if not path.startswith("/"):
        raise DokployError("%s.path: %r must start with /" % (where, path))
    port = item.get("port")
    port = DEFAULT_PORT if port is None else port
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise DokployError("%s.port: %r is not a port (1-65535)" % (where, port))
    https = bool(item.get("https"))
    cert = item.get("certificate_type") or ("letsencrypt" if https else "none")
    if cert not in ("none", "letsencrypt", "custom"):
        raise DokployError("%s.certificate_type: %r is not one of none, letsencrypt, custom" % (where, cert))
    return {"host": host, "path": path, "port": port, "https": https, "certificate_type": cert}


def current_domain(row):
    return {"host": row.get("host"), "path": row.get("path") or "/",
            "port": row.get("port") if row.get("port") is not None else DEFAULT_PORT,
            "https": bool(row.get("https")), "certificate_type": row.get("certificateType") or "none",
            "id": row.get("domainId")}


def plan_domains(current_rows, desired):
    """[(op, desired or None, current or None, fields)] turning the current domains into the desired list.
    Domains are matched by host + path; the list is authoritative (others are deleted)."""
    current = {}
    ops = []
    for row in current_rows:
        if row.get("domainType") not in (None, "application"):
            continue
        dom = current_domain(row)
        if domain_key(dom) in current:
            ops.append(("delete", None, dom, []))  # a duplicate of the same host and path
        else:
            current[domain_key(dom)] = dom
    for want in desired:
        have = current.pop(domain_key(want), None)
        if have is None:
            ops.append(("create", want, None, []))
            continue
        fields = [f for f in ("port", "https", "certificate_type") if have[f] != want[f]]
        if fields:
            ops.append(("update", want, have, fields))
    ops += [("delete", None, dom, []) for dom in current.values()]
    return ops


def exactly_one(rows, name, what, where, option="name"):
    """The single row named exactly name, None, or an error naming the duplicates."""
    matches = [r for r in rows or [] if r.get("name") == name]
    if len(matches) > 1:
        ids = ", ".join(str(r.get(what + "Id")) for r in matches)
        plural = {"application": "applications", "project": "projects", "environment": "environments"}
        raise DokployError(
            "%s: %d %s are named %r in %s (ids: %s). Dokploy allows duplicate names; this module manages exactly "
            "one per (project, environment, name) and will not guess. Delete or rename the extra ones in Dokploy."
            % (option, len(matches), plural.get(what, what + " services"), name, where, ids))
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------
# The shared run: project and environment, results, check mode
# ---------------------------------------------------------------------------------------------

class Converger:
    """What both modules share: the target project/environment and the result bookkeeping."""

    kind = "application"

    def __init__(self, client, params, check_mode=False, diff_mode=False, sleep=time.sleep, clock=time.monotonic):
        self.client = client
        self.p = params
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.sleep = sleep
        self.clock = clock
        self.changes = []
        self.warnings = []
        self.project = None
        self.environment = None
        self.result = {"changed": False, "changes": self.changes, "project_id": None, "environment_id": None}

    def change(self, text):
        self.changes.append(text)
        self.result["changed"] = True

    def where(self):
        return "project %r, environment %r" % (self.p["project"], self.p["environment"])

    def find_target(self):
        """The project and environment by exact name (None when missing)."""
        projects = self.client.query("project.all") or []
        self.project = exactly_one(projects, self.p["project"], "project", "this organisation", "project")
        if self.project is not None:
            self.result["project_id"] = self.project.get("projectId")
            self.environment = exactly_one(self.project.get("environments"), self.p["environment"], "environment",
                                           "project %r" % self.p["project"], "environment")
        if self.environment is not None:
            self.result["environment_id"] = self.environment.get("environmentId")

    def services(self, group):
        """The services of one kind in the target environment (environment.one), [] when it does not exist."""
        if self.environment is None:
            return []
        data = self.client.query("environment.one", environmentId=self.environment["environmentId"]) or {}
        return data.get(group) or []

    def plan_target(self):
        if self.project is None:
            self.change("project %s (create)" % self.p["project"])
        elif self.p.get("project_description") is not None and \
                (self.project.get("description") or "") != self.p["project_description"]:
            self.change("project_description")
        if self.environment is None:
            self.change("environment %s (create)" % self.p["environment"])

    def ensure_target(self):
        """Create the project (Dokploy adds its default 'production' environment) and environment."""
        if self.project is None:
            payload = {"name": self.p["project"]}
            if self.p.get("project_description") is not None:
                payload["description"] = self.p["project_description"]
            created = self.client.mutate("project.create", payload) or {}
            self.project = dict(created.get("project") or {})
            envs = [created["environment"]] if created.get("environment") else []
            self.project["environments"] = envs
            self.result["project_id"] = self.project.get("projectId")
            self.environment = exactly_one(envs, self.p["environment"], "environment", "the new project", "environment")
        elif "project_description" in self.changes:
            self.client.mutate("project.update", {"projectId": self.project["projectId"],
                                                  "description": self.p["project_description"]})
        if self.environment is None:
            payload = {"name": self.p["environment"], "projectId": self.project["projectId"]}
            self.environment = self.client.mutate("environment.create", payload) or {}
        self.result["environment_id"] = self.environment.get("environmentId")

    def finish(self):
        self.result["requests"] = self.client.requests
        self.result["request_counts"] = dict(self.client.counts)
        self.result["dokploy_version"] = self.client.version
        if self.warnings:
            self.result["warnings"] = self.warnings
        return self.result

    def fail(self, msg):
        raise ModuleFailure(msg, self.finish())

    def env_label(self, key):
        """The option a variable was declared in (removed ones: env)."""
        return "secret_env" if key in desired_env_of(self.p)[1] else "env"

    def env_view(self, current_text, desired, want):
        merged, secret = desired_env_of(self.p)
        plain = set(merged or {}) - secret
        before, after = masked_env(parse_env(current_text), desired, plain)
        return after if want else before

    def settle(self, procedure, id_key, service_id, want, timeout=10.0):
        """Dokploy's start/stop answer the row as it was before the change: read it again (briefly polling)
        until applicationStatus is want, and return the status the server ends in."""
        deadline = self.clock() + timeout
        while True:
            row = self.client.query(procedure, **{id_key: service_id}) or {}
            status = row.get("applicationStatus")
            if status == want or self.clock() >= deadline:
                return status
            self.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Applications
# ---------------------------------------------------------------------------------------------

SOURCE_FIELDS = {
    "docker": [("dockerImage", "docker_image"), ("registryUrl", "registry_url"), ("username", "registry_username"),
               ("password", "registry_password")],
    "git": [("customGitUrl", "git_repository"), ("customGitBranch", "git_branch"),
            ("customGitBuildPath", "git_build_path"), ("customGitSSHKeyId", "git_ssh_key_id")],
}
BUILD_FIELDS = [("buildType", "build_type"), ("dockerfile", "dockerfile"), ("dockerContextPath", "docker_context_path"),
                ("dockerBuildStage", "docker_build_stage")]


def validate_app(p):
    """Bad input fails before anything is read or written, naming the option."""
    for opt in ("url", "project", "environment", "name"):
        if not (p.get(opt) or "").strip():
            raise DokployError("%s: must not be empty" % opt)
    if p.get("state") == "absent":
        return
    source = p.get("source")
    if source == "docker" and not p.get("docker_image"):
        raise DokployError("docker_image: required with source=docker")
    if source == "git" and not p.get("git_repository"):
        raise DokployError("git_repository: required with source=git")
    wrong = [o for o in ("docker_image", "registry_url", "registry_username", "registry_password")
             if p.get(o) and source != "docker"]
    wrong += [o for o in ("git_repository", "git_branch", "git_build_path", "git_ssh_key_id")
              if p.get(o) and source != "git"]
    if wrong:
        raise DokployError("%s: only used with source=%s" % (wrong[0], "docker" if "git" not in wrong[0] else "git"))
    if p.get("git_branch") is not None and not re.match(r"^[A-Za-z0-9._/-]+$", p["git_branch"]):
        raise DokployError("git_branch: %r is not a branch name" % p["git_branch"])
    for opt in ("dockerfile", "docker_context_path", "docker_build_stage"):
        if p.get(opt) is not None and not p.get("build_type"):
            raise DokployError("%s: needs build_type" % opt)
    desired_env_of(p)
    seen = set()
    for index, item in enumerate(p.get("domains") or []):
        dom = normalize_domain(item, index)
        if domain_key(dom) in seen:
            raise DokployError("domains[%d]: %s is listed twice" % (index, domain_key(dom)))
        seen.add(domain_key(dom))
    if (p.get("wait_timeout") or 0) < 1:
        raise DokployError("wait_timeout: must be at least 1 second")


class AppConverger(Converger):
    kind = "application"

    def desired_source(self):
        p = self.p
        if p.get("source") == "docker":
            return {"sourceType": "docker", "dockerImage": p["docker_image"],
                    "registryUrl": p.get("registry_url") or "", "username": p.get("registry_username") or "",
                    "password": p.get("registry_password") or ""}
        if p.get("source") == "git":
            out = {"sourceType": "git", "customGitUrl": p["git_repository"], "customGitBranch": p.get("git_branch")
                   or "main", "customGitBuildPath": p.get("git_build_path") or "/"}
            if p.get("git_ssh_key_id") is not None:
                out["customGitSSHKeyId"] = p["git_ssh_key_id"]
            return out
        return None

    def desired_build(self):
        out = {}
        for field, opt in BUILD_FIELDS:
            if self.p.get(opt) is not None:
                out[field] = self.p[opt]
        return out or None

    def desired_env(self):
        return desired_env_of(self.p)[0]

    def desired_domains(self):
        if self.p.get("domains") is None:
            return None
        return [normalize_domain(item, i) for i, item in enumerate(self.p["domains"])]

    # -- comparison -----------------------------------------------------------------------------

    def compare(self, app):
        """Field-level plan against the application row (a blank one when it is to be created)."""
        plan = {"description": False, "source": [], "build": [], "env": [], "domains": []}
        if self.p.get("description") is not None and (app.get("description") or "") != self.p["description"]:
            plan["description"] = True
        source = self.desired_source()
        if source:
            names = dict(SOURCE_FIELDS[source["sourceType"]])
            if app.get("sourceType") != source["sourceType"]:
                plan["source"].append("source")
            plan["source"] += [names[f] for f in source if f != "sourceType" and (app.get(f) or "") != source[f]]
        build = self.desired_build()
        if build:
            names = dict(BUILD_FIELDS)
            plan["build"] = [names[f] for f in build if (app.get(f) or "") != build[f]]
        env = self.desired_env()
        if env is not None:
            plan["env"] = env_changes(parse_env(app.get("env")), env)
        domains = self.desired_domains()
        if domains is not None:
            plan["domains"] = plan_domains(app.get("domains") or [], domains)
        return plan

    def view(self, app, desired):
        """The application as a diff shows it (secrets masked); desired=True renders the wanted state."""
        out = {"name": self.p["name"]}
        if self.p.get("description") is not None:
            out["description"] = self.p["description"] if desired else (app.get("description") or "")
        source = self.desired_source()
        if source:
            names = dict(SOURCE_FIELDS[source["sourceType"]])
            shown = {"source": source["sourceType"] if desired else app.get("sourceType")}
            for field in source:
                if field == "sourceType":
                    continue
                if field == "password":
                    shown[names[field]] = mask_secret(app.get("password"), source["password"] if desired else None)
                else:
                    shown[names[field]] = source[field] if desired else (app.get(field) or "")
            out["source"] = shown
        build = self.desired_build()
        if build:
            names = dict(BUILD_FIELDS)
            out["build"] = dict((names[f], build[f] if desired else app.get(f)) for f in build)
        env = self.desired_env()
        if env is not None:
            out["env"] = self.env_view(app.get("env"), env, desired)
        domains = self.desired_domains()
        if domains is not None:
            rows = domains if desired else [current_domain(r) for r in app.get("domains") or []
                                            if r.get("domainType") in (None, "application")]
            out["domains"] = [dict((k, v) for k, v in d.items() if k != "id") for d in rows]
        return out

    # -- the run --------------------------------------------------------------------------------

    def run(self):
        p = self.p
        validate_app(p)
        self.client.check_version()
        self.find_target()
        row = exactly_one(self.services("applications"), p["name"], "application", self.where())
        app = self.client.query("application.one", applicationId=row["applicationId"]) if row else None
        if app:
            self.result.update(application_id=app.get("applicationId"), app_name=app.get("appName"),
                               status=app.get("applicationStatus"))
        self.result["deployment"] = {"status": "skipped"}
        if p["state"] == "absent":
            return self.absent(app)

        self.plan_target()
        created = app is None
        current = app or {"domains": [], "deployments": [], "sourceType": None, "env": None,
                          "applicationStatus": "idle"}
        if created:
            self.change("application %s (create)" % p["name"])
        plan = self.compare(current)
        self.describe(plan)
        deploy_reasons = self.deploy_reasons(created, current, plan)
        start_stop = self.start_stop(created, current, deploy_reasons)
        if self.diff_mode:
            self.result["diff"] = self.diff(app, current, start_stop)
        if self.check_mode:
            if deploy_reasons:
                self.result["deployment"] = {"status": "planned", "reasons": deploy_reasons}
            return self.finish()

        self.ensure_target()
        if created:
            app = self.create()
            current = dict(app, domains=[], deployments=[])
        app_id = current["applicationId"]
        self.apply(app_id, current, plan)
        if deploy_reasons:
            self.result["deployment"] = self.deploy(app_id, deploy_reasons)
        if start_stop:
            getattr(self, "do_" + start_stop)(app_id)
        return self.finish()

    def absent(self, app):
        if app is None:
            return self.finish()
        self.change("application %s (delete)" % self.p["name"])
        if self.diff_mode:
            self.result["diff"] = {"before": {"application": self.p["name"]}, "after": {"application": None}}
        if not self.check_mode:
            self.client.mutate("application.delete", {"applicationId": app["applicationId"]})
            self.result["status"] = None
        return self.finish()

    def describe(self, plan):
        if plan["description"]:
            self.change("description")
        for name in plan["source"] + plan["build"]:
            self.change(name)
        for key, what in plan["env"]:
            self.change("%s.%s (%s)" % (self.env_label(key), key, what))
        for op, want, have, fields in plan["domains"]:
            target = want or have
            detail = ": " + ", ".join(fields) if fields else ""
            self.change("domains %s (%s%s)" % (domain_key(target), op, detail))

    def deploy_reasons(self, created, current, plan):
        p = self.p
        if p["state"] not in ("present", "started") or p["deploy"] == "never":
            return []
        reasons = []
        if created:
            reasons.append("created")
        else:
            if plan["source"] or plan["build"]:
                reasons.append("source or build changed")
            if plan["env"]:
                reasons.append("env changed")
            if current.get("applicationStatus") == "error" and p["deploy"] == "auto":
                reasons.append("the last deployment failed")
            if p["deploy"] == "always":
                reasons.append("deploy=always")
        if not reasons and p["state"] == "started" and current.get("applicationStatus") == "idle" \
                and not current.get("deployments"):
            reasons.append("never deployed")
        if reasons:
            self.change("deploy (%s)" % ", ".join(reasons))
        return reasons

    def start_stop(self, created, current, deploy_reasons):
        status = current.get("applicationStatus")
        if self.p["state"] == "stopped" and not created and status != "idle":
            self.change("stop")
            return "stop"
        if self.p["state"] == "started" and not deploy_reasons and status == "idle":
            if not current.get("deployments"):
                raise DokployError("state: started needs a deployment, but the application was never deployed and "
                                   "deploy is never")
            self.change("start")
            return "start"
        return None

    def diff(self, app, current, start_stop=None):
        before = {"project": self.project.get("name") if self.project else None,
                  "environment": self.environment.get("name") if self.environment else None,
                  "application": self.view(current, False) if app else None}
        after = {"project": self.p["project"], "environment": self.p["environment"],
                 "application": None if self.p["state"] == "absent" else self.view(current, True)}
        if app and start_stop:  # the status is compared only when the run starts or stops the application
            before["application"]["status"] = current.get("applicationStatus")
            after["application"]["status"] = "done" if start_stop == "start" else "idle"
        return {"before": before, "after": after}

    # -- writes ---------------------------------------------------------------------------------

    def create(self):
        payload = {"name": self.p["name"], "appName": slug("%s-%s" % (self.p["project"], self.p["name"])),
                   "environmentId": self.environment["environmentId"]}
        if self.p.get("description") is not None:
            payload["description"] = self.p["description"]
        app = self.client.mutate("application.create", payload) or {}
        self.result.update(application_id=app.get("applicationId"), app_name=app.get("appName"),
                           status=app.get("applicationStatus"))
        return app

    def apply(self, app_id, current, plan):
        if plan["description"] and current.get("description") != self.p["description"]:
            self.client.mutate("application.update", {"applicationId": app_id, "description": self.p["description"]})
        source = self.desired_source()
        if plan["source"]:
            if source["sourceType"] == "docker":
                self.client.mutate("application.saveDockerProvider", {
                    "applicationId": app_id, "dockerImage": source["dockerImage"], "username": source["username"],
                    "password": source["password"], "registryUrl": source["registryUrl"]})
            else:
                payload = {"applicationId": app_id, "customGitUrl": source["customGitUrl"],
                           "customGitBranch": source["customGitBranch"],
                           "customGitBuildPath": source["customGitBuildPath"],
                           "watchPaths": current.get("watchPaths") or [],
                           "enableSubmodules": bool(current.get("enableSubmodules"))}
                if source.get("customGitSSHKeyId") is not None:
                    payload["customGitSSHKeyId"] = source["customGitSSHKeyId"]
                self.client.mutate("application.saveGitProvider", payload)
        if plan["build"]:
            build = self.desired_build()
            payload = {"applicationId": app_id, "buildType": build.get("buildType") or current.get("buildType"),
                       "dockerfile": build.get("dockerfile") or current.get("dockerfile") or "Dockerfile",
                       "dockerContextPath": build.get("dockerContextPath", current.get("dockerContextPath")),
                       "dockerBuildStage": build.get("dockerBuildStage", current.get("dockerBuildStage")),
                       "herokuVersion": current.get("herokuVersion") or "24",
                       "railpackVersion": current.get("railpackVersion") or "0.15.4"}
            for key in ("publishDirectory", "isStaticSpa"):
                if current.get(key) is not None:
                    payload[key] = current[key]
            self.client.mutate("application.saveBuildType", payload)
        if plan["env"]:
            create_env_file = current.get("createEnvFile")
            self.client.mutate("application.saveEnvironment", {
                "applicationId": app_id, "env": render_env(self.desired_env()),
                "buildArgs": current.get("buildArgs") or "", "buildSecrets": current.get("buildSecrets") or "",
                "createEnvFile": create_env_file if isinstance(create_env_file, bool) else True})
        for op, want, have, _fields in plan["domains"]:
            if op == "create":
                self.client.mutate("domain.create", {
                    "host": want["host"], "path": want["path"], "port": want["port"], "https": want["https"],
                    "certificateType": want["certificate_type"], "applicationId": app_id,
                    "domainType": "application"})
            elif op == "update":
                self.client.mutate("domain.update", {
                    "domainId": have["id"], "host": want["host"], "path": want["path"], "port": want["port"],
                    "https": want["https"], "certificateType": want["certificate_type"],
                    "domainType": "application"})
            else:
                self.client.mutate("domain.delete", {"domainId": have["id"]})

    def do_start(self, app_id):
        self.client.mutate("application.start", {"applicationId": app_id})
        self.result["status"] = self.settle("application.one", "applicationId", app_id, "done")

    def do_stop(self, app_id):
        self.client.mutate("application.stop", {"applicationId": app_id})
        self.result["status"] = self.settle("application.one", "applicationId", app_id, "idle")

    # -- deployments ----------------------------------------------------------------------------

    def interval(self, elapsed):
        return 0.25 if elapsed < 3 else (1.0 if elapsed < 30 else 2.0)

    def deploy(self, app_id, reasons):
        """application.deploy, then the deployment it started, polled to the end."""
        baseline = self.client.query("deployment.all", applicationId=app_id) or []
        known = set(r.get("deploymentId") for r in baseline)
        newest = max([r.get("createdAt") or "" for r in baseline] or [""])
        self.client.mutate("application.deploy", {"applicationId": app_id,
                                                  "title": "selfhosted.platform.dokploy_app",
                                                  "description": "; ".join(reasons)[:250]})
        if not self.p["wait"]:
            return {"status": "queued", "reasons": reasons}
        start = self.clock()
        row = None
        while True:
            rows = self.client.query("deployment.all", applicationId=app_id) or []
            fresh = [r for r in rows if r.get("deploymentId") not in known and (r.get("createdAt") or "") >= newest]
            if fresh:
                row = max(fresh, key=lambda r: r.get("createdAt") or "")
                if row.get("status") in TERMINAL:
                    break
            elapsed = self.clock() - start
            if elapsed >= self.p["wait_timeout"]:
                info = self.deployment_info(row, reasons) if row else {"status": "not started", "reasons": reasons}
                self.result["deployment"] = info
                self.fail("application %r: the deployment did not finish within %ss (status: %s); it may still be "
                          "running in Dokploy" % (self.p["name"], self.p["wait_timeout"], info["status"]))
            self.sleep(self.interval(elapsed))
        info = self.deployment_info(row, reasons)
        self.result["status"] = "done" if row["status"] == "done" else row["status"]
        if row["status"] != "done":
            info["log_tail"], note = self.log_tail(row)
            self.result["deployment"] = info
            extra = "; error: %s" % row["errorMessage"] if row.get("errorMessage") else ""
            tail = ("Last log lines:\n%s" % "\n".join(info["log_tail"])) if info["log_tail"] else note
            self.fail("application %r: deployment %s ended with status %s%s. Full log on the Dokploy server: %s. %s"
                      % (self.p["name"], row.get("deploymentId"), row["status"], extra, row.get("logPath") or "?",
                         tail))
        return info

    @staticmethod
    def deployment_info(row, reasons):
        return {"id": row.get("deploymentId"), "status": row.get("status"), "created_at": row.get("createdAt"),
                "finished_at": row.get("finishedAt"), "title": row.get("title"), "log_path": row.get("logPath"),
                "error_message": row.get("errorMessage"), "reasons": reasons}

    def log_tail(self, row):
        """(last log lines, a note when there are none): deployment.readLogs, on Dokploy v0.29.5 or newer."""
        where = row.get("logPath") or "the deployment's log file"
        if self.client.read_logs_supported() is False:
            note = ("The log is not available through the API on Dokploy %s (deployment.readLogs came with v0.29.5); "
                    "read %s on the Dokploy server." % (self.client.version, where))
            self.warnings.append(note)
            return [], note
        try:
            lines = self.client.deployment_log(row["deploymentId"], tail=self.p.get("log_lines") or 40)
        except DokployError as exc:
            note = "The deployment log could not be read through the API (%s); read %s on the Dokploy server." % (
                exc.msg, where)
            self.warnings.append(note)
            return [], note
        return lines, "The deployment log is empty."


# ---------------------------------------------------------------------------------------------
# Databases (Postgres/PostGIS, Redis)
# ---------------------------------------------------------------------------------------------

def validate_database(p):
    for opt in ("url", "project", "environment", "name"):
        if not (p.get(opt) or "").strip():
            raise DokployError("%s: must not be empty" % opt)
    if p.get("state") == "absent":
        return
    if p["type"] == "redis":
        for opt in ("database_name", "database_user"):
            if p.get(opt) is not None:
                raise DokployError("%s: only used with type=postgres" % opt)
    password = p.get("database_password")
    if password is not None and p["type"] == "postgres" and not DB_PASSWORD_RE.match(password):
        raise DokployError("database_password: contains characters Dokploy refuses for Postgres "
                           "($ ! ' \" \\ / or spaces)")
    if p.get("external_port") is not None and not 1 <= p["external_port"] <= 65535:
        raise DokployError("external_port: %r is not a port (1-65535)" % p["external_port"])
    desired_env_of(p)


class DatabaseConverger(Converger):

    @property
    def kind(self):
        return self.p["type"]

    @property
    def id_key(self):
        return self.p["type"] + "Id"

    def desired_env(self):
        return desired_env_of(self.p)[0]

    def run(self):
        p = self.p
        validate_database(p)
        self.client.check_version()
        self.find_target()
        row = exactly_one(self.services(p["type"]), p["name"], p["type"], self.where())
        current = self.client.query(p["type"] + ".one", **{self.id_key: row[self.id_key]}) if row else None
        if current:
            self.result.update(database_id=current.get(self.id_key), app_name=current.get("appName"),
                               status=current.get("applicationStatus"))
        if p["state"] == "absent":
            if current:
                self.change("%s %s (delete)" % (p["type"], p["name"]))
                if self.diff_mode:
                    self.result["diff"] = {"before": {p["type"]: p["name"]}, "after": {p["type"]: None}}
                if not self.check_mode:
                    self.client.mutate(p["type"] + ".remove", {self.id_key: current[self.id_key]})
                    self.result["status"] = None
            return self.finish()

        self.plan_target()
        created = current is None
        if created:
            self.check_create_options()
            self.change("%s %s (create)" % (p["type"], p["name"]))
        have = current or {"applicationStatus": "idle", "env": None}
        plan = self.compare(have, created)
        deploy = self.deploy_needed(created, have, plan)
        start_stop = None
        if not deploy and p["state"] == "started" and have.get("applicationStatus") == "idle" and not created:
            start_stop = "start"
            self.change("start")
        elif p["state"] == "stopped" and not created and have.get("applicationStatus") != "idle":
            start_stop = "stop"
            self.change("stop")
        if self.diff_mode:
            self.result["diff"] = {"before": self.view(have, False) if current else None,
                                   "after": self.view(have, True)}
        if self.check_mode:
            return self.finish()

        self.ensure_target()
        if created:
            have = self.create()
        db_id = have[self.id_key]
        update = {}
        if "docker_image" in plan:
            update["dockerImage"] = p["docker_image"]
        if "description" in plan:
            update["description"] = p["description"]
        if update:
            self.client.mutate(p["type"] + ".update", dict(update, **{self.id_key: db_id}))
        if "env" in plan:
            self.client.mutate(p["type"] + ".saveEnvironment", {self.id_key: db_id,
                                                                "env": render_env(self.desired_env())})
        if "external_port" in plan:
            self.client.mutate(p["type"] + ".saveExternalPort", {self.id_key: db_id,
                                                                 "externalPort": p["external_port"]})
        if deploy:
            self.client.mutate(p["type"] + ".deploy", {self.id_key: db_id})
            self.result["status"] = "done"
        elif start_stop:
            self.client.mutate("%s.%s" % (p["type"], start_stop), {self.id_key: db_id})
            self.result["status"] = self.settle(p["type"] + ".one", self.id_key, db_id,
                                                "done" if start_stop == "start" else "idle")
        return self.finish()

    def check_create_options(self):
        p = self.p
        missing = ["database_password"] if p.get("database_password") is None else []
        if p["type"] == "postgres":
            missing += [o for o in ("database_name", "database_user") if not p.get(o)]
        if missing:
            raise DokployError("%s: required to create the %s database %r" % (missing[0], p["type"], p["name"]))

    def compare(self, have, created):
        p = self.p
        plan = []
        image = p.get("docker_image") or (DB_IMAGES[p["type"]] if created else None)
        if image and (have.get("dockerImage") or "") != image and not created:
            plan.append("docker_image")
            self.change("docker_image")
        if p.get("description") is not None and (have.get("description") or "") != p["description"] and not created:
            plan.append("description")
            self.change("description")
        env = self.desired_env()
        if env is not None:
            changes = env_changes(parse_env(have.get("env")), env)
            if changes:
                plan.append("env")
            for key, what in changes:
                self.change("%s.%s (%s)" % (self.env_label(key), key, what))
        if p.get("external_port") is not None and have.get("externalPort") != p["external_port"]:
            plan.append("external_port")
            self.change("external_port")
        if not created and p.get("database_password") is not None and \
                have.get("databasePassword") not in (None, p["database_password"]):
            self.warnings.append("database_password differs from the one Dokploy recorded for %s %r; it is not "
                                 "changed (the data volume keeps the password it was initialised with)"
                                 % (p["type"], p["name"]))
        return plan

    def deploy_needed(self, created, have, plan):
        p = self.p
        if p["state"] not in ("present", "started") or p["deploy"] == "never":
            return False
        reasons = []
        if created:
            reasons.append("created")
        else:
            if "docker_image" in plan or "env" in plan:
                reasons.append("image or env changed")
            if have.get("applicationStatus") == "error" and p["deploy"] == "auto":
                reasons.append("the last deploy failed")
            if p["deploy"] == "always":
                reasons.append("deploy=always")
        if reasons:
            self.change("deploy (%s)" % ", ".join(reasons))
        return bool(reasons)

    def view(self, have, desired):
        p = self.p
        out = {"type": p["type"], "name": p["name"]}
        image = p.get("docker_image") or (DB_IMAGES[p["type"]] if not have.get("dockerImage") else None)
        if image:
            out["docker_image"] = image if desired else have.get("dockerImage")
        if p.get("description") is not None:
            out["description"] = p["description"] if desired else (have.get("description") or "")
        env = self.desired_env()
        if env is not None:
            out["env"] = self.env_view(have.get("env"), env, desired)
        if p.get("external_port") is not None:
            out["external_port"] = p["external_port"] if desired else have.get("externalPort")
        return out

    def create(self):
        p = self.p
        payload = {"name": p["name"], "appName": slug("%s-%s" % (p["project"], p["name"])),
                   "databasePassword": p["database_password"],
                   "dockerImage": p.get("docker_image") or DB_IMAGES[p["type"]],
                   "environmentId": self.environment["environmentId"]}
        if p["type"] == "postgres":
            payload.update(databaseName=p["database_name"], databaseUser=p["database_user"])
        if p.get("description") is not None:
            payload["description"] = p["description"]
        row = self.client.mutate(p["type"] + ".create", payload) or {}
        self.result.update(database_id=row.get(self.id_key), app_name=row.get("appName"),
                           status=row.get("applicationStatus"))
        return row


# ---------------------------------------------------------------------------------------------
# Module entry points
# ---------------------------------------------------------------------------------------------

def make_client(params):
    return DokployClient(params["url"], params["api_key"], validate_certs=params["validate_certs"],
                         timeout=params["timeout"])


def _run(module, converger_class):
    converger = None
    try:
        client = make_client(module.params)
        converger = converger_class(client, dict(module.params), check_mode=module.check_mode,
                                    diff_mode=module._diff)
        result = converger.run()
    except ModuleFailure as exc:
        _warn(module, exc.result)
        module.fail_json(msg=exc.msg, **exc.result)
    except DokployError as exc:
        extra = converger.finish() if converger is not None else {"changed": False}
        _warn(module, extra)
        module.fail_json(msg=exc.msg, **extra)
    _warn(module, result)
    module.exit_json(**result)


def _warn(module, result):
    for warning in result.pop("warnings", []):
        module.warn(warning)


def run_app(module):
    _run(module, AppConverger)


def run_database(module):
    _run(module, DatabaseConverger)
