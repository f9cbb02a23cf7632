"""Unit tests for compose_stack's orchestration (plugins/module_utils/compose_stack.py) with the
docker CLI faked at the process boundary (tests/unit/fake_docker.py)."""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import unquote_plus

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_cli as cc
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_stack as cs

from tests.unit.fake_docker import FakeDocker

SECRET = "hunter2-$ecret'x"


def params(project_dir, **kw):
    p = {
        "project_name": "p", "project_dir": str(project_dir), "definition": None, "files": [], "env": None,
        "env_file_name": ".env", "env_files": [], "profiles": [], "services": [], "state": "present",
        "pull": "missing", "build": "policy", "recreate": "auto", "remove_orphans": False, "restart_on": [],
        "wait": True, "wait_timeout": 5, "rollback": False, "timeout": None, "remove_volumes": False,
        "remove_images": None,
    }
    p.update(kw)
    return p


def definition(version="1", health=True):
    web = {"image": "app:1", "environment": {"VERSION": version, "PASSWORD": "${PASSWORD}"}}
    if health:
        web["healthcheck"] = {"test": ["CMD", "true"]}
    return {"services": {"web": web, "cache": {"image": "redis:7"}}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def stack(tmp_path, docker, check=False, diff=False, api=True, **kw):
    clock = Clock()
    return cs.Stack(params(tmp_path / "proj", **kw), docker, check_mode=check, diff_mode=diff,
                    sleep=clock.sleep, clock=clock, api=cc.EngineAPI(docker.api) if api else None,
                    environ=docker.environ)


def compose_cmds(docker, verb):
    return [c for c in docker.calls if c[:2] == ["docker", "compose"] and verb in c]


@pytest.fixture
def docker(tmp_path):
    # The Compose plugin binary the key identifies: one in $DOCKER_CONFIG/cli-plugins, which the docker
    # CLI searches before the system directories.
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").write_text("compose v2.40.3\n")
    d = FakeDocker(environ={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    d.images = {"app:1": "sha256:app1", "redis:7": "sha256:redis7"}
    return d


def deploy(tmp_path, docker, **kw):
    kw.setdefault("definition", definition())
    kw.setdefault("env", {"PASSWORD": SECRET})
    return stack(tmp_path, docker, **kw).execute()


def test_first_deploy_creates_writes_files_with_modes(tmp_path, docker):
    res = deploy(tmp_path, docker)
    assert res["changed"] and res["path"] == "up"
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "create", "web": "create"}
    env = tmp_path / "proj" / ".env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "proj" / "compose.yaml").stat().st_mode & 0o777) == "0o600"
    assert res["services"]["web"]["health"] == "healthy"


def test_second_run_is_fast_noop_with_few_calls(tmp_path, docker):
    first = deploy(tmp_path, docker)
    assert first["resolution"] == "compose"
    docker.calls.clear()
    docker.api_requests.clear()
    res = deploy(tmp_path, docker)
    assert not res["changed"] and res["path"] == "fast-noop" and res["resolution"] == "cache"
    # The resolution comes from the cache; containers and the two images from the Engine API.
    assert res["cli_calls"] == 0 and docker.calls == []
    assert res["api_calls"] == 3 and len(docker.api_requests) == 3
    assert res["compose_version"] == "v2.40.3"


def test_first_deploy_takes_the_hashes_from_the_created_containers(tmp_path, docker):
    res = deploy(tmp_path, docker)
    assert res["path"] == "up"
    # version, config, up: no config --hash while the project has no container
    assert len(docker.calls) == 3 and not compose_cmds(docker, "--hash")
    assert compose_cmds(docker, "version") and compose_cmds(docker, "config") and compose_cmds(docker, "up")
    cache = json.loads((tmp_path / "proj" / ".compose_stack" / "resolved.json").read_text())
    labels = {c["service"]: c["config_hash"] for c in docker.containers}
    assert cache["hashes"] == labels
    # ... which is what config --hash says, so forcing a resolution by Compose is still a no-op.
    (tmp_path / "proj" / ".compose_stack" / "resolved.json").unlink()
    docker.calls.clear()
    res = deploy(tmp_path, docker)
    assert not res["changed"] and res["resolution"] == "compose" and compose_cmds(docker, "--hash")
    assert json.loads((tmp_path / "proj" / ".compose_stack" / "resolved.json").read_text())["hashes"] == labels


def test_first_deploy_without_a_container_for_every_service_asks_compose_for_hashes(tmp_path, docker):
    d = definition()
    d["services"]["spare"] = {"image": "redis:7", "deploy": {"replicas": 0}}
    deploy(tmp_path, docker, definition=d)
    assert compose_cmds(docker, "--hash")
    assert resolution(tmp_path, docker, definition=d)[0]["resolution"] == "cache"


def test_check_mode_on_a_fresh_host_needs_no_hashes(tmp_path, docker):
    res = deploy(tmp_path, docker, check=True)
    assert res["changed"] and not compose_cmds(docker, "--hash") and compose_cmds(docker, "config")


def test_fast_noop_without_the_api_uses_two_cli_calls(tmp_path, docker):
    deploy(tmp_path, docker, api=False)
    docker.calls.clear()
    res = deploy(tmp_path, docker, api=False)
    assert not res["changed"] and res["resolution"] == "cache"
    # image inspect and ps only
    assert res["cli_calls"] == 2 and res["api_calls"] == 0
    assert [c[1] for c in docker.calls] == ["ps", "image"]


def test_api_failure_falls_back_to_the_cli(tmp_path, docker):
    deploy(tmp_path, docker)
    docker.api_down = True
    res = deploy(tmp_path, docker)
    assert not res["changed"] and res["path"] == "fast-noop"
    assert res["cli_calls"] == 2 and res["api_calls"] == 1  # the failed request, then the CLI from there on


# -- the resolution cache: every input that changes Compose's answer is a miss ----------------------
def resolution(tmp_path, docker, **kw):
    """Converge; return (result, the compose commands it ran)."""
    docker.calls.clear()
    res = deploy(tmp_path, docker, **kw)
    return res, [c for c in docker.calls if c[:2] == ["docker", "compose"]]


def test_cache_miss_on_a_changed_definition(tmp_path, docker):
    deploy(tmp_path, docker)
    res, cmds = resolution(tmp_path, docker, definition=definition("2"))
    assert res["resolution"] == "compose" and any("config" in c for c in cmds)
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "none", "web": "recreate"}
    assert resolution(tmp_path, docker, definition=definition("2"))[0]["resolution"] == "cache"


def test_cache_miss_on_a_changed_compose_file(tmp_path, docker):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "compose.yaml").write_text("services:\n  web:\n    image: app:1\n")
    assert deploy(tmp_path, docker, definition=None, env=None)["changed"]
    assert resolution(tmp_path, docker, definition=None, env=None)[0]["resolution"] == "cache"
    (proj / "compose.yaml").write_text("services:\n  web:\n    image: app:1\n    stop_grace_period: 3s\n")
    res = resolution(tmp_path, docker, definition=None, env=None)[0]
    assert res["resolution"] == "compose" and res["changed"]
    assert {a["service"]: a["action"] for a in res["actions"]} == {"web": "recreate"}


def test_cache_miss_on_a_changed_interpolated_process_variable(tmp_path, docker):
    d = definition()
    d["services"]["cache"]["environment"] = {"MODE": "${CACHE_MODE}"}
    docker.environ["CACHE_MODE"] = "lru"
    deploy(tmp_path, docker, definition=d)
    assert resolution(tmp_path, docker, definition=d)[0]["resolution"] == "cache"
    docker.environ["UNRELATED"] = "x"  # a variable the files do not name is not an input
    assert resolution(tmp_path, docker, definition=d)[0]["resolution"] == "cache"
    docker.environ["CACHE_MODE"] = "lfu"
    res = resolution(tmp_path, docker, definition=d)[0]
    assert res["resolution"] == "compose"
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "recreate", "web": "none"}
    del docker.environ["CACHE_MODE"]
    assert resolution(tmp_path, docker, definition=d)[0]["resolution"] == "compose"


def test_cache_miss_on_a_changed_env_file_of_a_service(tmp_path, docker):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "cache.env").write_text("MODE=a\n")
    d = definition()
    d["services"]["cache"]["env_file"] = ["cache.env"]
    deploy(tmp_path, docker, definition=d)
    assert resolution(tmp_path, docker, definition=d)[0]["resolution"] == "cache"
    (proj / "cache.env").write_text("MODE=b\n")
    res = resolution(tmp_path, docker, definition=d)[0]
    assert res["resolution"] == "compose" and res["changed"]
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "recreate", "web": "none"}


def test_cache_miss_on_a_changed_compose_plugin(tmp_path, docker):
    deploy(tmp_path, docker)
    assert resolution(tmp_path, docker)[0]["resolution"] == "cache"
    plugin = tmp_path / "docker-config" / "cli-plugins" / "docker-compose"
    plugin.write_text("compose v2.41.0, a different binary\n")
    docker.version = "v2.41.0"
    res, cmds = resolution(tmp_path, docker)
    assert res["resolution"] == "compose" and res["compose_version"] == "v2.41.0"
    assert [c for c in cmds if "version" in c] and [c for c in cmds if "--hash" in c]
    assert not res["changed"]


def test_cache_miss_on_changed_profiles(tmp_path, docker):
    deploy(tmp_path, docker, profiles=["a"])
    assert resolution(tmp_path, docker, profiles=["a"])[0]["resolution"] == "cache"
    res, cmds = resolution(tmp_path, docker, profiles=["a", "b"])
    assert res["resolution"] == "compose" and cmds
    assert all(c.count("--profile") == 2 for c in cmds if "config" in c)


def test_cache_miss_on_a_changed_env(tmp_path, docker):
    deploy(tmp_path, docker)
    res = resolution(tmp_path, docker, env={"PASSWORD": "other"})[0]
    assert res["resolution"] == "compose" and res["changed"]


def test_check_mode_never_writes_the_cache(tmp_path, docker):
    cache = tmp_path / "proj" / ".compose_stack" / "resolved.json"
    deploy(tmp_path, docker, check=True)
    assert not (tmp_path / "proj").exists()
    deploy(tmp_path, docker)
    recorded = cache.read_bytes()
    res = deploy(tmp_path, docker, definition=definition("2"), check=True)
    assert res["resolution"] == "compose" and cache.read_bytes() == recorded
    cache.unlink()
    assert deploy(tmp_path, docker, check=True)["resolution"] == "compose"
    assert not cache.exists()
    assert deploy(tmp_path, docker)["resolution"] == "compose" and cache.exists()


def test_cache_file_is_private_and_holds_no_secret(tmp_path, docker):
    d = definition()
    d["services"]["web"]["command"] = ["serve", "--password", "${PASSWORD}"]
    d["services"]["web"]["healthcheck"] = {"test": ["CMD", "check", "${PASSWORD}"]}
    deploy(tmp_path, docker, definition=d)
    cache = tmp_path / "proj" / ".compose_stack" / "resolved.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.parent.stat().st_mode & 0o777) == "0o700"
    assert SECRET not in cache.read_text() and "hunter2" not in cache.read_text()
    res = resolution(tmp_path, docker, definition=d)[0]
    assert res["resolution"] == "cache" and not res["changed"]
    assert res["services"]["web"]["health"] == "healthy"


def test_slim_model_decides_like_the_full_one():
    resolved = {"services": {
        "a": {"image": "x:1", "healthcheck": {"test": ["CMD", "true"]}, "environment": {"P": "secret"},
              "volumes": [{"type": "bind", "source": "/srv/a.conf", "target": "/a.conf"},
                          {"type": "volume", "source": "data", "target": "/data"}]},
        "b": {"image": "y:1", "healthcheck": {"disable": True, "test": ["CMD", "true"]}, "scale": 2},
        "c": {"build": {"context": "."}, "image": "c:dev", "deploy": {"replicas": 0}},
        "d": {"image": "d:1", "healthcheck": {"test": ["NONE"]}, "command": ["--token", "secret"]},
    }}
    slim = cs.slim_model(resolved)
    assert "secret" not in json.dumps(slim)
    hashes, ids = {"a": "ha", "b": "hb"}, {"x:1": "sha256:x"}
    assert cs.cp.desired_services(slim, hashes, ids) == cs.cp.desired_services(resolved, hashes, ids)
    assert cs.Stack.pullable(slim, None) == cs.Stack.pullable(resolved, None)


@pytest.mark.parametrize("doc", [
    {"include": ["other.yaml"], "services": {}},
    {"services": {"a": {"extends": {"file": "base.yaml", "service": "a"}}}},
    {"services": {"a": {"env_file": "${ENV_DIR}/a.env"}}},
])
def test_inputs_compose_resolves_itself_are_not_cached(tmp_path, docker, doc):
    for svc in doc["services"].values():
        svc["image"] = "app:1"
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "a.env").write_text("A=1\n")
    docker.environ["ENV_DIR"] = "."
    res = deploy(tmp_path, docker, definition=doc, env=None, wait=False)
    assert res["resolution"] == "compose" and res["resolution_note"].startswith("not cached")
    assert not (tmp_path / "proj" / ".compose_stack" / "resolved.json").exists()


def with_proxy(tmp_path, conf_text):
    """(project dir, nginx.conf, definition): the definition() plus a proxy that bind-mounts nginx.conf."""
    proj = tmp_path / "proj"
    proj.mkdir()
    conf = proj / "nginx.conf"
    conf.write_text(conf_text)
    d = definition()
    d["services"]["proxy"] = {"image": "redis:7", "volumes": [{"type": "bind", "source": str(conf),
                                                               "target": "/etc/nginx/nginx.conf"}]}
    return proj, conf, d


def test_restart_on_change_is_a_cache_miss(tmp_path, docker):
    _proj, conf, d = with_proxy(tmp_path, "a\n")
    deploy(tmp_path, docker, definition=d, restart_on=["nginx.conf"])
    assert resolution(tmp_path, docker, definition=d, restart_on=["nginx.conf"])[0]["resolution"] == "cache"
    conf.write_text("b\n")
    res = resolution(tmp_path, docker, definition=d, restart_on=["nginx.conf"])[0]
    assert res["resolution"] == "compose" and res["changed"]


# -- the Engine API --------------------------------------------------------------------------------
def test_api_rows_match_the_cli_rows(tmp_path, docker):
    deploy(tmp_path, docker)
    docker.containers.append({"id": "r1", "name": "p-web-run-1", "state": "exited", "status": "Exited (0) 1 minute ago",
                              "service": "web", "config_hash": "x", "image_id": "sha256:app1", "image": "app:1",
                              "oneoff": "True", "number": "1"})
    via_cli = cc.ComposeCLI(docker, "p", str(tmp_path))
    via_api = cc.ComposeCLI(docker, "p", str(tmp_path), api=cc.EngineAPI(docker.api))
    assert via_api.containers() == via_cli.containers()
    refs = ["app:1", "redis:7", "missing:1"]
    assert via_api.image_ids(refs) == via_cli.image_ids(refs) == {"app:1": "sha256:app1", "redis:7": "sha256:redis7",
                                                                  "missing:1": None}
    assert via_api.project_networks() == via_cli.project_networks()
    assert via_api.calls == 0 and via_api.api_calls == 5


def test_engine_socket_choice(tmp_path):
    sock_path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    try:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        assert cc.engine_socket({"DOCKER_HOST": "unix://" + sock_path}) == sock_path
        assert cc.engine_socket({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) is None
        assert cc.engine_socket({"DOCKER_HOST": "ssh://me@host"}) is None
        assert cc.engine_socket({"DOCKER_HOST": "unix://" + str(tmp_path / "nothing.sock")}) is None
        assert cc.engine_socket({"DOCKER_CONTEXT": "remote", "DOCKER_CONFIG": str(cfg)}) is None
        (cfg / "config.json").write_text(json.dumps({"currentContext": "remote"}))
        assert cc.engine_socket({"DOCKER_CONFIG": str(cfg)}) is None
        assert cc.engine_socket({"DOCKER_CONFIG": str(cfg), "DOCKER_HOST": "unix://" + sock_path}) == sock_path
    finally:
        srv.close()


def unix_daemon(sock_path, handler):
    """A fake daemon: one connection accepted on a unix socket at SOCK_PATH, served by
    HANDLER(conn, read_head) in a thread; read_head() returns the next request head (bytes)."""
    import threading

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)

    def serve():
        conn = srv.accept()[0]
        buf = [b""]

        def read_head():
            while b"\r\n\r\n" not in buf[0]:
                buf[0] += conn.recv(4096)
            head, buf[0] = buf[0].split(b"\r\n\r\n", 1)
            return head

        try:
            handler(conn, read_head)
        finally:
            conn.close()
            srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_unix_socket_transport_talks_http(tmp_path):
    sock_path = str(tmp_path / "d.sock")
    seen = []

    def handler(conn, read_head):
        for _n in range(2):
            seen.append(read_head().split(b"\r\n", 1)[0].decode())
            body = b'[{"Id": "abc"}]'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))

    thread = unix_daemon(sock_path, handler)
    api = cc.EngineAPI(cc.unix_socket_transport(sock_path, timeout=5))
    assert api.containers("p") == [{"Id": "abc"}]
    assert api.get("/networks")[1] == [{"Id": "abc"}]  # the same kept-alive connection
    thread.join(5)
    assert seen[0].startswith("GET /containers/json?all=1&filters=") and seen[1] == "GET /networks HTTP/1.1"
    with pytest.raises(cc.EngineAPIError):
        cc.EngineAPI(cc.unix_socket_transport(str(tmp_path / "none.sock"), timeout=1)).get("/_ping")


def test_unix_socket_transport_sends_headers_and_does_not_repeat_an_unanswered_request(tmp_path):
    """The registry query carries X-Registry-Auth; a daemon that does not answer in time (still waiting on a
    registry) is not asked a second time."""
    import threading

    sock_path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)
    srv.settimeout(3)
    heads, conns = [], []

    def serve():
        try:
            while True:
                conn = srv.accept()[0]
                conns.append(conn)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                heads.append(data.decode())
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    api = cc.EngineAPI(cc.unix_socket_transport(sock_path, timeout=0.5))
    with pytest.raises(cc.EngineAPIError) as exc:
        api.distribution("127.0.0.1:5000/app:1", "eyJ1c2VybmFtZSI6InUifQ==")
    assert "timed out" in str(exc.value)
    thread.join(5)
    srv.close()
    for c in conns:
        c.close()
    assert len(heads) == 1, heads
    assert heads[0].startswith("GET /distribution/127.0.0.1:5000/app:1/json HTTP/1.1")
    assert "X-Registry-Auth: eyJ1c2VybmFtZSI6InUifQ==" in heads[0]


def test_wait_does_not_pass_a_container_up_less_than_a_second(tmp_path, docker):
    deploy(tmp_path, docker)
    for c in docker.containers:
        c["status"] = "Up Less than a second" + (" (healthy)" if c["service"] == "web" else "")
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET})
    real_up = docker.__call__

    def runner(args, data=None):
        rc, out, err = real_up(args, data)
        if "up" in args:  # the new container keeps restarting: never up a full second
            for c in docker.containers:
                c["status"] = "Up Less than a second"
        return rc, out, err

    s.cli.runner = runner
    docker.api_requests.clear()
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    assert "up less than a second" in exc.value.msg
    # It waited the whole wait_timeout (5 s), polling the Engine API every 0.25 s (21 polls after the
    # plan's own query).
    polls = [r for r in docker.api_requests if r.startswith("/containers/json")]
    assert s.clock.now >= 5 and len(polls) == 1 + 21


def test_secret_never_on_argv(tmp_path, docker):
    deploy(tmp_path, docker)
    deploy(tmp_path, docker, env={"PASSWORD": SECRET + "2"})
    for call in docker.calls:
        assert not any(SECRET in a for a in call), call


def test_env_change_recreates_only_the_service_that_uses_it(tmp_path, docker):
    deploy(tmp_path, docker)
    res = deploy(tmp_path, docker, env={"PASSWORD": "other"})
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "none", "web": "recreate"}


def test_check_mode_predicts_and_touches_nothing(tmp_path, docker):
    deploy(tmp_path, docker)
    before = (tmp_path / "proj" / "compose.yaml").read_text()
    docker.calls.clear()
    res = deploy(tmp_path, docker, definition=definition("2"), check=True)
    assert res["changed"] and res["path"] == "check"
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "none", "web": "recreate"}
    assert not compose_cmds(docker, "up") and not [c for c in docker.calls if "pull" in c]
    assert (tmp_path / "proj" / "compose.yaml").read_text() == before


def test_check_mode_on_a_fresh_host_writes_nothing(tmp_path, docker):
    res = deploy(tmp_path, docker, check=True)
    assert res["changed"]
    assert not (tmp_path / "proj").exists()


def test_diff_masks_secrets_and_shows_plan(tmp_path, docker):
    deploy(tmp_path, docker)
    res = deploy(tmp_path, docker, definition=definition("2"), env={"PASSWORD": "n3w-passw0rd"}, check=True,
                 diff=True)
    text = repr(res["diff"])
    assert SECRET not in text and "n3w-passw0rd" not in text
    env_diff = next(d for d in res["diff"] if d["after_header"].endswith(".env"))
    assert env_diff["after"] == "PASSWORD=********  # value changed\n"
    compose_diff = next(d for d in res["diff"] if d["after_header"].endswith("compose.yaml"))
    assert "VERSION: '1'" in compose_diff["before"] and "VERSION: '2'" in compose_diff["after"]
    plan = next(d for d in res["diff"] if d["before_header"] == "plan")
    assert "web" in plan["after"] and "recreate" in plan["after"]


def test_invalid_definition_fails_before_touching_anything(tmp_path, docker):
    deploy(tmp_path, docker)
    before = (tmp_path / "proj" / "compose.yaml").read_text()
    bad = definition("2")
    bad["services"]["web"]["x-invalid"] = True
    docker.calls.clear()
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=bad)
    assert "additional property x-invalid" in exc.value.msg
    assert (tmp_path / "proj" / "compose.yaml").read_text() == before
    assert not compose_cmds(docker, "up")


def test_unhealthy_release_rolls_back(tmp_path, docker):
    deploy(tmp_path, docker, rollback=True)
    good = (tmp_path / "proj" / "compose.yaml").read_text()
    docker.unhealthy = {"web"}
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET}, rollback=True)
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    assert exc.value.result["rolled_back"] is True
    # The failed wait and the restored version's wait are both reported.
    assert s.result["waited"]["polls"] >= 1 and s.result["rollback_waited"]["polls"] >= 1
    assert exc.value.result["failed_services"]["web"][0]["health_log"].startswith("curl: (22)")
    assert (tmp_path / "proj" / "compose.yaml").read_text() == good
    # The restore ran up again with the old definition (and the old hash is what runs now).
    assert len(compose_cmds(docker, "up")) == 3


def test_failed_up_without_rollback_just_fails(tmp_path, docker):
    deploy(tmp_path, docker)
    docker.fail_up = True
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=definition("2"))
    assert "driver failed" in exc.value.msg
    assert "rolled_back" not in exc.value.result


def test_retagged_image_recreates(tmp_path, docker):
    deploy(tmp_path, docker)
    docker.images["app:1"] = "sha256:app1-rebuilt"
    res = deploy(tmp_path, docker)
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "none", "web": "recreate"}


def test_restart_on_file_recreates_only_its_service(tmp_path, docker):
    proj, conf, d = with_proxy(tmp_path, "a\n")
    deploy(tmp_path, docker, definition=d, restart_on=["nginx.conf"])
    assert cs.LABEL_INPUTS in (proj / "compose.yaml").read_text()
    assert not deploy(tmp_path, docker, definition=d, restart_on=["nginx.conf"])["changed"]
    conf.write_text("b\n")
    res = deploy(tmp_path, docker, definition=d, restart_on=["nginx.conf"])
    expected = {"cache": "none", "proxy": "recreate", "web": "none"}
    assert {a["service"]: a["action"] for a in res["actions"]} == expected


def test_restart_on_unmounted_file_is_an_error(tmp_path, docker):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "stray.conf").write_text("x")
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, restart_on=["stray.conf"])
    assert "not bind-mounted" in exc.value.msg


def test_missing_compose_is_reported_before_the_config_error(tmp_path, docker):
    def runner(args, data=None):
        docker.calls.append(list(args))
        return 1, "", "docker: 'compose' is not a docker command."

    s = stack(tmp_path, docker, definition=definition())
    s.cli.runner = runner
    with pytest.raises(cc.ComposeError) as exc:
        s.execute()
    assert "docker compose is not available" in exc.value.msg
    assert s.cli.calls == 2 and len(docker.calls) == 2  # version and config, side by side


def test_old_compose_is_refused(tmp_path, docker):
    docker.version = "v2.12.2"
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker)
    assert "too old" in exc.value.msg


def test_stopped_and_absent(tmp_path, docker):
    deploy(tmp_path, docker)
    res = deploy(tmp_path, docker, state="stopped")
    assert res["changed"] and {c["state"] for c in docker.containers} == {"exited"}
    assert not deploy(tmp_path, docker, state="stopped")["changed"]
    assert deploy(tmp_path, docker, state="absent", check=True)["changed"] and docker.containers
    assert deploy(tmp_path, docker, state="absent")["changed"] and not docker.containers
    assert not deploy(tmp_path, docker, state="absent")["changed"]


def test_files_mode_without_compose_file_fails(tmp_path, docker):
    os.makedirs(tmp_path / "proj")
    with pytest.raises(cs.StackFailure) as exc:
        stack(tmp_path, docker).execute()
    assert "has no compose file" in exc.value.msg


def test_bad_env_names_rejected(tmp_path, docker):
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, env={"BAD-NAME": "x"})
    assert "env: invalid variable name" in exc.value.msg


@pytest.mark.parametrize("value", ["plain", "sp ace", "q'uote", 'd"q', "$dollar", "multi\nline", "back\\slash"])
def test_dotenv_quote_round_trips_through_compose_rules(value):
    quoted = cs.dotenv_quote(value)
    if quoted.startswith("'"):
        assert quoted[1:-1] == value
    else:
        unescaped = (quoted[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\$", "$")
                     .replace("\\\\", "\\"))
        assert unescaped == value


# -- the event stream as the wait's wake-up signal ------------------------------------------------
def events_daemon(tmp_path, script):
    """A fake daemon that answers one GET /events: SCRIPT is a list of (delay, bytes-or-None); None
    closes the stream. Returns (socket path, request heads seen, thread)."""
    import time

    sock_path = str(tmp_path / "events.sock")
    seen = []

    def handler(conn, read_head):
        seen.append(read_head().decode())
        for delay, chunk in script:
            time.sleep(delay)
            if chunk is None:
                break
            conn.sendall(chunk)

    return sock_path, seen, unix_daemon(sock_path, handler)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'4d\r\n{"Type":"container","Action":"health_status: healthy","Actor":{"ID":"abc"},"time":1}\n\r\n'


def test_event_watch_wakes_on_an_event_and_times_out_without_one(tmp_path):
    import time

    path, seen, thread = events_daemon(tmp_path, [(0, HEAD), (0.3, EVENT), (0.1, None)])
    watch = cc.EventWatch.open(path, "shop")
    request = seen[0].split("\r\n")[0]
    assert request.startswith("GET /events?filters=")
    filters = json.loads(unquote_plus(request.split("filters=")[1].split()[0]))
    assert filters == {"type": ["container"], "label": ["com.docker.compose.project=shop"],
                       "event": ["start", "die", "health_status"]}
    assert watch.wait(0.05) is False  # nothing yet
    t0 = time.monotonic()
    assert watch.wait(5) is True  # woken by the event, long before 5 s
    assert time.monotonic() - t0 < 2 and watch.wakeups == 1 and watch.alive
    # The daemon ends the stream: the watch says so and from then on sleeps out the interval.
    t0 = time.monotonic()
    assert watch.wait(0.6) is False and not watch.alive
    assert time.monotonic() - t0 >= 0.59  # the rest of the interval slept out: the polls keep their cadence
    t0 = time.monotonic()
    assert watch.wait(0.2) is False and time.monotonic() - t0 >= 0.19
    watch.close()
    thread.join(5)


def test_event_watch_refused_or_unreachable_is_an_engine_api_error(tmp_path):
    path, _seen, thread = events_daemon(tmp_path, [(0, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")])
    with pytest.raises(cc.EngineAPIError, match="400 Bad Request"):
        cc.EventWatch.open(path, "shop")
    thread.join(5)
    with pytest.raises(cc.EngineAPIError, match="events"):
        cc.EventWatch.open(str(tmp_path / "none.sock"), "shop")


class FakeWatch:
    """Stands in for EventWatch: each wait() advances the fake clock by WAKE_AFTER (an event came)
    or the whole interval (none did)."""

    def __init__(self, clock, docker, wake_after=0.05, on_wake=None):
        self.clock, self.docker, self.wake_after, self.on_wake = clock, docker, wake_after, on_wake
        self.alive, self.wakeups, self.waits, self.closed = True, 0, [], False

    def wait(self, seconds):
        self.waits.append(seconds)
        if self.on_wake is None:
            self.clock.sleep(seconds)
            return False
        self.clock.sleep(min(seconds, self.wake_after))
        self.on_wake(self.docker)
        self.wakeups += 1
        return True

    def close(self):
        self.closed = True


def test_wait_polls_again_as_soon_as_the_event_stream_wakes_it(tmp_path, docker):
    deploy(tmp_path, docker)
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET})
    real_up = docker.__call__

    def runner(args, data=None):
        rc, out, err = real_up(args, data)
        if "up" in args:  # the new web container starts its health checks
            for c in docker.containers:
                if c["service"] == "web":
                    c["status"] = "Up 1 second (health: starting)"
        return rc, out, err

    def healthy(d):
        for c in d.containers:
            c["status"] = c["status"].replace("health: starting", "healthy")

    watches = []

    def events(project):
        assert project == "p"
        watches.append(FakeWatch(s.clock, docker, on_wake=healthy))
        return watches[0]

    s.cli.runner, s.events = runner, events
    res = s.execute()
    assert res["path"] == "up" and res["changed"]
    assert res["waited"] == {"seconds": 0.05, "polls": 2, "events": "on", "wakeups": 1}
    assert watches[0].closed and watches[0].waits == [0.25]


def test_wait_without_a_usable_event_stream_polls_on_its_interval(tmp_path, docker):
    deploy(tmp_path, docker)
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET})

    def refused(project):
        raise cc.EngineAPIError("GET /events: HTTP/1.1 500 Internal Server Error")

    s.events = refused
    res = s.execute()
    assert res["waited"]["events"] == "off" and res["waited"]["wakeups"] == 0
    assert "GET /events: HTTP/1.1 500 Internal Server Error" in s.cli.api_failures
    assert s.cli.use_api  # the rest of the run still uses the Engine API


def test_wait_timeout_report_includes_how_it_waited(tmp_path, docker):
    deploy(tmp_path, docker)
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET}, wait_timeout=2)
    real_up = docker.__call__

    def runner(args, data=None):
        rc, out, err = real_up(args, data)
        if "up" in args:
            for c in docker.containers:
                if c["service"] == "web":
                    c["status"] = "Up 3 seconds (unhealthy)"
        return rc, out, err

    watch = FakeWatch(s.clock, docker)  # no event ever comes
    s.cli.runner, s.events = runner, (lambda project: watch)
    with pytest.raises(cs.StackFailure):
        s.execute()
    assert s.result["waited"] == {"seconds": 2.0, "polls": 9, "events": "on", "wakeups": 0}
    assert watch.closed and sum(watch.waits) == 2.0


def test_env_values_are_masked_wherever_they_appear_in_the_diff(tmp_path, docker):
    """Every env value is masked as a substring of the compose file's before and after (here literally part of a
    URL in the definition), whatever its length; the value being replaced stays masked on the before side."""
    old, new, short = "0ldS3cret", "n3wS3cret", "k9"

    def literal(secret, version="1"):
        doc = definition(version)
        doc["services"]["web"]["environment"].update(DB_URL="postgres://u:%s@db/x" % secret, SHORT=short)
        return doc

    deploy(tmp_path, docker, definition=literal(old), env={"PASSWORD": old, "PIN": short})
    res = deploy(tmp_path, docker, definition=literal(new, "2"), env={"PASSWORD": new, "PIN": short}, check=True,
                 diff=True)
    text = json.dumps(res)
    for secret in (old, new, short):
        assert secret not in text, secret
    compose_diff = next(d for d in res["diff"] if d["after_header"].endswith("compose.yaml"))
    assert "DB_URL: postgres://u:********@db/x" in compose_diff["before"]
    assert "DB_URL: postgres://u:********@db/x" in compose_diff["after"]
    assert "SHORT: ********" in compose_diff["after"]
    assert "VERSION: '1'" in compose_diff["before"] and "VERSION: '2'" in compose_diff["after"]
    env_diff = next(d for d in res["diff"] if d["after_header"].endswith(".env"))
    assert env_diff["after"] == "PASSWORD=********  # value changed\nPIN=********\n"


def test_env_values_are_masked_in_the_plan_and_in_failures(tmp_path, docker):
    """The per-service plan and a failure's message are masked too (here an env value inside an image name
    and inside a services entry)."""
    token = "ns-T0ken"
    docker.images[f"registry.example.test/{token}/app:1"] = "sha256:private"
    doc = definition()
    doc["services"]["web"]["image"] = f"registry.example.test/{token}/app:1"
    deploy(tmp_path, docker, definition=doc, env={"PASSWORD": SECRET, "NS": token})
    docker.images[f"registry.example.test/{token}/app:1"] = "sha256:private2"
    res = deploy(tmp_path, docker, definition=doc, env={"PASSWORD": SECRET, "NS": token}, check=True, diff=True)
    plan = next(d for d in res["diff"] if d["before_header"] == "plan")
    assert "image registry.example.test/********/app:1 now points to" in plan["after"], plan
    assert token not in json.dumps(res)
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=doc, env={"PASSWORD": SECRET, "NS": token}, services=[f"x{token}"])
    assert exc.value.msg == "services: x******** not in the project"


def test_secret_values_are_every_env_value_and_the_replaced_ones():
    previous = cs.render_env({"A": "0ld'q", "B": "line1\nline2", "C": ""})
    found = cs.secret_values({"A": "new", "N": 7, "E": "", "X": None}, previous)
    assert found == ["line1\nline2", "0ld'q", "new", "7"]
    assert cs.mask_value({"msg": "new 7", "n": 7, "l": ["x-new"]}, ["new", "7"]) == \
        {"msg": "******** ********", "n": 7, "l": ["x-********"]}


# -- pulls: what the registry has, asked through the Engine API (/distribution), predicted in check mode -----
REG = "127.0.0.1:5000"
APP_REF = f"{REG}/team/app:1"
CACHE_REF = f"{REG}/team/cache:7"
D1, D2 = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32


def registry_definition(image=APP_REF):
    return {"services": {"web": {"image": image, "environment": {"V": "1"}},
                         "cache": {"image": CACHE_REF}}}


@pytest.fixture
def reg(docker):
    """The fake's registry holding APP_REF (digest D1, image sha256:app-d1) and CACHE_REF, both pulled here."""
    docker.registry = {APP_REF: {"digest": D1, "id": "sha256:app-d1"},
                       CACHE_REF: {"digest": "sha256:" + "c3" * 32, "id": "sha256:cache"}}
    docker.pull(APP_REF)
    docker.pull(CACHE_REF)
    return docker


def pull_stack(tmp_path, docker, check=False, warnings=None, **kw):
    kw.setdefault("definition", registry_definition())
    clock = Clock()
    return cs.Stack(params(tmp_path / "proj", **kw), docker, check_mode=check, sleep=clock.sleep, clock=clock,
                    api=cc.EngineAPI(docker.api), environ=docker.environ,
                    warn=(warnings.append if warnings is not None else None))


def pulls(docker):
    return [c for c in docker.calls if c[:2] == ["docker", "pull"]]


def test_check_mode_predicts_a_newer_image_in_the_registry_and_the_run_agrees(tmp_path, reg):
    first = pull_stack(tmp_path, reg, pull="always").execute()
    assert first["changed"]
    # The tag now points to a newer image in the registry; the local one is still D1.
    reg.registry[APP_REF] = {"digest": D2, "id": "sha256:app-d2"}
    reg.calls.clear()
    check = pull_stack(tmp_path, reg, pull="always", check=True).execute()
    assert check["changed"] and check["pulled"] == [APP_REF]
    web = next(a for a in check["actions"] if a["service"] == "web")
    assert web["action"] == "recreate" and web["reasons"] == ["newer image in registry: %s (%s)" % (APP_REF, D2[:19])]
    assert next(a for a in check["actions"] if a["service"] == "cache")["action"] == "none"
    pred = check["pull_prediction"][APP_REF]
    assert pred["verdict"] == "newer" and pred["digest"] == D2 and pred["registry"] == REG
    assert not pulls(reg) and reg.images[APP_REF] == "sha256:app-d1"  # check mode pulled nothing
    run = pull_stack(tmp_path, reg, pull="always").execute()
    assert run["changed"] and run["pulled"] == [APP_REF]
    assert {a["service"]: a["action"] for a in run["actions"]} == {"cache": "none", "web": "recreate"}
    assert run["services"]["web"]["image_id_after"] == "sha256:app-d2"
    reg.calls.clear()
    again = pull_stack(tmp_path, reg, pull="always").execute()
    assert not again["changed"] and again["path"] == "fast-noop" and again["pulled"] == []
    # The registry said "current": no docker pull process at all on the no-op.
    assert not pulls(reg) and again["cli_calls"] == 0
    assert not pull_stack(tmp_path, reg, pull="always", check=True).execute()["changed"]


def test_check_mode_predicts_that_a_missing_image_fails_the_run(tmp_path, reg):
    missing = f"{REG}/team/app:2"
    with pytest.raises(cs.StackFailure) as check:
        pull_stack(tmp_path, reg, definition=registry_definition(missing), check=True).execute()
    assert missing in check.value.msg and "not in registry 127.0.0.1:5000" in check.value.msg
    assert "manifest unknown" in check.value.msg and "would fail" in check.value.msg
    assert check.value.result["pull_prediction"][missing]["verdict"] == "missing"
    assert not (tmp_path / "proj").exists()
    # The run fails the same way, before writing a file or running up.
    with pytest.raises(cs.StackFailure) as run:
        pull_stack(tmp_path, reg, definition=registry_definition(missing)).execute()
    assert missing in run.value.msg and "nothing was changed" in run.value.msg
    assert not (tmp_path / "proj" / "compose.yaml").exists() and not compose_cmds(reg, "up")


def test_pull_always_with_a_tag_the_registry_lost_fails_in_check_mode_as_in_the_run(tmp_path, reg):
    pull_stack(tmp_path, reg, pull="always").execute()
    del reg.registry[APP_REF]  # present here, gone from the registry: docker pull would fail
    with pytest.raises(cs.StackFailure) as check:
        pull_stack(tmp_path, reg, pull="always", check=True).execute()
    with pytest.raises(cs.StackFailure) as run:
        pull_stack(tmp_path, reg, pull="always").execute()
    for exc in (check, run):
        assert APP_REF in exc.value.msg and "manifest unknown" in exc.value.msg
    assert not pulls(reg)


def test_the_pull_itself_fails_the_same_way_without_the_prediction(tmp_path, reg):
    """Without the Engine API there is no prediction (unverified); the fake's up then pulls and fails as the real
    one does, so the prediction is about real failures."""
    reg.images.pop(APP_REF)
    del reg.registry[APP_REF]
    assert "manifest unknown" in reg.pull(APP_REF)[2]
    s = pull_stack(tmp_path, reg)
    s.cli.engine, s.cli.use_api = None, False
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    assert "manifest for %s not found" % APP_REF in exc.value.msg
    assert s.result["pull_prediction"][APP_REF]["verdict"] == "unverified"


def docker_config(docker, data):
    path = os.path.join(docker.environ["DOCKER_CONFIG"], "config.json")
    with open(path, "w") as fh:
        json.dump(data, fh)


def basic(user, password):
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_prediction_sends_the_docker_config_credentials(tmp_path, reg):
    reg.registry_auth = ("tester", "S3cret-pw")
    docker_config(reg, {"auths": {REG: {"auth": basic("tester", "S3cret-pw")}}})
    reg.registry[APP_REF] = {"digest": D2, "id": "sha256:app-d2"}
    res = pull_stack(tmp_path, reg, pull="always", check=True).execute()
    assert res["pull_prediction"][APP_REF]["verdict"] == "newer"
    assert res["pull_prediction"][APP_REF]["credentials"] == "config.json auths"
    assert reg.distribution_auth == 2 * [{"username": "tester", "password": "S3cret-pw", "serveraddress": REG}]
    assert "S3cret-pw" not in json.dumps(res)


@pytest.mark.parametrize(("conf", "words"), [
    ({"auths": {REG: {"auth": basic("tester", "wrong")}}}, "unauthorized: authentication required"),
    ({}, "no basic auth credentials"),
])
def test_wrong_or_absent_credentials_are_named(tmp_path, reg, conf, words):
    reg.registry_auth = ("tester", "S3cret-pw")
    docker_config(reg, conf)
    with pytest.raises(cs.StackFailure) as exc:
        pull_stack(tmp_path, reg, pull="always", check=True).execute()
    assert f"registry {REG} refused image {APP_REF}" in exc.value.msg and words in exc.value.msg
    assert exc.value.result["pull_prediction"][APP_REF]["verdict"] == "denied"
    assert "wrong" not in exc.value.msg


def test_credentials_from_a_credential_helper_go_through_stdin(tmp_path, reg):
    reg.registry_auth = ("tester", "S3cret-pw")
    docker_config(reg, {"credsStore": "shptest"})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-shptest"
    helper.write_text("#!/bin/sh\nexit 1\n")  # never run: the fake runner answers for it
    helper.chmod(0o755)
    reg.environ["PATH"] = str(bindir)
    real = reg.__call__
    seen = []

    def runner(args, data=None):
        if args[0] == str(helper):
            seen.append((args, data))
            return 0, json.dumps({"ServerURL": data, "Username": "tester", "Secret": "S3cret-pw"}), ""
        return real(args, data)

    s = pull_stack(tmp_path, reg, pull="always", check=True)
    s.cli.runner = runner
    res = s.execute()
    assert res["pull_prediction"][APP_REF]["verdict"] == "current"
    assert res["pull_prediction"][APP_REF]["credentials"] == "credential helper docker-credential-shptest"
    assert seen == [([str(helper), "get"], REG)]  # once per registry, not per image


def test_unreachable_registry_is_unverified_never_a_silent_no_change(tmp_path, reg):
    pull_stack(tmp_path, reg, pull="always").execute()
    reg.registry_down = True
    warnings = []
    res = pull_stack(tmp_path, reg, pull="always", check=True, warnings=warnings).execute()
    pred = res["pull_prediction"][APP_REF]
    assert pred["verdict"] == "unverified" and "connection refused" in pred["detail"]
    assert not res["changed"]
    assert len(warnings) == 2 and APP_REF in warnings[0] and "not verified" in warnings[0], warnings
    # The run tries the pull, which reports the same unreachable registry.
    with pytest.raises(cc.ComposeError) as exc:
        pull_stack(tmp_path, reg, pull="always").execute()
    assert "connection refused" in exc.value.msg and APP_REF in exc.value.msg


def test_no_registry_reachable_is_unverified_for_docker_hub_images(tmp_path, docker):
    """This machine's normal state: the daemon cannot resolve registry-1.docker.io."""
    deploy(tmp_path, docker)
    warnings = []
    res = pull_stack(tmp_path, docker, definition=definition(), env={"PASSWORD": SECRET}, pull="always", check=True,
                     warnings=warnings).execute()
    assert not res["changed"]
    assert {r["verdict"] for r in res["pull_prediction"].values()} == {"unverified"}
    assert sorted(res["pull_prediction"]) == ["app:1", "redis:7"] and len(warnings) == 2
    assert "no such host" in warnings[0]


def test_pull_missing_asks_nothing_when_every_image_is_here(tmp_path, reg):
    pull_stack(tmp_path, reg).execute()
    reg.api_requests.clear()
    res = pull_stack(tmp_path, reg).execute()
    assert "pull_prediction" not in res and not any(r.startswith("/distribution") for r in reg.api_requests)


def test_an_image_loaded_here_without_a_registry_digest_is_newer_and_says_why(tmp_path, reg):
    reg.repo_digests[APP_REF] = []  # docker load / docker build: no RepoDigests
    res = pull_stack(tmp_path, reg, pull="always", check=True).execute()
    pred = res["pull_prediction"][APP_REF]
    assert pred["verdict"] == "newer" and "no digest from this repository" in pred["detail"]
    assert res["pull_prediction"][CACHE_REF]["verdict"] == "current"


# -- issue 16 §3: compose_stack against the peer's scenarios ----------------------------------------
def build_project(tmp_path):
    proj = tmp_path / "proj"
    for ctx in ("api", "job"):
        (proj / ctx).mkdir(parents=True)
        (proj / ctx / "Dockerfile").write_text("FROM base\nCOPY . /src\n")
        (proj / ctx / "main.py").write_text("print('v1')\n")
    return {"services": {"api": {"build": "./api"}, "job": {"build": {"context": "./job"}, "image": "job:dev"},
                         "cache": {"image": "redis:7"}}}


def test_build_always_builds_every_run_and_recreates_only_the_changed_image(tmp_path, docker):
    d = build_project(tmp_path)
    res = deploy(tmp_path, docker, definition=d, build="always")
    assert res["changed"] and {b["service"] for b in res["built"]} == {"api", "job"}
    assert docker.builds == [["api", "job"]]
    assert not [c for c in compose_cmds(docker, "up") if "--build" in c]  # built once, not again by up
    # Nothing differs: the build still runs, the cache answers the same images, no change.
    containers = json.dumps(docker.containers)
    res = deploy(tmp_path, docker, definition=d, build="always")
    assert docker.builds[-1] == ["api", "job"] and len(docker.builds) == 2
    assert not res["changed"] and res["path"] == "fast-noop", res
    assert [b["changed"] for b in res["built"]] == [False, False]
    assert json.dumps(docker.containers) == containers
    # An edited file of one context: exactly that service is recreated.
    (tmp_path / "proj" / "api" / "main.py").write_text("print('v2')\n")
    res = deploy(tmp_path, docker, definition=d, build="always")
    assert res["changed"] and {a["service"]: a["action"] for a in res["actions"]} == \
        {"api": "recreate", "cache": "none", "job": "none"}
    assert [(b["service"], b["changed"]) for b in res["built"]] == [("api", True), ("job", False)]
    assert res["images"]["api"] == {"image": "p-api", "image_id": docker.images["p-api"]}
    assert not deploy(tmp_path, docker, definition=d, build="always")["changed"]
    # services: selects what is built.
    deploy(tmp_path, docker, definition=d, build="always", services=["job"])
    assert docker.builds[-1] == ["job"]


def test_build_always_in_check_mode_builds_nothing_and_says_so(tmp_path, docker):
    d = build_project(tmp_path)
    deploy(tmp_path, docker, definition=d, build="always")
    (tmp_path / "proj" / "api" / "main.py").write_text("print('v2')\n")
    warnings = []
    s = stack(tmp_path, docker, check=True, definition=d, env={"PASSWORD": SECRET}, build="always")
    s.warn = warnings.append
    builds = len(docker.builds)
    res = s.execute()
    assert len(docker.builds) == builds and not compose_cmds(docker, "build")[builds:]
    assert res["build_unpredicted"] == ["api", "job"] and not res["changed"]
    assert any("cannot be predicted" in w for w in warnings), warnings


def test_build_failure_names_the_cause_and_restores_the_last_good_files(tmp_path, docker):
    d = build_project(tmp_path)
    deploy(tmp_path, docker, definition=d, build="always", rollback=True)
    good = (tmp_path / "proj" / "compose.yaml").read_text()
    docker.fail_build = True
    d2 = json.loads(json.dumps(d))
    d2["services"]["cache"]["environment"] = {"X": "2"}
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=d2, build="always", rollback=True)
    assert "docker compose build failed" in exc.value.msg and "exit code: 2" in exc.value.msg
    assert exc.value.result["rolled_back"] is True
    assert (tmp_path / "proj" / "compose.yaml").read_text() == good
    assert "--build" not in compose_cmds(docker, "up")[-1]  # the rollback builds nothing


def test_stopped_on_a_missing_project_creates_the_containers_without_starting_them(tmp_path, docker):
    # check mode: the plan, the files it would write; nothing touched
    res = deploy(tmp_path, docker, state="stopped", check=True, diff=True)
    assert res["changed"] and res["path"] == "check"
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "create", "web": "create"}
    assert any(d["after_header"].endswith("compose.yaml") for d in res["diff"])
    plan = next(d for d in res["diff"] if d["before_header"] == "plan")
    assert "state=stopped: created, not started" in plan["after"]
    assert not (tmp_path / "proj").exists() and not docker.containers
    res = deploy(tmp_path, docker, state="stopped")
    assert res["changed"] and res["path"] == "create"
    assert compose_cmds(docker, "create") and not compose_cmds(docker, "up")
    assert {c["service"]: c["state"] for c in docker.containers} == {"cache": "created", "web": "created"}
    assert (tmp_path / "proj" / "compose.yaml").is_file()
    assert oct((tmp_path / "proj" / ".env").stat().st_mode & 0o777) == "0o600"
    res = deploy(tmp_path, docker, state="stopped")
    assert not res["changed"], res
    assert res["images"]["web"] == {"image": "app:1", "image_id": "sha256:app1"}
    assert not deploy(tmp_path, docker, state="stopped", check=True)["changed"]
    # present starts them
    res = deploy(tmp_path, docker)
    assert {a["service"]: a["action"] for a in res["actions"]} == {"cache": "start", "web": "start"}


def test_create_passes_only_options_every_accepted_compose_has(tmp_path, docker):
    # Compose 2.20's `create` has no --quiet-pull, and no Compose's `create` has --timeout (measured with
    # 2.20.3 and 2.40.3: "unknown flag"); the floor integration test runs the real thing.
    deploy(tmp_path, docker, state="stopped", timeout=5)
    (create,) = compose_cmds(docker, "create")
    assert "--quiet-pull" not in create and "--timeout" not in create, create


def test_stopped_with_an_invalid_definition_fails_naming_the_cause(tmp_path, docker):
    bad = definition()
    bad["services"]["web"]["x-invalid"] = True
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=bad, state="stopped")
    assert "definition is invalid" in exc.value.msg and "x-invalid" in exc.value.msg
    assert not (tmp_path / "proj").exists() and not docker.containers


def test_a_container_that_exits_during_the_wait_is_named_with_its_exit_code_and_log(tmp_path, docker):
    docker.exits = {"web": 3}
    docker.logs["p-web-1"] = (
        "2026-12-06T05:00:00.000000001Z starting web\n2026-12-06T05:00:00.000000003Z connecting with %s\n" % SECRET,
        "2026-12-06T05:00:00.000000002Z warning: config\n2026-12-06T05:00:00.000000004Z fatal: no database\n")
    s = stack(tmp_path, docker, definition=definition(), env={"PASSWORD": SECRET})
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    msg = exc.value.msg
    assert "not healthy" not in msg and "exited during the wait" in msg, msg
    assert "web: container p-web-1 exited with code 3" in msg, msg
    assert "fatal: no database" in msg and SECRET not in msg and "connecting with ********" in msg, msg
    row = exc.value.result["failed_services"]["web"][0]
    assert row["exit_code"] == 3
    assert row["log"] == ["starting web", "warning: config", "connecting with ********", "fatal: no database"]
    assert s.clock.now < 1  # it gave up at once, not after wait_timeout


def test_merge_log_streams_orders_by_time_and_keeps_the_tail():
    out = "2026-12-06T05:00:00.000000001Z a\n2026-12-06T05:00:00.000000003Z c\n"
    err = "2026-12-06T05:00:00.000000002Z b\n2026-12-06T05:00:00.000000004Z d\n"
    assert cc.merge_log_streams(out, err, 3) == ["b", "c", "d"]
    assert cc.merge_log_streams("", "", 20) == []


def test_images_per_service_on_success_and_on_failure(tmp_path, docker):
    res = deploy(tmp_path, docker, rollback=True)
    assert res["images"] == {"web": {"image": "app:1", "image_id": "sha256:app1"},
                             "cache": {"image": "redis:7", "image_id": "sha256:redis7"}}
    docker.images["app:1"] = "sha256:app2"
    docker.unhealthy = {"web"}
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=definition("2"), rollback=True)
    result = dict(exc.value.result)
    assert result["attempted_images"]["web"] == {"image": "app:1", "image_id": "sha256:app2"}
    # ... and the images that run after the rollback: the recorded one, pinned by id
    s = stack(tmp_path, docker, definition=definition("3"), env={"PASSWORD": SECRET})
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    assert s.result["images"]["web"] == {"image": "app:1", "image_id": "sha256:app2"}
    assert exc.value.result["attempted_images"]["cache"] == {"image": "redis:7", "image_id": "sha256:redis7"}


def test_images_after_a_rollback_are_the_restored_ones(tmp_path, docker):
    deploy(tmp_path, docker, rollback=True)
    docker.images["app:1"] = "sha256:app2"
    docker.bad_images = {"sha256:app2"}
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET}, rollback=True)
    with pytest.raises(cs.StackFailure):
        s.execute()
    assert s.result["rolled_back"] and s.result["images"]["web"] == {"image": "app:1", "image_id": "sha256:app1"}


def outside_update(docker, image_id):
    """What Watchtower (or an `up` run by hand) does: app:1 now names a new build, web runs it, the old
    image is deleted."""
    docker.removed.add(docker.images["app:1"])
    docker.images["app:1"] = image_id
    for c in docker.containers:
        if c["service"] == "web":
            c["image_id"] = image_id


def test_a_no_op_run_refreshes_a_stale_rollback_point(tmp_path, docker):
    deploy(tmp_path, docker, rollback=True)
    state = tmp_path / "proj" / ".compose_stack" / "last-good" / "state.json"
    assert json.loads(state.read_text())["images"]["web"] == "sha256:app1"
    outside_update(docker, "sha256:watchtower")
    docker.api_requests.clear()
    res = deploy(tmp_path, docker, rollback=True)
    assert not res["changed"] and res["path"] == "fast-noop" and res["cli_calls"] == 0
    assert len(docker.api_requests) == 3  # as fast as before: the comparison uses what the plan listed
    assert "images of web changed" in res["rollback_point_refreshed"][0]
    assert json.loads(state.read_text())["images"]["web"] == "sha256:watchtower"
    assert "rollback_point_refreshed" not in deploy(tmp_path, docker, rollback=True)
    # A broken release now rolls back to what Watchtower installed.
    docker.bad_images = {"sha256:broken"}
    s = stack(tmp_path, docker, definition=definition("2"), env={"PASSWORD": SECRET}, rollback=True)
    docker.images["app:1"] = "sha256:broken"
    with pytest.raises(cs.StackFailure) as exc:
        s.execute()
    assert exc.value.result["rollback_msg"].startswith("rolled back"), exc.value.result
    assert next(c for c in docker.containers if c["service"] == "web")["image_id"] == "sha256:watchtower"


def test_rollback_to_a_deleted_image_falls_back_to_the_tag_and_says_so(tmp_path, docker):
    deploy(tmp_path, docker, rollback=True)
    outside_update(docker, "sha256:watchtower")  # no run in between: the point still names sha256:app1
    broken = definition("2")
    broken["services"]["web"]["image"] = "app:2"
    docker.images["app:2"] = "sha256:broken"
    docker.bad_images = {"sha256:broken"}
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=broken, rollback=True)
    msg = exc.value.result["rollback_msg"]
    assert "failed too" not in msg, msg
    assert "the recorded image sha256:app1 of web no longer exists: it runs app:1 as tagged now" in msg, msg
    assert next(c for c in docker.containers if c["service"] == "web")["image_id"] == "sha256:watchtower"


def test_rollback_restores_the_restart_on_files(tmp_path, docker):
    _proj, conf, d = with_proxy(tmp_path, "good\n")
    deploy(tmp_path, docker, definition=d, restart_on=["nginx.conf"], rollback=True)
    conf.write_text("broken\n")
    docker.unhealthy = {"web"}
    d2 = json.loads(json.dumps(d))
    d2["services"]["web"]["environment"]["VERSION"] = "2"
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=d2, restart_on=["nginx.conf"], rollback=True)
    assert exc.value.result["rolled_back"]
    assert conf.read_text() == "good\n"
