# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A thin client for the Docker and Compose v2 CLIs, for compose_stack.

Only JSON output formats are parsed. Every call goes through one ``runner`` callable
(``AnsibleModule.run_command`` in the module, a fake in unit tests), so the boundary with the
outside process is a single, mockable function.
"""

from __future__ import annotations

import json
import re

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


class ComposeCLI:
    """Runs ``docker compose`` for one project. ``runner(args, data=None, env=None)`` returns
    ``(rc, stdout, stderr)``."""

    def __init__(self, runner, project_name, project_dir, files=None, env_file=None, profiles=None,
                 docker="docker"):
        self.runner = runner
        self.project_name = project_name
        self.project_dir = project_dir
        self.files = list(files or [])
        self.env_file = env_file
        self.profiles = list(profiles or [])
        self.docker = docker
        self.calls = 0

    # -- plumbing ---------------------------------------------------------------------------
    def run(self, args, data=None, check=True, what=None):
        self.calls += 1
        rc, out, err = self.runner(args, data=data)
        if check and rc != 0:
            detail = error_text(err) or (err or out or "").strip()
            raise ComposeError("%s failed (rc=%s): %s" % (what or " ".join(args[:4]), rc, detail),
                               rc=rc, stdout=out, stderr=err, cmd=args)
        return rc, out, err

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
        args = [self.docker, "ps", "--all", "--no-trunc", "--filter",
                "label=com.docker.compose.project=%s" % self.project_name, "--format", PS_FORMAT]
        out = self.stdout(args, what="docker ps")
        result = []
        for raw in out.splitlines():
            if not raw.strip():
                continue
            c = json.loads(raw)
            c["state"] = state_from_status(c.get("state"), c.get("status"))
            c["health"] = health_from_status(c.get("status"))
            c["oneoff"] = (c.get("oneoff") or "").lower() == "true"
            result.append(c)
        return result

    def image_ids(self, refs):
        """Map each image reference to the local image id, or None when absent. One call."""
        refs = sorted(set(r for r in refs if r))
        if not refs:
            return {}
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
        return dict((r, found.get(r)) for r in refs)

    def inspect_containers(self, ids):
        if not ids:
            return []
        out = self.stdout([self.docker, "container", "inspect"] + list(ids), what="docker container inspect")
        return json.loads(out)

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
        args = [self.docker, "network", "ls", "--filter",
                "label=com.docker.compose.project=%s" % self.project_name, "--format", "{{.Name}}"]
        out = self.stdout(args, what="docker network ls")
        return [n for n in out.split() if n]
