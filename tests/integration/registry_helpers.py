"""A real image registry on loopback for pull tests: Debian's ``docker-registry`` package (distribution v2.8),
started as ``/usr/bin/docker-registry serve <config.yml>`` with a temporary storage directory on a free
127.0.0.1 port, optionally behind htpasswd auth. Docker treats 127.0.0.0/8 registries as insecure by default,
so push and pull work over plain http with no daemon configuration.

Images pushed by the tests are named 127.0.0.1:PORT/shp-it-<hex>/...; the registry's storage goes with it,
and ``forget_images`` removes the local copies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration import docker_helpers as dh

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_registry() -> None:
    """Fail (or skip with SHP_ALLOW_SKIP=1) unless Debian's docker-registry is installed (scripts/testground.sh
    packages installs it)."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        dh._missing(f"{REGISTRY_BIN} is missing (apt-get install docker-registry)")


class Registry:
    """One docker-registry process. ``auth`` = (user, password) turns on htpasswd auth (bcrypt, made by
    ``htpasswd -B`` from apache2-utils with the password on stdin)."""

    def __init__(self, auth: tuple[str, str] | None = None):
        require_registry()
        self.auth = auth
        self.dir = Path(tempfile.mkdtemp(prefix="shp-it-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "registry.log"
        self.images: list[str] = []
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if auth:
            if not shutil.which("htpasswd"):
                dh._missing("htpasswd is missing (apt-get install apache2-utils)")
            res = subprocess.run(["htpasswd", "-niB", auth[0]], input=auth[1], capture_output=True, text=True,
                                 check=True)
            (self.dir / "htpasswd").write_text(res.stdout)
            config["auth"] = {"htpasswd": {"realm": "shp-it", "path": str(self.dir / "htpasswd")}}
        # JSON is YAML: the registry reads it as its config file.
        (self.dir / "config.yml").write_text(json.dumps(config, indent=2))
        self.start()

    def start(self, timeout: float = 20) -> None:
        handle = self.log.open("a")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")], stdout=handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # auth on: it answers
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"docker-registry did not answer on {self.host}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @contextlib.contextmanager
    def stopped(self):
        """The registry down for the block, back up (same port, same storage) after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def ref(self, repo: str, tag: str) -> str:
        return f"{self.host}/{repo}:{tag}"

    def docker_config(self, path: Path, password: str | None = None) -> Path:
        """A DOCKER_CONFIG directory whose config.json holds credentials for this registry: PASSWORD (the right
        one by default; "" writes a config.json without any), mode 0600 as docker login writes it."""
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        auths = {}
        if self.auth and password != "":
            import base64

            user_pw = f"{self.auth[0]}:{self.auth[1] if password is None else password}"
            auths[self.host] = {"auth": base64.b64encode(user_pw.encode()).decode()}
        cfg = path / "config.json"
        cfg.write_text(json.dumps({"auths": auths}))
        os.chmod(cfg, 0o600)
        return path

    def push(self, ref: str, dockerfile: str, config_dir: Path | None = None) -> str:
        """Build DOCKERFILE as REF, push it; return the local image id."""
        dh.docker("build", "-q", "-t", ref, "-", input=dockerfile, timeout=300)
        self.images.append(ref)
        args = ["--config", str(config_dir)] if config_dir else []
        dh.docker(*args, "push", "-q", ref, timeout=300)
        return dh.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def forget_images(self) -> None:
        """Remove the local images the tests built or pulled from this registry (by id, all their tags)."""
        ids = set()
        for ref in self.images:
            res = dh.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
            if res.returncode == 0:
                ids.add(res.stdout.strip())
        out = dh.docker("image", "ls", "--no-trunc", "--format", "{{.Repository}} {{.ID}}", check=False).stdout
        ids.update(i for r, i in (line.split() for line in out.splitlines() if line.strip())
                   if r.startswith(self.host + "/"))
        for image_id in ids:
            dh.docker("image", "rm", "-f", image_id, check=False)

    def close(self) -> None:
        self.stop()
        self.forget_images()
        shutil.rmtree(self.dir, ignore_errors=True)
