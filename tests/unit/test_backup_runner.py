"""Unit tests for the backup role's host-side runner (roles/backup/files/selfhosted_backup.py), with
restic and docker faked at the process boundary (the scripted restic of test_restic) and a local
HTTP server standing in for the healthcheck service."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import restic as rs

from tests.unit.test_restic import FULL_ID, SNAP, SUMMARY, FakeRestic

ROOT = Path(__file__).resolve().parents[2]
sys.modules.setdefault("shp_restic", rs)  # what the role installs next to the runner
_spec = importlib.util.spec_from_file_location("selfhosted_backup", ROOT / "roles/backup/files/selfhosted_backup.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)

SECRET = "Sup3r-" + "s" * 20


@pytest.fixture
def secrets_dir(tmp_path):
    for name in ("pg", "maria", "mongo", "cache"):
        (tmp_path / name).write_text(SECRET + "\n")
    return tmp_path


def instance(secrets_dir, name, engine, dbs=()):
    return {"name": name, "engine": engine, "container": f"{name}-{engine}-1",
            "superuser": runner.SUPERUSER.get(engine, "root"), "password_file": str(secrets_dir / name),
            "databases": list(dbs)}


def test_dump_commands_are_consistent_and_keep_secrets_off_argv(secrets_dir):
    pg = runner.dump_jobs(instance(secrets_dir, "pg", "postgres", ["app", "crm"]))
    assert [j[3] for j in pg] == ["postgres/pg/globals.sql", "postgres/pg/app.dump", "postgres/pg/crm.dump"]
    assert pg[1][1] == ["docker", "exec", "-e", "PGPASSWORD", "pg-postgres-1", "pg_dump", "-Fc", "-U", "postgres",
                        "-d", "app"]
    assert pg[0][1][-4:] == ["pg_dumpall", "--globals-only", "-U", "postgres"]
    maria = runner.dump_jobs(instance(secrets_dir, "maria", "mariadb", ["wiki"]))
    assert maria[0][1][5:] == ["mariadb-dump", "-u", "root", "--single-transaction", "--routines", "--events",
                               "--triggers", "--databases", "wiki"]
    mongo = runner.dump_jobs(instance(secrets_dir, "mongo", "mongodb"))
    assert mongo[0][3] == "mongodb/mongo/all.archive" and "--archive" in mongo[0][1][-3]
    cache = runner.dump_jobs(instance(secrets_dir, "cache", "redis"))
    assert cache[0][3] == "redis/cache/dump.rdb" and cache[0][1][:4] == ["docker", "exec", "-e", "REDISCLI_AUTH"]
    for label, argv, env, filename in pg + maria + mongo + cache:
        assert SECRET not in " ".join(argv), label
        assert list(env.values()) == [SECRET], label  # the secret travels in the environment only
        assert not filename.startswith("/")
    with pytest.raises(rs.ResticError, match="unknown engine"):
        runner.dump_jobs(instance(secrets_dir, "pg", "oracle"))


def fake_client(fake):
    return rs.Restic(fake, "restic", "/srv/restic", "/pw", env={})


def config(secrets_dir, **set_opts):
    bset = {"tags": ["databases"], "databases": [instance(secrets_dir, "pg", "postgres", ["app"])], "paths": []}
    bset.update(set_opts)
    return {"repository": "/srv/restic", "password_file": "/pw", "host": "h1", "sets": {"databases": bset}}


def test_a_failed_dump_is_a_problem_and_its_snapshot_is_forgotten(secrets_dir):
    fake = FakeRestic(**{"cat": (0, '{"version": 2, "id": "r1"}', ""),
                         "backup": (0, json.dumps(SUMMARY) + "\n", ""),
                         "snapshots": (0, json.dumps([SNAP]), "")})
    fake.producer = (1, "pg_dump: error: connection to server failed")
    problems = runner.backup_set(config(secrets_dir), "databases", client=fake_client(fake))
    # globals and app both failed; each snapshot restic made of the broken pipe is forgotten
    assert len(problems) == 2 and all("forgotten" in p for p in problems), problems
    assert "pg_dump: error" in problems[1]
    forgets = [argv for argv, env, data in fake.calls if fake.sub(argv)[0] == "forget"]
    assert len(forgets) == 2 and all(argv[-1] == FULL_ID for argv in forgets)
    # tags: the set, "db", the instance; the stable file name; the host
    cons = fake.pipes[1][2]
    assert cons[cons.index("--stdin-filename") + 1] == "postgres/pg/app.dump"
    assert cons[cons.index("--tag"):cons.index("--tag") + 6] == ["--tag", "databases", "--tag", "db", "--tag", "pg"]
    assert fake.pipes[1][1] == {"PGPASSWORD": SECRET}  # the producer's own environment
    assert "RESTIC_PASSWORD_FILE" not in fake.pipes[1][1]


def test_a_good_run_saves_every_dump_and_the_paths(secrets_dir, tmp_path):
    fake = FakeRestic(**{"cat": (0, '{"version": 2, "id": "r1"}', ""),
                         "backup": (0, json.dumps(SUMMARY) + "\n", ""),
                         "snapshots": (0, json.dumps([SNAP]), "")})
    problems = runner.backup_set(config(secrets_dir, paths=[str(tmp_path)], excludes=["*.tmp"]), "databases",
                                 client=fake_client(fake))
    assert problems == []
    paths_backup = [argv for argv, env, data in fake.calls if fake.sub(argv)[0] == "backup"][-1]
    assert paths_backup[-2:] == ["--", str(tmp_path)] and "--exclude" in paths_backup
    assert "files" in paths_backup


def test_a_missing_repository_and_an_unknown_set_are_named(secrets_dir):
    fake = FakeRestic(**{"cat": (1, "", "Fatal: unable to open config file: stat /srv/restic/config: no such file "
                                        "or directory\nIs there a repository at the following location?")})
    with pytest.raises(rs.ResticError, match="no restic repository"):
        runner.backup_set(config(secrets_dir), "databases", client=fake_client(fake))
    with pytest.raises(rs.ResticError, match="'nightly' is not configured"):
        runner.backup_set(config(secrets_dir), "nightly", client=fake_client(fake))


class Pings(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_GET(self):
        self.seen.append((self.path, ""))
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.seen.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def ping_server():
    Pings.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/ping/abc", Pings.seen
    srv.shutdown()


def test_pings_and_the_notification_hook(ping_server, tmp_path):
    url, seen = ping_server
    out = tmp_path / "notified"
    hook = ["sh", "-c", f'echo "$SHP_BACKUP_JOB|$SHP_BACKUP_STATUS|$SHP_BACKUP_EXIT_CODE|$SHP_BACKUP_MESSAGE" > {out}']
    cfg = {"notify_command": hook}
    assert runner.with_reporting(cfg, "backup databases", url, list) == 0
    assert [p for p, b in seen] == ["/ping/abc/start", "/ping/abc"]
    assert not out.exists()  # success notifies only with notify_on_success

    seen.clear()
    code = runner.with_reporting(cfg, "backup databases", url, lambda: ["pg/app: the dump exited 1"])
    assert code == 1
    assert [p for p, b in seen] == ["/ping/abc/start", "/ping/abc/1"] and "the dump exited 1" in seen[1][1]
    assert out.read_text().strip() == "backup databases|failure|1|pg/app: the dump exited 1"

    def boom():
        raise rs.ResticError("repository: wrong password")

    assert runner.with_reporting({}, "check", url, boom) == 1
    # a monitoring outage never fails a backup
    assert runner.with_reporting({}, "check", "http://127.0.0.1:9/nowhere", list) == 0
