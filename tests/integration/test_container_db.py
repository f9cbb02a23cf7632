"""container_db and host_secret against real database servers (the postgres and mariadb stand-ins)
in containers named shp-it-*, driven as real Ansible tasks."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

ADMIN = "Adm1n-" + secrets.token_hex(4)


def play(tmp: Path, tasks: list[dict], *flags: str) -> tuple[list[dict], str]:
    """Run tasks on localhost; returns each task's result and the raw output."""
    pb = tmp / f"play-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "tasks": [dict(t, ignore_errors=True) for t in tasks]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), *flags], timeout=600,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    out = json.loads(res.stdout[start:])
    return [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]], res.stdout + res.stderr


def db_task(container: str, engine: str, database: str, password: str, **kw) -> dict:
    args = {"container": container, "engine": engine, "admin_password": ADMIN, "database": database,
            "password": password, **kw}
    return {"name": f"db {database}", "selfhosted.platform.container_db": args}


@pytest.fixture(scope="module")
def servers():
    dk = dh.Session()
    pg = dk.run(dh.require_image("postgres"), kind="cdb-pg", env={"POSTGRES_PASSWORD": ADMIN})
    maria = dk.run(dh.require_image("mariadb"), kind="cdb-maria", env={"MARIADB_ROOT_PASSWORD": ADMIN})
    pg.wait_exec("pg_isready", "-h", "127.0.0.1", "-U", "postgres", timeout=120)
    maria.wait_exec("healthcheck.sh", "--connect", "--innodb_initialized", timeout=120)
    yield {"postgres": pg, "mariadb": maria}
    dk.cleanup()


def can_login(server, engine: str, user: str, password: str, database: str) -> tuple[bool, str]:
    """Log in over TCP as the application would (password authentication, not the local socket)."""
    if engine == "postgres":
        # The container's own network address: the official image trusts local and 127.0.0.1 connections,
        # every other address needs the password (pg_hba "host all all all scram-sha-256").
        res = server.exec("sh", "-c", 'psql -h "$(hostname -i | cut -d" " -f1)" -U "$0" -d "$1" -Atc "select 1"',
                          user, database, env={"PGPASSWORD": password})
    else:
        res = server.exec("mariadb", "-h", "127.0.0.1", "--protocol=tcp", "-u", user, database, "-Nse",
                          "select current_user()", env={"MYSQL_PWD": password})
    return res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
def test_databases_are_created_isolated_and_idempotent(servers, engine, tmp_path):
    server = servers[engine]
    pw1, pw2 = "pw1-" + secrets.token_hex(8), "pw2-" + secrets.token_hex(8)
    results, out = play(tmp_path, [db_task(server.name, engine, "app_one", pw1),
                                   db_task(server.name, engine, "app2", pw2)])
    assert all(r.get("changed") and not r.get("failed") for r in results), results
    assert "create user app_one" in results[0]["actions"]

    ok, text = can_login(server, engine, "app_one", pw1, "app_one")
    assert ok, text
    ok, text = can_login(server, engine, "app_one", pw1, "app2")
    assert not ok and ("permission denied" in text or "Access denied" in text), text
    ok, text = can_login(server, engine, "app_one", "wrong", "app_one")
    assert not ok

    again, out = play(tmp_path, [db_task(server.name, engine, "app_one", pw1),
                                 db_task(server.name, engine, "app2", pw2)])
    assert [r["changed"] for r in again] == [False, False], again

    # check mode reads but never writes
    checked, out = play(tmp_path, [db_task(server.name, engine, "app3", pw1)], "--check", "--diff")
    assert checked[0]["changed"] and checked[0]["actions"]
    ok, text = can_login(server, engine, "app3", pw1, "app3")
    assert not ok

    # a changed password is noticed and applied; the old one stops working
    pw1b = "pw1b-" + secrets.token_hex(8)
    changed, out = play(tmp_path, [db_task(server.name, engine, "app_one", pw1b)], "-vvv")
    assert changed[0]["changed"] and changed[0]["actions"] == ["set the password of app_one"], (changed, out[-3000:])
    assert can_login(server, engine, "app_one", pw1b, "app_one")[0]
    assert not can_login(server, engine, "app_one", pw1, "app_one")[0]
    for secret in (pw1b, pw1, ADMIN):
        assert secret not in out

    # removal
    gone, out = play(tmp_path, [db_task(server.name, engine, "app2", pw2, state="absent")])
    assert gone[0]["changed"]
    assert not can_login(server, engine, "app2", pw2, "app2")[0]


def test_failures_name_the_option_and_the_container(servers, tmp_path):
    results, out = play(tmp_path, [db_task("shp-it-no-such-container", "postgres", "x1", "pw-123456"),
                                   db_task(servers["postgres"].name, "postgres", "Bad-Name", "pw-123456"),
                                   db_task(servers["mariadb"].name, "mariadb", "x2", "pw-123456",
                                           admin_password="wrong-admin")])
    assert results[0]["failed"] and results[0]["msg"].startswith("container: shp-it-no-such-container")
    assert results[1]["failed"] and results[1]["msg"].startswith("database:")
    assert results[2]["failed"] and "Access denied" in results[2]["msg"]
    assert "wrong-admin" not in out


def test_host_secret_generates_once_and_vault_value_wins(tmp_path):
    path = tmp_path / "secrets" / "db" / "superuser"
    task = {"name": "secret", "selfhosted.platform.host_secret": {"path": str(path), "mode": "0400"},
            "no_log": True}
    first, out = play(tmp_path, [task])
    assert first[0]["changed"] and path.stat().st_mode & 0o777 == 0o400
    value = path.read_text()
    assert len(value) == 32 and value not in out
    again, out = play(tmp_path, [task], "--diff", "-vvv")
    assert not again[0]["changed"] and value not in out
    vault = {"name": "secret", "no_log": True,
             "selfhosted.platform.host_secret": {"path": str(path), "mode": "0400", "value": "from-vault-9"}}
    checked, out = play(tmp_path, [vault], "--check", "--diff")
    assert checked[0]["changed"] and path.read_text() == value
    applied, out = play(tmp_path, [vault])
    assert applied[0]["changed"] and path.read_text() == "from-vault-9"
    assert "from-vault-9" not in out
