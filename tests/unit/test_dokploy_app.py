"""Unit tests for dokploy_app/dokploy_database (plugins/module_utils/dokploy_app.py) and the Dokploy client
(plugins/module_utils/dokploy_api.py): env handling, domain plans, validation, error mapping, and the
convergers run against the HTTP boundary (a scripted transport, or the fake server in-process)."""

from __future__ import annotations

import io
import json
import time
import urllib.error
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import dokploy_api as api
from ansible_collections.selfhosted.platform.plugins.module_utils import dokploy_app as dk

from tests.fakes.dokploy_api import FakeDokploy
from tests.unit.fake_module import Exit, Fail, FakeModule

KEY = "unit-key"
SECRET = "s3cret-Value-9f2"


def app_params(url="http://127.0.0.1:1", **kw):
    p = {"url": url, "api_key": KEY, "validate_certs": True, "timeout": 10, "project": "ideony",
         "project_description": None, "environment": "production", "name": "api", "description": None,
         "state": "present", "source": "docker", "docker_image": "ghcr.io/example/api:1", "registry_url": None,
         "registry_username": None, "registry_password": None, "git_repository": None, "git_branch": None,
         "git_build_path": None, "git_ssh_key_id": None, "build_type": None, "dockerfile": None,
         "docker_context_path": None, "docker_build_stage": None, "env": {"NODE_ENV": "production",
                                                                            "API_SECRET": SECRET},
         "domains": [{"host": "api.example.test", "port": 3001, "https": True, "path": "/",
                      "certificate_type": None}],
         "deploy": "auto", "wait": True, "wait_timeout": 30, "log_lines": 40}
    p.update(kw)
    return p


def db_params(url="http://127.0.0.1:1", **kw):
    p = {"url": url, "api_key": KEY, "validate_certs": True, "timeout": 10, "project": "ideony",
         "project_description": None, "environment": "production", "name": "postgis", "type": "postgres",
         "description": None, "docker_image": "postgis/postgis:17-3.5", "database_name": "ideony",
         "database_user": "ideony", "database_password": "pw-" + SECRET, "env": None, "external_port": None,
         "state": "present", "deploy": "auto"}
    p.update(kw)
    return p


class Module(FakeModule):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "plain", "a b ", " lead", "x#y", 'q"uote', "multi\nline", "back\\slash",
                                   "=eq=", "'single'", "postgresql://u:p@db:5432/app?ssl=1"])
def test_env_values_round_trip(value):
    env = {"KEY": value, "OTHER": "1"}
    assert dk.parse_env(dk.render_env(env)) == env


def test_env_rendering_quotes_only_when_needed_and_parses_dokploy_text():
    assert dk.render_env({"A": "1", "B": "x y"}) == "A=1\nB=x y"
    assert dk.render_env({"A": "two\nlines"}) == 'A="two\\nlines"'
    text = '# comment\n\nexport A=1\nB = spaced \nC="quoted # not a comment"\nD=\'lit\\n\'\nnot a line\n'
    assert dk.parse_env(text) == {"A": "1", "B": "spaced", "C": "quoted # not a comment", "D": "lit\\n"}
    assert dk.env_value(True) == "true" and dk.env_value(3001) == "3001" and dk.env_value(None) == ""


def test_env_changes_and_masks_never_carry_values():
    current = {"A": "old-" + SECRET, "B": "same", "C": "gone"}
    desired = {"A": "new-" + SECRET, "B": "same", "D": "added"}
    assert dk.env_changes(current, desired) == [("A", "changed"), ("D", "added"), ("C", "removed")]
    before, after = dk.masked_env(current, desired)
    assert before == {"A": "(set)", "B": "(set)", "C": "(set)"}
    assert after == {"A": "(changed)", "B": "(set)", "D": "(added)"}
    assert SECRET not in repr((before, after))
    assert dk.mask_secret("x") == "(set)" and dk.mask_secret("x", "x") == "(set)"
    assert dk.mask_secret("x", "y") == "(changed)" and dk.mask_secret("", None) == ""


def test_slug():
    assert dk.slug("Ideony API") == "ideony-api"
    assert dk.slug("ideony-My_App.v2") == "ideony-my_app.v2"
    assert dk.slug("--") == "app"
    assert len(dk.slug("x" * 80)) == 56


def test_domains_normalise_and_plan():
    assert dk.normalize_domain({"host": "a.example.test", "https": True}) == {
        "host": "a.example.test", "path": "/", "port": 3000, "https": True, "certificate_type": "letsencrypt"}
    assert dk.normalize_domain({"host": "a.example.test"})["certificate_type"] == "none"
    for item, opt in (({"host": " a"}, "domains[0].host"), ({"host": "a", "path": "x"}, "domains[0].path"),
                      ({"host": "a", "port": 70000}, "domains[0].port"),
                      ({"host": "a", "certificate_type": "acme"}, "domains[0].certificate_type")):
        with pytest.raises(dk.DokployError) as info:
            dk.normalize_domain(item, 0)
        assert info.value.msg.startswith(opt + ":")

    rows = [{"domainId": "d1", "host": "a.example.test", "path": "/", "port": 3000, "https": False,
             "certificateType": "none", "domainType": "application"},
            {"domainId": "d2", "host": "a.example.test", "path": "/", "port": 3000, "https": False,
             "certificateType": "none", "domainType": "application"},
            {"domainId": "d3", "host": "old.example.test", "path": "/", "port": 80, "https": False,
             "certificateType": "none", "domainType": "application"},
            {"domainId": "d4", "host": "b.example.test", "path": "/v1", "port": 3001, "https": True,
             "certificateType": "letsencrypt", "domainType": "application"}]
    desired = [dk.normalize_domain({"host": "a.example.test", "port": 3001}),
               dk.normalize_domain({"host": "b.example.test", "path": "/v1", "port": 3001, "https": True}),
               dk.normalize_domain({"host": "new.example.test"})]
    ops = [(op, (want or have)["host"], (have or {}).get("id"), fields) for op, want, have, fields in
           dk.plan_domains(rows, desired)]
    assert ops == [("delete", "a.example.test", "d2", []), ("update", "a.example.test", "d1", ["port"]),
                   ("create", "new.example.test", None, []), ("delete", "old.example.test", "d3", [])]


@pytest.mark.parametrize("change,opt", [
    ({"name": " "}, "name"), ({"docker_image": None}, "docker_image"),
    ({"source": "git", "docker_image": None}, "git_repository"),
    ({"registry_password": "x", "source": "git", "docker_image": None, "git_repository": "r"}, "registry_password"),
    ({"git_branch": "main"}, "git_branch"), ({"dockerfile": "Dockerfile"}, "dockerfile"),
    ({"env": {"BAD KEY": "1"}}, "env"), ({"domains": [{"host": "a.example.test"}, {"host": "a.example.test"}]},
                                         "domains[1]"),
    ({"wait_timeout": 0}, "wait_timeout"),
])
def test_validation_names_the_option(change, opt):
    with pytest.raises(dk.DokployError) as info:
        dk.validate_app(app_params(**change))
    assert info.value.msg.startswith(opt + ":"), info.value.msg


@pytest.mark.parametrize("change,opt", [
    ({"type": "redis"}, "database_name"), ({"database_password": "has space"}, "database_password"),
    ({"external_port": 0}, "external_port"), ({"project": ""}, "project"),
])
def test_database_validation_names_the_option(change, opt):
    with pytest.raises(dk.DokployError) as info:
        dk.validate_database(db_params(**change))
    assert info.value.msg.startswith(opt + ":"), info.value.msg


# ---------------------------------------------------------------------------------------------
# the client at the HTTP boundary
# ---------------------------------------------------------------------------------------------

class Scripted:
    """A transport answering from a function and recording every request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    def __call__(self, method, url, body, headers, timeout, validate_certs):
        self.requests.append({"method": method, "url": url, "body": json.loads(body) if body else None,
                              "headers": headers, "timeout": timeout, "validate_certs": validate_certs})
        return self.answer(method, url, body)


def http_error(url, code, body):
    return urllib.error.HTTPError(url, code, "error", {}, io.BytesIO(json.dumps(body).encode()))


def test_client_speaks_get_with_flat_params_and_post_with_json():
    transport = Scripted(lambda method, url, body: (200, b'{"ok": true}' if method == "GET" else b""))
    client = api.DokployClient("https://dokploy.example.test/api/", KEY, validate_certs=False, timeout=7,
                               transport=transport)
    assert client.query("application.one", applicationId="a b", skip=None) == {"ok": True}
    assert client.mutate("application.deploy", {"applicationId": "x"}) is None  # deploy answers an empty body
    get_req, post_req = transport.requests
    assert get_req["method"] == "GET" and get_req["body"] is None
    url = urlsplit(get_req["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "dokploy.example.test", "/api/application.one")
    assert parse_qs(url.query) == {"applicationId": ["a b"]}
    assert get_req["headers"]["x-api-key"] == KEY and "Content-Type" not in get_req["headers"]
    assert post_req["url"] == "https://dokploy.example.test/api/application.deploy"
    assert post_req["body"] == {"applicationId": "x"} and post_req["headers"]["Content-Type"] == "application/json"
    assert (post_req["timeout"], post_req["validate_certs"]) == (7, False)
    assert client.counts == {"application.one": 1, "application.deploy": 1} and client.requests == 2


def test_client_maps_errors_to_messages_naming_procedure_and_fields():
    def answer(method, url, body):
        path = urlsplit(url).path
        if path.endswith("application.create"):
            raise http_error(url, 400, {"message": "Input validation failed", "code": "BAD_REQUEST",
                                        "issues": [{"path": ["name"], "message": "Required"},
                                                   {"path": ["environmentId"], "message": "Required"}]})
        if path.endswith("project.all"):
            raise http_error(url, 401, {"message": "Unauthorized"})
        if path.endswith("application.one"):
            raise http_error(url, 404, {"message": "Application not found", "code": "NOT_FOUND"})
        if path.endswith("environment.one"):
            raise http_error(url, 404, {"message": "Not found", "code": "NOT_FOUND"})
        raise urllib.error.URLError("connection refused")

    client = api.DokployClient("http://dokploy.example.test", KEY, transport=Scripted(answer))
    with pytest.raises(api.DokployError) as info:
        client.mutate("application.create", {})
    assert info.value.msg == "application.create: input validation failed: name: Required; environmentId: Required"
    assert info.value.fields == ["name", "environmentId"] and info.value.status == 400
    with pytest.raises(api.DokployError) as info:
        client.query("project.all")
    assert "401 Unauthorized to project.all" in info.value.msg and "rateLimitEnabled: false" in info.value.msg
    assert "quota" in info.value.msg
    with pytest.raises(api.DokployError) as info:
        client.query("application.one", applicationId="x")
    assert info.value.msg == "application.one: HTTP 404 NOT_FOUND: Application not found"
    with pytest.raises(api.DokployError) as info:
        client.query("environment.one", environmentId="x")
    assert "no such procedure" in info.value.msg
    with pytest.raises(api.DokployError) as info:
        client.query("settings.getDokployVersion")
    assert info.value.msg.startswith("cannot reach Dokploy at http://dokploy.example.test")
    with pytest.raises(api.DokployError) as info:
        api.DokployClient("dokploy.example.test", KEY)
    assert info.value.msg.startswith("url:")


@pytest.mark.parametrize("version,ok", [("v0.30.2", True), ("v0.25.0", True), ("0.26.1-canary.2", True),
                                        ("v0.24.9", False), ("v0.22.0", False), ("canary", True)])
def test_version_check(version, ok):
    client = api.DokployClient("http://d.example.test", KEY,
                               transport=Scripted(lambda m, u, b: (200, json.dumps(version).encode())))
    if ok:
        assert client.check_version() == version
    else:
        with pytest.raises(api.DokployError) as info:
            client.check_version()
        assert "too old" in info.value.msg and "v0.25.0" in info.value.msg and version in info.value.msg
    assert api.parse_version("v1.2.3") == (1, 2, 3) and api.parse_version("x") is None


# ---------------------------------------------------------------------------------------------
# the convergers against the fake server
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake():
    server = FakeDokploy(api_key=KEY, deploy_delay=0.1, queue_delay=0.02)
    server.start()
    yield server
    server.stop()


def converge(fake, params, check_mode=False, diff_mode=False, cls=dk.AppConverger, **kw):
    client = dk.make_client(params)
    return cls(client, params, check_mode=check_mode, diff_mode=diff_mode, **kw).run()


def test_create_then_nothing_to_do(fake):
    params = app_params(fake.url)
    first = converge(fake, params)
    assert first["changed"] and first["deployment"]["status"] == "done"
    assert "application api (create)" in first["changes"] and "env.API_SECRET (added)" in first["changes"]
    app = fake.applications[first["application_id"]]
    assert app["sourceType"] == "docker" and dk.parse_env(app["env"]) == params["env"]
    assert app["appName"].startswith("ideony-api-") and first["app_name"] == app["appName"]
    assert [(d["host"], d["port"], d["certificateType"]) for d in fake.domains.values()] == \
        [("api.example.test", 3001, "letsencrypt")]
    assert SECRET not in json.dumps(first)

    fake.reset_counts()
    second = converge(fake, params, diff_mode=True)
    assert not second["changed"] and second["changes"] == [] and second["deployment"] == {"status": "skipped"}
    assert second["requests"] == 4 and fake.total_requests == 4 and fake.mutations() == []
    assert second["request_counts"] == {"settings.getDokployVersion": 1, "project.all": 1, "environment.one": 1,
                                        "application.one": 1}
    assert second["diff"]["before"]["application"]["env"] == {"NODE_ENV": "(set)", "API_SECRET": "(set)"}


def test_check_mode_writes_nothing_and_diff_masks_values(fake):
    result = converge(fake, app_params(fake.url, registry_password="tok-" + SECRET, registry_username="bot",
                                       registry_url="ghcr.io"), check_mode=True, diff_mode=True)
    assert result["changed"] and result["deployment"]["status"] == "planned"
    assert fake.mutations() == [] and fake.projects == {}
    assert result["diff"]["before"] == {"project": None, "environment": None, "application": None}
    after = result["diff"]["after"]["application"]
    assert after["env"] == {"NODE_ENV": "(added)", "API_SECRET": "(added)"}
    assert after["source"]["registry_password"] == "(changed)"
    assert SECRET not in json.dumps(result)


def test_env_change_redeploys_and_only_names_the_key(fake):
    params = app_params(fake.url)
    converge(fake, params)
    changed = app_params(fake.url, env={"NODE_ENV": "production", "API_SECRET": "rotated-" + SECRET})
    result = converge(fake, changed, diff_mode=True)
    assert result["changes"] == ["env.API_SECRET (changed)", "deploy (env changed)"]
    assert result["deployment"]["status"] == "done" and result["deployment"]["reasons"] == ["env changed"]
    assert result["diff"]["after"]["application"]["env"]["API_SECRET"] == "(changed)"
    assert SECRET not in json.dumps(result)
    assert len(fake.deployments_of(result["application_id"])) == 2
    # saveEnvironment sends every key it requires, keeping the build args and secrets
    app = fake.applications[result["application_id"]]
    assert app["buildArgs"] == "" and app["buildSecrets"] == "" and app["createEnvFile"] is True


def test_domain_changes_apply_without_a_deployment(fake):
    converge(fake, app_params(fake.url))
    result = converge(fake, app_params(fake.url, domains=[{"host": "api.example.test", "port": 3002},
                                                          {"host": "www.example.test"}]))
    assert result["changes"] == ["domains api.example.test/ (update: port, https, certificate_type)",
                                 "domains www.example.test/ (create)"]
    assert result["deployment"] == {"status": "skipped"}
    assert sorted((d["host"], d["port"], d["https"]) for d in fake.domains.values()) == \
        [("api.example.test", 3002, False), ("www.example.test", 3000, False)]


def test_failed_deploy_fails_with_the_log_tail(fake):
    params = app_params(fake.url, env={"FAKE_DEPLOY_FAIL": "1"})
    with pytest.raises(dk.ModuleFailure) as info:
        converge(fake, params)
    msg, result = info.value.msg, info.value.result
    assert "ended with status error" in msg and "manifest unknown" in msg and "Error occurred" in msg
    assert "/etc/dokploy/logs/ideony-api-" in msg
    assert result["changed"] and result["deployment"]["status"] == "error"
    assert result["deployment"]["log_tail"][-1].startswith("Error occurred")
    assert result["status"] == "error"
    # the next run retries the failed deployment (and fails again)
    with pytest.raises(dk.ModuleFailure) as info:
        converge(fake, params)
    assert info.value.result["changes"] == ["deploy (the last deployment failed)"]


def test_failed_deploy_without_the_log_endpoint_names_the_log_path(fake):
    fake.log_endpoint = False
    with pytest.raises(dk.ModuleFailure) as info:
        converge(fake, app_params(fake.url, docker_image="registry.example.test/fail:1"))
    assert "(no log lines available)" in info.value.msg and "/etc/dokploy/logs/" in info.value.msg
    assert "could not be read through the API" in info.value.result["warnings"][0]


def test_wait_timeout_and_no_wait(fake):
    fake.deploy_delay = 60
    clock = {"now": 0.0}

    def sleep(seconds):
        # The fake's queue worker starts the deployment on a real timer (queue_delay): let it, so that the
        # timeout is judged on a running deployment however loaded the machine is.
        deadline = time.monotonic() + 10
        while not fake.deployments and time.monotonic() < deadline:
            time.sleep(0.01)
        clock["now"] += seconds

    with pytest.raises(dk.ModuleFailure) as info:
        converge(fake, app_params(fake.url, wait_timeout=5), sleep=sleep, clock=lambda: clock["now"])
    assert "did not finish within 5s (status: running)" in info.value.msg
    assert info.value.result["deployment"]["status"] == "running"
    result = converge(fake, app_params(fake.url, name="other", wait=False))
    assert result["deployment"] == {"status": "queued", "reasons": ["created"]}


def test_exact_name_wins_and_duplicates_fail(fake):
    project, env = fake.add_project("ideony")
    fake.add_application(env["environmentId"], "api-worker")
    fake.add_application(env["environmentId"], "API")
    other_env = fake.add_project("other")[1]
    fake.add_application(other_env["environmentId"], "api")
    result = converge(fake, app_params(fake.url))
    assert "application api (create)" in result["changes"] and result["project_id"] == project["projectId"]
    assert len(fake.find_applications("api")) == 2  # the other project's and the new one
    assert not converge(fake, app_params(fake.url))["changed"]

    dup = fake.add_application(env["environmentId"], "api")
    with pytest.raises(dk.DokployError) as info:
        converge(fake, app_params(fake.url))
    assert info.value.msg.startswith("name: 2 applications are named 'api' in project 'ideony'")
    assert dup["applicationId"] in info.value.msg and "duplicate names" in info.value.msg
    assert len(fake.find_applications("api", env["environmentId"])) == 2


def test_new_environment_git_source_and_build_type(fake):
    params = app_params(fake.url, environment="staging", source="git", docker_image=None,
                        git_repository="https://git.example.test/ideony/web.git", git_branch="develop",
                        build_type="dockerfile", dockerfile="apps/web/Dockerfile", env=None, domains=None)
    result = converge(fake, params)
    assert result["changes"][:3] == ["project ideony (create)", "environment staging (create)",
                                     "application api (create)"]
    app = fake.applications[result["application_id"]]
    assert (app["sourceType"], app["customGitUrl"], app["customGitBranch"], app["customGitBuildPath"]) == \
        ("git", "https://git.example.test/ideony/web.git", "develop", "/")
    assert (app["buildType"], app["dockerfile"]) == ("dockerfile", "apps/web/Dockerfile")
    assert fake.environments[result["environment_id"]]["name"] == "staging"
    assert not converge(fake, params)["changed"]


def test_stop_start_and_absent(fake):
    converge(fake, app_params(fake.url))
    stopped = converge(fake, app_params(fake.url, state="stopped"))
    assert stopped["changes"] == ["stop"] and stopped["status"] == "idle"
    assert not converge(fake, app_params(fake.url, state="stopped"))["changed"]
    started = converge(fake, app_params(fake.url, state="started"))
    assert started["changes"] == ["start"] and started["status"] == "done"
    gone = converge(fake, app_params(fake.url, state="absent"), check_mode=True)
    assert gone["changes"] == ["application api (delete)"] and fake.find_applications("api")
    assert converge(fake, app_params(fake.url, state="absent"))["changed"] and not fake.find_applications("api")
    assert not converge(fake, app_params(fake.url, state="absent"))["changed"]


def test_databases_create_noop_password_warning_and_check_mode(fake):
    params = db_params(fake.url, env={"POSTGRES_INITDB_ARGS": "--data-checksums"})
    first = converge(fake, params, cls=dk.DatabaseConverger)
    assert first["changed"] and first["status"] == "done" and "deploy (created)" in first["changes"]
    row = fake.postgres[first["database_id"]]
    assert (row["dockerImage"], row["databaseName"], row["applicationStatus"]) == \
        ("postgis/postgis:17-3.5", "ideony", "done")
    fake.reset_counts()
    second = converge(fake, params, cls=dk.DatabaseConverger)
    assert not second["changed"] and fake.mutations() == [] and second["requests"] == 4
    warned = converge(fake, dict(params, database_password="other-pw"), cls=dk.DatabaseConverger)
    assert not warned["changed"] and "not changed" in warned["warnings"][0]
    bumped = converge(fake, dict(params, docker_image="postgis/postgis:18-3.6"), cls=dk.DatabaseConverger,
                      check_mode=True, diff_mode=True)
    assert bumped["changes"] == ["docker_image", "deploy (image or env changed)"]
    assert bumped["diff"]["after"]["docker_image"] == "postgis/postgis:18-3.6" and fake.mutations() == []
    redis = converge(fake, db_params(fake.url, name="redis", type="redis", docker_image="redis:8.6-alpine",
                                     database_name=None, database_user=None), cls=dk.DatabaseConverger)
    assert fake.redis[redis["database_id"]]["dockerImage"] == "redis:8.6-alpine"
    with pytest.raises(dk.DokployError) as info:
        converge(fake, db_params(fake.url, name="new", database_password=None), cls=dk.DatabaseConverger)
    assert info.value.msg.startswith("database_password: required to create")


def test_run_app_exits_and_fails_like_a_module(fake):
    module = Module(app_params(fake.url), check_mode=True, diff=True)
    with pytest.raises(Exit) as info:
        dk.run_app(module)
    assert info.value.result["changed"] and "diff" in info.value.result and fake.mutations() == []

    bad_key = Module(app_params(fake.url, api_key="wrong"))
    with pytest.raises(Fail) as info:
        dk.run_app(bad_key)
    assert "rateLimitEnabled" in info.value.result["msg"] and info.value.result["changed"] is False

    old = FakeDokploy(api_key=KEY, version="v0.22.0")
    old.start()
    try:
        with pytest.raises(Fail) as info:
            dk.run_app(Module(app_params(old.url)))
        assert "Dokploy v0.22.0 is too old" in info.value.result["msg"] and old.counts == {
            "settings.getDokployVersion": 1}
    finally:
        old.stop()

    invalid = Module(app_params(fake.url, docker_image=None))
    with pytest.raises(Fail) as info:
        dk.run_app(invalid)
    assert info.value.result["msg"] == "docker_image: required with source=docker"
