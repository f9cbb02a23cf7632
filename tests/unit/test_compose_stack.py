"""Unit tests for compose_stack's orchestration (plugins/module_utils/compose_stack.py) with the
docker CLI faked at the process boundary (tests/unit/fake_docker.py)."""

from __future__ import annotations

import os

import pytest
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


def stack(tmp_path, docker, check=False, diff=False, **kw):
    clock = Clock()
    return cs.Stack(params(tmp_path / "proj", **kw), docker, check_mode=check, diff_mode=diff,
                    sleep=clock.sleep, clock=clock)


def compose_cmds(docker, verb):
    return [c for c in docker.calls if c[:2] == ["docker", "compose"] and verb in c]


@pytest.fixture
def docker():
    d = FakeDocker()
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
    deploy(tmp_path, docker)
    docker.calls.clear()
    res = deploy(tmp_path, docker)
    assert not res["changed"] and res["path"] == "fast-noop"
    # version, config, config --hash, image inspect, ps: no up, nothing else.
    assert res["cli_calls"] == 5 and not compose_cmds(docker, "up")


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
    with pytest.raises(cs.StackFailure) as exc:
        deploy(tmp_path, docker, definition=definition("2"), rollback=True)
    assert exc.value.result["rolled_back"] is True
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
    proj = tmp_path / "proj"
    proj.mkdir()
    conf = proj / "nginx.conf"
    conf.write_text("a\n")
    d = definition()
    d["services"]["proxy"] = {"image": "redis:7", "volumes": [{"type": "bind", "source": str(conf),
                                                               "target": "/etc/nginx/nginx.conf"}]}
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
