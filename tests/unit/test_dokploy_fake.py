"""The fake Dokploy server (tests/fakes/dokploy_api.py) reproduces the facts of the real API the
modules depend on: routing and methods, auth and rate-limited keys, error shapes, validation,
duplicate names, appName suffixes and the deployment lifecycle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from tests.conftest import ROOT
from tests.fakes.dokploy_api import FakeDokploy

KEY = "test-key"


def call_typed(fake, method, name, body=None, key=KEY, query="", ctype="application/json", raw=None):
    """One request: (status, parsed JSON or text, content type)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request("%s/api/%s%s" % (fake.url, name, ("?" + query) if query else ""), data=data,
                                 method=method)
    if key is not None:
        req.add_header("x-api-key", key)
    if ctype and method == "POST":
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text, rtype = resp.status, resp.read().decode(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, text, rtype = exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")
    if rtype.startswith("application/json") and text:
        return status, json.loads(text), rtype
    return status, text, rtype


def call(fake, method, name, body=None, **kw):
    """One request: (status, parsed JSON or text)."""
    return call_typed(fake, method, name, body, **kw)[:2]


def post(fake, name, body, **kw):
    return call(fake, "POST", name, body, **kw)


def get(fake, procedure, **params):
    return call(fake, "GET", procedure, query=urlencode(params))


@pytest.fixture
def fake():
    server = FakeDokploy(deploy_delay=0.2, queue_delay=0.1, limited_keys={"limited": 6, "default-limit": 10})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env_id(fake):
    status, body = post(fake, "project.create", {"name": "ideony"})
    assert status == 200
    return body["environment"]["environmentId"]


def test_version_is_a_json_string_behind_auth(fake):
    assert get(fake, "settings.getDokployVersion") == (200, "v0.30.2")
    for key in (None, "", "wrong"):
        status, body, ctype = call_typed(fake, "GET", "settings.getDokployVersion", key=key)
        assert (status, body) == (401, {"message": "Unauthorized"}) and ctype.startswith("application/json")


def test_rate_limited_key_answers_like_a_bad_key_once_its_quota_is_spent(fake):
    # Dokploy checks a key twice per request: a limit of 6 is 3 requests, the default 10 is 5
    answers = [call(fake, "GET", "project.all", key="limited") for dummy in range(4)]
    assert fake.key_usage["limited"] == 6
    assert [call(fake, "GET", "project.all", key="default-limit")[0] for dummy in range(6)] == [200] * 5 + [401]
    assert [a[0] for a in answers] == [200, 200, 200, 401]
    assert answers[3][1] == call(fake, "GET", "project.all", key="wrong")[1] == {"message": "Unauthorized"}


def test_queries_are_get_and_mutations_post_with_json(fake, env_id):
    # the other method finds no procedure (the adapter keys procedures by method)
    status, body = call(fake, "POST", "project.all", {})
    assert status == 404 and body["message"] == "Not found" and body["code"] == "NOT_FOUND"
    status, body = get(fake, "application.create", name="x", environmentId=env_id)
    assert status == 404
    # mutations need a JSON content type
    status, body = post(fake, "project.create", None, raw=b"name=x", ctype="application/x-www-form-urlencoded")
    assert status == 415 and body["code"] == "UNSUPPORTED_MEDIA_TYPE"
    status, body = post(fake, "project.create", None, raw=b"{not json")
    assert status == 400 and body["code"] == "PARSE_ERROR"
    assert fake.counts["project.all"] == 1 and fake.counts["application.create"] == 1


def test_get_reads_flat_query_parameters_not_trpc_input(fake, env_id):
    status, app = post(fake, "application.create", {"name": "api", "environmentId": env_id})
    assert status == 200
    assert get(fake, "application.one", applicationId=app["applicationId"])[1]["name"] == "api"
    status, body = get(fake, "application.one", input=json.dumps({"json": {"applicationId": "x"}}))
    assert status == 400 and body["issues"][0]["path"] == ["applicationId"]


def test_validation_errors_name_the_field(fake, env_id):
    status, body = post(fake, "application.create", {"environmentId": env_id})
    assert status == 400
    assert body["message"] == "Input validation failed" and body["code"] == "BAD_REQUEST"
    assert body["data"]["httpStatus"] == 400 and body["data"]["path"] == "application.create"
    # zod v4's wording, as Dokploy v0.30 answers it
    assert body["data"]["zodError"]["fieldErrors"] == {"name": ["Invalid input: expected string, received undefined"]}
    assert body["issues"] == [{"expected": "string", "code": "invalid_type", "path": ["name"],
                               "message": "Invalid input: expected string, received undefined"}]

    status, app = post(fake, "application.create", {"name": "api", "environmentId": env_id})
    status, body = post(fake, "domain.create", {"host": "a.example.test", "port": 70000,
                                                "applicationId": app["applicationId"],
                                                "certificateType": "acme"})
    assert status == 400
    messages = {i["path"][0]: i["message"] for i in body["issues"]}
    assert messages["port"] == "Port must be 65535 or below"
    assert messages["certificateType"] == 'Invalid option: expected one of "letsencrypt"|"none"|"custom"'
    status, body = post(fake, "application.create", {"name": "", "environmentId": 7})
    assert {i["path"][0]: i["message"] for i in body["issues"]} == {
        "name": "Too small: expected string to have >=1 characters",
        "environmentId": "Invalid input: expected string, received number"}

    # every key of saveDockerProvider is required, and none is nullable
    status, body = post(fake, "application.saveDockerProvider", {
        "applicationId": app["applicationId"], "dockerImage": "nginx", "username": None, "password": ""})
    assert status == 400
    assert {tuple(i["path"]) for i in body["issues"]} == {("username",), ("registryUrl",)}
    assert {i["message"] for i in body["issues"]} == {"Invalid input: expected string, received null",
                                                      "Invalid input: expected string, received undefined"}
    status, body = post(fake, "application.saveEnvironment", {"applicationId": app["applicationId"],
                                                              "env": "A=1"})
    assert status == 400 and {i["path"][0] for i in body["issues"]} == {"buildArgs", "buildSecrets", "createEnvFile"}
    status, body = post(fake, "postgres.create", {"name": "db", "databaseName": "d", "databaseUser": "u",
                                                  "databasePassword": "bad pass$", "environmentId": env_id})
    assert status == 400 and "Password contains invalid characters" in body["issues"][0]["message"]


def test_unknown_ids_are_not_found_except_where_the_router_wraps_errors(fake, env_id):
    status, body = get(fake, "application.one", applicationId="nope")
    assert (status, body["message"], body["code"]) == (404, "Application not found", "NOT_FOUND")
    assert get(fake, "environment.one", environmentId="nope")[1]["message"] == "Environment not found"
    assert get(fake, "deployment.all", applicationId="nope") == (200, [])  # a list, not an error
    status, body = post(fake, "application.create", {"name": "x", "environmentId": "nope"})
    assert (status, body["message"]) == (404, "Environment not found")
    status, body = post(fake, "domain.create", {"host": "a.example.test", "applicationId": "nope"})
    assert (status, body["message"]) == (400, "Application not found")


def test_duplicate_names_are_allowed_and_app_names_get_a_random_suffix(fake, env_id):
    first = post(fake, "application.create", {"name": "api", "appName": "ideony-api", "environmentId": env_id})[1]
    second = post(fake, "application.create", {"name": "api", "appName": "ideony-api", "environmentId": env_id})[1]
    anonymous = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]
    assert first["applicationId"] != second["applicationId"]
    assert re.match(r"^ideony-api-[a-z0-9]{6}$", first["appName"]) and first["appName"] != second["appName"]
    assert re.match(r"^app-[a-z]+-[a-z]+-[a-z]+-[a-z0-9]{6}$", anonymous["appName"])
    names = [a["name"] for a in get(fake, "environment.one", environmentId=env_id)[1]["applications"]]
    assert names == ["api", "api", "api"]
    status, body = post(fake, "application.create", {"name": "x", "appName": "bad name",
                                                     "environmentId": env_id})
    assert status == 400 and body["issues"][0]["path"] == ["appName"]


def test_projects_contain_environments_and_production_is_reserved(fake, env_id):
    projects = get(fake, "project.all")[1]
    assert [p["name"] for p in projects] == ["ideony"]
    envs = projects[0]["environments"]
    assert envs[0]["name"] == "production" and envs[0]["isDefault"] is True
    assert envs[0]["applications"] == [] and "postgres" in envs[0] and "redis" in envs[0]
    project_id = projects[0]["projectId"]
    status, body = post(fake, "environment.create", {"name": "production", "projectId": project_id})
    assert status == 400 and "production" in body["message"]
    status, body = post(fake, "environment.create", {"name": "staging", "projectId": project_id})
    assert status == 200 and body["isDefault"] is False
    assert [e["name"] for e in get(fake, "project.one", projectId=project_id)[1]["environments"]] == \
        ["production", "staging"]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met")


def test_deploy_returns_nothing_and_rows_move_running_then_done(fake, env_id):
    app = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]
    app_id = app["applicationId"]
    assert post(fake, "application.saveDockerProvider", {"applicationId": app_id, "dockerImage": "nginx:1.27",
                                                         "username": "", "password": "", "registryUrl": ""})[1] is True
    status, body, ctype = call_typed(fake, "POST", "application.deploy", {"applicationId": app_id})
    assert (status, body) == (200, "") and ctype.startswith("application/json")  # no deployment id
    assert get(fake, "deployment.all", applicationId=app_id)[1] == []  # the queue has not started it yet
    row = wait_for(lambda: get(fake, "deployment.all", applicationId=app_id)[1])[0]
    assert row["status"] == "running" and row["logPath"].startswith("/etc/dokploy/logs/%s/" % app["appName"])
    assert get(fake, "application.one", applicationId=app_id)[1]["applicationStatus"] == "running"
    wait_for(lambda: get(fake, "deployment.all", applicationId=app_id)[1][0]["status"] == "done")
    assert get(fake, "application.one", applicationId=app_id)[1]["applicationStatus"] == "done"
    status, text, ctype = call_typed(fake, "GET", "deployment.readLogs",
                                     query=urlencode({"deploymentId": row["deploymentId"], "tail": 1}))
    assert status == 200 and ctype.startswith("application/json") and text.strip() == "Docker Deployed: \u2705"

    # a second deployment is listed first
    post(fake, "application.deploy", {"applicationId": app_id})
    rows = wait_for(lambda: [r for r in get(fake, "deployment.all", applicationId=app_id)[1]
                             if r["deploymentId"] != row["deploymentId"]])
    assert get(fake, "deployment.all", applicationId=app_id)[1][0]["deploymentId"] == rows[0]["deploymentId"]
    assert fake.wait_idle()


@pytest.mark.parametrize("how", ["env", "image"])
def test_failing_deployments_end_in_error_with_a_log(fake, env_id, how):
    app_id = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]["applicationId"]
    image = "registry.example.test/fail:1" if how == "image" else "nginx:1.27"
    post(fake, "application.saveDockerProvider", {"applicationId": app_id, "dockerImage": image, "username": "",
                                                  "password": "", "registryUrl": ""})
    if how == "env":
        post(fake, "application.saveEnvironment", {"applicationId": app_id, "env": "A=1\nFAKE_DEPLOY_FAIL=1",
                                                   "buildArgs": "", "buildSecrets": "", "createEnvFile": True})
    post(fake, "application.deploy", {"applicationId": app_id})
    row = wait_for(lambda: [r for r in get(fake, "deployment.all", applicationId=app_id)[1]
                            if r["status"] != "running"])[0]
    assert row["status"] == "error"
    assert get(fake, "application.one", applicationId=app_id)[1]["applicationStatus"] == "error"
    assert row["errorMessage"] is None  # the real rows mostly have none: the log tells
    text = get(fake, "deployment.readLogs", deploymentId=row["deploymentId"], tail=2)[1]
    assert isinstance(text, str) and "Error occurred" in text
    assert ("no such host" if how == "image" else "manifest unknown") in text


def test_read_logs_exists_from_0_29_5_and_there_is_no_logs_route(fake):
    assert get(fake, "deployment.readLogs", deploymentId="nope")[1]["message"] == "Deployment not found"
    status, body = call(fake, "GET", "logs/deployment/x")
    assert status == 404 and body["message"] == "Not found"
    old = FakeDokploy(version="v0.29.4")
    old.start()
    try:
        status, body = get(old, "deployment.readLogs", deploymentId="x")
    finally:
        old.stop()
    assert status == 404 and body["message"] == "Not found"


def test_start_and_stop_answer_the_row_before_the_change_and_start_needs_swarm(fake, env_id):
    app_id = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]["applicationId"]
    pg = post(fake, "postgres.create", {"name": "db", "databaseName": "d", "databaseUser": "u",
                                        "databasePassword": "pw", "environmentId": env_id})[1]
    fake.applications[app_id]["applicationStatus"] = "done"
    fake.postgres[pg["postgresId"]]["applicationStatus"] = "done"
    # without Swarm (the default): stop works, start is Docker's 500 and changes nothing
    assert post(fake, "application.stop", {"applicationId": app_id})[1]["applicationStatus"] == "done"
    assert fake.applications[app_id]["applicationStatus"] == "idle"
    status, body = post(fake, "application.start", {"applicationId": app_id})
    assert status == 500 and body["message"].startswith("This node is not a swarm manager")
    assert fake.applications[app_id]["applicationStatus"] == "idle"
    assert post(fake, "postgres.stop", {"postgresId": pg["postgresId"]})[1]["applicationStatus"] == "done"
    assert post(fake, "postgres.start", {"postgresId": pg["postgresId"]})[0] == 500
    fake.no_swarm = False
    assert post(fake, "application.start", {"applicationId": app_id})[1]["applicationStatus"] == "idle"
    assert get(fake, "application.one", applicationId=app_id)[1]["applicationStatus"] == "done"
    assert post(fake, "postgres.start", {"postgresId": pg["postgresId"]})[1]["applicationStatus"] == "idle"
    assert fake.postgres[pg["postgresId"]]["applicationStatus"] == "done"


def test_env_text_is_read_as_dotenv_does(fake, env_id):
    app_id = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]["applicationId"]
    text = 'A="say \\"hi\\""\nB=`t\'ck`\nC="l1\\nl2"\nD=x # c\nE=\\\\\nFAKE_DEPLOY_FAIL = 1 '
    post(fake, "application.saveEnvironment", {"applicationId": app_id, "env": text, "buildArgs": "",
                                               "buildSecrets": "", "createEnvFile": True})
    assert fake.container_env(app_id) == {"A": 'say \\"hi\\"', "B": "t'ck", "C": "l1\nl2", "D": "x",
                                          "E": "\\\\", "FAKE_DEPLOY_FAIL": "1"}
    post(fake, "application.saveDockerProvider", {"applicationId": app_id, "dockerImage": "nginx:1.27",
                                                  "username": "", "password": "", "registryUrl": ""})
    post(fake, "application.deploy", {"applicationId": app_id})
    row = wait_for(lambda: [r for r in get(fake, "deployment.all", applicationId=app_id)[1]
                            if r["status"] != "running"])[0]
    assert row["status"] == "error"  # FAKE_DEPLOY_FAIL is looked up in the parsed env


def test_domains_and_databases(fake, env_id):
    app_id = post(fake, "application.create", {"name": "api", "environmentId": env_id})[1]["applicationId"]
    dom = post(fake, "domain.create", {"host": "api.example.test", "applicationId": app_id, "https": True,
                                       "certificateType": "letsencrypt", "domainType": "application"})[1]
    assert (dom["port"], dom["path"]) == (3000, "/")
    assert post(fake, "domain.update", {"domainId": dom["domainId"], "port": 3001})[0] == 400  # host is required
    assert post(fake, "domain.update", {"domainId": dom["domainId"], "host": "api.example.test",
                                        "port": 3001})[1]["port"] == 3001
    assert [d["port"] for d in get(fake, "application.one", applicationId=app_id)[1]["domains"]] == [3001]
    assert post(fake, "domain.delete", {"domainId": dom["domainId"]})[0] == 200
    assert get(fake, "domain.one", domainId=dom["domainId"])[0] == 404

    pg = post(fake, "postgres.create", {"name": "postgis", "databaseName": "ideony", "databaseUser": "ideony",
                                        "databasePassword": "pw-123", "dockerImage": "postgis/postgis:17-3.5",
                                        "environmentId": env_id})[1]
    assert pg["applicationStatus"] == "idle" and pg["appName"].startswith("postgres-")
    assert post(fake, "postgres.deploy", {"postgresId": pg["postgresId"]})[1]["applicationStatus"] == "done"
    redis = post(fake, "redis.create", {"name": "redis", "databasePassword": "pw", "environmentId": env_id})[1]
    assert redis["dockerImage"] == "redis:8"
    env = get(fake, "environment.one", environmentId=env_id)[1]
    assert [p["name"] for p in env["postgres"]] == ["postgis"] and [r["name"] for r in env["redis"]] == ["redis"]
    assert get(fake, "redis.one", redisId="nope")[1]["message"] == "Redis not found"
    post(fake, "postgres.update", {"postgresId": pg["postgresId"], "dockerImage": "registry.example.test/fail"})
    status, body = post(fake, "postgres.deploy", {"postgresId": pg["postgresId"]})
    assert status == 500 and body["code"] == "INTERNAL_SERVER_ERROR"


def test_counts_and_mutations_are_recorded(fake):
    get(fake, "project.all")
    post(fake, "project.create", {"name": "p"})
    assert fake.counts == {"project.all": 1, "project.create": 1} and fake.mutations() == ["project.create"]
    fake.reset_counts()
    assert fake.total_requests == 0


def test_runs_as_a_module_from_the_command_line():
    res = subprocess.run([sys.executable, "-m", "tests.fakes.dokploy_api", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and "--port" in res.stdout and "--limited-key" in res.stdout and "--swarm" in res.stdout
