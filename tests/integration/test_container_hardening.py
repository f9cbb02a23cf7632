"""The hardened container defaults on the local Docker Engine, applied by the real roles: the data tier (a postgres,
a mariadb and a redis instance, each with its database or password), an app stack on them and the nginx router in
front of it, converged by ``ansible-playbook`` on localhost the way site.yml runs the three layers, then measured
with ``docker_security_audit`` (CIS Docker Benchmark 1.6.0 section 5) limited to those containers: no item WARNs.

The hardened containers still do their work: the app reaches all three databases through the router, an upload
through the router is buffered by nginx to its tmpfs and lands in the app's volume, the backup layer's dump commands
(the data tier's contract) read every instance, the router reopens its logs, reloads and restarts as its own user;
a second converge changes nothing. A second stack whose service says ``read_only: false``, its own ``cap_add`` and
``security_opt`` and ``service_defaults: {pids_limit: 0, memory: ""}`` gets exactly that (and the audit says so).

MongoDB has no offline build: its profile is covered at the rendered-config level (tests/unit).
Everything is named shp-it-hd-<random>, on loopback only, and removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
NNP = "no-new-privileges:true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Site:
    """Names, paths and the role variables of one converge of data tier + app stacks + router."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        prefix = dh.unique_name("hd")
        self.pg, self.maria, self.redis = f"{prefix}-pg", f"{prefix}-maria", f"{prefix}-redis"
        self.net = f"{prefix}-data"
        self.stack, self.legacy, self.router = f"{prefix}-app", f"{prefix}-legacy", f"{prefix}-router"
        self.port = free_port()
        self.data = tmp / "data"
        self.secrets = tmp / "secrets"
        self.containers = {"postgres": f"{self.pg}-postgres-1", "mariadb": f"{self.maria}-mariadb-1",
                           "redis": f"{self.redis}-redis-1", "web": f"{self.stack}-web-1",
                           "router": f"{self.router}-nginx-1"}
        self.legacy_container = f"{self.legacy}-web-1"
        self.times: list[float] = []

    def variables(self) -> dict:
        app = dh.require_image("httpapp")
        health = {"interval": "2s", "timeout": "3s", "retries": 30}
        conn = "data_tier_connections"
        return {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "data_tier_images": {"postgres": dh.require_image("postgres"), "mariadb": dh.require_image("mariadb"),
                                 "redis": dh.require_image("redis"), "mongodb": "mongo:8.0"},
            "data_tier_data_root": str(self.data), "data_tier_stacks_dir": str(self.tmp / "stacks"),
            "data_tier_secrets_dir": str(self.secrets), "data_tier_shared_network": self.net,
            "data_tier_memory": "256m", "data_tier_cpus": "0.5",
            "data_tier_instances": [
                {"name": self.pg, "engine": "postgres", "databases": [{"name": "shop"}]},
                {"name": self.maria, "engine": "mariadb", "databases": [{"name": "shop"}]},
                {"name": self.redis, "engine": "redis"},
            ],
            "app_stack_stacks_dir": str(self.tmp / "stacks"), "app_stack_data_root": str(self.data),
            "app_stack_prune_images": False, "app_stack_wait_timeout": 180,
            "app_stack_stacks": [
                {"name": self.stack, "networks": [self.net],
                 "dirs": [{"path": "uploads", "owner": "1001", "group": "1001", "mode": "0755"}],
                 "env": {
                     "DATABASE_URL": f"postgres://shop:{{{{ {conn}['{self.pg}'].databases.shop.password }}}}"
                                     f"@{self.pg}:5432/shop",
                     "MYSQL_URL": f"mysql://shop:{{{{ {conn}['{self.maria}'].databases.shop.password }}}}"
                                  f"@{self.maria}:3306/shop",
                     "REDIS_URL": f"redis://:{{{{ {conn}['{self.redis}'].superuser_password }}}}@{self.redis}:6379/0"},
                 "services": {"web": {
                     "image": app, "restart": "unless-stopped", "env_file": [".env"],
                     "environment": {"APP_NAME": "web", "PORT": "8080", "UPLOAD_DIR": "/srv/uploads"},
                     "volumes": [f"{self.data}/{self.stack}/uploads:/srv/uploads"],
                     "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], **health}}}},
                {"name": self.legacy, "services": {"web": {
                    "image": app, "environment": {"APP_NAME": "legacy"},
                    "read_only": False, "cap_add": ["NET_BIND_SERVICE"], "security_opt": ["label=disable"],
                    "service_defaults": {"pids_limit": 0, "memory": ""},
                    "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], **health}}}},
            ],
            "proxy_mode": "nginx", "proxy_stacks_dir": str(self.tmp / "stacks"), "proxy_data_root": str(self.data),
            "proxy_nginx_project": self.router, "proxy_nginx_image": dh.require_image("nginx"),
            "proxy_nginx_ports": [f"127.0.0.1:{self.port}:80"], "proxy_nginx_networks": [f"{self.stack}_default"],
            "proxy_nginx_routes": [{"path": "/", "upstream": "http://web:8080"}],
            "proxy_nginx_client_max_body_size": "10m",
            # no logrotate package or /etc/logrotate.d file on the test host; the reopen is driven below
            "proxy_nginx_logrotate": False,
        }

    def converge(self, *flags: str) -> tuple[dict, str]:
        (self.tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": {"localhost": self.variables()}}}))
        (self.tmp / "play.yml").write_text(json.dumps([{
            "hosts": "all", "gather_facts": False,
            "roles": ["selfhosted.platform.data_tier", "selfhosted.platform.app_stack", "selfhosted.platform.proxy"]}]))
        start = time.monotonic()
        res = run_tool(["ansible-playbook", "-i", str(self.tmp / "inventory.json"), str(self.tmp / "play.yml"),
                        *flags], timeout=1200, ANSIBLE_LOCALHOST_WARNING="false")
        self.times.append(round(time.monotonic() - start, 1))
        m = RECAP.search(res.stdout)
        assert m, explain(res)
        return {"rc": res.returncode, "changed": int(m[2]), "failed": int(m[4])}, res.stdout + res.stderr

    def cleanup(self) -> list[str]:
        errors = []
        for project in (self.router, self.legacy, self.stack, self.pg, self.maria, self.redis):
            errors += dh.remove_compose_project(project)
        res = dh.docker("network", "rm", self.net, check=False)
        if res.returncode != 0 and "No such network" not in res.stderr and "not found" not in res.stderr:
            errors.append(res.stderr.strip())
        return errors


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    dh.require_docker()
    site = Site(tmp_path_factory.mktemp("hardening"))
    try:
        first, out = site.converge()
        assert first["rc"] == 0 and first["failed"] == 0, out
        yield site
    finally:
        errors = site.cleanup()
        assert not errors, errors


def inspect(name: str) -> dict:
    return json.loads(dh.docker("inspect", name).stdout)[0]


def audit(tmp: Path) -> dict:
    pb = tmp / f"audit-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "vars": {"ansible_python_interpreter": "/usr/bin/python3"},
                               "tasks": [{"selfhosted.platform.docker_security_audit": {"sections": [5]}}]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb)], timeout=300,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.returncode == 0 and res.stdout[start:].startswith("{"), explain(res)
    return json.loads(res.stdout[start:])["plays"][0]["tasks"][0]["hosts"]["localhost"]


def by_target(result: dict, names) -> dict[str, dict[str, tuple[str, str]]]:
    """{container: {item: (status, detail)}} for NAMES."""
    out: dict[str, dict[str, tuple[str, str]]] = {n: {} for n in names}
    for item in result["checks"]:
        for target in item["targets"]:
            if target["target"] in out:
                out[target["target"]][item["id"]] = (target["status"], target["detail"])
    return out


# ---------------------------------------------------------------------------------------------
def test_the_containers_carry_the_defaults_and_a_second_converge_changes_nothing(site):
    expected_user = {"postgres": "999:999", "mariadb": "999:999", "redis": "999:999", "web": "app", "router": "101:101"}
    for role, name in site.containers.items():
        box = inspect(name)
        host = box["HostConfig"]
        assert box["State"]["Health"]["Status"] == "healthy", (name, box["State"])
        assert box["Config"]["User"] == expected_user[role], name
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], (name, host["CapAdd"])
        assert host["SecurityOpt"] == [NNP], name
        assert host["ReadonlyRootfs"] is True, name
        assert host["PidsLimit"] and host["Memory"] and host["NanoCpus"], name
        # the root filesystem refuses a write; the tmpfs takes it
        res = dh.docker("exec", name, "sh", "-c", "touch /var/probe", check=False)
        assert res.returncode != 0 and "Read-only file system" in res.stderr, (name, res.stderr)
        dh.docker("exec", name, "sh", "-c", "touch /tmp/probe && rm /tmp/probe")
    # the tmpfs the image writes to belong to the user it runs as
    tmpfs = inspect(site.containers["postgres"])["HostConfig"]["Tmpfs"]
    assert tmpfs == {"/var/run/postgresql": "uid=999,gid=999,mode=0755", "/tmp": ""}
    assert set(inspect(site.containers["router"])["HostConfig"]["Tmpfs"]) == {"/run", "/var/cache/nginx", "/tmp"}
    # every process of the data tier and the router runs as the unprivileged user, none as root
    for role in ("postgres", "mariadb", "redis", "router"):
        top = dh.docker("top", site.containers[role], "-o", "pid,uid,comm").stdout.splitlines()[1:]
        uids = {line.split()[1] for line in top}
        assert uids == {expected_user[role].split(":", maxsplit=1)[0]}, (role, top)
    # the data tier publishes nothing; the router only on loopback
    assert not inspect(site.containers["postgres"])["HostConfig"]["PortBindings"]
    assert inspect(site.containers["router"])["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(site.port)}]}

    again, out = site.converge()
    assert again["rc"] == 0 and again["changed"] == 0, out
    print(f"converge wall times: first {site.times[0]}s, second {site.times[-1]}s")


def test_security_audit_section_5_passes_every_item_for_the_hardened_containers(site, tmp_path):
    result = audit(tmp_path)
    assert not result.get("failed"), result.get("msg")
    assert set(site.containers.values()) | {site.legacy_container} <= set(result["containers"])
    items = by_target(result, site.containers.values())
    warned = {name: {i: d for i, (s, d) in checks.items() if s != "PASS"} for name, checks in items.items()}
    assert warned == {name: {} for name in site.containers.values()}, warned
    for name, checks in items.items():
        assert checks["5.4"] == ("PASS", "cap_drop: ALL; cap_add: none"), name
        assert checks["5.13"] == ("PASS", "read-only root filesystem"), name
        assert checks["5.26"] == ("PASS", "no-new-privileges: true (container)"), name
    assert items[site.containers["router"]]["5.14"] == ("PASS", "bound to 127.0.0.1")
    # the stack that turned defaults off is seen doing so
    legacy = by_target(result, [site.legacy_container])[site.legacy_container]
    assert legacy["5.13"] == ("WARN", "writable root filesystem")
    assert legacy["5.11"] == ("WARN", "memory limit: none")
    assert legacy["5.29"] == ("WARN", "pids limit: none")
    assert legacy["5.4"] == ("PASS", "cap_drop: ALL; cap_add: NET_BIND_SERVICE")


def test_a_services_own_keys_and_service_defaults_win(site):
    box = inspect(site.legacy_container)
    host = box["HostConfig"]
    assert host["ReadonlyRootfs"] is False and not host.get("Tmpfs")
    assert host["CapDrop"] == ["ALL"] and [c.removeprefix("CAP_") for c in host["CapAdd"]] == ["NET_BIND_SERVICE"]
    assert host["SecurityOpt"] == ["label=disable", NNP]  # merged, not replaced
    assert not host["PidsLimit"] and not host["Memory"]    # service_defaults of its own
    assert host["NanoCpus"] == 10**9                        # the role's default still applies
    dh.docker("exec", site.legacy_container, "sh", "-c", "touch /var/tmp/probe")  # its root filesystem is writable


def test_hardened_instances_serve_the_app_through_the_router_and_dump(site):
    base = f"http://127.0.0.1:{site.port}"
    status, body = dh.http_json(f"{base}/check", timeout=30)
    assert status == 200 and {n: b["ok"] for n, b in body["backends"].items()} == {
        "postgres": True, "mysql": True, "redis": True}, body
    # 200 kB through the router: nginx buffers the body to /var/cache/nginx (tmpfs, the nginx user's)
    payload = secrets.token_bytes(200_000)
    status, _body, _headers = dh.http(f"{base}/upload?name=blob.bin", method="POST", data=payload, timeout=30)
    assert status == 201
    assert (site.data / site.stack / "uploads" / "blob.bin").read_bytes() == payload
    status, echoed, _headers = dh.http(f"{base}/upload?name=blob.bin", timeout=30)
    assert status == 200 and echoed == payload

    # the backup layer's dumps (the data tier's contract) read each instance through docker exec as its own user
    from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier as contract
    images = {"postgres": dh.image_ref("postgres"), "mariadb": dh.image_ref("mariadb"), "redis": dh.image_ref("redis")}
    redis_env = {**os.environ, "REDISCLI_AUTH": (site.secrets / site.redis / "superuser").read_text()}
    for args in (("SET", "k", "v"), ("SAVE",)):
        subprocess.run(["docker", "exec", "-e", "REDISCLI_AUTH", site.containers["redis"], "redis-cli", *args],
                       env=redis_env, check=True, capture_output=True, timeout=60)
    magic = {"postgres": (b"PGDMP", b"--\n-- PostgreSQL database cluster dump"), "mariadb": (b"-- MariaDB dump",),
             "redis": (b"REDIS",)}
    for name, engine, dbs in ((site.pg, "postgres", ["shop"]), (site.maria, "mariadb", ["shop"]),
                              (site.redis, "redis", [])):
        record = contract.instance_record({"name": name, "engine": engine, "databases": dbs}, str(site.secrets),
                                          images)
        password = Path(record["password_file"]).read_text()
        for label, argv, env, _filename in contract.dump_jobs(record, password):
            res = subprocess.run(argv, capture_output=True, env={**os.environ, **env}, timeout=120, check=False)
            head = res.stdout[:300]
            assert res.returncode == 0 and any(m in head for m in magic[engine]), (label, head, res.stderr[-500:])


def test_the_router_reopens_its_logs_reloads_and_restarts_as_its_own_user(site):
    router = site.containers["router"]
    logs = site.data / site.router / "logs"
    dh.http(f"http://127.0.0.1:{site.port}/health", timeout=10)
    # what logrotate's postrotate does, then the role's reload handler, then a restart (a reboot, an engine update)
    dh.docker("kill", "-s", "USR1", router)
    dh.docker("exec", router, "nginx", "-s", "reload")
    dh.docker("restart", router)
    dh.wait_until(lambda: inspect(router)["State"]["Health"]["Status"] == "healthy", timeout=60,
                  what="the router healthy after its restart")
    token = secrets.token_hex(4)
    assert dh.http(f"http://127.0.0.1:{site.port}/health?after-restart-{token}", timeout=10)[0] == 200
    dh.wait_until(lambda: f"after-restart-{token}" in (logs / "access.log").read_text(), timeout=10,
                  what="the request in access.log")
    for path in (logs, logs / "access.log", logs / "error.log"):
        assert (path.stat().st_uid, path.stat().st_gid) == (101, 101), path
