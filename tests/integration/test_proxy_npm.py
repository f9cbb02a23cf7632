"""roles/proxy in mode npm, through ansible-playbook with a local connection.

Against the fake NPM API (tests/fakes/npm_api.py) on 127.0.0.1 with ``proxy_npm_deploy: false``: the role's admin
bootstrap, access lists, proxy hosts (bulk, purge) and its idempotency.

With ``proxy_npm_deploy: true`` against the local Docker Engine and the ``shp-test/npm`` stand-in image
(tests/images/npm: the same fake as NPM's API on port 81, HTTP on 80, TLS on 443, state in /data): the Compose
deployment of NPM itself - the container healthy (the role's healthcheck), the admin port published on 127.0.0.1
only, HTTP/HTTPS published, the data and letsencrypt directories under the data root mounted at /data and
/etc/letsencrypt, both stack networks attached as external networks, the API waited for, then the admin, an access
list and two hosts declared; a second converge changes nothing, and after ``docker rm -f`` of the container a
converge recreates it (the only change) with the admin and hosts still there, read back from /data. What the
stand-in cannot show: NPM's real nginx serving the hosts and certbot."""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import sys
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.fakes.npm_api import FakeNpm
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

PASSWORD = "it-proxy-" + secrets.token_hex(8)
USER_PASSWORD = "it-staff-" + secrets.token_hex(8)
RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def converge(tmp: Path, url: str, **extra) -> tuple[dict, str]:
    variables = {
        "ansible_python_interpreter": sys.executable,
        "proxy_mode": "npm",
        "proxy_npm_deploy": False,
        "proxy_npm_url": url,
        "proxy_npm_admin_email": "ops@example.test",
        "proxy_npm_admin_password": PASSWORD,
        "proxy_npm_wait_timeout": 9,
        "proxy_npm_access_lists": [{"name": "staff", "satisfy_any": True,
                                    "users": [{"username": "alice", "password": USER_PASSWORD}],
                                    "clients": [{"address": "198.51.100.0/24", "directive": "allow"}]}],
        "proxy_npm_proxy_hosts": [
            {"domain_names": ["app.example.test"], "forward_host": "app-web", "forward_port": 3000,
             "certificate": "new", "ssl_forced": True, "http2_support": True, "block_exploits": True},
            {"domain_names": ["admin.example.test"], "forward_host": "app-admin", "forward_port": 8080,
             "access_list": "staff", "allow_websocket_upgrade": True},
        ],
        "proxy_npm_purge": True,
        **extra,
    }
    (tmp / "vars.json").write_text(json.dumps(variables))
    pb = tmp / "play.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "roles": ["selfhosted.platform.proxy"]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), "-e", f"@{tmp / 'vars.json'}"], timeout=600,
                   ANSIBLE_LOCALHOST_WARNING="false", XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))
    m = RECAP.search(res.stdout)
    assert m, explain(res)
    return {"rc": res.returncode, "ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}, res.stdout + res.stderr


def test_npm_mode_declares_admin_access_lists_and_hosts_then_changes_nothing(tmp_path):
    with FakeNpm(version="2.13.5", issue_delay=0.01) as fake:
        first, out = converge(tmp_path, fake.url)
        assert first["rc"] == 0 and first["failed"] == 0, out
        assert first["changed"] == 3, out  # admin, access list, hosts
        assert PASSWORD not in out and USER_PASSWORD not in out
        hosts = {tuple(h["domain_names"]): h for h in fake.proxy_hosts.values()}
        assert set(hosts) == {("app.example.test",), ("admin.example.test",)}
        assert hosts[("app.example.test",)]["ssl_forced"] and hosts[("app.example.test",)]["certificate_id"]
        staff = next(a for a in fake.access_lists.values() if a["name"] == "staff")
        assert hosts[("admin.example.test",)]["access_list_id"] == staff["id"]

        fake.reset_counts()
        again, out = converge(tmp_path, fake.url)
        assert again["rc"] == 0 and again["changed"] == 0, out
        assert fake.mutations() == []

        # A host dropped from the inventory is purged (proxy_npm_purge).
        fake.reset_counts()
        third, out = converge(tmp_path, fake.url, proxy_npm_proxy_hosts=[
            {"domain_names": ["app.example.test"], "forward_host": "app-web", "forward_port": 3000,
             "certificate": "new", "ssl_forced": True, "http2_support": True, "block_exploits": True}])
        assert third["rc"] == 0 and third["changed"] == 1, out
        assert [tuple(h["domain_names"]) for h in fake.proxy_hosts.values()] == [("app.example.test",)]


def test_npm_mode_refuses_a_missing_admin_password_before_any_request(tmp_path):
    with FakeNpm(version="2.13.5") as fake:
        res, out = converge(tmp_path, fake.url, proxy_npm_admin_password="")
        assert res["rc"] != 0 and "proxy_npm_admin_password" in out, out
        assert fake.total_requests == 0


def test_npm_mode_with_a_two_factor_admin_passes_proxy_npm_admin_totp_secret_to_every_module(tmp_path):
    secret = "JBSWY3DPEHPK3PXP"
    with FakeNpm(version="2.14.1", issue_delay=0.01, initial_admin=("ops@example.test", PASSWORD)) as fake:
        fake.set_totp("ops@example.test", secret)
        res, out = converge(tmp_path, fake.url)
        assert res["rc"] != 0 and "totp_secret: the NPM account ops@example.test has two-factor" in out, out
        assert fake.mutations() == []
        first, out = converge(tmp_path, fake.url, proxy_npm_admin_totp_secret=secret,
                              proxy_npm_certificates=[{"domain_names": ["cert.example.test"]}])
        assert first["rc"] == 0 and first["failed"] == 0, out
        assert first["changed"] == 3, out  # certificate, access list, hosts (the admin was there)
        assert secret not in out and PASSWORD not in out
        assert fake.count("POST", "/api/tokens/2fa") == 1  # one login, its token cached for the other tasks
        again, out = converge(tmp_path, fake.url, proxy_npm_admin_totp_secret=secret,
                              proxy_npm_certificates=[{"domain_names": ["cert.example.test"]}])
        assert again["rc"] == 0 and again["changed"] == 0, out


# --------------------------------------------------------------------------------------------------
# proxy_npm_deploy: true, on the local Docker Engine with the shp-test/npm stand-in
# --------------------------------------------------------------------------------------------------

TASK = re.compile(r"^TASK \[(?:[^\]]* : )?([^\]]+)\]", re.M)
DEPLOY_TASK = "Deploy NPM, admin port on loopback only"


def changed_tasks(out: str) -> list[str]:
    """Names of the tasks that reported a change, in order (default callback output)."""
    starts = list(TASK.finditer(out))
    names = []
    for i, match in enumerate(starts):
        block = out[match.end():starts[i + 1].start() if i + 1 < len(starts) else len(out)]
        if re.search(r"^changed: \[", block, re.M):
            names.append(match[1])
    return names


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together so that they differ)."""
    socks = []
    try:
        for _index in range(count):
            sock = socket.socket()
            sock.bind(("", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def npm_container(project: str) -> dict:
    ids = dh.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                    "--filter", "label=com.docker.compose.service=npm").stdout.split()
    assert len(ids) == 1, f"expected one running npm container of {project}, got {ids}"
    return json.loads(dh.docker("inspect", ids[0]).stdout)[0]


def api(url: str, path: str, token: str | None = None, body: dict | None = None) -> object:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, data = dh.http_json(url + path, method="POST" if body is not None else "GET", headers=headers,
                                data=json.dumps(body).encode() if body is not None else None)
    assert status in (200, 201), f"{path}: {status} {data}"
    return data


def npm_state(url: str) -> dict:
    """What the deployed NPM's API holds, read as the admin."""
    token = api(url, "/api/tokens", body={"identity": "ops@example.test", "secret": PASSWORD})["token"]
    return {"health": api(url, "/api/"), "me": api(url, "/api/users/me", token),
            "hosts": api(url, "/api/nginx/proxy-hosts?expand=access_list,certificate", token),
            "access_lists": api(url, "/api/nginx/access-lists", token)}


@pytest.fixture
def npm_deploy(tmp_path):
    """Two test networks, free ports and the variables of a deploying converge; removes the project's containers
    and networks and the test networks afterwards, however the test ended."""
    image = dh.require_image("npm")
    project = dh.unique_name("npm")
    networks = [dh.unique_name("net"), dh.unique_name("net")]
    http_port, https_port, admin_port = free_ports(3)
    env = {
        "project": project, "networks": networks, "admin_port": admin_port, "http_port": http_port,
        "https_port": https_port, "url": f"http://127.0.0.1:{admin_port}", "data_dir": tmp_path / "data" / "npm",
        "vars": {"proxy_npm_deploy": True, "proxy_npm_image": image, "proxy_npm_project": project,
                 "proxy_data_root": str(tmp_path / "data"), "proxy_stacks_dir": str(tmp_path / "stacks"),
                 "proxy_npm_http_port": http_port, "proxy_npm_https_port": https_port,
                 "proxy_npm_admin_port": admin_port, "proxy_npm_url": f"http://127.0.0.1:{admin_port}",
                 "proxy_npm_networks": networks, "proxy_npm_wait_timeout": 120},
    }
    try:
        for net in networks:
            dh.docker("network", "create", "--label", "org.selfhosted.test=proxy-npm", net)
        yield env
    finally:
        errors = dh.remove_compose_project(project, networks)
        assert not errors, f"cleanup failed: {errors}"


def test_npm_mode_deploys_npm_with_loopback_admin_data_dirs_and_networks_and_survives_a_recreate(
        tmp_path, npm_deploy):
    env = npm_deploy
    url, data_dir = env["url"], env["data_dir"]

    first, out = converge(tmp_path, url, **env["vars"])
    assert first["rc"] == 0 and first["failed"] == 0, out
    # its data directories are a task of their own: they are the container's root's (shifted when the engine remaps)
    assert changed_tasks(out) == ["Create NPM's directories", "Create NPM's data directories", DEPLOY_TASK,
                                  "Bootstrap the admin account", "Declare the access lists",
                                  "Declare the proxy hosts"], out
    assert PASSWORD not in out and USER_PASSWORD not in out

    box = npm_container(env["project"])
    assert box["Config"]["Image"] == dh.image_ref("npm")
    assert box["State"]["Running"] and box["State"]["Health"]["Status"] == "healthy", box["State"]
    # Admin on loopback only; HTTP and HTTPS published on the chosen host ports.
    ports = box["NetworkSettings"]["Ports"]
    assert ports["81/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(env["admin_port"])}], ports
    assert dh.docker("port", box["Id"], "81/tcp").stdout.split() == [f"127.0.0.1:{env['admin_port']}"]
    assert {b["HostPort"] for b in ports["80/tcp"]} == {str(env["http_port"])}, ports
    assert {b["HostPort"] for b in ports["443/tcp"]} == {str(env["https_port"])}, ports
    assert all(b["HostIp"] in ("0.0.0.0", "::", "") for b in ports["80/tcp"] + ports["443/tcp"]), ports
    status, body, _headers = dh.http(f"http://127.0.0.1:{env['http_port']}/", headers={"Host": "nowhere.test"})
    assert status == 200 and b"Congratulations" in body
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    with (socket.create_connection(("127.0.0.1", env["https_port"]), timeout=10) as raw,
          tls.wrap_socket(raw, server_hostname="nowhere.test") as conn):
        assert conn.version() and conn.getpeercert(binary_form=True)
    # The data and letsencrypt directories under the data root are the container's /data and /etc/letsencrypt.
    mounts = {m["Destination"]: m for m in box["Mounts"]}
    for sub, dest in (("data", "/data"), ("letsencrypt", "/etc/letsencrypt")):
        assert (data_dir / sub).is_dir()
        assert (data_dir / sub).stat().st_mode & 0o777 == 0o750
        assert mounts[dest]["Type"] == "bind" and mounts[dest]["Source"] == str(data_dir / sub), mounts
    assert (data_dir / "data" / "database.json").is_file() and (data_dir / "data/nginx/dummycert.pem").is_file()
    # Both stack networks, next to the project's own.
    assert set(box["NetworkSettings"]["Networks"]) == {f"{env['project']}_default", *env["networks"]}
    # The API has the admin, the access list and the hosts.
    state = npm_state(url)
    assert state["health"]["status"] == "OK" and state["health"]["setup"] is True
    assert state["me"]["email"] == "ops@example.test" and "admin" in state["me"]["roles"]
    assert [a["name"] for a in state["access_lists"]] == ["staff"]
    hosts = {tuple(h["domain_names"]): h for h in state["hosts"]}
    assert set(hosts) == {("app.example.test",), ("admin.example.test",)}
    assert hosts[("app.example.test",)]["ssl_forced"] and hosts[("app.example.test",)]["certificate_id"]
    assert hosts[("admin.example.test",)]["access_list_id"] == state["access_lists"][0]["id"]

    again, out = converge(tmp_path, url, **env["vars"])
    assert again["rc"] == 0 and again["changed"] == 0, out
    assert npm_container(env["project"])["Id"] == box["Id"]

    # The container goes away; the next converge recreates it and finds everything in /data.
    dh.docker("rm", "-f", box["Id"])
    assert dh.project_containers(env["project"]) == []
    third, out = converge(tmp_path, url, **env["vars"])
    assert third["rc"] == 0 and third["failed"] == 0, out
    assert changed_tasks(out) == [DEPLOY_TASK], out
    assert third["changed"] == 1, out
    reborn = npm_container(env["project"])
    assert reborn["Id"] != box["Id"] and reborn["State"]["Health"]["Status"] == "healthy"
    assert set(reborn["NetworkSettings"]["Networks"]) == {f"{env['project']}_default", *env["networks"]}
    after = npm_state(url)
    assert after["me"]["id"] == state["me"]["id"]

    def rows(found):
        return ({h["id"]: (h["domain_names"], h["access_list_id"]) for h in found["hosts"]},
                [(a["id"], a["name"]) for a in found["access_lists"]])

    assert rows(after) == rows(state)
