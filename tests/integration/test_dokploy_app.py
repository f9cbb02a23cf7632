"""dokploy_app and dokploy_database as real Ansible tasks (ansible-playbook) against the fake Dokploy API
(tests/fakes/dokploy_api.py) served in-process on 127.0.0.1; plus playbooks/dokploy.yml and the ideony
inventory."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.fakes.dokploy_api import FakeDokploy

pytestmark = pytest.mark.integration

KEY = "it-key-" + secrets.token_hex(4)
SECRET = "it-secret-" + secrets.token_hex(8)
ROTATED = "it-rotated-" + secrets.token_hex(8)
REGISTRY_TOKEN = "it-token-" + secrets.token_hex(8)


def play(tmp: Path, tasks: list[dict], *flags: str) -> tuple[list[dict], str]:
    """Run tasks on localhost; returns each task's result and the raw output."""
    pb = tmp / f"play-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "vars": {"ansible_python_interpreter": sys.executable},
                               "tasks": [dict(t, ignore_errors=True) for t in tasks]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), *flags], timeout=600,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    out = json.loads(res.stdout[start:])
    return [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]], res.stdout + res.stderr


def app_task(fake: FakeDokploy, name: str = "api", **kw) -> dict:
    args = {"url": fake.url, "api_key": KEY, "project": "ideony", "name": name, "source": "docker",
            "docker_image": "ghcr.io/example/ideony-api:1.0.0", "registry_url": "ghcr.io",
            "registry_username": "ideony-bot", "registry_password": REGISTRY_TOKEN,
            "env": {"NODE_ENV": "production", "PORT": 3001}, "secret_env": {"CLERK_SECRET_KEY": SECRET},
            "domains": [{"host": "api.ideony.example.test", "port": 3001, "https": True}],
            "wait_timeout": 60}
    args.update(kw)
    return {"name": f"app {name}", "selfhosted.platform.dokploy_app": args}


def db_task(fake: FakeDokploy, name: str, db_type: str, **kw) -> dict:
    args = {"url": fake.url, "api_key": KEY, "project": "ideony", "name": name, "type": db_type,
            "database_password": "pw-" + SECRET}
    args.update(kw)
    return {"name": f"db {name}", "selfhosted.platform.dokploy_database": args}


@pytest.fixture(scope="module")
def fake():
    server = FakeDokploy(api_key=KEY, deploy_delay=0.3, queue_delay=0.05, limited_keys={"limited-key": 6})
    server.start()
    yield server
    server.stop()


def test_create_then_second_run_changes_nothing(fake, tmp_path):
    first, out = play(tmp_path, [app_task(fake)])
    res = first[0]
    assert res.get("changed") and not res.get("failed"), res
    assert res["deployment"]["status"] == "done" and res["status"] == "done"
    assert "application api (create)" in res["changes"] and "secret_env.CLERK_SECRET_KEY (added)" in res["changes"]
    apps = fake.find_applications("api")
    assert len(apps) == 1 and apps[0]["dockerImage"] == "ghcr.io/example/ideony-api:1.0.0"
    assert apps[0]["password"] == REGISTRY_TOKEN and apps[0]["registryUrl"] == "ghcr.io"
    assert SECRET not in out and REGISTRY_TOKEN not in out

    fake.reset_counts()
    again, out = play(tmp_path, [app_task(fake)])
    assert again[0]["changed"] is False and again[0]["changes"] == [], again[0]
    assert again[0]["requests"] == 4 and fake.total_requests == 4 and fake.mutations() == []
    assert again[0]["deployment"] == {"status": "skipped"}
    assert len(fake.find_applications("api")) == 1


def test_env_change_redeploys_and_the_diff_masks_values(fake, tmp_path):
    play(tmp_path, [app_task(fake)])
    app_id = fake.find_applications("api")[0]["applicationId"]
    before = len(fake.deployments_of(app_id))
    secret_env = {"CLERK_SECRET_KEY": ROTATED, "SENTRY_DSN": "https://x@s.test/1"}
    results, out = play(tmp_path, [app_task(fake, secret_env=secret_env)], "--diff")
    res = results[0]
    assert res["changed"] and res["changes"] == ["secret_env.CLERK_SECRET_KEY (changed)",
                                                 "secret_env.SENTRY_DSN (added)", "deploy (env changed)"], res
    assert res["deployment"]["status"] == "done" and len(fake.deployments_of(app_id)) == before + 1
    assert res["diff"]["after"]["application"]["env"]["CLERK_SECRET_KEY"] == "(changed)"
    assert res["diff"]["before"]["application"]["env"]["CLERK_SECRET_KEY"] == "(set)"
    assert SECRET not in out and ROTATED not in out
    assert fake.container_env(app_id)["CLERK_SECRET_KEY"] == ROTATED


def test_failed_deploy_fails_with_the_log_tail(fake, tmp_path):
    results = play(tmp_path, [app_task(fake, name="broken", env={"FAKE_DEPLOY_FAIL": "1"}, domains=[])])[0]
    res = results[0]
    assert res["failed"] and res["changed"], res
    assert "ended with status error" in res["msg"] and "manifest unknown" in res["msg"]
    assert res["deployment"]["status"] == "error" and res["deployment"]["log_tail"][-1].startswith("Error occurred")
    assert fake.find_applications("broken")[0]["applicationStatus"] == "error"


def test_failed_pull_fails_with_the_last_lines_of_the_real_log(fake, tmp_path):
    """An image that cannot be pulled (an offline server): the tail read through deployment.readLogs."""
    res = play(tmp_path, [app_task(fake, name="unpullable", docker_image="ghcr.io/example/fail:1", domains=[])])[0][0]
    assert res["failed"] and "ended with status error" in res["msg"], res
    assert 'Get "https://ghcr.io/v2/": dial tcp: lookup ghcr.io' in res["msg"] and "no such host" in res["msg"]
    assert res["deployment"]["error_message"] is None and res["request_counts"]["deployment.readLogs"] == 1


def test_check_mode_changes_nothing_in_the_server(fake, tmp_path):
    fake.reset_counts()
    results, out = play(tmp_path, [app_task(fake, name="web", project="ideony-check", environment="staging")],
                        "--check", "--diff")
    res = results[0]
    assert res["changed"] and res["deployment"]["status"] == "planned", res
    assert res["changes"][:3] == ["project ideony-check (create)", "environment staging (create)",
                                  "application web (create)"]
    assert fake.mutations() == [] and not fake.find_applications("web")
    assert res["diff"]["after"]["application"]["env"] == {"NODE_ENV": "production", "PORT": "3001",
                                                          "CLERK_SECRET_KEY": "(added)"}
    assert res["diff"]["after"]["application"]["source"]["registry_password"] == "(changed)"
    assert SECRET not in out and REGISTRY_TOKEN not in out


def test_duplicate_named_application_fails_clearly_and_exact_names_win(fake, tmp_path):
    env = fake.add_project("dups")[1]
    first = fake.add_application(env["environmentId"], "api")
    second = fake.add_application(env["environmentId"], "api")
    fake.add_application(env["environmentId"], "api-worker")
    results = play(tmp_path, [app_task(fake, project="dups")])[0]
    res = results[0]
    assert res["failed"] and res["changed"] is False
    assert res["msg"].startswith("name: 2 applications are named 'api' in project 'dups'")
    assert first["applicationId"] in res["msg"] and second["applicationId"] in res["msg"]
    assert len(fake.find_applications("api", env["environmentId"])) == 2  # never a third

    # near names and the same name elsewhere are not matches
    near, near_env = fake.add_project("near")
    fake.add_application(near_env["environmentId"], "API")
    fake.add_application(near_env["environmentId"], "api-worker")
    results = play(tmp_path, [app_task(fake, project="near"), app_task(fake, project="near")])[0]
    assert results[0]["changed"] and "application api (create)" in results[0]["changes"]
    assert results[1]["changed"] is False and results[1]["project_id"] == near["projectId"]
    assert len(fake.find_applications("api", near_env["environmentId"])) == 1


def test_bad_key_rate_limited_key_and_old_server(fake, tmp_path):
    play(tmp_path, [app_task(fake)])
    results, out = play(tmp_path, [app_task(fake, api_key="not-the-key"), app_task(fake, api_key="limited-key")])
    for res in results:
        assert res["failed"] and "401 Unauthorized" in res["msg"] and "rateLimitEnabled: false" in res["msg"], res
    assert "not-the-key" not in out
    # the rate-limited key (limit 6, two checks per request) got 3 requests through before the 401
    assert fake.key_usage["limited-key"] == 6 and fake.counts["settings.getDokployVersion"] >= 1

    old = FakeDokploy(api_key=KEY, version="v0.22.0")
    old.start()
    try:
        results, out = play(tmp_path, [app_task(old)])
    finally:
        old.stop()
    assert results[0]["failed"] and "Dokploy v0.22.0 is too old" in results[0]["msg"]
    assert old.mutations() == []


def test_validation_fails_before_any_request(fake, tmp_path):
    fake.reset_counts()
    results = play(tmp_path, [app_task(fake, docker_image=None),
                              app_task(fake, domains=[{"host": "a.example.test", "port": 70000}]),
                              app_task(fake, build_type="rocket")])[0]
    assert results[0]["failed"] and results[0]["msg"] == "docker_image: required with source=docker"
    assert results[1]["failed"] and results[1]["msg"].startswith("domains[0].port:")
    assert results[2]["failed"] and "build_type" in results[2]["msg"]
    assert fake.total_requests == 0


def test_stop_start_and_remove(fake, tmp_path):
    fake.no_swarm = False  # a swarm manager: start works
    try:
        results = play(tmp_path, [app_task(fake, name="worker", domains=[]),
                                  app_task(fake, name="worker", domains=[], state="stopped"),
                                  app_task(fake, name="worker", domains=[], state="stopped"),
                                  app_task(fake, name="worker", domains=[], state="started"),
                                  app_task(fake, name="worker", state="absent"),
                                  app_task(fake, name="worker", state="absent")])[0]
    finally:
        fake.no_swarm = True
    assert [r["changed"] for r in results] == [True, True, False, True, True, False], results
    # the state the server ends in, not the row Dokploy answers stop/start with (the one before the change)
    assert results[1]["status"] == "idle" and results[3]["status"] == "done"
    assert not fake.find_applications("worker")


def test_start_without_swarm_fails_with_dokploy_message(fake, tmp_path):
    results = play(tmp_path, [app_task(fake, name="noswarm", domains=[]),
                              app_task(fake, name="noswarm", domains=[], state="stopped"),
                              app_task(fake, name="noswarm", domains=[], state="started")])[0]
    assert results[1]["status"] == "idle" and results[2]["failed"], results
    assert "This node is not a swarm manager" in results[2]["msg"] and "docker swarm init" in results[2]["msg"]
    assert fake.find_applications("noswarm")[0]["applicationStatus"] == "idle"


def test_databases_for_seed_002(fake, tmp_path):
    tasks = [db_task(fake, "postgis", "postgres", docker_image="imresamu/postgis:17-3.5", database_name="ideony",
                     database_user="ideony"),
             db_task(fake, "redis", "redis", docker_image="redis:8.6-alpine")]
    first, out = play(tmp_path, tasks)
    assert all(r["changed"] and r["status"] == "done" for r in first), first
    assert first[0]["app_name"].startswith("ideony-postgis-") and first[1]["app_name"].startswith("ideony-redis-")
    again, out = play(tmp_path, tasks, "--check", "--diff")
    assert [r["changed"] for r in again] == [False, False], again
    bumped, out = play(tmp_path, [dict(tasks[1], **{"selfhosted.platform.dokploy_database": dict(
        tasks[1]["selfhosted.platform.dokploy_database"], docker_image="redis:8.6.1-alpine")})])
    assert bumped[0]["changes"] == ["docker_image", "deploy (image or env changed)"]
    assert SECRET not in out


def test_playbook_applies_the_inventory_lists(fake, tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"ideony-it": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "dokploy_url": fake.url, "dokploy_api_key": KEY, "dokploy_project": "ideony-pb",
        "dokploy_databases": [{"name": "postgis", "type": "postgres", "docker_image": "imresamu/postgis:17-3.5",
                               "database_name": "ideony", "database_user": "ideony",
                               "database_password": "pw-" + SECRET}],
        "dokploy_apps": [{"name": "ideony-api", "source": "docker", "docker_image": "ghcr.io/example/ideony-api:1",
                          "env": {"NODE_ENV": "production"},
                          "secret_env": {"DATABASE_URL": "postgresql://ideony:pw-%s@"
                                                         "{{ dokploy_database_hosts.postgis }}:5432/ideony" % SECRET},
                          "domains": [{"host": "api.ideony.example.test", "port": 3001, "https": True}]},
                         {"name": "ideony-web", "source": "docker", "docker_image": "ghcr.io/example/ideony-web:1",
                          "domains": [{"host": "app.ideony.example.test", "port": 80, "https": True}]}],
    }}}}))
    for expect_changed in (True, False):
        res = run_tool(["ansible-playbook", "-i", str(inventory), "playbooks/dokploy.yml"], timeout=600,
                       ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_STDOUT_CALLBACK="default")
        assert res.returncode == 0, explain(res)
        assert ("changed=0" not in res.stdout) is expect_changed, res.stdout[-3000:]
        assert SECRET not in res.stdout + res.stderr
    api = fake.find_applications("ideony-api")[0]
    pg = next(p for p in fake.postgres.values() if p["name"] == "postgis" and "ideony-pb" in p["appName"])
    assert fake.container_env(api["applicationId"])["DATABASE_URL"] == "postgresql://ideony:pw-%s@%s:5432/ideony" % (
        SECRET, pg["appName"])


def test_ideony_inventory_resolves_with_the_example_vault_password():
    res = run_tool(["ansible", "all", "-i", "inventories/ideony", "--vault-password-file",
                    "inventories/vault-password.example.txt", "-e",
                    '{"dokploy_database_hosts": {"postgis": "pg", "redis": "rd"}}',
                    "-m", "ansible.builtin.debug", "-a",
                    "msg={{ [dokploy_url, dokploy_api_key, dokploy_apps, dokploy_databases, ansible_host] }}"])
    assert res.returncode == 0, explain(res)
    assert "192.0.2." in res.stdout and "example.test" in res.stdout
    assert "VARIABLE IS NOT DEFINED" not in res.stdout
    text = "\n".join(p.read_text() for p in (ROOT / "inventories" / "ideony").rglob("*.yml"))
    assert "178.104." not in text and "is-a.dev" not in text


def test_env_string_is_refused_not_stored_as_one_variable(fake, tmp_path):
    fake.reset_counts()
    results = play(tmp_path, [app_task(fake, name="envtext", env="A=1\nB=2", domains=[]),
                              app_task(fake, name="envtext", env=None, secret_env="S=1", domains=[])])[0]
    assert results[0]["failed"] and results[0]["msg"].startswith("env: must be a dict of NAME: value, got a string")
    assert results[1]["failed"] and results[1]["msg"].startswith("secret_env: must be a dict")
    assert not fake.find_applications("envtext") and fake.mutations() == []


def test_plain_env_values_are_not_masked_in_the_output(fake, tmp_path):
    """Only secret_env is no_log: a port 3001 or the word staging in env stays readable everywhere."""
    results, out = play(tmp_path, [app_task(fake, name="plain", environment="staging",
                                            env={"PORT": 3001, "APP_ENV": "staging"})], "--diff")
    res = results[0]
    assert res["changed"] and not res.get("failed"), res
    assert "********" not in json.dumps(res) and "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" not in json.dumps(res)
    after = res["diff"]["after"]
    assert after["environment"] == "staging" and after["application"]["domains"][0]["port"] == 3001
    assert after["application"]["env"] == {"PORT": "3001", "APP_ENV": "staging", "CLERK_SECRET_KEY": "(added)"}
    assert SECRET not in out


def test_env_values_reach_the_container_byte_for_byte(fake, tmp_path):
    env = {"QUOTES": "say \"hi\" and 'bye'", "BACKSLASH": "C:\\new\\table", "TICK": "run `id`", "HASH": "a #b",
           "DOLLAR": "$HOME ${X}", "SPACES": "  padded  ", "LINES": "line 1\nline 2\n", "MIXED": "it's\n\"x\"",
           "EMPTY": ""}
    tasks = [app_task(fake, name="bytes", env=env, domains=[]), app_task(fake, name="bytes", env=env, domains=[])]
    results = play(tmp_path, tasks)[0]
    assert results[0]["changed"] and not results[0].get("failed"), results[0]
    assert results[1]["changed"] is False, results[1]  # it reads back unchanged: no redeploy on every run
    app_id = fake.find_applications("bytes")[0]["applicationId"]
    assert fake.container_env(app_id) == dict(env, CLERK_SECRET_KEY=SECRET)
    refused = play(tmp_path, [app_task(fake, name="bytes", env={"ALL": "'\"`\n"}, domains=[])])[0][0]
    assert refused["failed"] and refused["msg"].startswith("env.ALL: the value cannot be written"), refused
