"""Unit tests for dokploy_app/dokploy_database (plugins/module_utils/dokploy_app.py) and the Dokploy client
(plugins/module_utils/dokploy_api.py): env handling, domain plans, validation, error mapping, and the
convergers run against the HTTP boundary (a scripted transport, or the fake server in-process)."""

from __future__ import annotations

import io
import json
import random
import time
import urllib.error
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from ansible_collections.selfhosted.platform.plugins.module_utils import dokploy_api as api
from ansible_collections.selfhosted.platform.plugins.module_utils import dokploy_app as dk

from tests.conftest import ROOT
from tests.fakes.dokploy_api import FakeDokploy, dotenv_parse
from tests.unit.fake_module import Exit, Fail, FakeModule

KEY = "unit-key"
SECRET = "s3cret-Value-9f2"


def app_params(url="http://127.0.0.1:1", **kw):
    p = {"url": url, "api_key": KEY, "validate_certs": True, "timeout": 10, "project": "ideony",
         "project_description": None, "environment": "production", "name": "api", "description": None,
         "state": "present", "source": "docker", "docker_image": "ghcr.io/example/api:1", "registry_url": None,
         "registry_username": None, "registry_password": None, "git_repository": None, "git_branch": None,
         "git_build_path": None, "git_ssh_key_id": None, "build_type": None, "dockerfile": None,
         "docker_context_path": None, "docker_build_stage": None, "env": {"NODE_ENV": "production"},
         "secret_env": {"API_SECRET": SECRET},
         "domains": [{"host": "api.example.test", "port": 3001, "https": True, "path": "/",
                      "certificate_type": None}],
         "deploy": "auto", "wait": True, "wait_timeout": 30, "log_lines": 40}
    p.update(kw)
    return p


def db_params(url="http://127.0.0.1:1", **kw):
    p = {"url": url, "api_key": KEY, "validate_certs": True, "timeout": 10, "project": "ideony",
         "project_description": None, "environment": "production", "name": "postgis", "type": "postgres",
         "description": None, "docker_image": "postgis/postgis:17-3.5", "database_name": "ideony",
         "database_user": "ideony", "database_password": "pw-" + SECRET, "env": None, "secret_env": None,
         "external_port": None,
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

# What dotenv 16.4.5's parse() returns for env text (its README and lib/main.js): only \n and \r are expanded,
# only inside double quotes; \" and \\ stay as they are; backticks are quotes; # starts a comment in an
# unquoted value; unquoted values are trimmed; \r\n and lone \r are line ends.
DOTENV_CASES = [
    ("A=1", {"A": "1"}),
    ("export A=1\nB = spaced \n# comment\n\nnot a line", {"A": "1", "B": "spaced"}),
    ('C="quoted # not a comment"', {"C": "quoted # not a comment"}),
    ("D='lit\\n'", {"D": "lit\\n"}),
    ('E="two\\nlines\\r!"', {"E": "two\nlines\r!"}),
    ('F="say \\"hi\\""', {"F": 'say \\"hi\\"'}),
    ('G="back\\\\slash"', {"G": "back\\\\slash"}),
    ("H=`tick 'n \"quote\"`", {"H": "tick 'n \"quote\""}),
    ("I=value # comment", {"I": "value"}),
    ("J=a#b", {"J": "a"}),
    ("K=  padded  ", {"K": "padded"}),
    ("L='  kept  '", {"L": "  kept  "}),
    ("M='multi\nline'", {"M": "multi\nline"}),
    ("N=`multi\nline`", {"N": "multi\nline"}),
    ("O=$HOME/${X}", {"O": "$HOME/${X}"}),
    ("P=1\r\nQ=2\rR=3", {"P": "1", "Q": "2", "R": "3"}),
    ("S=", {"S": ""}),
    ("T: colon", {"T": "colon"}),
    ("U='unclosed", {"U": "'unclosed"}),
    ("V=first\nV=second", {"V": "second"}),
    ("W.x-y=1", {"W.x-y": "1"}),
]


@pytest.mark.parametrize("text,expected", DOTENV_CASES)
def test_parse_env_reads_env_text_as_dotenv_16_4_5(text, expected):
    # the module's reader and the fake's port of dotenv (the one the fake server uses) agree with dotenv
    assert dk.parse_env(text) == expected
    assert dotenv_parse(text) == expected


HARD_VALUES = ["", "plain", "3001", "a b ", " lead", "trail ", " \t ", "x#y", "#", 'q"uote', "multi\nline",
               "back\\slash", "C:\\new", "\\n", "=eq=", "'single'", '"double"', "`tick`", "tick`in", "$HOME",
               "${{not.a.ref}", "pa$$w0rd!", "it's \"x\"", "a'b\"c`d", "a'b\"c\nd", "cr\rx", "crlf\r\n",
               "x\"\n\\", "\\", "ends with \\", "{\"json\": [1, \"two\"]}",
               "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
               "postgresql://u:p%40ss@db:5432/app?ssl=1&x=y", "\u00e9t\u00e9 \u2603", "\u00a0nbsp\u00a0",
               "export X=1", "K2=v2", " # not a comment "]


@pytest.mark.parametrize("value", HARD_VALUES)
def test_env_values_round_trip_through_dotenv(value):
    env = {"KEY": value, "OTHER": "1", "LAST": "z"}
    text = dk.render_env(env)
    assert dotenv_parse(text) == env  # what the container gets, read by the fake's port of dotenv
    assert dk.parse_env(text) == env


def test_env_round_trip_property_or_refusal_naming_the_variable():
    """A seeded random sample over the characters dotenv treats specially: every value either reads back
    byte for byte or is refused with a message naming the variable (never showing the value)."""
    rng = random.Random(1604)
    alphabet = "ab $#'\"`\\\n\r\t=:xé"
    refused = 0
    for length in [rng.randint(0, 8) for dummy in range(3000)]:
        value = "".join(rng.choice(alphabet) for dummy in range(length))
        env = {"A_1": "x", "TRICKY": value}
        try:
            text = dk.render_env(env)
        except dk.DokployError as exc:
            refused += 1
            assert exc.msg.startswith("env.TRICKY: the value cannot be written")
            continue
        assert dotenv_parse(text) == env, (value, text)
    assert refused < 3000 // 5  # refusals are the rare values no quoting can carry


def test_unquotable_value_is_refused_before_any_request():
    value = "it's \"all\" of `them`\n"
    for option in ("env", "secret_env"):
        with pytest.raises(dk.DokployError) as info:
            dk.validate_app(app_params(**{"env": None, "secret_env": None, option: {"TRICKY": value}}))
        assert info.value.msg.startswith(option + ".TRICKY: the value cannot be written") and value not in \
            info.value.msg


def test_env_given_as_a_string_is_refused():
    for option in ("env", "secret_env"):
        with pytest.raises(dk.DokployError) as info:
            dk.validate_app(app_params(**{"secret_env": None, option: "A=1\nB=2"}))
        assert info.value.msg.startswith(option + ": must be a dict of NAME: value, got a string")
    with pytest.raises(dk.DokployError) as info:
        dk.validate_database(db_params(env="A=1"))
    assert info.value.msg.startswith("env: must be a dict")
    with pytest.raises(dk.DokployError) as info:
        dk.validate_app(app_params(env={"A": [1, 2]}))
    assert info.value.msg == "env.A: must be a string, number or boolean, not a list"
    with pytest.raises(dk.DokployError) as info:
        dk.validate_app(app_params(env={"API_SECRET": "x"}))
    assert info.value.msg.startswith("secret_env: API_SECRET is also in env")


def test_env_values_as_strings():
    assert dk.env_value("K", True) == "true" and dk.env_value("K", 3001) == "3001"
    assert dk.env_value("K", None) == ""
    assert dk.render_env({"A": "1", "B": "x y", "C": "two\nlines"}) == "A=1\nB='x y'\nC=\"two\\nlines\""


def test_env_changes_and_masks_never_carry_values():
    current = {"A": "old-" + SECRET, "B": "same", "C": "gone"}
    desired = {"A": "new-" + SECRET, "B": "same", "D": "added"}
    assert dk.env_changes(current, desired) == [("A", "changed"), ("D", "added"), ("C", "removed")]
    before, after = dk.masked_env(current, desired)
    assert before == {"A": "(set)", "B": "(set)", "C": "(set)"}
    assert after == {"A": "(changed)", "B": "(set)", "D": "(added)"}
    assert SECRET not in repr((before, after))
    before, after = dk.masked_env(current, desired, plain={"B", "D"})  # declared in env, not secret_env
    assert before == {"A": "(set)", "B": "same", "C": "(set)"}
    assert after == {"A": "(changed)", "B": "same", "D": "added"}
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
    ({"env": {"BAD KEY": "1"}}, "env"), ({"secret_env": {"A:B": "1"}}, "secret_env"),
    ({"domains": [{"host": "a.example.test"}, {"host": "a.example.test"}]}, "domains[1]"),
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
    assert "application api (create)" in first["changes"] and "secret_env.API_SECRET (added)" in first["changes"]
    assert "env.NODE_ENV (added)" in first["changes"]
    app = fake.applications[first["application_id"]]
    assert app["sourceType"] == "docker"
    assert fake.container_env(app["applicationId"]) == {"NODE_ENV": "production", "API_SECRET": SECRET}
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
    assert second["diff"]["before"]["application"]["env"] == {"NODE_ENV": "production", "API_SECRET": "(set)"}


def test_check_mode_writes_nothing_and_diff_masks_values(fake):
    result = converge(fake, app_params(fake.url, registry_password="tok-" + SECRET, registry_username="bot",
                                       registry_url="ghcr.io"), check_mode=True, diff_mode=True)
    assert result["changed"] and result["deployment"]["status"] == "planned"
    assert fake.mutations() == [] and fake.projects == {}
    assert result["diff"]["before"] == {"project": None, "environment": None, "application": None}
    after = result["diff"]["after"]["application"]
    assert after["env"] == {"NODE_ENV": "production", "API_SECRET": "(added)"}
    assert after["source"]["registry_password"] == "(changed)"
    assert SECRET not in json.dumps(result)


def test_env_change_redeploys_and_only_names_the_key(fake):
    params = app_params(fake.url)
    converge(fake, params)
    changed = app_params(fake.url, secret_env={"API_SECRET": "rotated-" + SECRET})
    result = converge(fake, changed, diff_mode=True)
    assert result["changes"] == ["secret_env.API_SECRET (changed)", "deploy (env changed)"]
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


def test_failed_deploy_shows_the_last_lines_of_the_real_log(fake):
    """An image that cannot be pulled: the message carries docker pull's error read through
    deployment.readLogs (the row's errorMessage is null, as on the real server)."""
    with pytest.raises(dk.ModuleFailure) as info:
        converge(fake, app_params(fake.url, docker_image="registry.example.test/fail:1", log_lines=3))
    msg, result = info.value.msg, info.value.result
    assert "no such host" in msg and "lookup registry.example.test" in msg and "Error occurred" in msg
    assert "; error:" not in msg and result["deployment"]["error_message"] is None
    assert len(result["deployment"]["log_tail"]) == 3 and "no such host" in result["deployment"]["log_tail"][1]
    assert result["request_counts"]["deployment.readLogs"] == 1 and "warnings" not in result


def test_failed_deploy_on_dokploy_before_0_29_5_says_the_log_is_not_available():
    old = FakeDokploy(api_key=KEY, version="v0.29.4", deploy_delay=0.1, queue_delay=0.02)
    old.start()
    try:
        with pytest.raises(dk.ModuleFailure) as info:
            converge(old, app_params(old.url, docker_image="registry.example.test/fail:1"))
    finally:
        old.stop()
    msg, result = info.value.msg, info.value.result
    assert "The log is not available through the API on Dokploy v0.29.4" in msg and "/etc/dokploy/logs/" in msg
    assert "deployment.readLogs" not in result["request_counts"] and result["deployment"]["log_tail"] == []
    assert "not available through the API" in result["warnings"][0]


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
    fake.no_swarm = False  # a swarm manager: start works
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


# ---------------------------------------------------------------------------------------------
# issue 16: what the real Dokploy v0.30.2 showed
# ---------------------------------------------------------------------------------------------

def test_stop_and_start_report_the_state_the_server_ends_in(fake):
    """Dokploy answers start/stop with the row as it was before the change; the result is the row after."""
    fake.no_swarm = False
    converge(fake, app_params(fake.url))
    stopped = converge(fake, app_params(fake.url, state="stopped"))
    assert stopped["status"] == "idle" == fake.find_applications("api")[0]["applicationStatus"]
    started = converge(fake, app_params(fake.url, state="started"))
    assert started["status"] == "done" == fake.find_applications("api")[0]["applicationStatus"]
    assert started["request_counts"]["application.one"] == 2  # the run's read, and the read after start

    db = converge(fake, db_params(fake.url), cls=dk.DatabaseConverger)
    assert db["status"] == "done"
    db_stopped = converge(fake, db_params(fake.url, state="stopped"), cls=dk.DatabaseConverger)
    assert db_stopped["changes"] == ["stop"] and db_stopped["status"] == "idle"
    assert fake.postgres[db["database_id"]]["applicationStatus"] == "idle"
    db_started = converge(fake, db_params(fake.url, state="started", deploy="never"), cls=dk.DatabaseConverger)
    assert db_started["changes"] == ["start"] and db_started["status"] == "done"


def test_start_without_swarm_fails_with_dokploy_message_and_a_hint(fake):
    converge(fake, app_params(fake.url))
    converge(fake, app_params(fake.url, state="stopped"))
    with pytest.raises(dk.DokployError) as info:
        converge(fake, app_params(fake.url, state="started"))
    assert "application.start: HTTP 500" in info.value.msg and "This node is not a swarm manager" in info.value.msg
    assert "docker swarm init" in info.value.msg and "Dokploy runs every service on Docker Swarm" in info.value.msg
    assert fake.find_applications("api")[0]["applicationStatus"] == "idle"


def test_plain_env_is_shown_secret_env_is_not_and_both_reach_the_container(fake):
    params = app_params(fake.url, env={"PORT": 3001, "APP_ENV": "staging", "DEBUG": False},
                        secret_env={"API_SECRET": SECRET, "DB_URL": "postgresql://u:%s@db/x" % SECRET})
    first = converge(fake, params, diff_mode=True)
    after = first["diff"]["after"]["application"]["env"]
    assert after == {"PORT": "3001", "APP_ENV": "staging", "DEBUG": "false", "API_SECRET": "(added)",
                     "DB_URL": "(added)"}
    assert "secret_env.DB_URL (added)" in first["changes"] and "env.PORT (added)" in first["changes"]
    assert SECRET not in json.dumps(first)
    assert fake.container_env(first["application_id"]) == {
        "PORT": "3001", "APP_ENV": "staging", "DEBUG": "false", "API_SECRET": SECRET,
        "DB_URL": "postgresql://u:%s@db/x" % SECRET}
    again = converge(fake, params, diff_mode=True)
    assert not again["changed"]
    assert again["diff"]["before"]["application"]["env"]["PORT"] == "3001"


def test_diff_of_an_existing_app_compares_declared_fields_only(fake):
    """No spurious '- status: idle' line: the status is in the diff only when the run starts or stops."""
    fake.no_swarm = False
    converge(fake, app_params(fake.url, deploy="never"))
    result = converge(fake, app_params(fake.url, deploy="never"), diff_mode=True)
    assert not result["changed"] and result["diff"]["before"] == result["diff"]["after"]
    assert "status" not in result["diff"]["before"]["application"]
    assert converge(fake, app_params(fake.url, deploy="always"))["status"] == "done"
    stopping = converge(fake, app_params(fake.url, state="stopped"), diff_mode=True, check_mode=True)
    assert (stopping["diff"]["before"]["application"]["status"],
            stopping["diff"]["after"]["application"]["status"]) == ("done", "idle")


def test_tricky_env_values_reach_the_container_byte_for_byte(fake):
    env = {"V%d" % i: value for i, value in enumerate(HARD_VALUES)}
    params = app_params(fake.url, env=env, secret_env={"S": "it's \"quoted\" \\ $x #y \n"})
    result = converge(fake, params)
    assert fake.container_env(result["application_id"]) == dict(env, S=params["secret_env"]["S"])
    assert not converge(fake, params)["changed"]  # and it reads back unchanged: no endless redeploy
    db = converge(fake, db_params(fake.url, env={"PGOPTIONS": "-c search_path='a b'", "X": "\"q\" \\n"}),
                  cls=dk.DatabaseConverger)
    assert fake.container_env(kind="postgres", service_id=db["database_id"]) == {
        "PGOPTIONS": "-c search_path='a b'", "X": "\"q\" \\n"}


def test_docs_say_a_rate_limited_key_gets_half_its_limit():
    for module in ("dokploy_app", "dokploy_database"):
        text = (ROOT / "plugins" / "modules" / (module + ".py")).read_text()
        doc = yaml.safe_load(text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
        api_key = " ".join(doc["options"]["api_key"]["description"])
        assert "twice per request" in api_key and "half its nominal limit" in api_key, module
        assert "5 requests" in api_key
        md = (ROOT / "docs" / "modules" / (module + ".md")).read_text()
        assert "half its nominal limit" in md
    assert "twice per request" in api.UNAUTHORIZED_HELP and "5 requests" in api.UNAUTHORIZED_HELP


def test_client_reads_the_log_with_deployment_read_logs():
    transport = Scripted(lambda method, url, body: (200, json.dumps("line 1\nline 2\nline 3\n").encode()))
    client = api.DokployClient("https://dokploy.example.test", KEY, transport=transport)
    assert client.deployment_log("dep id", tail=2) == ["line 2", "line 3"]
    url = urlsplit(transport.requests[0]["url"])
    assert (transport.requests[0]["method"], url.path) == ("GET", "/api/deployment.readLogs")
    assert parse_qs(url.query) == {"deploymentId": ["dep id"], "tail": ["2"]}
    assert client.counts == {"deployment.readLogs": 1}
    for version, supported in (("v0.29.5", True), ("v0.30.2", True), ("v0.29.4", False), ("canary", None)):
        client.version = version
        assert client.read_logs_supported() is supported
