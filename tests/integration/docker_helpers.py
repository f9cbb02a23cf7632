"""Helpers for integration tests that drive the real Docker Engine through the ``docker`` CLI.

Stdlib only (no Docker SDK). Everything a test creates is named ``shp-it-<kind>-<random>`` and is
tracked by a :class:`Session`, which removes it again (containers with their anonymous volumes,
then networks and named volumes) however the test ended. Tests reach containers through
``docker exec`` or through ports published on 127.0.0.1 only, never through a bridge address.

    dk = Session()
    net = dk.network()
    db = dk.run(image_ref("postgres"), env={"POSTGRES_PASSWORD": "x"}, network=net, alias="db",
                files={"/docker-entrypoint-initdb.d/01.sql": "create table t (i int);"})
    db.wait_exec("pg_isready", "-h", "127.0.0.1", timeout=60)
    ...
    dk.cleanup()
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import secrets
import socket
import struct
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

IMAGE_PREFIX = os.environ.get("SHP_IMAGE_PREFIX", "shp-test")
NAME_PREFIX = "shp-it-"
LOG_TAIL = 80


class DockerError(AssertionError):
    """A docker CLI call that should have worked did not."""


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | bytes | None = None,
           text: bool = True) -> subprocess.CompletedProcess:
    """Run ``docker ARGS``; with check, raise DockerError (with its output) on a non-zero exit."""
    try:
        res = subprocess.run(["docker", *args], capture_output=True, text=text, input=input,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"docker {' '.join(args)} timed out after {timeout}s") from exc
    if check and res.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited {res.returncode}\n"
                          f"stdout: {_tail(res.stdout)}\nstderr: {_tail(res.stderr)}")
    return res


def project_containers(project: str) -> list[str]:
    """Ids of every container (running or not) of a Compose project."""
    return docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()


def remove_compose_project(project: str, networks: Iterable[str] = ()) -> list[str]:
    """Remove a Compose project's containers (with their anonymous volumes) and networks, plus NETWORKS; return the
    errors, so a test's teardown can fail on a leftover instead of hiding it."""
    errors = []
    for cid in project_containers(project):
        res = docker("rm", "-f", "-v", cid, check=False)
        if res.returncode != 0:
            errors.append(res.stderr.strip())
    nets = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    for net in [*nets, *networks]:
        res = docker("network", "rm", net, check=False)
        if res.returncode != 0 and "not found" not in res.stderr:
            errors.append(res.stderr.strip())
    return errors


def _tail(out: str | bytes | None, lines: int = 40) -> str:
    if out is None:
        return ""
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    return "\n".join(out.splitlines()[-lines:])


# Run by python3 in a client container: "open" (accepted), "refused" (let through, nothing listens), "filtered"
# (dropped).
TCP_PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('open')
except ConnectionRefusedError:
    print('refused')
except OSError:
    print('filtered')
"""


def probe_from(client: str, host: str, port: int) -> str:
    """How a TCP connection from the container CLIENT (on this host's Docker) to HOST:PORT ends: open, refused or
    filtered - what a firewall test sees from an address that is not the server's admin address."""
    return docker("exec", client, "python3", "-c", TCP_PROBE, host, str(port), timeout=30).stdout.strip()


def unique_name(kind: str = "") -> str:
    """A fresh resource name: ``shp-it-<kind>-<8 hex>``."""
    return f"{NAME_PREFIX}{kind + '-' if kind else ''}{secrets.token_hex(4)}"


def image_ref(name: str) -> str:
    return f"{IMAGE_PREFIX}/{name}:latest"


def allow_skip() -> bool:
    return os.environ.get("SHP_ALLOW_SKIP") == "1"


def _missing(reason: str) -> None:
    if allow_skip():
        pytest.skip(reason)
    pytest.fail(f"{reason} (set SHP_ALLOW_SKIP=1 to skip instead; build with tests/images/build.py)",
                pytrace=False)


def require_docker() -> None:
    """Fail (or skip with SHP_ALLOW_SKIP=1) unless the docker CLI reaches a daemon."""
    try:
        res = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _missing(f"docker CLI unusable: {exc}")
        return
    if res.returncode != 0:
        _missing(f"Docker Engine not reachable: {res.stderr.strip()}")


def require_image(name: str) -> str:
    """The reference of test image NAME; fail (or skip with SHP_ALLOW_SKIP=1) when it is missing."""
    require_docker()
    ref = image_ref(name)
    if docker("image", "inspect", ref, check=False).returncode != 0:
        _missing(f"image {ref} is missing")
    return ref


def image_config(ref: str) -> dict[str, Any]:
    """``.Config`` of an image (Entrypoint, Cmd, ExposedPorts, Volumes, StopSignal, User, ...)."""
    return json.loads(docker("image", "inspect", "--format", "{{json .Config}}", ref).stdout)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5,
               what: str = "condition", explain: Callable[[], str] | None = None) -> Any:
    """Call PREDICATE until it returns something truthy (returned) or TIMEOUT seconds pass.
    Exceptions from the predicate count as "not yet"; the last one is reported on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # any failure means "not yet"
            last = exc
        if time.monotonic() >= deadline:
            extra = f"\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last result: {last!r}{extra}")
        time.sleep(interval)


def tar_of(files: Mapping[str, str | bytes | tuple[str | bytes, int]]) -> bytes:
    """A tar archive of FILES ({absolute path: content or (content, mode)}), owned by root, for
    ``docker cp - CONTAINER:/``. It has no directory entries, so existing directories keep their
    mode and owner; missing ones are created by Docker (root, 0755)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, spec in files.items():
            content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Container:
    """A container made by :meth:`Session.run`."""

    def __init__(self, name: str, image: str):
        self.name = name
        self.image = image

    def __repr__(self) -> str:
        return f"<Container {self.name} ({self.image})>"

    # --- inside the container -----------------------------------------------------------------
    def exec(self, *cmd: str, user: str | None = None, env: Mapping[str, str] | None = None,
             input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """``docker exec`` CMD; returns the completed process whatever its exit code."""
        args = ["exec"]
        if input is not None:
            args.append("-i")
        if user:
            args += ["--user", user]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        return docker(*args, self.name, *cmd, check=False, timeout=timeout, input=input)

    def exec_ok(self, *cmd: str, **kw: Any) -> str:
        """``docker exec`` CMD, which must exit 0; returns its stdout."""
        res = self.exec(*cmd, **kw)
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)!r} in {self.name} exited {res.returncode}\n"
                                 f"stdout: {_tail(res.stdout)}\nstderr: {_tail(res.stderr)}\n{self.describe()}")
        return res.stdout

    def wait_exec(self, *cmd: str, timeout: float = 60, interval: float = 0.5, **kw: Any) -> str:
        """Run CMD until it exits 0 (stdout returned); fails early if the container stops."""
        last: list[subprocess.CompletedProcess] = []

        def attempt() -> bool:
            if not self.running():
                raise AssertionError(f"{self.name} stopped (exit {self.state().get('ExitCode')})\n{self.describe()}")
            res = self.exec(*cmd, **kw)
            last[:] = [res]
            return res.returncode == 0

        deadline = time.monotonic() + timeout
        while True:
            if attempt():
                return last[0].stdout
            if time.monotonic() >= deadline:
                res = last[0] if last else None
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {' '.join(cmd)!r} to succeed in {self.name}"
                    + (f"; last exit {res.returncode}: {_tail(res.stdout, 5)} {_tail(res.stderr, 5)}" if res else "")
                    + f"\n{self.describe()}")
            time.sleep(interval)

    def uid_of_pid1(self) -> int:
        """Real uid of the container's main process."""
        status = self.exec_ok("cat", "/proc/1/status")
        for line in status.splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise AssertionError(f"no Uid line in /proc/1/status of {self.name}")

    # --- from outside ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        res = docker("inspect", "--format", "{{json .State}}", self.name, check=False)
        return json.loads(res.stdout) if res.returncode == 0 else {}

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the container to stop by itself; returns its exit code."""
        wait_until(lambda: not self.running(), timeout, what=f"{self.name} to exit", explain=self.describe)
        return int(self.state().get("ExitCode", -1))

    def logs(self) -> str:
        """stdout and stderr of the container, interleaved as docker stored them."""
        res = docker("logs", self.name, check=False)
        return (res.stdout or "") + (res.stderr or "")

    def describe(self, lines: int = LOG_TAIL) -> str:
        st = self.state()
        return (f"--- {self.name} ({self.image}) status={st.get('Status')} exit={st.get('ExitCode')}, "
                f"last {lines} log lines ---\n{_tail(self.logs(), lines)}")

    def host_port(self, port: int, proto: str = "tcp") -> tuple[str, int]:
        """The 127.0.0.1 address CONTAINER_PORT is published on (run with publish=[port])."""
        out = docker("port", self.name, f"{port}/{proto}").stdout
        for line in out.splitlines():
            host, _ignored, hport = line.strip().rpartition(":")
            if host == "127.0.0.1":
                return host, int(hport)
        raise AssertionError(f"{self.name}: port {port} not published on 127.0.0.1: {out!r}")

    def url(self, port: int, path: str = "/") -> str:
        host, hport = self.host_port(port)
        return f"http://{host}:{hport}{path}"

    def restart(self, timeout: int = 20) -> None:
        docker("restart", "-t", str(timeout), self.name, timeout=timeout + 60)

    def stop(self, timeout: int = 20) -> None:
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 60)

    def copy_in(self, files: Mapping[str, str | bytes | tuple[str | bytes, int]]) -> None:
        """Put FILES ({path: content or (content, mode)}) into the container (running or not)."""
        docker("cp", "-", f"{self.name}:/", input=tar_of(files), text=False)


class Session:
    """Creates containers, networks and volumes for one test and removes them all in cleanup()."""

    def __init__(self) -> None:
        self.containers: list[Container] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def network(self) -> str:
        name = unique_name("net")
        docker("network", "create", "--label", "org.selfhosted.test=integration", name)
        self.networks.append(name)
        return name

    def volume(self) -> str:
        name = unique_name("vol")
        docker("volume", "create", "--label", "org.selfhosted.test=integration", name)
        self.volumes.append(name)
        return name

    def _create_args(self, name: str, image: str, cmd: Iterable[str], *, env: Mapping[str, str] | None,
                     network: str | None, alias: str | None, publish: Iterable[int],
                     volumes: Iterable[str], entrypoint: str | None, user: str | None,
                     extra: Iterable[str]) -> list[str]:
        args = ["--name", name, "--label", "org.selfhosted.test=integration"]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        if network:
            args += ["--network", network]
            if alias:
                args += ["--network-alias", alias]
        for port in publish:
            args += ["-p", f"127.0.0.1::{port}"]
        for vol in volumes:
            args += ["-v", vol]
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
        if user:
            args += ["--user", user]
        return [*args, *extra, image, *cmd]

    def run(self, image: str, *cmd: str, kind: str | None = None, env: Mapping[str, str] | None = None,
            network: str | None = None, alias: str | None = None, publish: Iterable[int] = (),
            volumes: Iterable[str] = (), files: Mapping[str, Any] | None = None,
            entrypoint: str | None = None, user: str | None = None, extra: Iterable[str] = ()) -> Container:
        """Create and start a container (detached). FILES are copied in before it starts, so
        entrypoints see them on their first run (no host bind mounts, no host permission issues)."""
        kind = kind or image.rsplit("/", 1)[-1].split(":", 1)[0]
        name = unique_name(kind)
        container = Container(name, image)
        self.containers.append(container)
        docker("create", *self._create_args(name, image, cmd, env=env, network=network, alias=alias,
                                            publish=publish, volumes=volumes, entrypoint=entrypoint,
                                            user=user, extra=extra))
        if files:
            container.copy_in(files)
        docker("start", name)
        return container

    def run_once(self, image: str, *cmd: str, timeout: float = 120, input: str | None = None,
                 **kw: Any) -> subprocess.CompletedProcess:
        """Run a short-lived container to completion (e.g. a client on the test network) and return
        the completed ``docker run`` (exit code = the command's)."""
        kind = kw.pop("kind", "client")
        name = unique_name(kind)
        self.containers.append(Container(name, image))
        args = self._create_args(name, image, cmd, env=kw.pop("env", None), network=kw.pop("network", None),
                                 alias=kw.pop("alias", None), publish=(), volumes=kw.pop("volumes", ()),
                                 entrypoint=kw.pop("entrypoint", None), user=kw.pop("user", None),
                                 extra=kw.pop("extra", ()))
        if kw:
            raise TypeError(f"unexpected arguments: {sorted(kw)}")
        return docker("run", *(["-i"] if input is not None else []), *args, check=False, timeout=timeout,
                      input=input)

    def describe(self) -> str:
        return "\n".join(c.describe() for c in self.containers if c.state())

    def cleanup(self) -> list[str]:
        """Remove everything this session made; returns the errors (never raises)."""
        errors = []
        for c in reversed(self.containers):
            res = docker("rm", "-f", "-v", c.name, check=False, timeout=120)
            if res.returncode != 0 and "No such container" not in res.stderr:
                errors.append(res.stderr.strip())
        for net in reversed(self.networks):
            res = docker("network", "rm", net, check=False)
            if res.returncode != 0:
                errors.append(res.stderr.strip())
        for vol in reversed(self.volumes):
            res = docker("volume", "rm", "-f", vol, check=False)
            if res.returncode != 0:
                errors.append(res.stderr.strip())
        self.containers.clear()
        self.networks.clear()
        self.volumes.clear()
        return errors


# --- HTTP and WebSocket clients (stdlib) ----------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, method: str = "GET", data: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP request without proxies; returns (status, body, headers) for any status."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def http_json(url: str, **kw: Any) -> tuple[int, Any]:
    status, body, _ignored = http(url, **kw)
    return status, json.loads(body)


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """A minimal RFC 6455 client: handshake, masked text frames out, unfragmented frames in."""

    def __init__(self, host: str, port: int, path: str = "/", timeout: float = 10, host_header: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed during the handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode(errors="replace").split("\r\n")
        if " 101 " not in f"{lines[0]} ":
            self.sock.close()
            raise ConnectionError(f"websocket upgrade refused: {lines[0]}")
        fields = {k.strip().lower(): v.strip() for k, _ignored, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if fields.get("sec-websocket-accept") != expected:
            self.sock.close()
            raise ConnectionError(f"bad Sec-WebSocket-Accept: {fields.get('sec-websocket-accept')!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = secrets.token_bytes(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else b""
        payload = self._read(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return b0 & 0x0F, payload

    def recv_text(self) -> str:
        """The next text message (answers pings on the way)."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError(f"server closed the websocket: {payload!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send_frame(0x8, struct.pack("!H", 1000))
        self.sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ws_echo(host: str, port: int, path: str, messages: Iterable[str], timeout: float = 10) -> list[str]:
    """Send each message over a new websocket to PATH and return the replies, one per message."""
    with WebSocket(host, port, path, timeout=timeout) as ws:
        replies = []
        for msg in messages:
            ws.send_text(msg)
            replies.append(ws.recv_text())
        return replies


def tcp_exchange(host: str, port: int, payload: bytes, expect_end: bytes, timeout: float = 10) -> bytes:
    """Send PAYLOAD on a fresh TCP connection and read until the reply ends with EXPECT_END."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(expect_end):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
