"""A fake of the docker / docker compose CLI at the process boundary, for compose_stack unit tests.

It keeps a tiny model (images, containers) and answers the exact commands ComposeCLI issues,
in their JSON output formats. Hashes are a digest of the service's resolved config, as Compose's
are, so a changed definition changes the hash of exactly the services it touches.

With ``registry`` set (image reference -> {"digest", "id"}), it also models one registry: the Engine's
``GET /distribution/{name}/json``, ``docker pull`` and the pull ``up`` does for an absent image answer from
it with the statuses and messages Engine 20.10 gives against Debian's docker-registry 2.8 (measured):
404 ``manifest unknown``; 500 ``no basic auth credentials`` when ``registry_auth`` (user, password) is set
and no X-Registry-Auth header came; 401 ``unauthorized: authentication required`` for wrong credentials;
500 ``dial tcp ... connection refused`` with ``registry_down``. Known differences from the real thing: the
reference is matched as written (no normalisation of docker.io names), the registry host in messages is the
reference's first component, and a pull's credentials are not checked (the docker CLI sends its own).

Builds are modelled as the real builder behaves with its cache: the image id is a digest of the
build context's files, so a rebuild of an unchanged context yields the same id and an edited file a
new one; the image is tagged ``<project>-<service>`` unless the service names an image. ``create``
makes containers in state "created". Known differences from the real CLI: no dependency ordering, one
container per service, ``up`` of an image id that is not present fails (the real Compose tries to pull
it and fails the same way), container logs are what a test puts in ``logs``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

PS_KEYS = ("id", "name", "state", "status", "service", "config_hash", "image_id", "image", "oneoff", "number")


def svc_hash(svc: dict) -> str:
    return hashlib.sha256(json.dumps(svc, sort_keys=True).encode()).hexdigest()


class FakeDocker:
    def __init__(self, version: str = "v2.40.3", environ: dict | None = None):
        self.version = version
        self.environ = {} if environ is None else environ  # the process environment Compose sees
        self.api_requests: list[str] = []
        self.api_down = False  # the Engine API socket refuses connections
        self.images: dict[str, str] = {}
        self.containers: list[dict] = []
        self.calls: list[list[str]] = []
        self.unhealthy: set[str] = set()  # services whose containers never become healthy
        self.bad_images: set[str] = set()  # image ids whose containers never become healthy
        self.known_ids: set[str] = set()  # every image id seen (a retagged image stays, untagged)
        self.removed: set[str] = set()  # image ids deleted (docker image rm, Watchtower's --cleanup)
        self.exits: dict[str, int] = {}  # service -> exit code: its containers exit right after the start
        self.logs: dict[str, tuple[str, str]] = {}  # container name -> (stdout, stderr) of docker logs --timestamps
        self.fail_up = False
        self.registry: dict[str, dict] | None = None  # image reference -> {"digest", "id"}; None: no registry
        self.registry_hostname = "127.0.0.1:5000"  # the one registry the fake serves; others do not resolve
        self.registry_down = False
        self.registry_auth: tuple[str, str] | None = None  # (username, password) the registry requires
        self.repo_digests: dict[str, list[str]] = {}  # local image reference -> RepoDigests
        self.distribution_auth: list[dict | None] = []  # decoded X-Registry-Auth of each distribution request
        self.fail_build = False
        self.builds: list[list[str]] = []  # services of each `compose build`

    # helpers -------------------------------------------------------------------------------
    @staticmethod
    def opt_values(args, flag):
        return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]

    def load_files(self, args):
        doc = {"services": {}}
        for f in self.opt_values(args, "--file"):
            with open(f) as fh:
                part = yaml.safe_load(fh) or {}
            for name, svc in (part.get("services") or {}).items():
                doc["services"].setdefault(name, {}).update(svc)
        env = {}
        for f in self.opt_values(args, "--env-file"):
            with open(f) as fh:
                for line in fh:
                    if "=" in line and not line.startswith("#"):
                        k, v = line.rstrip("\n").split("=", 1)
                        env[k] = self.unquote(v)
        return doc, env

    @staticmethod
    def unquote(v):
        """Compose's dotenv rules for the quoting compose_stack writes."""
        if v.startswith("'") and v.endswith("'"):
            return v[1:-1]
        if v.startswith('"') and v.endswith('"'):
            out, i, body = [], 0, v[1:-1]
            while i < len(body):
                if body[i] == "\\" and i + 1 < len(body):
                    out.append({"n": "\n"}.get(body[i + 1], body[i + 1]))
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            return "".join(out)
        return v

    def resolve(self, doc, env, project_dir="."):
        """Interpolation (the process environment wins over env files, as in Compose) and env_file
        contents merged into each service's environment."""
        env = {**env, **self.environ}
        text = json.dumps(doc)
        for k, v in env.items():
            text = text.replace("${%s}" % k, json.dumps(v)[1:-1])
        resolved = json.loads(text)
        for svc in resolved["services"].values():
            refs = svc.pop("env_file", None)
            for ref in refs if isinstance(refs, list) else [refs] if refs else []:
                path = os.path.join(project_dir, ref["path"] if isinstance(ref, dict) else ref)
                with open(path) as fh:
                    for line in fh:
                        if "=" in line and not line.startswith("#"):
                            k, v = line.rstrip("\n").split("=", 1)
                            svc.setdefault("environment", {})[k] = self.unquote(v)
        return resolved

    def started(self, name, svc, image_id):
        """(state, status) of a container just started."""
        if name in self.exits:
            return "exited", "Exited (%d) Less than a second ago" % self.exits[name]
        health = None
        if svc.get("healthcheck"):
            health = "unhealthy" if name in self.unhealthy or image_id in self.bad_images else "healthy"
        return "running", "Up 1 second" + (" (%s)" % health if health else "")

    def image_id(self, ref):
        """The local id of a reference or of an image id (a retagged image is still there, untagged,
        until it is removed)."""
        self.known_ids |= set(self.images.values())
        if ref in self.images:
            return self.images[ref]
        if ref and ref.startswith("sha256:") and ref in self.known_ids - self.removed:
            return ref
        return None

    def build(self, name, svc, project_dir):
        """Tag <project>-<service> (or the service's image) with a digest of its context's files."""
        build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        context = os.path.join(project_dir, build.get("context", "."))
        h = hashlib.sha256()
        for root, _dirs, files in sorted(os.walk(context)):
            for f in sorted(files):
                with open(os.path.join(root, f), "rb") as fh:
                    h.update(f.encode() + b"\0" + fh.read())
        self.images[svc.get("image") or "p-%s" % name] = "sha256:built-" + h.hexdigest()[:12]

    def project_rows(self):
        return [json.dumps({k: c.get(k) for k in PS_KEYS}) for c in self.containers]

    # the runner --------------------------------------------------------------------------------
    def __call__(self, args, data=None):
        self.calls.append(list(args))
        self.known_ids |= set(self.images.values())
        if args[:2] != ["docker", "compose"]:
            return self.plain_docker(args)
        sub = next((a for a in args[2:] if a in ("version", "config", "up", "create", "build", "down", "stop",
                                                 "restart")), None)
        if sub == "version":
            return 0, json.dumps({"version": self.version}), ""
        if sub == "config" and "--hash" in args:
            doc = json.loads(data)
            return 0, "".join("%s %s\n" % (n, svc_hash(s)) for n, s in sorted(doc["services"].items())), ""
        if sub == "config":
            doc, env = self.load_files(args)
            if "x-invalid" in doc or any("x-invalid" in s for s in doc["services"].values()):
                return 15, "", "validating compose.yaml: services.web additional property x-invalid is not allowed"
            return 0, json.dumps(self.resolve(doc, env, self.opt_values(args, "--project-directory")[0])), ""
        if sub == "build":
            if self.fail_build:
                return 17, "", ('failed to solve: process "/bin/sh -c make" did not complete successfully: '
                                'exit code: 2')
            doc, env = self.load_files(args)
            resolved = self.resolve(doc, env, self.opt_values(args, "--project-directory")[0])
            names = [a for a in args[args.index("build") + 1:] if not a.startswith("-")]
            names = names or sorted(n for n, s in resolved["services"].items() if s.get("build"))
            self.builds.append(names)
            for name in names:
                self.build(name, resolved["services"][name], self.opt_values(args, "--project-directory")[0])
            return 0, "", ""
        if sub in ("up", "create"):
            if self.fail_up:
                return 1, "", "Error response from daemon: driver failed programming external connectivity"
            doc, env = self.load_files(args)
            project_dir = self.opt_values(args, "--project-directory")[0]
            resolved = self.resolve(doc, env, project_dir)
            self.containers = [c for c in self.containers if c["service"] in resolved["services"]
                               or "--remove-orphans" not in args]
            for name, svc in resolved["services"].items():
                h = svc_hash(svc)
                ref = svc.get("image") or "p-%s" % name
                if svc.get("build") and ("--build" in args or ref not in self.images):
                    self.build(name, svc, project_dir)
                image_id = self.image_id(ref)
                if image_id is None and ref.startswith("sha256:"):
                    return 1, "", "Error response from daemon: pull access denied for sha256, repository does not exist"
                if image_id is None and self.registry is not None:
                    rc, _out, err = self.pull(ref)
                    if rc:
                        return rc, "", err
                    image_id = self.images[ref]
                if image_id is None:
                    image_id = self.images[ref] = "sha256:pulled-" + ref
                existing = [c for c in self.containers if c["service"] == name]
                if existing and existing[0]["config_hash"] == h and existing[0]["image_id"] == image_id:
                    if sub == "up" and existing[0]["state"] != "running":
                        existing[0]["state"], existing[0]["status"] = self.started(name, svc, image_id)
                    continue
                self.containers = [c for c in self.containers if c["service"] != name]
                state, status = self.started(name, svc, image_id) if sub == "up" else ("created", "Created")
                self.containers.append({"id": name, "name": "p-%s-1" % name, "state": state, "status": status,
                                        "service": name, "config_hash": h, "image_id": image_id,
                                        "image": ref, "oneoff": "False", "number": "1"})
            return 0, "", ""
        if sub == "stop":
            for c in self.containers:
                c["state"], c["status"] = "exited", "Exited (0) 1 second ago"
            return 0, "", ""
        if sub == "down":
            self.containers = []
            return 0, "", ""
        if sub == "restart":
            return 0, "", ""
        return 99, "", "fake: unsupported %s" % args

    def plain_docker(self, args):
        if args[1] == "ps":
            return 0, "\n".join(self.project_rows()) + "\n", ""
        if args[1:3] == ["image", "inspect"]:
            found = [{"Id": self.image_id(r), "RepoTags": [r] if r in self.images else [],
                      "RepoDigests": self.repo_digests.get(r, [])} for r in args[3:] if self.image_id(r)]
            rc = 0 if len(found) == len(args[3:]) else 1
            return rc, json.dumps(found), "" if rc == 0 else "Error: No such image"
        if args[1:3] == ["container", "inspect"]:
            out = []
            for name in args[3:]:
                service = next((c["service"] for c in self.containers if c["name"] == name), None)
                out.append({"Name": "/" + name, "State": {"ExitCode": self.exits.get(service, 0), "Health": {"Log": [
                    {"ExitCode": 1, "Output": "curl: (22) The requested URL returned error: 500"}]}},
                    "HostConfig": {"RestartPolicy": {"Name": "no"}}})
            return 0, json.dumps(out), ""
        if args[1] == "logs":
            out, err = self.logs.get(args[-1], ("", ""))
            tail = int(args[args.index("--tail") + 1])
            return 0, "".join(out.splitlines(True)[-tail:]), "".join(err.splitlines(True)[-tail:])
        if args[1:3] == ["network", "ls"]:
            return 0, "p_default\n" if self.containers else "", ""
        if args[1] == "pull":
            return self.pull(args[-1]) if self.registry is not None else (0, "", "")
        return 99, "", "fake: unsupported %s" % args

    # the registry -------------------------------------------------------------------------------
    @staticmethod
    def registry_host(ref):
        return ref.split("/", 1)[0]

    def registry_answer(self, ref, auth):
        """(status, message or None, entry) of the registry for REF with AUTH (decoded header or None)."""
        host = self.registry_host(ref)
        name, _sep, tag = ref.rpartition(":")
        if host != self.registry_hostname:  # any other registry: not reachable from here (no DNS)
            return 500, 'Get "https://%s/v2/": dial tcp: lookup %s: no such host' % (
                "registry-1.docker.io", "registry-1.docker.io"), None
        if self.registry_down:
            return 500, 'Get "http://%s/v2/": dial tcp %s: connect: connection refused' % (host, host), None
        if self.registry_auth is not None:
            if auth is None:
                return 500, 'Head "http://%s/v2/%s/manifests/%s": no basic auth credentials' % (
                    host, name.split("/", 1)[1], tag), None
            if (auth.get("username"), auth.get("password")) != self.registry_auth:
                return 401, "unauthorized: authentication required", None
        entry = self.registry.get(ref)
        if entry is None:
            return 404, "manifest unknown: manifest unknown", None
        return 200, None, entry

    def pull(self, ref):
        """docker pull REF (the CLI's credentials are taken as right)."""
        auth = {"username": self.registry_auth[0], "password": self.registry_auth[1]} if self.registry_auth else None
        status, msg, entry = self.registry_answer(ref, auth)
        if status == 404:
            return 1, "", "Error response from daemon: manifest for %s not found: %s" % (ref, msg)
        if status != 200:
            return 1, "", "Error response from daemon: %s" % msg
        self.images[ref] = entry["id"]
        self.repo_digests[ref] = ["%s@%s" % (ref.rpartition(":")[0], entry["digest"])]
        return 0, "", ""

    def distribution(self, ref, headers):
        raw = (headers or {}).get("X-Registry-Auth")
        auth = json.loads(base64.urlsafe_b64decode(raw.encode())) if raw else None
        self.distribution_auth.append(auth)
        status, msg, entry = self.registry_answer(ref, auth)
        if status != 200:
            return status, (json.dumps({"message": msg}) + "\n").encode()
        return 200, json.dumps({"Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                               "digest": entry["digest"], "size": 529},
                                "Platforms": [{"architecture": "amd64", "os": "linux"}]}).encode()

    # the Engine API (GET only, the requests compose_stack makes) --------------------------------
    def api(self, method, path, headers=None):
        """``transport(method, path, headers=None) -> (status, body)`` for compose_cli.EngineAPI."""
        from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import EngineAPIError

        if self.api_down:
            raise EngineAPIError("connection refused")
        self.api_requests.append(path)
        url = urlsplit(path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if method != "GET":
            return 405, b"{}"
        if parts == ["containers", "json"]:
            assert query.get("all") == ["1"]
            assert json.loads(query["filters"][0]) == {"label": ["com.docker.compose.project=p"]}
            return 200, json.dumps([self.api_container(c) for c in self.containers]).encode()
        if parts[0] == "distribution" and parts[-1] == "json":
            if self.registry is None:  # no registry reachable at all (this machine's normal state)
                self.registry = {}
                try:
                    return self.distribution("docker.io/" + "/".join(parts[1:-1]), headers)
                finally:
                    self.registry = None
            return self.distribution("/".join(parts[1:-1]), headers)
        if parts[0] == "images" and parts[-1] == "json":
            ref = "/".join(parts[1:-1])
            if self.image_id(ref):
                return 200, json.dumps({"Id": self.image_id(ref), "RepoTags": [ref],
                                        "RepoDigests": self.repo_digests.get(ref, [])}).encode()
            return 404, b'{"message": "No such image"}'
        if parts[0] == "containers" and len(parts) == 3 and parts[2] == "json":
            out = self.plain_docker(["docker", "container", "inspect", parts[1]])[1]
            return 200, json.dumps(json.loads(out)[0]).encode()
        if parts == ["networks"]:
            return 200, json.dumps([{"Name": "p_default"}] if self.containers else []).encode()
        return 404, b'{"message": "page not found"}'

    @staticmethod
    def api_container(c):
        labels = {"com.docker.compose.project": "p", "com.docker.compose.service": c["service"],
                  "com.docker.compose.config-hash": c["config_hash"], "com.docker.compose.image": c["image_id"],
                  "com.docker.compose.oneoff": c["oneoff"], "com.docker.compose.container-number": c["number"]}
        return {"Id": c["id"], "Names": ["/" + c["name"]], "Image": c["image"], "ImageID": c["image_id"],
                "State": c["state"], "Status": c["status"], "Labels": labels}
