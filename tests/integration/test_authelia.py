"""roles/authelia through ansible-playbook with a local connection, on the local Docker Engine, with the
``shp-test/authelia`` stand-in (tests/images/authelia: Authelia 4.38's contract - configuration, startup checks,
/api/health, /api/firstfactor and the AuthRequest authz endpoint with access-control rule evaluation).

Two users in different groups, a bypass rule for one domain, one_factor for a group on another, default deny. Against
the container (its address on the test network, and by its alias ``authelia`` from a client container on that
network, as NPM reaches it) the tests prove: no credentials -> 401 with the portal's Location and rd/rm; right Basic
Proxy-Authorization -> 200 with Remote-User/Groups/Name/Email; wrong password -> 401; a user of another group -> 403;
the default policy -> 403; bypass -> 200; the /api/firstfactor cookie flow. A second converge changes nothing and
leaves the users file byte-identical; --check with a changed password reports the change and touches nothing; a
changed password rewrites the users file and recreates the container, after which the old password is refused; no
password appears in the output, even with -vvv. End to end, with the ``shp-test/npm`` stand-in's edge in front (the
proxy role declaring an ``authelia: true`` host, the contract of /tmp/authelia_snippet.md): strangers get a 302 to
the portal, users with Basic credentials or the portal's cookie reach the app, others get 403. The stand-in's image
metadata and its refusals of bad configurations are checked on their own. Everything is removed afterwards."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import ssl
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

DOMAIN = "0kt.example.test"
PORTAL = f"https://auth.{DOMAIN}"
ALICE_PW = "it-alice-" + secrets.token_hex(8)
ALICE_NEW_PW = "it-alice-new-" + secrets.token_hex(8)
BOB_PW = "it-bob-" + secrets.token_hex(8)
ALL_PASSWORDS = (ALICE_PW, ALICE_NEW_PW, BOB_PW)
RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
TASK = re.compile(r"^TASK \[(?:[^\]]* : )?([^\]]+)\]", re.M)


def users(alice_pw: str = ALICE_PW, bob_pw: str = BOB_PW) -> list[dict]:
    return [{"name": "alice", "displayname": "Alice Admin", "email": f"alice@{DOMAIN}", "groups": ["admins"],
             "password": alice_pw},
            {"name": "bob", "displayname": "Bob Dev", "email": f"bob@{DOMAIN}", "groups": ["dev"], "password": bob_pw}]


RULES = [{"domain": f"public.{DOMAIN}", "policy": "bypass"},
         {"domain": f"admin.{DOMAIN}", "policy": "one_factor", "subject": "group:admins"}]


def converge(tmp: Path, env: dict, *args: str, role: str = "authelia", **extra) -> tuple[dict, str]:
    variables = {"ansible_python_interpreter": sys.executable, **env["vars"], **extra}
    (tmp / "vars.json").write_text(json.dumps(variables))
    pb = tmp / "play.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "roles": [f"selfhosted.platform.{role}"]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), "-e", f"@{tmp / 'vars.json'}", *args],
                   timeout=900, ANSIBLE_LOCALHOST_WARNING="false", XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))
    out = res.stdout + res.stderr
    m = RECAP.search(res.stdout)
    assert m, explain(res)
    return {"rc": res.returncode, "ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}, out


def changed_tasks(out: str) -> list[str]:
    starts = list(TASK.finditer(out))
    names = []
    for i, match in enumerate(starts):
        block = out[match.end():starts[i + 1].start() if i + 1 < len(starts) else len(out)]
        if re.search(r"^changed: \[", block, re.M):
            names.append(match[1])
    return names


def assert_no_password(out: str) -> None:
    for password in ALL_PASSWORDS:
        assert password not in out, "a password leaked into the ansible output"


def container(project: str) -> dict:
    ids = dh.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                    "--filter", "label=com.docker.compose.service=authelia").stdout.split()
    assert len(ids) == 1, f"expected one running authelia container of {project}, got {ids}"
    return json.loads(dh.docker("inspect", ids[0]).stdout)[0]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Authelia:
    """The deployed container, reached at its address on the test network."""

    def __init__(self, box: dict, network: str):
        self.ip = box["NetworkSettings"]["Networks"][network]["IPAddress"]
        self.base = f"http://{self.ip}:9091"

    def authz(self, url: str, method: str = "GET", **headers: str) -> tuple[int, dict]:
        status, _body, got = dh.http(f"{self.base}/api/authz/auth-request",
                                     headers={"X-Original-URL": url, "X-Original-Method": method,
                                              "X-Forwarded-For": "198.51.100.7", **headers})
        return status, got

    def firstfactor(self, username: str, password: str, target: str) -> tuple[int, dict, dict]:
        body = json.dumps({"username": username, "password": password, "keepMeLoggedIn": False,
                           "targetURL": target, "requestMethod": "GET"}).encode()
        status, data, got = dh.http(f"{self.base}/api/firstfactor", method="POST", data=body,
                                    headers={"Content-Type": "application/json", "Host": f"auth.{DOMAIN}",
                                             "X-Forwarded-Proto": "https"})
        return status, json.loads(data), got


@pytest.fixture
def authelia_env(tmp_path):
    """A test network, a project name and the role's variables; removes the containers and networks afterwards."""
    image = dh.require_image("authelia")
    project = dh.unique_name("authelia")
    network = dh.unique_name("net")
    root = tmp_path / "host"
    env = {
        "project": project, "network": network, "root": root,
        "users_file": root / "data" / "authelia" / "config" / "users_database.yml",
        "config_file": root / "data" / "authelia" / "config" / "configuration.yml",
        "secrets_dir": root / "secrets",
        "vars": {"authelia_image": image, "authelia_project": project,
                 "authelia_data_root": str(root / "data"), "authelia_stacks_dir": str(root / "stacks"),
                 "authelia_secrets_dir": str(root / "secrets"), "authelia_networks": [network],
                 "authelia_session_domain": DOMAIN, "authelia_default_redirection_url": f"https://www.{DOMAIN}/",
                 "authelia_users": users(), "authelia_access_control_rules": RULES,
                 "authelia_default_policy": "deny", "authelia_health_interval": "2s", "authelia_wait_timeout": 120},
    }
    try:
        yield env
    finally:
        errors = dh.remove_compose_project(project, [network])
        assert not errors, f"cleanup failed: {errors}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_authelia_role_protects_sites_stays_stable_and_restarts_only_on_change(tmp_path, authelia_env):
    env = authelia_env
    # The network does not exist yet: the role creates it.
    first, out = converge(tmp_path, env)
    assert first["rc"] == 0 and first["failed"] == 0, out
    assert changed_tasks(out) == ["Create Authelia's directories",
                                  "Create the file Authelia tells its healthcheck where it listens in",
                                  "Keep Authelia's secrets",
                                  "Write the users database (argon2id hashes, stable while nothing changes)",
                                  "Write configuration.yml", "Create the networks Authelia joins",
                                  "Deploy Authelia"], out
    assert_no_password(out)

    box = container(env["project"])
    assert box["Config"]["Image"] == dh.image_ref("authelia")
    assert box["State"]["Health"]["Status"] == "healthy", box["State"]
    assert box["Config"]["Cmd"] == ["--config", "/config/configuration.yml"]
    net = box["NetworkSettings"]["Networks"]
    assert set(net) == {env["network"]} and "authelia" in net[env["network"]]["Aliases"], net
    # The hardened defaults: started as 8091:8091 with no capability, no-new-privileges, a read-only root
    # filesystem (tmpfs /tmp, the healthcheck's env file mounted), a PIDs limit.
    host = box["HostConfig"]
    assert box["Config"]["User"] == "8091:8091"
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["PidsLimit"] == 256
    assert set(host["Tmpfs"]) == {"/tmp"}
    # Files: 0600 config and users, 0400 secrets mounted read-only one by one, none in the compose file or config;
    # all of them the user's it runs as, except the hash salt, which never leaves the host's root.
    for path in (env["users_file"], env["config_file"]):
        assert path.stat().st_mode & 0o777 == 0o600
        assert (path.stat().st_uid, path.stat().st_gid) == (8091, 8091), path
    for path in (env["config_file"].parent, env["root"] / "data" / "authelia" / "data"):
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (8091, 0o700), path
    secret_files = sorted(p.name for p in env["secrets_dir"].iterdir())
    assert secret_files == ["jwt_secret", "session_secret", "storage_encryption_key", "users_hash_key"]
    assert all((env["secrets_dir"] / n).stat().st_mode & 0o777 == 0o400 for n in secret_files)
    assert {n: (env["secrets_dir"] / n).stat().st_uid for n in secret_files} == {
        "jwt_secret": 8091, "session_secret": 8091, "storage_encryption_key": 8091, "users_hash_key": 0}
    mounts = {m["Destination"]: m for m in box["Mounts"]}
    assert {"/config", "/data", "/secrets/jwt_secret", "/secrets/session_secret",
            "/secrets/storage_encryption_key", "/app/.healthcheck.env"} == set(mounts), mounts
    assert not mounts["/secrets/jwt_secret"]["RW"] and mounts["/config"]["RW"]
    assert "X_AUTHELIA_HEALTHCHECK_PORT=9091" in (env["root"] / "data" / "authelia" / "healthcheck.env").read_text()
    compose_text = (env["root"] / "stacks" / env["project"] / "compose.yaml").read_text()
    config_text = env["config_file"].read_text()
    for name in secret_files:
        value = (env["secrets_dir"] / name).read_text()
        assert len(value) == 64 and value not in compose_text and value not in config_text
    config = yaml.safe_load(config_text)
    assert config["access_control"] == {"default_policy": "deny", "rules": RULES}
    assert config["session"]["cookies"] == [{"domain": DOMAIN, "authelia_url": PORTAL,
                                             "default_redirection_url": f"https://www.{DOMAIN}/"}]
    assert config["storage"] == {"local": {"path": "/data/db.sqlite3"}}
    assert config["authentication_backend"]["file"]["password"]["argon2"]["memory"] == 65536
    db = yaml.safe_load(env["users_file"].read_text())["users"]
    assert set(db) == {"alice", "bob"} and db["alice"]["groups"] == ["admins"]
    assert db["alice"]["password"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    users_before = env["users_file"].read_bytes()

    auth = Authelia(box, env["network"])
    admin = f"https://admin.{DOMAIN}/dashboard?tab=1"
    # No credentials on a rule with a subject: 401 and the portal with rd and rm.
    status, headers = auth.authz(admin)
    assert status == 401, headers
    assert headers["location"] == PORTAL + "/?" + urllib.parse.urlencode({"rd": admin, "rm": "GET"}), headers
    # Right Basic credentials in Proxy-Authorization: 200 with the identity headers.
    status, headers = auth.authz(admin, **{"Proxy-Authorization": basic("alice", ALICE_PW)})
    assert status == 200, headers
    assert (headers["remote-user"], headers["remote-groups"], headers["remote-name"], headers["remote-email"]) == (
        "alice", "admins", "Alice Admin", f"alice@{DOMAIN}")
    # Wrong password: 401 (asking for Basic credentials, no identity headers).
    status, headers = auth.authz(admin, **{"Proxy-Authorization": basic("alice", "not-" + ALICE_PW)})
    assert status == 401 and "remote-user" not in headers, headers
    # A user of another group: the admins rule does not match, the default policy denies.
    status, headers = auth.authz(admin, **{"Proxy-Authorization": basic("bob", BOB_PW)})
    assert status == 403 and "remote-user" not in headers, headers
    # A domain no rule covers: default deny, even for alice.
    assert auth.authz(f"https://db.{DOMAIN}/")[0] == 403
    assert auth.authz(f"https://db.{DOMAIN}/", **{"Proxy-Authorization": basic("alice", ALICE_PW)})[0] == 403
    # Bypass: 200 for anyone, without identity headers.
    status, headers = auth.authz(f"https://public.{DOMAIN}/x", "POST")
    assert status == 200 and "remote-user" not in headers, headers
    # Missing X-Original-URL, or an http:// one: 400 (nginx's auth_request turns that into a 500).
    assert dh.http(f"{auth.base}/api/authz/auth-request", headers={"X-Original-Method": "GET"})[0] == 400
    assert auth.authz(f"http://admin.{DOMAIN}/")[0] == 400

    # The cookie flow: /api/firstfactor on the portal sets authelia_session for the cookie domain.
    status, data, headers = auth.firstfactor("alice", "wrong", admin)
    assert status == 401 and data["status"] == "KO" and "set-cookie" not in headers
    status, data, headers = auth.firstfactor("alice", ALICE_PW, admin)
    assert status == 200 and data == {"status": "OK", "data": {"redirect": admin}}, data
    cookie = headers["set-cookie"]
    assert f"Domain={DOMAIN}" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    session = re.match(r"authelia_session=([^;]+);", cookie)[1]
    status, headers = auth.authz(admin, Cookie=f"authelia_session={session}")
    assert status == 200 and headers["remote-user"] == "alice", headers
    bob_session = re.match(r"authelia_session=([^;]+);", auth.firstfactor("bob", BOB_PW, admin)[2]["set-cookie"])[1]
    assert auth.authz(admin, Cookie=f"authelia_session={bob_session}")[0] == 403

    # NPM reaches it by the alias on the shared network.
    probe = dh.docker("run", "--rm", "--network", env["network"], "--label", "org.selfhosted.test=integration",
                      "--name", dh.unique_name("client"), dh.image_ref("authelia"), "curl", "-s", "-o", "/dev/null",
                      "-w", "%{http_code}", "-H", f"X-Original-URL: https://public.{DOMAIN}/", "-H",
                      "X-Original-Method: GET", "http://authelia:9091/api/authz/auth-request", check=False)
    assert probe.stdout == "200", probe

    # Second converge: nothing changes, the users file is byte-identical, the container is the same.
    again, out = converge(tmp_path, env)
    assert again["rc"] == 0 and again["changed"] == 0, out
    assert env["users_file"].read_bytes() == users_before
    assert container(env["project"])["Id"] == box["Id"]

    # --check --diff with a new password: the change is reported (users file, recreation), nothing is touched.
    checked, out = converge(tmp_path, env, "--check", "--diff", authelia_users=users(alice_pw=ALICE_NEW_PW))
    assert checked["rc"] == 0, out
    assert changed_tasks(out) == ["Write the users database (argon2id hashes, stable while nothing changes)",
                                  "Deploy Authelia"], out
    assert_no_password(out)
    assert env["users_file"].read_bytes() == users_before
    assert container(env["project"])["Id"] == box["Id"]
    assert auth.authz(admin, **{"Proxy-Authorization": basic("alice", ALICE_PW)})[0] == 200

    # The new password for real: the users file is rewritten and the container recreated; the old password is refused.
    config_before = env["config_file"].read_bytes()
    changed, out = converge(tmp_path, env, authelia_users=users(alice_pw=ALICE_NEW_PW))
    assert changed["rc"] == 0 and changed["failed"] == 0, out
    assert changed_tasks(out) == ["Write the users database (argon2id hashes, stable while nothing changes)",
                                  "Deploy Authelia"], out
    assert_no_password(out)
    assert env["users_file"].read_bytes() != users_before
    assert env["config_file"].read_bytes() == config_before
    new_db = yaml.safe_load(env["users_file"].read_text())["users"]
    assert new_db["bob"]["password"] == db["bob"]["password"]  # bob's hash did not move
    reborn = container(env["project"])
    assert reborn["Id"] != box["Id"] and reborn["State"]["Health"]["Status"] == "healthy"
    auth = Authelia(reborn, env["network"])
    assert auth.authz(admin, **{"Proxy-Authorization": basic("alice", ALICE_PW)})[0] == 401
    status, headers = auth.authz(admin, **{"Proxy-Authorization": basic("alice", ALICE_NEW_PW)})
    assert status == 200 and headers["remote-user"] == "alice"
    # Sessions live in memory (no redis): the recreated container has none.
    assert auth.authz(admin, Cookie=f"authelia_session={session}")[0] == 401

    # -vvv: still nothing changes and no password is printed anywhere.
    verbose, out = converge(tmp_path, env, "-vvv", authelia_users=users(alice_pw=ALICE_NEW_PW))
    assert verbose["rc"] == 0 and verbose["changed"] == 0, out
    assert "selfhosted.platform.host_secret" in out or "host_secret" in out  # really verbose
    assert_no_password(out)
    for name in ("jwt_secret", "session_secret", "storage_encryption_key", "users_hash_key"):
        assert (env["secrets_dir"] / name).read_text() not in out


def test_bad_users_fail_before_the_host_changes_naming_user_and_field(tmp_path, authelia_env):
    env = authelia_env
    bad = [users()[0], {"name": "carol", "displayname": "Carol", "groups": ["dev"]}]
    res, out = converge(tmp_path, env, "-vvv", authelia_users=bad)
    assert res["rc"] != 0 and res["failed"] == 1, out
    assert "users[1] (carol): password is missing" in out, out
    assert_no_password(out)
    assert not env["root"].exists()
    assert dh.project_containers(env["project"]) == []

    # The role's argument spec knows the policies (the site preflight names the item: ...rules[0].policy).
    res, out = converge(tmp_path, env, authelia_access_control_rules=[{"domain": f"x.{DOMAIN}", "policy": "allow"}])
    assert res["rc"] != 0, out
    assert "value of policy must be one of: bypass, one_factor, two_factor, deny, got: allow" in out, out
    res, out = converge(tmp_path, env, authelia_session_domain="", authelia_portal_url=PORTAL)
    assert res["rc"] != 0 and "domain is missing" in out, out
    assert not env["root"].exists()


# --------------------------------------------------------------------------------------------------
# end to end: the NPM stand-in's edge in front, Authelia deciding (the contract of /tmp/authelia_snippet.md)
# --------------------------------------------------------------------------------------------------

NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname, NO_VERIFY.verify_mode = False, ssl.CERT_NONE


def through_npm(port: int, host: str, path: str = "/", method: str = "GET", body: bytes | None = None,
                **headers: str) -> tuple[int, dict, bytes]:
    """One HTTPS request to the NPM stand-in's 443 (published on 127.0.0.1:PORT) with Host: HOST."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=NO_VERIFY)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_through_the_npm_stand_in_protected_hosts_send_strangers_to_the_portal_and_let_users_in(
        tmp_path, authelia_env, dk):
    env = authelia_env
    npm_image, app_image = dh.require_image("npm"), dh.require_image("httpapp")
    dh.docker("network", "create", "--label", "org.selfhosted.test=integration", env["network"])
    app = dk.run(app_image, network=env["network"], env={"APP_NAME": "protected-app", "APP_VERSION": "1"})
    npm = dk.run(npm_image, network=env["network"], publish=[81, 443], env={"NPM_FAKE_VERSION": "2.13.5"})
    dh.wait_until(lambda: dh.http_json(npm.url(81, "/api/"), timeout=3)[1]["status"] == "OK", 60,
                  what="the NPM API", explain=npm.describe)
    _ignored, https_port = npm.host_port(443)

    (tmp_path / "sso").mkdir()
    res, out = converge(tmp_path / "sso", env)
    assert res["rc"] == 0 and res["failed"] == 0, out
    tls = {"certificate": "new", "ssl_forced": True, "http2_support": True}
    res, out = converge(tmp_path, env, role="proxy", proxy_mode="npm", proxy_npm_deploy=False,
                        proxy_npm_url=npm.url(81, "").rstrip("/"), proxy_npm_admin_email="ops@example.test",
                        proxy_npm_admin_password="it-npm-" + secrets.token_hex(8), proxy_npm_wait_timeout=30,
                        proxy_npm_proxy_hosts=[
                            {**tls, "domain_names": [f"admin.{DOMAIN}"], "forward_host": app.name,
                             "forward_port": 8080, "authelia": True},
                            {**tls, "domain_names": [f"other.{DOMAIN}"], "forward_host": app.name,
                             "forward_port": 8080, "authelia": True},
                            {**tls, "domain_names": [f"auth.{DOMAIN}"], "forward_host": "authelia",
                             "forward_port": 9091}])
    assert res["rc"] == 0 and res["failed"] == 0, out
    protected = f"https://admin.{DOMAIN}/report?id=7"
    dh.wait_until(lambda: through_npm(https_port, f"admin.{DOMAIN}", "/report?id=7")[0] == 302, 60,
                  what="the protected host", explain=lambda: npm.describe() + "\n" + app.describe())

    # A stranger is sent to the portal with rd/rm (Authelia's 401 + Location, NPM's error_page 401 =302).
    status, headers, _body = through_npm(https_port, f"admin.{DOMAIN}", "/report?id=7")
    assert status == 302, headers
    assert headers["location"] == PORTAL + "/?" + urllib.parse.urlencode({"rd": protected, "rm": "GET"}), headers
    # Basic credentials in Proxy-Authorization: the app answers; a user of another group gets 403, and so does a host
    # no rule opens (default deny).
    status, _headers, body = through_npm(https_port, f"admin.{DOMAIN}", "/",
                                         **{"Proxy-Authorization": basic("alice", ALICE_PW)})
    assert (status, body) == (200, b"protected-app 1\n")
    bob, alice = {"Proxy-Authorization": basic("bob", BOB_PW)}, {"Proxy-Authorization": basic("alice", ALICE_PW)}
    assert through_npm(https_port, f"admin.{DOMAIN}", "/", **bob)[0] == 403
    assert through_npm(https_port, f"other.{DOMAIN}", "/", **alice)[0] == 403
    # The portal is reached through NPM too, and a login there opens the protected host with the cookie.
    login = json.dumps({"username": "alice", "password": ALICE_PW, "targetURL": protected}).encode()
    status, headers, body = through_npm(https_port, f"auth.{DOMAIN}", "/api/firstfactor", "POST", login,
                                        **{"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["data"]["redirect"] == protected, (status, body)
    session = re.match(r"authelia_session=([^;]+);", headers["set-cookie"])[1]
    status, _headers, body = through_npm(https_port, f"admin.{DOMAIN}", "/", Cookie=f"authelia_session={session}")
    assert (status, body) == (200, b"protected-app 1\n")
    # The app saw the authorized requests only: never the stranger's.
    logs = app.logs()
    assert logs.count('"GET /" 200') == 2 and "/report" not in logs, logs


# --------------------------------------------------------------------------------------------------
# the stand-in keeps the official image's metadata and refuses what Authelia refuses
# --------------------------------------------------------------------------------------------------

HASH = "$argon2id$v=19$m=65536,t=3,p=4$Y2hlY2tjaGVja2NoZWNrMQ$Yv5Y+Hs2mwO5A6vSg4H2a0mOv1nJ6EwMfWQWXnXc2iw"
GOOD = {
    "server": {"address": "tcp://:9091/"},
    "authentication_backend": {"file": {"path": "/config/users_database.yml"}},
    "access_control": {"default_policy": "deny", "rules": [{"domain": f"*.{DOMAIN}", "policy": "one_factor"}]},
    "session": {"cookies": [{"domain": DOMAIN, "authelia_url": PORTAL}]},
    "storage": {"encryption_key": "k" * 24, "local": {"path": "/config/db.sqlite3"}},
    "notifier": {"filesystem": {"filename": "/config/notification.txt"}},
    "identity_validation": {"reset_password": {"jwt_secret": "j" * 32}},
}
USERS = {"users": {"alice": {"displayname": "Alice", "password": HASH}}}


def variant(path: str, value) -> dict:
    doc = json.loads(json.dumps(GOOD))
    node = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is None:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return doc


def test_stand_in_image_keeps_the_official_images_metadata():
    config = dh.image_config(dh.require_image("authelia"))
    assert config["Entrypoint"] == ["/app/entrypoint.sh"] and not config.get("Cmd")
    assert set(config["ExposedPorts"]) == {"9091/tcp"} and set(config["Volumes"]) == {"/config"}
    assert config["WorkingDir"] == "/app"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert (env["PUID"], env["PGID"], env["X_AUTHELIA_CONFIG"]) == ("0", "0", "/config/configuration.yml")
    assert env["PATH"].startswith("/app:")
    health = config["Healthcheck"]
    assert health["Test"] == ["CMD-SHELL", "/app/healthcheck.sh"]
    assert (health["Interval"], health["Timeout"], health["StartPeriod"]) == (30 * 10**9, 3 * 10**9, 60 * 10**9)


@pytest.fixture
def dk():
    session = dh.Session()
    yield session
    errors = session.cleanup()
    assert not errors, f"cleanup failed: {errors}"


@pytest.mark.parametrize(("config", "users_db", "env", "message"), [
    (variant("storage.encryption_key", "short-key"), USERS, {},
     "storage: option 'encryption_key' must be 20 characters or longer"),
    (variant("storage.encryption_key", None), USERS, {}, "storage: option 'encryption_key' is required"),
    (variant("identity_validation", None), USERS, {},
     "identity_validation: reset_password: option 'jwt_secret' is required"),
    (variant("session.redis", {"host": "redis"}), USERS, {},
     "session: option 'secret' is required when using the 'redis' provider"),
    (variant("access_control.rules", [{"domain": f"a.{DOMAIN}", "policy": "allow"}]), USERS, {},
     "option 'policy' must be one of 'bypass', 'one_factor', 'two_factor' or 'deny' but it's configured as 'allow'"),
    (variant("access_control.rules", [{"policy": "deny"}]), USERS, {},
     "option 'domain' or 'domain_regex' must be present"),
    (variant("access_control.rules", [{"domain": f"a.{DOMAIN}", "policy": "bypass", "subject": "group:x"}]), USERS,
     {}, "'policy' option 'bypass' is not supported when 'subject' option is configured"),
    (variant("session.cookies", [{"domain": DOMAIN, "authelia_url": f"http://auth.{DOMAIN}"}]), USERS, {},
     "option 'authelia_url' does not have a secure scheme"),
    (variant("notifier", None), USERS, {}, "notifier: you must ensure either the 'smtp' or 'filesystem' notifier"),
    (GOOD, {"users": {"alice": {"displayname": "Alice", "password": "$argon2id$v=19$m65536,t=3,p=4$abc$def"}}}, {},
     "error occurred decoding the password hash for 'alice'"),
    (GOOD, {"users": {"alice": {"displayname": "Alice", "password": "plain-text"}}}, {},
     "error occurred decoding the password hash for 'alice'"),
    (GOOD, {"users": {}}, {}, "users: non zero value required"),
    (GOOD, USERS, {"AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": "/config/key"},
     "error loading secret into key 'storage.encryption_key': it's already defined"),
])
def test_stand_in_refuses_to_start_on_what_authelia_refuses(dk, config, users_db, env, message):
    image = dh.require_image("authelia")
    box = dk.run(image, "--config", "/config/configuration.yml", env=env,
                 files={"/config/configuration.yml": yaml.safe_dump(config),
                        "/config/users_database.yml": yaml.safe_dump(users_db), "/config/key": "x" * 30})
    assert box.wait_exit(timeout=60) == 1, box.describe()
    logs = box.logs()
    assert message in logs, logs
    assert "level=fatal" in logs


def test_stand_in_needs_what_upstream_needs_when_hardened(dk, tmp_path):
    """Upstream's entrypoint runs su-exec even for PUID 0 (setgroups: CAP_SETGID) and Authelia refuses to start
    when it cannot rewrite /app/.healthcheck.env; started as a user of its own it needs no capability at all."""
    image = dh.require_image("authelia")
    files = {"/config/configuration.yml": yaml.safe_dump(GOOD), "/config/users_database.yml": yaml.safe_dump(USERS)}
    hardened = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]
    as_root = dk.run(image, "--config", "/config/configuration.yml", files=files, extra=hardened)
    assert as_root.wait_exit(timeout=60) != 0, as_root.describe()
    assert "setgroups failed: Operation not permitted" in as_root.logs()
    with_setgid = dk.run(image, "--config", "/config/configuration.yml", files=files,
                         extra=[*hardened, "--cap-add", "SETGID"])
    with_setgid.wait_exec("/app/healthcheck.sh", timeout=60)
    # A read-only container takes no `docker cp`: its configuration comes from a host directory (read-only), storage
    # and notifier go to the tmpfs.
    config = variant("storage.local", {"path": "/tmp/db.sqlite3"})
    config["notifier"] = {"filesystem": {"filename": "/tmp/notification.txt"}}
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    (conf_dir / "configuration.yml").write_text(yaml.safe_dump(config))
    (conf_dir / "users_database.yml").write_text(yaml.safe_dump(USERS))
    read_only = dk.run(image, "--config", "/config/configuration.yml", user="8091:8091",
                       volumes=[f"{conf_dir}:/config:ro"], extra=[*hardened, "--read-only", "--tmpfs", "/tmp"])
    assert read_only.wait_exit(timeout=60) == 1, read_only.describe()
    logs = read_only.logs()
    assert 'level=fatal msg="Create Server Service (main) returned error"' in logs, logs
    assert "unable to configure healthcheck: open /app/.healthcheck.env: read-only file system" in logs, logs
    env_file = tmp_path / "healthcheck.env"
    env_file.write_text("")
    os.chown(env_file, 8091, 8091)
    mounted = dk.run(image, "--config", "/config/configuration.yml", user="8091:8091",
                     volumes=[f"{conf_dir}:/config:ro", f"{env_file}:/app/.healthcheck.env"],
                     extra=[*hardened, "--read-only", "--tmpfs", "/tmp"])
    mounted.wait_exec("curl", "-sf", "http://localhost:9091/api/health", timeout=60)
    assert "X_AUTHELIA_HEALTHCHECK_PORT=9091" in env_file.read_text()
    mounted.exec_ok("/app/healthcheck.sh")


def test_stand_in_refuses_a_changed_storage_encryption_key_and_takes_secrets_from_files(dk):
    image = dh.require_image("authelia")
    volume = dk.volume()
    config = variant("storage.encryption_key", None)
    config["storage"]["local"]["path"] = "/data/db.sqlite3"
    files = {"/config/configuration.yml": yaml.safe_dump(config), "/config/users_database.yml": yaml.safe_dump(USERS),
             "/secrets/key": "first-encryption-key-0123456789\n"}
    first = dk.run(image, "--config", "/config/configuration.yml", volumes=[f"{volume}:/data"], files=files,
                   env={"AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": "/secrets/key"})
    first.wait_exec("curl", "-sf", "http://localhost:9091/api/health", timeout=60)
    # Listening, it has told the image's healthcheck where to look, and the check passes.
    assert "X_AUTHELIA_HEALTHCHECK_PORT=9091" in first.exec_ok("cat", "/app/.healthcheck.env")
    first.exec_ok("/app/healthcheck.sh")
    first.stop()
    second = dk.run(image, "--config", "/config/configuration.yml", volumes=[f"{volume}:/data"],
                    files={**files, "/secrets/key": "another-encryption-key-0123456789"},
                    env={"AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": "/secrets/key"})
    assert second.wait_exit(timeout=60) == 1, second.describe()
    assert "the configured encryption key does not appear to be valid for this database" in second.logs()
