# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logic of the compose_stack module: validate, compare, plan, apply, wait, roll back.

The module file only declares its interface and calls ``run(module)``. Everything that touches
the outside goes through ComposeCLI (one runner function) and the small file helpers below.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time

from ansible_collections.selfhosted.platform.plugins.module_utils import compose_plan as cp
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_registry as cr
from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import (
    MIN_COMPOSE_VERSION,
    ComposeCLI,
    ComposeError,
    EngineAPI,
    EngineAPIError,
    EventWatch,
    docker_config_dir,
    engine_socket,
    read_docker_config,
    unix_socket_transport,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.stack_common import (
    HAS_YAML,
    MASK,
    _Dumper,
    atomic_write,
    mask_text,
    mask_value,
    read_text,
    yaml,
)

STATE_DIR = ".compose_stack"
LABEL_INPUTS = "org.selfhosted.compose-stack.restart-on"
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CACHE_FILE = "resolved.json"
CACHE_SCHEMA = 1
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SYSTEM_PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
                      "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")
MANAGED_ENV = "\0managed-env"
WAIT_INTERVAL_API = 0.25
WAIT_INTERVAL_CLI = 1.0
LOG_TAIL = 20  # log lines of a failing container in the failure report


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def render_compose(definition):
    header = "# Managed by selfhosted.platform.compose_stack; local edits are overwritten.\n"
    if HAS_YAML:
        return header + yaml.dump(definition, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                                  allow_unicode=True, width=1000)
    return header + json.dumps(definition, indent=2, sort_keys=False) + "\n"


def dotenv_quote(value):
    """Quote a value for Compose's .env parser so it reads back literally."""
    value = "" if value is None else str(value)
    if "'" not in value and "\n" not in value:
        return "'%s'" % value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return '"%s"' % escaped


def render_env(env):
    lines = ["# Managed by selfhosted.platform.compose_stack (mode 0600); local edits are overwritten."]
    for key in sorted(env):
        lines.append("%s=%s" % (key, dotenv_quote(env[key])))
    return "\n".join(lines) + "\n"


def parse_env_keys(text):
    """{key: raw value text} of a .env file we wrote (for masked diffs)."""
    out = {}
    for line in (text or "").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v
    return out


def masked_env(text, other_text=None):
    """The env file with every value masked; keys whose value differs from other_text are
    marked, so a diff tells which secrets change without showing them."""
    if text is None:
        return ""
    mine, theirs = parse_env_keys(text), parse_env_keys(other_text or "")
    lines = []
    for key in sorted(mine):
        mark = ""
        if other_text is not None and key in theirs and theirs[key] != mine[key]:
            mark = "  # value changed"
        lines.append("%s=%s%s" % (key, MASK, mark))
    return "\n".join(lines) + ("\n" if lines else "")


def file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def dotenv_unquote(raw):
    """The value dotenv_quote() quoted (a value of an env file we wrote); other text as it is."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), raw[1:-1])
    return raw


def secret_values(env, previous_env_text=None):
    """What compose_stack masks: the string of every value of ``env`` (the option is no_log: its values are
    the secrets, whatever their length), and every value of the env file being replaced (PREVIOUS_ENV_TEXT),
    so a secret that changes stays masked on the "before" side of a diff. Empty values are not secrets."""
    values = [str(v) for v in (env or {}).values() if v is not None and str(v) != ""]
    values += [dotenv_unquote(v) for v in parse_env_keys(previous_env_text).values()]
    return sorted({v for v in values if v}, key=lambda v: (-len(v), v))


# ---------------------------------------------------------------------------------------------
# restart_on: bind-mounted files whose content must recreate the services that mount them
# ---------------------------------------------------------------------------------------------
def restart_on_map(resolved, paths, project_dir):
    """{service: [absolute file paths]} for every restart_on path, matched against the bind
    mounts of the resolved model (a file mounted directly, or inside a mounted directory).
    Raises ValueError for a path no service mounts, or a path that does not exist."""
    result = {}
    for raw in paths or []:
        path = os.path.normpath(os.path.join(project_dir, raw))
        if not os.path.isfile(path):
            raise ValueError("restart_on: %s does not exist or is not a file" % raw)
        users = []
        for name, svc in (resolved.get("services") or {}).items():
            for vol in svc.get("volumes") or []:
                if not isinstance(vol, dict) or vol.get("type") != "bind":
                    continue
                src = os.path.normpath(vol.get("source", ""))
                if path == src or path.startswith(src.rstrip("/") + "/"):
                    users.append(name)
                    break
        if not users:
            raise ValueError("restart_on: %s is not bind-mounted by any service of the project" % raw)
        for name in users:
            result.setdefault(name, []).append(path)
    return result


def restart_on_labels(mapping):
    """{service: checksum} over the contents of the files each service mounts."""
    labels = {}
    for service, files in mapping.items():
        h = hashlib.sha256()
        for f in sorted(set(files)):
            h.update(f.encode())
            h.update(b"\0")
            h.update(sha256_file(f).encode())
        labels[service] = "sha256:" + h.hexdigest()
    return labels


def add_labels(doc, labels):
    """Put LABEL_INPUTS on the given services of a compose document (dict), in place."""
    for service, value in labels.items():
        svc = doc.setdefault("services", {}).setdefault(service, {})
        lab = svc.get("labels")
        if isinstance(lab, list):
            lab = [x for x in lab if not str(x).startswith(LABEL_INPUTS + "=")]
            lab.append("%s=%s" % (LABEL_INPUTS, value))
            svc["labels"] = lab
        else:
            lab = dict(lab or {})
            lab[LABEL_INPUTS] = value
            svc["labels"] = lab
    return doc


def rewrite_env_file_refs(doc, old, new):
    """Point service env_file entries that name ``old`` at ``new`` (staging copy for validation)."""
    for svc in (doc.get("services") or {}).values():
        ef = svc.get("env_file")
        if ef is None:
            continue
        items = ef if isinstance(ef, list) else [ef]
        out = []
        for item in items:
            if isinstance(item, dict):
                entry = dict(item)
                if os.path.normpath(entry.get("path", "")) == os.path.normpath(old):
                    entry["path"] = new
                out.append(entry)
            else:
                out.append(new if os.path.normpath(str(item)) == os.path.normpath(old) else item)
        svc["env_file"] = out
    return doc


# ---------------------------------------------------------------------------------------------
# the resolution cache: `docker compose config` and `config --hash` answers, keyed by their inputs
# ---------------------------------------------------------------------------------------------
class Uncacheable(Exception):
    """The inputs of the resolution cannot all be known without running Compose."""


def compose_plugin(environ, docker_config):
    """Identity of the Compose CLI plugin the docker CLI would run, without running it: the first
    ``docker-compose`` in the CLI's plugin directories (config.json's cliPluginsExtraDirs, then
    $DOCKER_CONFIG/cli-plugins or ~/.docker/cli-plugins, then the system directories), as
    path, resolved path, size and mtime. None when there is none."""
    dirs = [d for d in (docker_config.get("cliPluginsExtraDirs") or []) if isinstance(d, str)]
    dirs.append(os.path.join(docker_config_dir(environ), "cli-plugins"))
    dirs.extend(SYSTEM_PLUGIN_DIRS)
    for d in dirs:
        path = os.path.join(d, "docker-compose")
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            return "%s -> %s size=%d mtime_ns=%d" % (path, os.path.realpath(path), st.st_size, st.st_mtime_ns)
    return None


def read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def referenced_files(doc):
    """Files a compose document makes Compose read besides itself: services' env_file and
    label_file entries, configs and secrets with a file source. Raises Uncacheable for what
    cannot be listed from the document alone (include, extends from another file, paths built
    by interpolation)."""
    if not isinstance(doc, dict):
        raise Uncacheable("the compose document is not a mapping")
    if doc.get("include"):
        raise Uncacheable("include")
    paths = []
    for name, svc in (doc.get("services") or {}).items():
        if not isinstance(svc, dict):
            raise Uncacheable("service %s is not a mapping" % name)
        ext = svc.get("extends")
        if ext is not None and not isinstance(ext, str) and (not isinstance(ext, dict) or ext.get("file")):
            raise Uncacheable("extends from another file")
        for key in ("env_file", "label_file"):
            value = svc.get(key)
            if value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                paths.append(item.get("path") if isinstance(item, dict) else item)
    for top in ("configs", "secrets"):
        for entry in (doc.get(top) or {}).values():
            if isinstance(entry, dict) and entry.get("file") is not None:
                paths.append(entry["file"])
    for path in paths:
        if not isinstance(path, str) or "$" in path or path.startswith("~"):
            raise Uncacheable("a file reference Compose resolves itself: %r" % (path,))
    return paths


def slim_model(resolved):
    """What the decision needs of the resolved model, and nothing else: no environment, command
    or other values that may carry secrets. desired_services(), pullable() and restart_on_map()
    give the same answers on it as on the full model."""
    services = {}
    for name, svc in (resolved.get("services") or {}).items():
        slim = {"healthcheck": cp.has_healthcheck(svc)}
        if svc.get("image"):
            slim["image"] = svc["image"]
        if svc.get("build"):
            slim["build"] = True
        replicas = (svc.get("deploy") or {}).get("replicas")
        if replicas is not None:
            slim["deploy"] = {"replicas": replicas}
        if svc.get("scale") is not None:
            slim["scale"] = svc["scale"]
        binds = [{"type": "bind", "source": v.get("source", "")} for v in svc.get("volumes") or []
                 if isinstance(v, dict) and v.get("type") == "bind"]
        if binds:
            slim["volumes"] = binds
        services[name] = slim
    return {"services": services}


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
class Background(threading.Thread):
    """Run ``fn()`` in a thread; ``result()`` waits and re-raises what it raised."""

    def __init__(self, fn):
        threading.Thread.__init__(self)
        self.daemon = True
        self.fn = fn
        self.error = None
        self.start()

    def run(self):
        try:
            self.fn()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error


class StackFailure(Exception):
    def __init__(self, msg, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


class Stack:
    """One compose_stack invocation. ``runner(args, data=None)`` -> (rc, out, err);
    ``clock``/``sleep`` are injectable for tests."""

    def __init__(self, params, runner, check_mode=False, diff_mode=False, sleep=time.sleep, clock=time.monotonic,
                 warn=None, api=None, environ=None, events=None):
        self.p = params
        self.environ = os.environ if environ is None else environ
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.sleep = sleep
        self.clock = clock
        self.events = events  # project name -> an open EventWatch (raises EngineAPIError), or None
        self.warn = warn or (lambda msg: None)
        self.project_dir = os.path.abspath(params["project_dir"])
        self.state_dir = os.path.join(self.project_dir, STATE_DIR)
        self.env_path = os.path.join(self.project_dir, params.get("env_file_name") or ".env")
        self.secrets = secret_values(params.get("env"),
                                     read_text(self.env_path) if params.get("env") is not None else None)
        self.cli = ComposeCLI(runner, params["project_name"], self.project_dir, profiles=params.get("profiles"),
                              api=api)
        self.cache_path = os.path.join(self.state_dir, CACHE_FILE)
        self.cache_entry = None  # a fresh resolution to record (outside check mode)
        self.deferred_model = None  # the full resolved model whose hashes are still to be computed
        self.diffs = []
        self.desired = {}
        self.project = params["project_name"]
        self.last_seen = None  # the containers of the wait's last poll
        self.prebuilt = False  # build=always built the images already: up does not build them again
        self.result = {"changed": False, "project_name": params["project_name"], "project_dir": self.project_dir,
                       "rolled_back": False, "actions": [], "services": {}, "path": None}

    # -- helpers ------------------------------------------------------------------------------
    def check_version(self):
        text, parsed = self.cli.version()
        self.result["compose_version"] = text
        if parsed < MIN_COMPOSE_VERSION:
            raise StackFailure("Compose %s is too old: compose_stack needs %s or newer"
                               % (text, ".".join(str(x) for x in MIN_COMPOSE_VERSION)))

    def compose_files(self):
        """The compose files of the project, relative to project_dir (definition mode: the one
        file the module writes)."""
        files = self.p.get("files") or []
        if self.p.get("definition") is not None:
            if len(files) > 1:
                raise StackFailure("files: with definition, give at most one file name (the file to write)")
            return [files[0] if files else "compose.yaml"]
        if files:
            missing = [f for f in files if not os.path.isfile(os.path.join(self.project_dir, f))]
            if missing:
                raise StackFailure("files: %s not found in %s" % (", ".join(missing), self.project_dir))
            return list(files)
        for name in DEFAULT_FILES:
            if os.path.isfile(os.path.join(self.project_dir, name)):
                return [name]
        raise StackFailure("project_dir %s has no compose file (%s) and no definition was given"
                           % (self.project_dir, ", ".join(DEFAULT_FILES)))

    def env_files_args(self, env_path):
        """The env files Compose reads for interpolation: the managed one first, then env_files."""
        out = []
        if env_path:
            out.append(env_path)
        for f in self.p.get("env_files") or []:
            path = os.path.join(self.project_dir, f)
            if not os.path.isfile(path):
                raise StackFailure("env_files: %s not found" % f)
            out.append(path)
        return out

    def run_config(self, files, env_files):
        out = self.cli.stdout(self.base_args(files, env_files) + ["config", "--format", "json"],
                              what="docker compose config")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise StackFailure("docker compose config printed no JSON: %s" % exc) from exc

    def base_args(self, files, env_files):
        args = self.cli.base(files=files, env_file="")
        for ef in env_files:
            args += ["--env-file", ef]
        return args

    # -- the resolution cache ---------------------------------------------------------------------
    def resolution_key(self, files, definition, env_text):
        """sha256 over everything that can change what ``docker compose config`` and ``config
        --hash`` print for this project: the parameters, the compose document (as given, or the
        bytes of the files), the env files in the order Compose reads them, every file the
        document makes Compose read (env_file, label_file, config and secret sources), the value
        of every process environment variable named anywhere in those texts (interpolation,
        ``environment: [NAME]``), DOCKER_* and COMPOSE_* variables, and the identity of the
        Compose plugin binary. Raises Uncacheable when some input cannot be known that way."""
        p = self.p
        docker_config = read_docker_config(self.environ)
        plugin = compose_plugin(self.environ, docker_config)
        if plugin is None:
            raise Uncacheable("no Compose plugin found in the docker CLI plugin directories")
        h = hashlib.sha256()
        texts = []

        def feed(label, data):
            data = data if isinstance(data, bytes) else ("" if data is None else str(data)).encode("utf-8")
            h.update(("%s %d\n" % (label, len(data))).encode("utf-8"))
            h.update(data)

        feed("schema", str(CACHE_SCHEMA))
        feed("plugin", plugin)
        feed("params", json.dumps([p["project_name"], self.project_dir, list(p.get("profiles") or []), files,
                                   p.get("env_file_name"), list(p.get("env_files") or []),
                                   list(p.get("restart_on") or []), env_text is not None, definition is not None]))
        feed("docker-config", json.dumps([docker_config.get(k) for k in ("cliPluginsExtraDirs", "proxies",
                                                                         "currentContext")], sort_keys=True))
        feed("docker-env", json.dumps(sorted((k, v) for k, v in self.environ.items()
                                             if k.startswith(("DOCKER_", "COMPOSE_")))))
        if definition is not None:
            doc_text = json.dumps(definition)
            feed("definition", doc_text)
            texts.append(doc_text)
            # The staged copy Compose validates points env_file entries naming the managed env file at
            # its rendered content.
            doc = definition
            if env_text is not None:
                doc = rewrite_env_file_refs(copy.deepcopy(definition), self.env_path, MANAGED_ENV)
                rewrite_env_file_refs(doc, os.path.relpath(self.env_path, self.project_dir), MANAGED_ENV)
            docs = [doc]
        else:
            if not HAS_YAML:
                raise Uncacheable("PyYAML is missing: the compose files cannot be read")
            docs = []
            for f in files:
                data = read_bytes(os.path.join(self.project_dir, f))
                if data is None:
                    raise Uncacheable("%s is not readable" % f)
                feed("file " + f, data)
                text = data.decode("utf-8", "replace")
                texts.append(text)
                try:
                    docs.append(yaml.safe_load(text) or {})
                except yaml.YAMLError as exc:
                    raise Uncacheable("%s: %s" % (f, exc)) from exc
        env_paths = self.env_files_args(MANAGED_ENV if env_text is not None else self.existing_env())
        if not env_paths:
            env_paths = [os.path.join(self.project_dir, ".env")]  # Compose's default
        refs = []
        for doc in docs:
            refs.extend(referenced_files(doc))
        for kind, paths in (("env", env_paths), ("ref", refs)):
            for ref in paths:
                if ref == MANAGED_ENV:
                    path, data = ref, env_text.encode("utf-8")
                else:
                    path = os.path.normpath(os.path.join(self.project_dir, ref))
                    data = read_bytes(path)
                feed("%s %s" % (kind, path), "absent" if data is None else hashlib.sha256(data).hexdigest())
                if data is not None:
                    texts.append(data.decode("utf-8", "replace"))
        words = set()
        for text in texts:
            words.update(WORD.findall(text))
        feed("environ", json.dumps(sorted((w, self.environ[w]) for w in words if w in self.environ)))
        return h.hexdigest()

    def cached_resolution(self, files, definition, env_text):
        """(slim model, labels, hashes) from the cache when its key matches, else None."""
        try:
            key = self.resolution_key(files, definition, env_text)
        except Uncacheable as exc:
            self.result["resolution_note"] = "not cached: %s" % exc
            return None, None
        text = read_text(self.cache_path)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if (not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or data.get("key") != key
                or not isinstance(data.get("model"), dict) or not isinstance(data.get("hashes"), dict)):
            return key, None
        model = data["model"]
        try:
            labels = restart_on_labels(restart_on_map(model, self.p.get("restart_on"), self.project_dir))
        except ValueError as exc:
            raise StackFailure(str(exc)) from exc
        if labels != data.get("labels"):
            return key, None  # a restart_on file changed: its label, so the hashes, change
        self.result["compose_version"] = data.get("compose_version")
        return key, (model, labels, data["hashes"])

    def save_cache(self, created=None):
        """Record a fresh resolution (never in check mode; mode 0600 under the 0700 state dir).
        Hashes deferred on a first deploy are the config-hash labels Compose put on the containers
        ``created`` by that up, when every service has containers that agree; else ``config --hash``."""
        if self.check_mode or self.cache_entry is None or not os.path.isdir(self.project_dir):
            return
        if self.cache_entry["hashes"] is None:
            hashes = self.hashes_from_labels(created) if created else None
            if hashes is None:
                hashes = self.cli.config_hashes(self.deferred_model)
            self.cache_entry["hashes"] = hashes
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, 0o700)
        os.chmod(self.state_dir, 0o700)
        atomic_write(self.cache_path, json.dumps(self.cache_entry, indent=1, sort_keys=True) + "\n", 0o600)
        self.cache_entry = None

    def hashes_from_labels(self, containers):
        """{service: config-hash label} of the containers a first ``up`` created, or None unless every
        service that runs has containers and they agree (a services subset, replicas 0, recreate=never:
        None)."""
        if self.p.get("services") or self.p["recreate"] == "never":
            return None
        labels = {}
        for c in containers:
            if not c.get("oneoff"):
                labels.setdefault(c.get("service"), set()).add(c.get("config_hash") or "")
        hashes = {}
        for name, svc in (self.cache_entry["model"].get("services") or {}).items():
            found = labels.get(name) or set()
            if cp.replicas_of(svc) == 0 or len(found) != 1 or "" in found:
                return None
            hashes[name] = found.pop()
        return hashes

    # -- state=present ------------------------------------------------------------------------
    def candidate(self, defer_hashes=False):
        """Build and validate the new project in memory + a private staging dir; return a dict
        with the managed file contents, resolved model, labels and hashes. Nothing in
        project_dir is written here. A resolution cache hit skips Compose entirely."""
        p = self.p
        files = self.compose_files()
        managed = {}  # absolute path -> (content, mode)
        env = p.get("env")
        env_text = None
        if env is not None:
            bad = [k for k in env if not ENV_KEY.match(str(k))]
            if bad:
                raise StackFailure("env: invalid variable name(s): %s" % ", ".join(sorted(bad)))
            env_text = render_env(env)
            managed[self.env_path] = (env_text, 0o600)
        definition = copy.deepcopy(p.get("definition")) if p.get("definition") is not None else None
        if definition is not None and not isinstance(definition, dict):
            raise StackFailure("definition: must be a dict (a compose document)")

        key, cached = self.cached_resolution(files, definition, env_text)
        if cached is not None:
            resolved, labels, hashes = cached
            self.result["resolution"] = "cache"
        else:
            self.result["resolution"] = "compose"
            resolved, labels, hashes = self.resolve(files, definition, env_text, defer_hashes=defer_hashes)
            if key is not None:
                self.cache_entry = {"schema": CACHE_SCHEMA, "key": key, "model": slim_model(resolved),
                                    "labels": labels, "hashes": hashes,
                                    "compose_version": self.result.get("compose_version")}
                if hashes is None:
                    self.deferred_model = resolved
            hashes = hashes or {}

        override = os.path.join(self.state_dir, "restart-on.override.json")
        if definition is not None:
            add_labels(definition, labels)
            compose_path = os.path.join(self.project_dir, files[0])
            managed[compose_path] = (render_compose(definition), 0o640 if env is None else 0o600)
            run_files = [compose_path]
        else:
            run_files = [os.path.join(self.project_dir, f) for f in files]
            if labels:
                doc = add_labels({"services": {}}, labels)
                managed[override] = (json.dumps(doc, indent=2, sort_keys=True) + "\n", 0o600)
                run_files.append(override)
            elif os.path.exists(override):
                managed[override] = (None, None)  # to be removed
        run_env_files = self.env_files_args(self.env_path if env is not None else self.existing_env())
        return {"managed": managed, "resolved": resolved, "labels": labels, "hashes": hashes,
                "files": run_files, "env_files": run_env_files}

    def resolve(self, files, definition, env_text, defer_hashes=False):
        """Validate and resolve the project with ``docker compose config`` (the definition staged in
        a private temp dir) and get Compose's per-service hashes: (resolved, labels, hashes);
        hashes is None with defer_hashes."""
        p = self.p
        # `compose version` runs alongside `config`; its verdict (missing, too old) comes first.
        version = Background(self.check_version) if "compose_version" not in self.result else None
        staging = tempfile.mkdtemp(prefix="compose-stack-")
        os.chmod(staging, 0o700)
        try:
            staged_env = None
            if env_text is not None:
                staged_env = os.path.join(staging, "env")
                atomic_write(staged_env, env_text, 0o600)
            env_files = self.env_files_args(staged_env if env_text is not None else self.existing_env())

            if definition is not None:
                staged_def = copy.deepcopy(definition)
                if staged_env:
                    rewrite_env_file_refs(staged_def, self.env_path, staged_env)
                    rewrite_env_file_refs(staged_def, os.path.relpath(self.env_path, self.project_dir), staged_env)
                staged_file = os.path.join(staging, "compose.json")
                atomic_write(staged_file, json.dumps(staged_def), 0o600)
                config_files = [staged_file]
            else:
                config_files = [os.path.join(self.project_dir, f) for f in files]

            invalid = None
            try:
                resolved = self.run_config(config_files, env_files)
            except ComposeError as exc:
                invalid = exc
            if version is not None:
                version.result()
                version = None
            if invalid is not None:
                raise StackFailure("definition is invalid: %s" % (invalid.stderr or invalid.msg).strip(),
                                   invalid=True) from invalid
            try:
                labels = restart_on_labels(restart_on_map(resolved, p.get("restart_on"), self.project_dir))
            except ValueError as exc:
                raise StackFailure(str(exc)) from exc
            add_labels(resolved, labels)
            hashes = None if defer_hashes else self.cli.config_hashes(resolved)
        finally:
            if version is not None:
                version.join()  # never leave it running (an error before config was run)
            shutil.rmtree(staging, ignore_errors=True)
        return resolved, labels, hashes

    def existing_env(self):
        return self.env_path if os.path.isfile(self.env_path) else None

    def file_changes(self, managed):
        changes = []
        for path, (content, mode) in sorted(managed.items()):
            current = read_text(path)
            if content is None:
                if current is not None:
                    changes.append(path)
                continue
            if current != content or file_mode(path) != mode:
                changes.append(path)
        return changes

    def add_file_diffs(self, managed, changes):
        for path in changes:
            content = managed[path][0]
            before = read_text(path)
            if path == self.env_path:
                before_t, after_t = masked_env(before), masked_env(content, before)
            else:
                before_t, after_t = mask_text(before, self.secrets), mask_text(content, self.secrets)
            self.diffs.append({"before_header": path, "after_header": path,
                               "before": before_t or "", "after": after_t or ""})

    def write_files(self, managed, changes):
        if changes and not os.path.isdir(self.project_dir):
            os.makedirs(self.project_dir, 0o755)
        for path in changes:
            content, mode = managed[path]
            if content is None:
                os.unlink(path)
                continue
            d = os.path.dirname(path)
            if not os.path.isdir(d):
                os.makedirs(d, 0o700)
            atomic_write(path, content, mode)

    def image_state(self, desired_resolved):
        return self.cli.image_ids(list(cp.service_images(desired_resolved, self.project).values()))

    def selection(self, resolved):
        """The services option (None for all), each a service of the resolved project."""
        selected = self.p.get("services") or None
        if selected:
            unknown = sorted(set(selected) - set(resolved.get("services") or {}))
            if unknown:
                raise StackFailure("services: %s not in the project" % ", ".join(unknown))
        return selected

    def present(self):
        p = self.p
        containers = self.cli.containers()
        # Without any container of the project every service is created whatever its hash: Compose's
        # hashes are only needed for the cache, and are taken after up (see save_cache).
        cand = self.candidate(defer_hashes=not containers)
        resolved = cand["resolved"]
        selected = self.selection(resolved)

        image_ids = self.image_state(resolved)
        predictions = self.predict_pulls(resolved, selected, image_ids)
        pulled = []
        if p["pull"] == "always" and not self.check_mode:
            # Images the registry has as they are here are not pulled; the rest are (unverified ones too,
            # so the pull itself reports what is wrong).
            to_pull = [ref for ref in self.pullable(resolved, selected)
                       if (predictions.get(ref) or {}).get("verdict") != cr.CURRENT]
            for ref in to_pull:
                self.cli.run([self.cli.docker, "pull", "--quiet", ref], what="docker pull %s" % ref)
            if to_pull:
                before, image_ids = image_ids, self.image_state(resolved)
                pulled = sorted(ref for ref in image_ids if image_ids[ref] and image_ids[ref] != before.get(ref))
        elif p["pull"] == "always":
            pulled = sorted(ref for ref, r in predictions.items() if r["verdict"] in (cr.NEWER, cr.PULLABLE))
        written = self.build_always(cand, selected)
        if self.prebuilt:
            image_ids = self.image_state(resolved)
        desired = cp.desired_services(resolved, cand["hashes"], image_ids, project=self.project)
        self.desired = desired
        steps = cp.plan(desired, containers, recreate=p["recreate"], remove_orphans=p["remove_orphans"],
                        services=selected)
        if self.check_mode and predictions:
            steps = cr.apply_to_plan(steps, desired, predictions, p["recreate"])
        changes = written if written is not None else self.file_changes(cand["managed"])
        changing = cp.is_changing(steps)
        self.record_plan(cand, steps, changes)
        self.result["pulled"] = pulled
        self.result["changed"] = bool(changes or changing or pulled
                                      or any(b["changed"] for b in self.result.get("built") or []))

        if self.check_mode:
            self.result["path"] = "check"
            self.report(desired, containers, containers, image_ids)
            return
        if not changing and not changes:
            self.result["path"] = "fast-noop"
            self.save_cache()
            self.ensure_last_good(cand, containers, desired, refresh=True)
            self.report(desired, containers, containers, image_ids)
            return

        rollback_point = self.load_last_good() if p["rollback"] else None
        self.write_files(cand["managed"], changes)
        if not changing:
            # Only managed files changed in ways Compose does not act on (e.g. file mode).
            self.result["path"] = "files-only"
            self.save_cache()
            self.report(desired, containers, containers, image_ids)
            return
        self.result["path"] = "up"
        try:
            self.cli.run(self.up_args(cand, selected), what="docker compose up")
            if p["wait"]:
                self.wait(desired, selected)
        except (ComposeError, StackFailure) as exc:
            raise self.deploy_failed(exc, rollback_point, desired) from exc
        after = self.cli.containers()
        self.save_cache(after)
        self.report(desired, containers, after, image_ids)
        self.ensure_last_good(cand, after, desired)

    def predict_pulls(self, resolved, selected, image_ids):
        """{image: prediction} for the images a pull would fetch (pull=always: every pullable image;
        pull=missing: those not present), asked of the registry through the Engine API
        (GET /distribution/{name}/json, credentials from the docker CLI's config). Sets RV(pull_prediction).
        A pull that would fail (the image is not in the registry, the registry refuses the credentials)
        fails here, in check mode as in a run, before anything changes; a registry that could not be asked
        is a warning in check mode (the plan assumes the local images)."""
        mode = self.p["pull"]
        if mode not in ("always", "missing"):
            return {}
        results = {}
        docker_config = None
        found = {}  # auth key -> (credentials, source): a credential helper runs once per registry
        for image in self.pullable(resolved, selected):
            try:
                ref = cr.parse_reference(image)
            except ValueError:
                continue
            local_id = image_ids.get(image)
            local_digests = self.cli.repo_digests.get(image) or []
            if not cr.needs_query(mode, ref, local_id, local_digests):
                continue
            if docker_config is None:
                docker_config = read_docker_config(self.environ)
            key = cr.auth_key(ref)
            if key not in found:
                found[key] = cr.find_credentials(docker_config, ref, self.credential_helper)
            creds, source = found[key]
            if self.cli.engine is None:
                answer = ("unreachable", None, "no Engine API socket to ask through (DOCKER_HOST or context)")
            else:
                try:
                    answer = cr.classify(*self.cli.engine.distribution(image, cr.auth_header(creds, ref)))
                except EngineAPIError as exc:
                    answer = ("unreachable", None, str(exc))
            verdict = cr.verdict(mode, ref, local_id, local_digests, answer)
            detail = answer[2]
            if verdict == cr.NEWER and not cr.repo_digests(local_digests).get(ref.repo):
                detail = "the local image has no digest from this repository (built or loaded here)"
            results[image] = {"verdict": verdict, "registry": ref.domain, "digest": answer[1], "detail": detail,
                              "credentials": source}
        if not results:
            return results
        self.result["pull_prediction"] = results
        failing = sorted(img for img, r in results.items() if r["verdict"] in cr.FAILING)
        if failing:
            raise StackFailure("pull=%s: %s; %s" % (
                mode, "; ".join(cr.describe(img, results[img]) for img in failing),
                "the run would fail pulling it" if self.check_mode else "nothing was changed"),
                pull_prediction=results)
        if self.check_mode:
            for img in sorted(img for img, r in results.items() if r["verdict"] == cr.UNVERIFIED):
                self.warn("pull=%s: %s: the plan for it is not verified" % (mode, cr.describe(img, results[img])))
        return results

    def credential_helper(self, name, server):
        """(ok, stdout or error) of ``docker-credential-NAME get`` for SERVER (on stdin, never on argv)."""
        exe = shutil.which("docker-credential-%s" % name, path=self.environ.get("PATH"))
        if not exe:
            return False, "docker-credential-%s is not on PATH" % name
        rc, out, err = self.cli.run([exe, "get"], data=server, check=False)
        if rc != 0:
            return False, ((err or out or "").strip().splitlines() or ["rc=%s" % rc])[-1][:200]
        return True, out

    def deploy_failed(self, exc, rollback_point, desired):
        """The StackFailure of a failed deploy (build, up or wait): the images it tried and the images
        the project runs now, after a rollback when there is a point to roll back to."""
        msg = exc.msg
        extra = dict(getattr(exc, "result", {}) or {})
        extra["attempted_images"] = {name: {"image": want["image"], "image_id": want["image_id"]}
                                     for name, want in sorted((desired or {}).items()) if want.get("image")}
        if rollback_point is not None:
            self.roll_back(rollback_point, msg, extra)
        else:
            now = self.last_seen if isinstance(exc, StackFailure) and self.last_seen is not None \
                else self.cli.containers()
            self.result["services"] = self.services_report(desired, now, {})
            self.result["images"] = cp.images_in_use(desired, now)
        return StackFailure(msg, **extra)

    def build_always(self, cand, selected):
        """build=always: build the services with a build section (those among ``services``) before the
        plan, so the plan sees the image ids the build produced and recreates exactly the services whose
        image changed; a build the cache answers with the same image is no change. Managed files that
        change are written first (the build reads the new definition and context). Returns the list of
        those files, or None when it wrote nothing. Check mode does not build: it says that a build would
        run and that its outcome is unknown (RV(build_unpredicted) and a warning)."""
        if self.p["build"] != "always":
            return None
        targets = cp.build_targets(cand["resolved"], selected)
        if not targets:
            return None
        if self.check_mode:
            self.result["build_unpredicted"] = targets
            self.warn("build=always: check mode does not build %s; whether the build changes an image (and so "
                      "recreates the service) cannot be predicted" % ", ".join(targets))
            return None
        refs = cp.service_images(cand["resolved"], self.project)
        before = self.cli.image_ids([refs[t] for t in targets if refs.get(t)])
        changes = self.file_changes(cand["managed"])
        rollback_point = self.load_last_good() if self.p["rollback"] and changes else None
        self.write_files(cand["managed"], changes)
        try:
            self.cli.run(self.base_args(cand["files"], cand["env_files"]) + ["build", "--quiet"] + targets,
                         what="docker compose build")
        except ComposeError as exc:
            self.result["path"] = "build"
            raise self.deploy_failed(exc, rollback_point, None) from exc
        self.prebuilt = True
        after = self.cli.image_ids([refs[t] for t in targets if refs.get(t)])
        self.result["built"] = cp.built_report(targets, refs, before, after)
        return changes

    def record_plan(self, cand, steps, changes):
        """The plan and the managed files' changes in the result, and in the diff (secrets masked)."""
        self.result["actions"] = steps
        self.result["files_changed"] = changes
        if self.diff_mode:
            self.add_file_diffs(cand["managed"], changes)
            self.diffs.append({"before_header": "plan", "after_header": "plan (%s)" % self.p["project_name"],
                               "before": "", "after": mask_text(cp.plan_text(steps), self.secrets)})

    @staticmethod
    def pullable(resolved, selected):
        """Images Compose would pull: services with an image and no build section."""
        refs = set()
        for name, svc in (resolved.get("services") or {}).items():
            if (not selected or name in selected) and svc.get("image") and not svc.get("build"):
                refs.add(svc["image"])
        return sorted(refs)

    def up_args(self, cand, selected, pin_files=None, verb="up"):
        p = self.p
        args = self.base_args(cand["files"] + list(pin_files or []), cand["env_files"])
        # `create` takes neither --quiet-pull (added after Compose 2.20) nor --timeout (nothing is stopped).
        args += ["up", "--detach", "--quiet-pull"] if verb == "up" else [verb]
        pull = {"always": "missing", "missing": "missing", "never": "never", "policy": None}[p["pull"]]
        if pull:
            args += ["--pull", pull]
        if p["build"] == "always" and not self.prebuilt:
            args.append("--build")
        elif p["build"] == "never":
            args.append("--no-build")
        if p["recreate"] == "always":
            args.append("--force-recreate")
        elif p["recreate"] == "never":
            args.append("--no-recreate")
        if p["remove_orphans"]:
            args.append("--remove-orphans")
        if p.get("timeout") is not None and verb == "up":
            args += ["--timeout", str(p["timeout"])]
        return args + list(selected or [])

    # -- health-gated wait ----------------------------------------------------------------------
    def wait(self, desired, selected, record="waited"):
        """Poll until every target is up (a full second since its last start, by the daemon's
        clock, so a crash-looping container that is briefly "running" does not pass) and healthy
        where it has a healthcheck. Polls are Engine API requests when the API is reachable (every
        0.25 s, and at once when the daemon's event stream reports a start, a death or a health
        change of one of the project's containers), else ``docker ps`` (every second)."""
        targets = sorted(selected or desired)
        started = self.clock()
        deadline = started + self.p["wait_timeout"]
        failing = []
        watch = self.open_events()
        polls = 0
        early = False
        try:
            while True:
                containers = self.last_seen = self.cli.containers()
                polls += 1
                done, failing = cp.wait_verdict(targets, containers, desired)
                if done:
                    return
                policies = self.restart_policies(failing)
                if cp.hopeless(failing, policies):
                    early = True
                    break
                if self.clock() >= deadline:
                    break
                interval = WAIT_INTERVAL_API if self.cli.use_api else WAIT_INTERVAL_CLI
                watch.wait(max(0.0, min(interval, deadline - self.clock())))
        finally:
            self.result[record] = {"seconds": round(self.clock() - started, 3), "polls": polls,
                                   "events": "on" if watch.alive else "off", "wakeups": watch.wakeups}
            watch.close()
        details = self.failure_details(failing)
        raise StackFailure(cp.wait_failure_message(failing, details, self.p["wait_timeout"],
                                                   self.result[record]["seconds"], early),
                           failed_services=details)

    def open_events(self):
        """The project's event stream as a wake-up signal; without one (no Engine API, or it refused)
        a watch that only sleeps, so the wait polls on its interval alone."""
        if self.events is not None and self.cli.use_api:
            try:
                return self.events(self.p["project_name"])
            except EngineAPIError as exc:
                self.cli.api_failures.append(str(exc))
        return EventWatch(None, self.sleep, self.clock)

    def restart_policies(self, failing):
        names = [f["container"] for f in failing if f["container"] and f["state"] in ("exited", "dead")]
        if not names:
            return {}
        return {c["Name"].lstrip("/"): (c.get("HostConfig") or {}).get("RestartPolicy", {}).get("Name", "no")
                for c in self.cli.inspect_containers(names)}

    def failure_details(self, failing):
        names = [f["container"] for f in failing if f["container"]]
        details = {}
        inspected = {c["Name"].lstrip("/"): c for c in self.cli.inspect_containers(names)} if names else {}
        for f in failing:
            row = {"container": f["container"], "state": f["state"], "health": f["health"]}
            info = inspected.get(f["container"] or "")
            if info:
                st = info.get("State") or {}
                row["exit_code"] = st.get("ExitCode")
                log = ((st.get("Health") or {}).get("Log") or [])
                if log:
                    row["health_log"] = mask_text((log[-1].get("Output") or "").strip(), self.secrets)
                    row["health_exit_code"] = log[-1].get("ExitCode")
            if f["container"]:
                try:
                    row["log"] = [mask_text(ln, self.secrets) for ln in self.cli.logs(f["container"], LOG_TAIL)]
                except ComposeError as exc:
                    row["log_error"] = mask_text(exc.msg, self.secrets)
            details.setdefault(f["service"], []).append(row)
        return details

    # -- rollback -----------------------------------------------------------------------------
    def last_good_dir(self):
        return os.path.join(self.state_dir, "last-good")

    def ensure_last_good(self, cand, containers, desired, refresh=False):
        """Record the deployed definition, env, restart_on files and image ids as the rollback point.
        With ``refresh`` (a no-op run), only when there is no point yet or it is stale: the running image ids
        differ from the recorded ones (Watchtower, or an ``up`` run by hand, replaced them) or restart_on
        files are missing from it. That check reads the point's state.json and compares it with the
        containers already listed, so a no-op stays a no-op in cost."""
        if not self.p["rollback"]:
            return
        d = self.last_good_dir()
        if not containers or any(c.get("state") != "running" for c in containers if not c.get("oneoff")):
            return
        try:
            mounted = restart_on_map(cand["resolved"], self.p.get("restart_on"), self.project_dir)
            restart_on = sorted({f for files in mounted.values() for f in files})
        except ValueError:
            restart_on = []
        if refresh:
            reasons = cp.rollback_point_stale(self.load_last_good(), containers, restart_on)
            if not reasons:
                return
            self.result["rollback_point_refreshed"] = reasons
        images = cp.running_images(containers)
        os.makedirs(d, 0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        saved = []
        for path in cand["files"] + cand["env_files"] + restart_on:
            if os.path.isfile(path):
                name = "%02d-%s" % (len(saved), os.path.basename(path))
                shutil.copy2(path, os.path.join(d, name))
                os.chmod(os.path.join(d, name), 0o600)
                saved.append({"path": path, "copy": name, "env": path in cand["env_files"],
                              "restart_on": path in restart_on})
        atomic_write(os.path.join(d, "state.json"), json.dumps({"files": saved, "images": images}, indent=2), 0o600)
        for name in os.listdir(d):  # copies of an older point that this one no longer lists
            if name != "state.json" and name not in {f["copy"] for f in saved}:
                os.unlink(os.path.join(d, name))

    def load_last_good(self):
        path = os.path.join(self.last_good_dir(), "state.json")
        text = read_text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def roll_back(self, point, msg, extra):
        """Restore the last good files (compose, env and restart_on files) and bring them back up healthy.
        Services whose image tag now points elsewhere are pinned to the recorded image id (an override
        file), so only they and the services whose definition changed are recreated. A recorded image that
        no longer exists (Watchtower's --cleanup deleted it) cannot be pinned: that service runs from its
        tag as it is now, and RV(rollback_msg) says so."""
        d = self.last_good_dir()
        files, env_files = [], []
        for f in point["files"]:
            shutil.copy2(os.path.join(d, f["copy"]), f["path"])
            if f.get("restart_on"):
                continue
            (env_files if f.get("env") else files).append(f["path"])
        pin = os.path.join(self.state_dir, "rollback-pin.json")
        extra["rolled_back"] = True
        desired = None
        notes = []
        pins, refs = {}, {}
        try:
            resolved = self.run_config(files, env_files)
            refs = cp.service_images(resolved, self.project)
            now = self.image_state(resolved)
            recorded = point.get("images") or {}
            moved = sorted({rec for svc, rec in recorded.items() if rec and refs.get(svc)
                            and now.get(refs[svc]) != rec})
            existing = self.cli.image_ids(moved) if moved else {}
            pins, fallbacks = cp.rollback_pins(recorded, refs, now, existing)
            for fb in fallbacks:
                notes.append("the recorded image %s of %s no longer exists: it runs %s as tagged now (%s)"
                             % (fb["image_id"][:19], fb["service"], fb["image"], (fb["current"] or "absent")[:19]))
            pin_files = []
            if pins:
                atomic_write(pin, json.dumps({"services": pins}, indent=2), 0o600)
                pin_files = [pin]
                resolved = self.run_config(files + pin_files, env_files)
            elif os.path.exists(pin):
                os.unlink(pin)
            self.prebuilt = True  # the restored version runs the images it ran: nothing is built again
            self.cli.run(self.up_args({"files": files, "env_files": env_files}, None, pin_files=pin_files),
                         what="docker compose up (rollback)")
            hashes = self.cli.config_hashes(resolved)
            desired = cp.desired_services(resolved, hashes, self.image_state(resolved), project=self.project)
            if self.p["wait"]:
                self.wait(desired, None, record="rollback_waited")
            extra["rollback_msg"] = "rolled back to the last good definition%s%s" % (
                " and image ids of %s" % ", ".join(sorted(pins)) if pins else "",
                "; " + "; ".join(notes) if notes else "")
        except (ComposeError, StackFailure) as exc:
            extra["rollback_msg"] = "rollback failed too: %s%s" % (exc.msg, "; " + "; ".join(notes) if notes else "")
        self.result["rolled_back"] = True
        now_containers = self.cli.containers()
        self.result["services"] = self.services_report(desired, now_containers, {})
        images = cp.images_in_use(desired, now_containers)
        for svc in pins:  # named by the restored definition's reference, not the pin's id
            if svc in images and refs.get(svc):
                images[svc]["image"] = refs[svc]
        self.result["images"] = images

    # -- other states ---------------------------------------------------------------------------
    def stopped(self):
        containers = [c for c in self.cli.containers() if not c.get("oneoff")]
        if not containers:
            return self.created()
        selected = set(self.p.get("services") or [])
        running = [c for c in containers if c["state"] in ("running", "restarting", "paused")
                   and (not selected or c["service"] in selected)]
        self.result["actions"] = [{"service": s, "action": cp.STOP, "reasons": ["running"]}
                                  for s in sorted({c["service"] for c in running})]
        self.result["changed"] = bool(running)
        self.result["path"] = "stop" if running else "fast-noop"
        if running and not self.check_mode:
            self.cli.stop(sorted(selected) or None, self.p.get("timeout"))
        now = self.cli.containers() if running and not self.check_mode else containers
        self.result["services"] = self.services_report(None, now, {})
        self.result["images"] = cp.images_in_use(None, now)

    def created(self):
        """state=stopped on a project without containers: validate the definition, write the managed files
        and create the containers without starting them (``docker compose create``), as community.docker's
        docker_compose_v2 does. A second run finds them created (not running): no change."""
        p = self.p
        cand = self.candidate(defer_hashes=True)
        resolved = cand["resolved"]
        selected = self.selection(resolved)
        image_ids = self.image_state(resolved)
        desired = cp.desired_services(resolved, cand["hashes"] or {}, image_ids, project=self.project)
        self.desired = desired
        steps = cp.plan(desired, [], recreate=p["recreate"], services=selected)
        for step in steps:
            if step["action"] == cp.CREATE:
                step["reasons"].append("state=stopped: created, not started")
        changes = self.file_changes(cand["managed"])
        self.record_plan(cand, steps, changes)
        creating = cp.is_changing(steps)
        self.result["changed"] = bool(changes or creating)
        if self.check_mode:
            self.result["path"] = "check"
            self.report(desired, [], [], image_ids)
            return
        self.write_files(cand["managed"], changes)
        if not creating:
            self.result["path"] = "files-only" if changes else "fast-noop"
            self.save_cache()
            self.report(desired, [], [], image_ids)
            return
        self.result["path"] = "create"
        args = self.up_args(cand, selected, verb="create")
        self.cli.run(args, what="docker compose create")
        after = self.cli.containers()
        self.save_cache(after)
        self.report(desired, [], after, image_ids)

    def restarted(self):
        self.present()
        if self.check_mode:
            self.result["changed"] = True
            return
        self.cli.restart(self.p.get("services") or None, self.p.get("timeout"))
        self.result["changed"] = True
        self.result["path"] = "restart"
        if self.p["wait"]:
            self.wait(self.desired, self.p.get("services"))

    def absent(self):
        containers = self.cli.containers()
        networks = self.cli.project_networks()
        changed = bool(containers or networks)
        self.result["actions"] = [{"service": s, "action": cp.REMOVE, "reasons": ["state=absent"]}
                                  for s in sorted({c["service"] for c in containers if not c.get("oneoff")})]
        self.result["changed"] = changed
        self.result["path"] = "down" if changed else "fast-noop"
        if changed and not self.check_mode:
            self.cli.down(remove_volumes=self.p["remove_volumes"], remove_images=self.p["remove_images"],
                          timeout=self.p.get("timeout"))
        if self.p["remove_volumes"] and not self.check_mode and os.path.isdir(self.state_dir):
            shutil.rmtree(self.state_dir)

    # -- reporting ------------------------------------------------------------------------------
    def services_report(self, desired, containers, image_ids_before, before=None):
        report = {}
        for c in containers:
            if c.get("oneoff"):
                continue
            row = report.setdefault(c["service"], {"containers": [], "state": None, "health": None})
            row["containers"].append(c["name"])
            row["state"] = c["state"] if row["state"] in (None, c["state"]) else "mixed"
            row["health"] = c["health"] if row["health"] in (None, c["health"]) else "mixed"
            row["image_id"] = c.get("image_id")
        for name, want in (desired or {}).items():
            row = report.setdefault(name, {"containers": [], "state": "absent", "health": None})
            row["image"] = want["image"]
        if before is not None:
            olds = {}
            for c in before:
                if not c.get("oneoff"):
                    olds.setdefault(c["service"], c.get("image_id"))
            for name, row in report.items():
                row["image_id_before"] = olds.get(name)
                row["image_id_after"] = row.get("image_id")
        return report

    def report(self, desired, before, after, image_ids):
        self.result["images"] = cp.images_in_use(desired, after)
        services = self.services_report(desired, after, image_ids, before=before)
        for step in self.result["actions"]:
            services.setdefault(step["service"], {"containers": [], "state": "absent", "health": None})
            services[step["service"]]["action"] = step["action"]
        self.result["services"] = services

    def masked(self, value):
        """VALUE (a result, a message) with every secret of secret_values() masked."""
        return mask_value(value, self.secrets)

    def execute(self):
        """The result, masked; a StackFailure's message and result are masked too."""
        try:
            return self.masked(self._execute())
        except StackFailure as exc:
            exc.msg, exc.result = self.masked(exc.msg), self.masked(exc.result)
            raise

    def _execute(self):
        state = self.p["state"]
        if state not in ("present", "restarted"):
            # present checks the version when it runs Compose (not on a resolution cache hit, whose
            # version was checked when it was recorded, for the same plugin binary).
            self.check_version()
        if state == "present":
            self.present()
        elif state == "stopped":
            self.stopped()
        elif state == "restarted":
            self.restarted()
        else:
            self.absent()
        self.result["cli_calls"] = self.cli.calls
        self.result["api_calls"] = self.cli.api_calls
        if self.diff_mode and self.diffs:
            self.result["diff"] = self.diffs
        return self.result


def predict_without_engine(params):
    """The result of check mode on a host that has no docker CLI yet (``site.yml --check`` on a fresh host, where the
    same run installs Docker before it deploys): there is no project and nothing to ask, so every declared service
    would be created (``state: absent``: nothing to remove). The definition cannot be validated by Compose here;
    the result says so."""
    project_dir = params.get("project_dir") or ""
    services = sorted(((params.get("definition") or {}).get("services") or {}).keys())
    present = params.get("state", "present") != "absent"
    actions = [{"service": name, "action": cp.CREATE, "reasons": ["no docker CLI on the host yet"]}
               for name in services] if present else []
    msg = ("check mode: Docker is not installed on this host yet (the run installs it first); project %s would be "
           "created%s. Compose could not validate the definition." % (
               params["project_name"], " with services " + ", ".join(services) if services else "")
           if present else "check mode: no Docker on this host, so no project %s to remove" % params["project_name"])
    return {"changed": present, "project_name": params["project_name"], "project_dir": project_dir,
            "rolled_back": False, "actions": actions, "services": {}, "path": "check", "engine_missing": True,
            "msg": msg}


def run(module):
    """Entry point used by the compose_stack module."""
    if module.check_mode and not module.get_bin_path("docker"):
        module.exit_json(**predict_without_engine(module.params))

    def runner(args, data=None):
        return module.run_command(args, data=data, binary_data=False, check_rc=False)

    socket_path = engine_socket(os.environ)
    api = EngineAPI(unix_socket_transport(socket_path)) if socket_path else None
    events = (lambda project: EventWatch.open(socket_path, project)) if socket_path else None

    def warn(msg):
        module.warn(stack.masked(msg))

    stack = Stack(module.params, runner, check_mode=module.check_mode, diff_mode=module._diff,
                  warn=warn, api=api, events=events)
    try:
        result = stack.execute()
    except StackFailure as exc:
        res = dict(stack.result)
        res.update(exc.result)
        res["cli_calls"] = stack.cli.calls
        res["api_calls"] = stack.cli.api_calls
        module.fail_json(**stack.masked(dict(res, msg=exc.msg)))
    except ComposeError as exc:
        res = dict(stack.result)
        res["cli_calls"] = stack.cli.calls
        res["api_calls"] = stack.cli.api_calls
        module.fail_json(**stack.masked(dict(res, msg=exc.msg, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)))
    module.exit_json(**result)
