"""Unit tests for container_db (plugins/module_utils/container_db.py): verifiers, plans, and the
docker exec boundary faked (no secret may appear on a command line)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import container_db as cdb

from tests.unit.fake_module import Exit, Fail, FakeModule

PW = "S3cret-pw-for-app"
ADMIN = "Adm1n-pw"


def params(**kw):
    p = {"container": "db-1", "engine": "postgres", "admin_user": None, "admin_password": ADMIN,
         "database": "app1", "user": "app1", "password": PW, "user_host": "%", "port": 27017,
         "state": "present", "keep_user": False}
    p.update(kw)
    return p


def test_mysql_native_hash_matches_the_server_formula():
    # SELECT PASSWORD('password') on MariaDB/MySQL
    assert cdb.mysql_native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_pg_scram_verifier_round_trip_and_md5():
    verifier = cdb.pg_scram_verifier(PW, salt=b"0123456789abcdef", iterations=4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:" + base64.b64encode(b"0123456789abcdef").decode() + "$")
    assert cdb.pg_password_matches(verifier, PW, "app1")
    assert not cdb.pg_password_matches(verifier, PW + "x", "app1")
    md5 = "md5" + hashlib.md5(b"pencil" + b"user").hexdigest()
    assert cdb.pg_password_matches(md5, "pencil", "user") and not cdb.pg_password_matches(md5, "pencil", "other")
    assert not cdb.pg_password_matches("", PW, "app1")


def test_mongo_credentials_check_both_mechanisms():
    salt = b"saltsaltsaltsalt"
    stored, server = cdb.scram_sha256_keys(PW, salt, 15000)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    creds = {"SCRAM-SHA-256": {"iterationCount": 15000, "salt": b64(salt), "storedKey": b64(stored),
                               "serverKey": b64(server)}}
    assert cdb.mongo_password_matches(creds, "app1", PW)
    assert not cdb.mongo_password_matches(creds, "app1", "other")
    assert not cdb.mongo_password_matches({}, "app1", PW)


def test_saslprep_maps_spaces_and_normalises():
    assert cdb.saslprep("plain-ascii") == "plain-ascii"
    assert cdb.saslprep("a\u00a0b\u00adc") == "a bc"
    assert cdb.saslprep("\u2168") == "IX"


def test_grant_pattern_escapes_wildcards():
    assert cdb.mariadb_grant_db("my_app") == "my\\_app"


@pytest.mark.parametrize("opt,value", [("database", "App"), ("database", "a-b"), ("user", "x'y"),
                                       ("database", "postgres"), ("user", "root"), ("user_host", "a b")])
def test_validation_names_the_option(opt, value):
    with pytest.raises(cdb.DbError) as info:
        cdb.validate(params(**{opt: value}))
    assert str(info.value).startswith(opt + ":")


def test_postgres_plan_from_nothing_then_nothing_to_do():
    steps = cdb.Postgres.plan(params(), {"user": None, "database": None})
    assert [d for d, s in steps] == ["create user app1", "create database app1 owned by app1",
                                     "revoke CONNECT on app1 from PUBLIC"]
    assert PW not in repr(steps)  # only the verifier travels
    verifier = cdb.pg_scram_verifier(PW)
    state = {"user": {"verifier": verifier, "login": True, "superuser": False},
             "database": {"owner": "app1", "public_connect": False}}
    assert cdb.Postgres.plan(params(), state) == []
    state["database"]["owner"] = "postgres"
    state["user"]["verifier"] = cdb.pg_scram_verifier("old")
    assert [d for d, s in cdb.Postgres.plan(params(), state)] == [
        "set the password of app1", "make app1 the owner of app1 (was postgres)"]
    state["user"]["superuser"] = True
    with pytest.raises(cdb.DbError):
        cdb.Postgres.plan(params(), state)


def test_mariadb_plan_revokes_foreign_grants_and_fixes_the_password():
    state = {"user": {"plugin": "mysql_native_password", "hash": cdb.mysql_native_hash("old")},
             "database": "app1", "grants": {"app1": "all", "other": "partial"}}
    steps = cdb.MariaDB.plan(params(engine="mariadb"), state)
    assert [d for d, s in steps] == ["set the password of app1", "revoke app1's privileges on other"]
    assert PW not in repr(steps)
    state["user"]["hash"] = cdb.mysql_native_hash(PW)
    state["grants"] = {"app1": "all"}
    assert cdb.MariaDB.plan(params(engine="mariadb"), state) == []


def test_mongo_plan():
    assert [d for d, s in cdb.MongoDB.plan(params(engine="mongodb"), {"user": None, "database": False})] == [
        "create user app1"]
    steps = cdb.MongoDB.plan(params(engine="mongodb"), {"user": {"credentials": {}, "roles": [("read", "x")]},
                                                        "database": True})
    assert [d for d, s in steps] == ["set the password of app1", "give app1 exactly readWrite and dbAdmin on app1"]
    assert PW not in repr(steps)


class PgServer:
    """Answers psql through the fake docker exec like a server with the given state would."""

    def __init__(self, role=None, db=None):
        self.role, self.db = role, db

    def __call__(self, cmd, data):
        if "SELECT 'role'" in data:
            out = ""
            if self.role:
                out += "role|%s|t|f\n" % self.role
            if self.db:
                out += "db|%s|f\n" % self.db
            return 0, out, ""
        return 0, "", ""


def run_module(p, responder, **kw):
    module = FakeModule(p, responder=responder, **kw)
    with pytest.raises((Exit, Fail)) as info:
        cdb.run(module)
    return module, info.value.result, isinstance(info.value, Fail)


def test_run_keeps_secrets_off_argv_and_on_stdin():
    module, res, failed = run_module(params(), PgServer())
    assert not failed and res["changed"]
    assert len(module.commands) == 2  # read, then apply
    for cmd, data in module.commands:
        assert cmd[:4] == ["/usr/bin/docker", "exec", "-i", "db-1"]
        assert PW not in " ".join(cmd) and ADMIN not in " ".join(cmd)
        assert data.startswith(ADMIN + "\n")
        assert PW not in data
    assert "CREATE ROLE \"app1\"" in module.commands[1][1]


def test_check_mode_only_reads():
    module, res, _failed = run_module(params(), PgServer(), check_mode=True, diff=True)
    assert res["changed"] and len(module.commands) == 1
    assert res["diff"]["before"]["database_exists"] is False and res["diff"]["after"]["database_exists"] is True


def test_noop_runs_one_read():
    module, res, _failed = run_module(params(), PgServer(role=cdb.pg_scram_verifier(PW), db="app1"))
    assert not res["changed"] and res["actions"] == [] and len(module.commands) == 1


def test_client_failure_is_reported_with_the_container():
    def responder(cmd, data):
        return 1, "", "Error response from daemon: No such container: db-1"

    _module, res, failed = run_module(params(), responder)
    assert failed and res["msg"].startswith("container: db-1 does not exist"), res

    def stopped(cmd, data):
        return 1, "", "Error response from daemon: container 0123 is not running"

    _module, res, failed = run_module(params(), stopped)
    assert failed and res["msg"].startswith("container: db-1 is not running"), res


@pytest.mark.parametrize("engine,actions", [
    ("postgres", ["create user app1", "create database app1 owned by app1", "revoke CONNECT on app1 from PUBLIC"]),
    ("mariadb", None), ("mongodb", None)])
def test_check_mode_predicts_a_container_that_does_not_exist_yet(engine, actions):
    """site.yml --check on a fresh host: the data tier's container is created by the same run, so container_db
    predicts a new instance (changed, the creations) instead of failing on `No such container`."""
    def responder(cmd, data):
        return 1, "", "Error response from daemon: No such container: db-1"

    module, res, failed = run_module(params(engine=engine), responder, check_mode=True, diff=True)
    assert not failed, res
    assert res["changed"] and res["container_missing"] is True and len(module.commands) == 1
    assert res["actions"] and all(a.startswith("create ") or a.startswith("revoke ") or a.startswith("grant ")
                                  for a in res["actions"]), res["actions"]
    if actions:
        assert res["actions"] == actions
    assert res["msg"].startswith("check mode: db-1 does not exist") and "create user app1" in res["msg"]
    assert res["diff"]["before"]["database_exists"] is False and res["diff"]["after"]["database_exists"] is True
    assert PW not in str(res) and ADMIN not in str(res)
    # absent on a container that is not there: nothing to drop
    _module, res, failed = run_module(params(engine=engine, state="absent"), responder, check_mode=True)
    assert not failed and not res["changed"] and res["actions"] == []


def test_check_mode_without_docker_yet_predicts_without_running_anything():
    class NoDocker(FakeModule):
        def get_bin_path(self, name, required=False):
            assert not required, "docker must not be required in check mode"

    module = NoDocker(params(), responder=None, check_mode=True)
    with pytest.raises((Exit, Fail)) as info:
        cdb.run(module)
    res = info.value.result
    assert isinstance(info.value, Exit) and res["changed"] and res["container_missing"], res
    assert module.commands == [] and "no docker CLI" in res["msg"]


def test_a_missing_container_outside_check_mode_is_an_error():
    def responder(cmd, data):
        return 1, "", "Error: No such container: db-1"

    module, res, failed = run_module(params(), responder)
    assert failed and "db-1 does not exist" in res["msg"] and len(module.commands) == 1


def test_mongo_wrapper_gets_both_passwords_on_stdin():
    def responder(cmd, data):
        assert data == ADMIN + "\n" + PW + "\n"
        if "getUser" in cmd[-2]:
            return 0, '{"user":null,"database":false}\n', ""
        return 0, "applied\n", ""
    module, res, failed = run_module(params(engine="mongodb"), responder)
    assert not failed and res["actions"] == ["create user app1"]
    assert all(PW not in " ".join(c) for c, d in module.commands)
