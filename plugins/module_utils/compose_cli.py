# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A thin client for the Docker and Compose v2 CLIs, for compose_stack.

Only JSON output formats are parsed. Every call goes through one ``runner`` callable
(``AnsibleModule.run_command`` in the module, a fake in unit tests), so the boundary with the
outside process is a single, mockable function.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import stat
import threading
import time
from urllib.parse import quote, urlencode

MIN_COMPOSE_VERSION = (2, 20, 0)

# docker ps format that yields one JSON object per container, with the compose labels we need
# read server-side (no parsing of the comma-joined Labels string).
PS_FORMAT = (
    '{"id":{{json .ID}},"name":{{json .Names}},"state":{{json .State}},"status":{{json .Status}},'
    '"service":{{json (.Label "com.docker.compose.service")}},'
    '"config_hash":{{json (.Label "com.docker.compose.config-hash")}},'
    '"image_id":{{json (.Label "com.docker.compose.image")}},'
    '"image":{{json .Image}},'
    '"oneoff":{{json (.Label "com.docker.compose.oneoff")}},'
    '"number":{{json (.Label "com.docker.compose.container-number")}}}'
)


LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_HASH = "com.docker.compose.config-hash"
LABEL_IMAGE = "com.docker.compose.image"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_NUMBER = "com.docker.compose.container-number"
DEFAULT_SOCKET = "/var/run/docker.sock"

PROGRESS = re.compile(
    r"^\s*(Network|Container|Volume|Image|Service)\s+\S+\s+(Creating|Created|Starting|Started|Stopping|Stopped|"
    r"Recreate|Recreated|Running|Waiting|Healthy|Removing|Removed|Pulling|Pulled|Skipped|Building|Built|Exited|"
    r"Killing|Killed)\b.*$")


def error_text(text):
    """Compose's stderr without its progress lines: what actually went wrong."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip() and not PROGRESS.match(ln)]
    seen = []
    for ln in lines:
        if ln.strip() not in seen:
            seen.append(ln.strip())
    return "\n".join(seen)


class ComposeError(Exception):
    """A docker/compose command failed; ``msg`` says which and why."""

    def __init__(self, msg, rc=None, stdout="", stderr="", cmd=None):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.cmd = cmd


def parse_version(text):
    """'v2.40.3' / '2.40.3-desktop.1' -> (2, 40, 3); None when unparsable."""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else None


def health_from_status(status):
    """docker ps Status text -> healthy / unhealthy / starting / None (no healthcheck)."""
    status = status or ""
    if "(healthy)" in status:
        return "healthy"
    if "(unhealthy)" in status:
        return "unhealthy"
    if "(health: starting)" in status:
        return "starting"
    return None


def state_from_status(state, status):
    """Normalise the container state; old clients have no .State, only Status text."""
    if state:
        return state
    status = (status or "").lower()
    for word, value in (("up", "running"), ("exited", "exited"), ("restarting", "restarting"),
                        ("created", "created"), ("paused", "paused"), ("dead", "dead"),
                        ("removing", "removing")):
        if status.startswith(word):
            return value
    return "unknown"


def normalise_image_ref(ref):
    """Docker's reference normalisation, enough to match RepoTags: implicit :latest and the
    docker.io/library/ prefix removed."""
    if not ref or ref.startswith("sha256:"):
        return ref
    name, digest = (ref.split("@", 1) + [None])[:2]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name + ("@" + digest if digest else "")


# ---------------------------------------------------------------------------------------------
# the Docker Engine API over the local unix socket (queries, and the few writes a module makes through it)
# ---------------------------------------------------------------------------------------------
def daemon_message(body):
    """The daemon's error text: the "message" of its JSON error body, else the body's start as text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return message if isinstance(message, str) and message else text.strip()[:200]


class EngineAPIError(Exception):
    """The Engine API could not answer (no socket, refused, unexpected reply): use the CLI."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_socket_transport(socket_path, timeout=30):
    """``request(method, path, headers=None, body=None) -> (status, body bytes)`` over one kept-alive connection to the
    daemon's unix socket; raises EngineAPIError when the daemon cannot be reached."""
    state = {"conn": None}

    def request(method, path, headers=None, body=None):
        for attempt in (1, 2):
            conn = state["conn"]
            if conn is None:
                conn = state["conn"] = _UnixHTTPConnection(socket_path, timeout)
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}, Host="docker"))
                resp = conn.getresponse()
                body = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    state["conn"] = None
                return resp.status, body
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                state["conn"] = None
                # A kept-alive connection the daemon closed is retried once on a new one; a request the daemon
                # did not answer in time (a registry query it is still waiting on) is not sent again.
                if attempt == 2 or isinstance(exc, socket.timeout):
                    raise EngineAPIError("%s %s over %s: %s" % (method, path, socket_path, exc)) from exc
        raise EngineAPIError("unreachable")  # pragma: no cover

    return request


class EventWatch:
    """A wake-up signal for the health-gated wait: the daemon's event stream (GET /events) for one
    project's container starts, deaths and health changes, read from a raw unix socket with
    ``select``. ``wait(seconds)`` returns True as soon as an event arrives (then the caller polls
    the containers again) and False after ``seconds`` without one. The events are not parsed:
    the poll that follows is the verdict. When the stream ends or fails, ``alive`` turns False and
    ``wait`` just sleeps, so the wait falls back to plain polling; ``EventWatch(None, sleep, clock)``
    is that fallback from the start (no Engine API, or the daemon refused the stream)."""

    EVENTS = ("start", "die", "health_status")

    def __init__(self, sock, sleep, clock):
        self.sock = sock
        self.sleep = sleep
        self.clock = clock
        self.alive = sock is not None
        self.wakeups = 0

    @classmethod
    def open(cls, socket_path, project, timeout=5, sleep=None, clock=None):
        """Connect, ask for the project's events and read the response head; EngineAPIError when
        the daemon does not answer 200."""
        filters = json.dumps({"type": ["container"], "label": ["%s=%s" % (LABEL_PROJECT, project)],
                              "event": list(cls.EVENTS)})
        request = ("GET /events?%s HTTP/1.1\r\nHost: docker\r\n\r\n" % urlencode({"filters": filters})).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise EngineAPIError("GET /events: the daemon closed the stream")
                head += chunk
                if len(head) > 65536:
                    raise EngineAPIError("GET /events: no end of the response head")
            status = head.split(b"\r\n", 1)[0].split()
            if len(status) < 2 or status[1] != b"200":
                raise EngineAPIError("GET /events: %s" % head.split(b"\r\n", 1)[0].decode("latin-1"))
            sock.setblocking(False)
        except EngineAPIError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise EngineAPIError("GET /events over %s: %s" % (socket_path, exc)) from exc
        # Bytes read past the head (an event already) are dropped: the first poll sees their effect.
        return cls(sock, sleep or time.sleep, clock or time.monotonic)

    def wait(self, seconds):
        if not self.alive:
            self.sleep(seconds)
            return False
        start = self.clock()
        try:
            ready = select.select([self.sock], [], [], seconds)[0]
            if not ready:
                return False
            data = self.sock.recv(65536)
        except (OSError, ValueError):
            data = b""
        if not data:  # the daemon ended the stream (restart) or the socket failed
            self.close()
            self.sleep(max(0.0, seconds - (self.clock() - start)))
            return False
        self.wakeups += 1
        return True

    def close(self):
        if self.alive:
            self.alive = False
            self.sock.close()


def docker_config_dir(environ):
    return environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def read_docker_config(environ):
    """The docker CLI's config.json as a dict ({} when absent or unreadable)."""
    try:
        with open(os.path.join(docker_config_dir(environ), "config.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def engine_socket(environ, docker_config=None):
    """The unix socket the docker CLI would talk to, or None when the CLI would go elsewhere
    (DOCKER_HOST tcp:// or ssh://, a docker context other than default) or there is no socket:
    then every query goes through the CLI, which knows how to reach that daemon."""
    host = environ.get("DOCKER_HOST") or ""
    context = environ.get("DOCKER_CONTEXT") or ""
    if not host:
        if context and context != "default":
            return None
        if docker_config is None:
            docker_config = read_docker_config(environ)
        current = docker_config.get("currentContext") or ""
        if not context and current and current != "default":
            return None
        path = DEFAULT_SOCKET
    elif host.startswith("unix://"):
        path = host[len("unix://"):]
    else:
        return None
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    return path


class EngineAPI:
    """Read-only Engine API queries. ``transport(method, path) -> (status, body)``, the one
    boundary with the daemon (a unix socket in the module, a fake in unit tests)."""

    def __init__(self, transport):
        self.transport = transport
        self.calls = 0

    def _call(self, method, path, doc, allow):
        """One request (DOC, when given, as its JSON body) -> (status, body). Statuses outside ``allow`` raise
        EngineAPIError with the daemon's message."""
        self.calls += 1
        if doc is None:
            status, body = self.transport(method, path)
        else:
            status, body = self.transport(method, path, headers={"Content-Type": "application/json"},
                                          body=json.dumps(doc).encode("utf-8"))
        if status not in allow:
            raise EngineAPIError("%s %s: HTTP %s: %s" % (method, path, status, daemon_message(body)))
        return status, body

    def get(self, path, params=None, allow=(200,)):
        """GET path -> (status, decoded JSON). Statuses outside ``allow`` raise EngineAPIError."""
        if params:
            path += "?" + urlencode(params)
        status, body = self._call("GET", path, None, allow)
        if status != 200:
            return status, None
        try:
            return status, json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        except ValueError as exc:
            raise EngineAPIError("GET %s: not JSON: %s" % (path, exc)) from exc

    def send(self, method, path, doc=None, allow=(200, 201, 204)):
        """METHOD path with DOC as its JSON body -> (status, decoded JSON or None; an empty or non-JSON answer is
        None). Statuses outside ``allow`` raise EngineAPIError with the daemon's message."""
        status, body = self._call(method, path, doc, allow)
        try:
            return status, json.loads(body.decode("utf-8") if isinstance(body, bytes) else body) if body else None
        except ValueError:
            return status, None

    def containers(self, project):
        filters = json.dumps({"label": ["%s=%s" % (LABEL_PROJECT, project)]})
        return self.get("/containers/json", {"all": "1", "filters": filters})[1] or []

    def image_id(self, ref):
        img = self.image(ref)
        return img.get("Id") if img else None

    def image(self, ref):
        """The image's inspect dict (Id, RepoTags, RepoDigests, ...), or None when absent."""
        status, img = self.get("/images/%s/json" % quote(ref, safe="/:@"), allow=(200, 404))
        return img if status == 200 else None

    def distribution(self, ref, registry_auth=None):
        """(status, body bytes) of GET /distribution/{ref}/json: the daemon asks the registry for the
        manifest digest of ``ref`` without pulling. ``registry_auth`` is the X-Registry-Auth value. Every
        status is returned (compose_registry.classify() reads them); EngineAPIError when the daemon does
        not answer at all."""
        self.calls += 1
        path = "/distribution/%s/json" % quote(ref, safe="/:@")
        if registry_auth:
            return self.transport("GET", path, headers={"X-Registry-Auth": registry_auth})
        return self.transport("GET", path)

    def inspect_container(self, ident):
        status, info = self.get("/containers/%s/json" % quote(ident, safe=""), allow=(200, 404))
        return info if status == 200 else None

    def networks(self, project):
        filters = json.dumps({"label": ["%s=%s" % (LABEL_PROJECT, project)]})
        return self.get("/networks", {"filters": filters})[1] or []


def ps_row(c):
    """An Engine API container (GET /containers/json) as the dict ``docker ps --format PS_FORMAT
    --no-trunc`` prints for it, before normalisation."""
    labels = c.get("Labels") or {}
    names = [n[1:] if n.startswith("/") else n for n in c.get("Names") or []]
    return {"id": c.get("Id"), "name": ",".join(names), "state": c.get("State") or "", "status": c.get("Status") or "",
            "service": labels.get(LABEL_SERVICE, ""), "config_hash": labels.get(LABEL_HASH, ""),
            "image_id": labels.get(LABEL_IMAGE, ""), "image": c.get("Image") or "<no image>",
            "oneoff": labels.get(LABEL_ONEOFF, ""), "number": labels.get(LABEL_NUMBER, "")}


def merge_log_streams(out, err, tail):
    """``docker logs --timestamps`` prints a container's stdout and stderr on its own two streams, each
    line prefixed with its RFC 3339 timestamp: the last ``tail`` lines of both, in time order, without
    the timestamps."""
    lines = []
    for order, text in enumerate((out, err)):
        for n, line in enumerate((text or "").splitlines()):
            stamp, sep, rest = line.partition(" ")
            if not sep or not stamp[:4].isdigit():
                stamp, rest = "", line
            lines.append((stamp, order, n, rest.rstrip()))
    lines.sort()
    return [rest for _s, _o, _n, rest in lines][-tail:] if tail else []


def normalise_ps_row(c):
    c["state"] = state_from_status(c.get("state"), c.get("status"))
    c["health"] = health_from_status(c.get("status"))
    c["oneoff"] = (c.get("oneoff") or "").lower() == "true"
    return c


class ComposeCLI:
    """Runs ``docker compose`` for one project. ``runner(args, data=None, env=None)`` returns
    ``(rc, stdout, stderr)``. With ``api`` (an EngineAPI), container, image and network queries go
    to the Engine API instead of a CLI process; when the API fails, they fall back to the CLI for
    the rest of the run."""

    def __init__(self, runner, project_name, project_dir, files=None, env_file=None, profiles=None,
                 docker="docker", api=None):
        self.runner = runner
        self.engine = api
        self.use_api = api is not None
        self.api_failures = []
        self.project_name = project_name
        self.project_dir = project_dir
        self.files = list(files or [])
        self.env_file = env_file
        self.profiles = list(profiles or [])
        self.docker = docker
        self.calls = 0
        self.repo_digests = {}  # image reference -> RepoDigests of the local image, as image_ids() last saw it
        self.lock = threading.Lock()  # compose_stack runs `compose version` in a thread

    # -- plumbing ---------------------------------------------------------------------------
    def run(self, args, data=None, check=True, what=None):
        with self.lock:
            self.calls += 1
        rc, out, err = self.runner(args, data=data)
        if check and rc != 0:
            detail = error_text(err) or (err or out or "").strip()
            raise ComposeError("%s failed (rc=%s): %s" % (what or " ".join(args[:4]), rc, detail),
                               rc=rc, stdout=out, stderr=err, cmd=args)
        return rc, out, err

    @property
    def api_calls(self):
        """Engine API requests made (failed ones included)."""
        return self.engine.calls if self.engine is not None else 0

    def via_api(self, query):
        """``query(api)``, or None when there is no API or it failed (then the CLI is used from
        here on)."""
        if not self.use_api:
            return None
        try:
            return query(self.engine)
        except EngineAPIError as exc:
            self.api_failures.append(str(exc))
            self.use_api = False
            return None

    def stdout(self, args, data=None, check=True, what=None):
        """Run and return only stdout."""
        return self.run(args, data=data, check=check, what=what)[1]

    def base(self, files=None, env_file=None):
        args = [self.docker, "compose", "--project-name", self.project_name,
                "--project-directory", self.project_dir]
        for f in self.files if files is None else files:
            args += ["--file", f]
        env_file = self.env_file if env_file is None else env_file
        if env_file:
            args += ["--env-file", env_file]
        for p in self.profiles:
            args += ["--profile", p]
        return args

    # -- queries ----------------------------------------------------------------------------
    def version(self):
        rc, out, err = self.run([self.docker, "compose", "version", "--format", "json"], check=False)
        if rc != 0:
            raise ComposeError("docker compose is not available (rc=%s): %s" % (rc, (err or out).strip()), rc=rc)
        try:
            text = json.loads(out).get("version", "")
        except ValueError:
            text = out
        parsed = parse_version(text)
        if parsed is None:
            raise ComposeError("cannot read the Compose version from %r" % out.strip())
        return text.strip(), parsed

    def config_hashes(self, resolved):
        """Per-service config hashes as Compose computes them for ``up``. The resolved model is
        fed back through ``config --hash`` on stdin, so env_file contents count, as they do in
        ``up`` (plain ``config --hash`` ignores them before Compose 5.5)."""
        if not resolved.get("services"):
            return {}
        args = [self.docker, "compose", "--project-name", self.project_name,
                "--project-directory", self.project_dir, "--file", "-"]
        for p in self.profiles:
            args += ["--profile", p]
        out = self.stdout(args + ["config", "--hash", "*"], data=json.dumps(resolved),
                          what="docker compose config --hash")
        hashes = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                hashes[parts[0]] = parts[1]
        return hashes

    def containers(self):
        """Every container of the project (running or not), as dicts."""
        rows = self.via_api(lambda api: [ps_row(c) for c in api.containers(self.project_name)])
        if rows is not None:
            return [normalise_ps_row(c) for c in rows]
        args = [self.docker, "ps", "--all", "--no-trunc", "--filter",
                "label=com.docker.compose.project=%s" % self.project_name, "--format", PS_FORMAT]
        out = self.stdout(args, what="docker ps")
        result = []
        for raw in out.splitlines():
            if not raw.strip():
                continue
            result.append(normalise_ps_row(json.loads(raw)))
        return result

    def image_ids(self, refs):
        """Map each image reference to the local image id, or None when absent. One call."""
        refs = sorted(set(r for r in refs if r))
        if not refs:
            return {}
        images = self.via_api(lambda api: dict((r, api.image(r)) for r in refs))
        if images is not None:
            for r, img in images.items():
                self.repo_digests[r] = list((img or {}).get("RepoDigests") or [])
            return dict((r, (img or {}).get("Id")) for r, img in images.items())
        # Exit 1 when some are missing; the found ones are still printed.
        out = self.stdout([self.docker, "image", "inspect"] + refs, check=False)
        found = {}
        try:
            images = json.loads(out) if out.strip() else []
        except ValueError:
            images = []
        for img in images:
            keys = set(img.get("RepoTags") or []) | set(img.get("RepoDigests") or [])
            keys.add(img.get("Id"))
            for ref in refs:
                if normalise_image_ref(ref) in {normalise_image_ref(k) for k in keys} or ref == img.get("Id"):
                    found[ref] = img.get("Id")
                    self.repo_digests[ref] = list(img.get("RepoDigests") or [])
        for ref in refs:
            if ref not in found:
                self.repo_digests[ref] = []
        return dict((r, found.get(r)) for r in refs)

    def inspect_containers(self, ids):
        if not ids:
            return []
        found = self.via_api(lambda api: [api.inspect_container(i) for i in ids])
        if found is not None:
            return [c for c in found if c]
        out = self.stdout([self.docker, "container", "inspect"] + list(ids), what="docker container inspect")
        return json.loads(out)

    def logs(self, container, tail):
        """The last ``tail`` lines a container logged, stdout and stderr in the order they were written
        (``docker logs --timestamps``; the timestamps are removed)."""
        _rc, out, err = self.run([self.docker, "logs", "--timestamps", "--tail", str(tail), container],
                                 what="docker logs %s" % container)
        return merge_log_streams(out, err, tail)

    # -- actions ----------------------------------------------------------------------------
    def by_name(self):
        """Commands that work from the project name alone (no files needed)."""
        return [self.docker, "compose", "--project-name", self.project_name]

    def stop(self, services=None, timeout=None):
        args = self.by_name() + ["stop"]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        return self.run(args + list(services or []), what="docker compose stop")

    def restart(self, services=None, timeout=None):
        args = self.by_name() + ["restart"]
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        return self.run(args + list(services or []), what="docker compose restart")

    def down(self, remove_volumes=False, remove_images=None, remove_orphans=True, timeout=None):
        # down works from the project name alone, so a project whose files are gone still goes.
        args = self.by_name() + ["down"]
        if remove_volumes:
            args.append("--volumes")
        if remove_images:
            args += ["--rmi", remove_images]
        if remove_orphans:
            args.append("--remove-orphans")
        if timeout is not None:
            args += ["--timeout", str(timeout)]
        return self.run(args, what="docker compose down")

    def project_networks(self):
        nets = self.via_api(lambda api: [n.get("Name") for n in api.networks(self.project_name)])
        if nets is not None:
            return sorted(n for n in nets if n)
        args = [self.docker, "network", "ls", "--filter",
                "label=com.docker.compose.project=%s" % self.project_name, "--format", "{{.Name}}"]
        out = self.stdout(args, what="docker network ls")
        return [n for n in out.split() if n]
