"""roles/watchtower through ansible-playbook with a local connection, on the local Docker Engine, with a real registry
(Debian's docker-registry, the session's ``registry`` fixture) and the stand-ins ``shp-test/watchtower`` (real
updates through the Engine API, only the calls Watchtower makes) and ``shp-test/socketproxy`` (wollomatic/
socket-proxy's flags and refusals, haproxy underneath).

Two app images are pushed to the registry; a labelled app container (two networks, a data volume) and an unlabelled
one run them, both in the test's Watchtower scope. After the role's deploy: Watchtower has no Docker socket and talks
to the proxy over DOCKER_HOST; the proxy mounts the socket read-only, publishes no port and sits on an internal
network only; a second converge changes nothing. Through the proxy, from the Watchtower container (the only client
it answers), exec, container creation under other path variants, secrets, swarm, volume creation and deletions
outside the allowlist are refused with 403 (a method without a regex with 405) and nothing is created or removed;
another container on the internal network is refused outright. Then new versions of both images are pushed and
Watchtower runs once: the labelled container is recreated on the new image (same name, networks and aliases, its
volume kept, the new image's environment applied), the unlabelled one is untouched, and --cleanup removed the
replaced image. A bad regex in the allowlist fails the role, naming the option, before anything is deployed."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
ENABLE = "com.centurylinklabs.watchtower.enable"
SCOPE = "com.centurylinklabs.watchtower.scope"
# The app writes its version into its volume at every start and stops at once on SIGTERM.
APP = """FROM {base}
LABEL org.selfhosted.test=integration
ENV APP_VERSION={version}
CMD ["sh", "-c", "echo $APP_VERSION >> /data/versions; trap 'exit 0' TERM; while :; do sleep 1; done"]
"""
# Sends requests to the proxy from inside a container: JSON [[method, path, body], ...] on stdin, one JSON line of
# [status, first bytes of the answer] per request on stdout.
PROBE = """
import http.client, json, sys
out = []
for method, path, body in json.loads(sys.stdin.readline()):
    conn = http.client.HTTPConnection(sys.argv[1], 2375, timeout=20)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    out.append([resp.status, resp.read()[:80].decode(errors="replace")])
    conn.close()
print(json.dumps(out))
"""


def converge(tmp: Path, variables: dict, *args: str) -> tuple[dict, str]:
    (tmp / "vars.json").write_text(json.dumps({"ansible_python_interpreter": sys.executable, **variables}))
    pb = tmp / "play.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "roles": ["selfhosted.platform.watchtower"]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), "-e", f"@{tmp / 'vars.json'}", *args],
                   timeout=600, ANSIBLE_LOCALHOST_WARNING="false", XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))
    m = RECAP.search(res.stdout)
    assert m, explain(res)
    return {"rc": res.returncode, "changed": int(m[2]), "failed": int(m[4])}, res.stdout + res.stderr


def inspect(name: str) -> dict:
    return json.loads(dh.docker("inspect", name).stdout)[0]


def service(project: str, name: str) -> dict:
    ids = dh.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                    "--filter", f"label=com.docker.compose.service={name}").stdout.split()
    assert len(ids) == 1, f"expected one running {name} container in {project}, got {ids}"
    return inspect(ids[0])


def probe(container: str, requests: list) -> list:
    res = dh.docker("exec", "-i", container, "python3", "-c", PROBE, "socket-proxy",
                    input=json.dumps(requests) + "\n", timeout=120)
    return [tuple(r) for r in json.loads(res.stdout)]


@pytest.fixture
def platform(tmp_path, registry):
    """The registry's two app images (v1), the labelled and the unlabelled container, the role's variables."""
    base = f"{dh.IMAGE_PREFIX}/base:bookworm"
    images = {"watchtower": dh.require_image("watchtower"), "socketproxy": dh.require_image("socketproxy")}
    project = dh.unique_name("wt")
    dk = dh.Session()
    env = {"project": project, "dk": dk, "base": base, "registry": registry,
           "app_ref": registry.ref(f"{project}/app", "stable"), "other_ref": registry.ref(f"{project}/other", "stable")}
    try:
        env["app_v1"] = registry.push(env["app_ref"], APP.format(base=base, version="v1"))
        env["other_v1"] = registry.push(env["other_ref"], APP.format(base=base, version="o1"))
        net1, net2 = dk.network(), dk.network()
        env["nets"] = (net1, net2)
        env["app_vol"], env["other_vol"] = dk.volume(), dk.volume()
        env["app"] = dk.run(env["app_ref"], kind="app", network=net1, alias="web", volumes=[f"{env['app_vol']}:/data"],
                            extra=["--label", f"{ENABLE}=true", "--label", f"{SCOPE}={project}"])
        dh.docker("network", "connect", "--alias", "web2", net2, env["app"].name)
        env["other"] = dk.run(env["other_ref"], kind="other", volumes=[f"{env['other_vol']}:/data"],
                              extra=["--label", f"{SCOPE}={project}"])
        root = tmp_path / "host"
        env["vars"] = {
            "watchtower_image": images["watchtower"], "watchtower_socket_proxy_image": images["socketproxy"],
            "watchtower_project": project, "watchtower_project_dir": str(root / "stacks" / project),
            "watchtower_config_dir": str(root / "etc"), "watchtower_scope": project,
            "watchtower_schedule": "", "watchtower_interval": 3600, "watchtower_cleanup": True,
        }
        yield env
    finally:
        errors = dh.remove_compose_project(project)
        # Containers Watchtower created replace the session's ones under the same names.
        errors += dk.cleanup()
        assert not errors, errors


def test_watchtower_behind_the_socket_proxy_updates_only_the_opted_in_container(tmp_path, platform):
    project, app, other = platform["project"], platform["app"], platform["other"]
    started = time.monotonic()
    first, out = converge(tmp_path, platform["vars"])
    assert first["rc"] == 0 and first["failed"] == 0 and first["changed"] > 0, out
    converge_s = time.monotonic() - started

    tower, proxy = service(project, "watchtower"), service(project, "socket-proxy")
    internal = f"{project}_socket-proxy"
    # No raw socket in Watchtower; DOCKER_HOST points at the proxy.
    assert not [m for m in tower["Mounts"] if "docker.sock" in m.get("Source", "") + m.get("Destination", "")]
    assert "DOCKER_HOST=tcp://socket-proxy:2375" in tower["Config"]["Env"]
    # The proxy: the socket read-only, no published port, on the internal network only, locked down.
    [sock] = [m for m in proxy["Mounts"] if m["Destination"] == "/var/run/docker.sock"]
    assert sock["RW"] is False and sock["Mode"] == "ro", sock
    assert not proxy["HostConfig"]["PortBindings"] and not any(proxy["NetworkSettings"]["Ports"].values())
    assert dh.docker("port", proxy["Name"].lstrip("/")).stdout.strip() == ""
    assert list(proxy["NetworkSettings"]["Networks"]) == [internal]
    assert json.loads(dh.docker("network", "inspect", internal).stdout)[0]["Internal"] is True
    assert sorted(tower["NetworkSettings"]["Networks"]) == sorted([internal, f"{project}_default"])
    assert proxy["HostConfig"]["ReadonlyRootfs"] is True and proxy["HostConfig"]["CapDrop"] == ["ALL"]
    assert proxy["State"]["Health"]["Status"] == "healthy"

    # Watchtower's first session (at start) found the opted-in container up to date.
    tower_name = tower["Name"].lstrip("/")

    def first_session() -> str:
        out = dh.docker("logs", tower_name).stdout
        return out if "Session done" in out else ""

    logs = dh.wait_until(first_session, 60, what="Watchtower's first session")
    assert f"Checking containers: {app.name}\n" in logs and "Session done Scanned=1 Updated=0 Failed=0" in logs, logs

    again, out = converge(tmp_path, platform["vars"])
    assert again["rc"] == 0 and again["changed"] == 0, out

    # Monitor-only, predicted with --check --diff: reads and pulls only; nothing on the host changes.
    monitor, out = converge(tmp_path, {**platform["vars"], "watchtower_monitor_only": True}, "--check", "--diff")
    assert monitor["rc"] == 0 and monitor["changed"] == 1, out
    assert r"-    - -allowDELETE=(?:/v1\.[0-9]+)?(?:/containers/" in out, out
    assert r"+    - -allowPOST=(?:/v1\.[0-9]+)?(?:/images/create)" in out, out
    assert not re.search(r"^\+ .*-allow(DELETE|PUT)", out, re.M), out
    assert service(project, "socket-proxy")["Id"] == proxy["Id"] and service(project, "watchtower")["Id"] == tower["Id"]

    # Through the proxy, from Watchtower's container: what Watchtower needs answers, everything else is refused.
    app_id = inspect(app.name)["Id"]
    evil = dh.unique_name("evil")
    create = {"Image": platform["app_ref"], "Cmd": ["true"]}
    answers = probe(tower_name, [
        ["GET", "/v1.41/containers/json", None],
        ["GET", "/containers/json", None],
        ["POST", f"/v1.41/containers/{app_id}/exec", {"Cmd": ["id"], "AttachStdout": True}],
        ["POST", f"/v1.41/containers/create/?name={evil}-1", create],
        ["POST", f"/v9.99/containers/create?name={evil}-2", create],
        ["POST", f"/v1.41/containers/x/../create?name={evil}-3", create],
        ["POST", f"/v1.41/containers/create%2F?name={evil}-4", create],
        ["GET", "/v1.41/secrets", None],
        ["GET", "/v1.41/swarm", None],
        ["POST", "/v1.41/volumes/create", {"Name": f"{evil}-vol"}],
        ["DELETE", f"/v1.41/volumes/{platform['app_vol']}", None],
        ["DELETE", f"/v1.41/networks/{platform['nets'][1]}", None],
        ["DELETE", f"/v1.41/images/{platform['other_ref']}", None],
        ["PUT", f"/v1.41/containers/{app_id}/archive?path=/tmp", None],
    ])
    assert answers[0][0] == 200 and answers[1][0] == 200, answers
    assert [a[0] for a in answers[2:13]] == [403] * 11 and all(a[1] == "Forbidden\n" for a in answers[2:13]), answers
    assert answers[13] == (405, "Method Not Allowed\n"), answers
    assert inspect(app.name)["ExecIDs"] is None
    assert dh.docker("ps", "-aq", "--filter", f"name={evil}").stdout.strip() == ""
    assert dh.docker("volume", "inspect", f"{evil}-vol", check=False).returncode != 0
    dh.docker("volume", "inspect", platform["app_vol"])
    dh.docker("network", "inspect", platform["nets"][1])
    dh.docker("image", "inspect", platform["other_ref"])
    # Another container on the internal network is not Watchtower: refused whatever it asks.
    stranger = platform["dk"].run_once(platform["base"], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                       "http://socket-proxy:2375/v1.41/containers/json", network=internal)
    assert stranger.stdout == "403", explain(stranger)
    blocked = dh.docker("logs", proxy["Name"].lstrip("/")).stdout
    assert f'reason="path not allowed" method=POST URL="/v1.41/containers/{app_id}/exec"' in blocked, blocked
    assert 'reason="forbidden IP"' in blocked, blocked

    # New versions of both images in the registry, not here: Watchtower must pull them.
    registry = platform["registry"]
    app_v2 = registry.push(platform["app_ref"], APP.format(base=platform["base"], version="v2"))
    other_v2 = registry.push(platform["other_ref"], APP.format(base=platform["base"], version="o2"))
    dh.docker("image", "rm", app_v2, other_v2)
    before_app, before_other = inspect(app.name), inspect(other.name)

    run_started = time.monotonic()
    run = dh.docker("exec", tower_name, *tower["Config"]["Entrypoint"], *tower["Config"]["Cmd"], "--run-once",
                    timeout=300)
    run_s = time.monotonic() - run_started
    assert "Session done Scanned=1 Updated=1 Failed=0" in run.stdout, run.stdout
    assert f"Removing image {platform['app_v1'].split(':')[1][:12]}" in run.stdout, run.stdout

    after_app, after_other = inspect(app.name), inspect(other.name)
    assert after_app["Id"] != before_app["Id"] and after_app["Image"] == app_v2 != platform["app_v1"]
    assert after_app["State"]["Running"] is True
    assert after_app["Config"]["Labels"][ENABLE] == "true" and after_app["Config"]["Labels"][SCOPE] == project
    assert "APP_VERSION=v2" in after_app["Config"]["Env"]  # the new image's default, not the old one's
    nets = after_app["NetworkSettings"]["Networks"]
    assert set(nets) == set(platform["nets"]), nets
    assert "web" in nets[platform["nets"][0]]["Aliases"] and "web2" in nets[platform["nets"][1]]["Aliases"], nets
    [data] = [m for m in after_app["Mounts"] if m["Destination"] == "/data"]
    assert data["Name"] == platform["app_vol"]

    def both_versions() -> str:
        out = dh.docker("exec", app.name, "cat", "/data/versions").stdout
        return out if out.count("\n") >= 2 else ""

    versions = dh.wait_until(both_versions, 20, what="the new version's start")
    assert versions == "v1\nv2\n", versions  # the volume kept the first version's line
    # The unlabelled container is untouched, on its old image; the replaced image is gone (--cleanup).
    assert after_other["Id"] == before_other["Id"] and after_other["Image"] == platform["other_v1"]
    assert after_other["State"]["StartedAt"] == before_other["State"]["StartedAt"]
    assert dh.docker("image", "inspect", platform["app_v1"], check=False).returncode != 0
    print(f"\nwatchtower proxy: first converge {converge_s:.1f}s, run-once update {run_s:.1f}s")


def test_a_bad_allowlist_regex_fails_naming_the_option_before_anything_is_deployed(tmp_path):
    project = dh.unique_name("wt")
    root = tmp_path / "host"
    variables = {"watchtower_project": project, "watchtower_project_dir": str(root / "stacks"),
                 "watchtower_config_dir": str(root / "etc"),
                 "watchtower_socket_proxy_allow_extra": {"POST": ["/containers/[a-z0-9]+/(start|exec"]}}
    try:
        res, out = converge(tmp_path, variables)
        assert res["rc"] != 0 and res["changed"] == 0, out
        assert "watchtower_socket_proxy_allow_extra.POST[0]" in out and "not a valid regular expression" in out, out
        assert not root.exists()
        assert dh.project_containers(project) == []
    finally:
        assert dh.remove_compose_project(project) == []
