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
from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier as dt
from ansible_collections.selfhosted.platform.plugins.module_utils import restic as rs

from tests.unit.test_restic import FULL_ID, SNAP, SUMMARY, FakeRestic

ROOT = Path(__file__).resolve().parents[2]
sys.modules.setdefault("shp_restic", rs)  # what the role installs next to the runner
sys.modules.setdefault("shp_data_tier", dt)
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
            "superuser": dt.SUPERUSER.get(engine, "root"), "password_file": str(secrets_dir / name),
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
        # the secret travels in the environment only (MongoDB's as the --config document holding it)
        assert len(env) == 1 and SECRET in next(iter(env.values())), label
        assert not filename.startswith("/")
    with pytest.raises(rs.ResticError, match="unknown engine"):
        runner.dump_jobs(instance(secrets_dir, "pg", "oracle"))


HARD_PASSWORDS = ["it's", 'say "hi"', "back\\slash\\", "$HOME and $(id) `id`", "  spaced out  ",
                  "ünïcødé-密码-🔑", "colon: hash # dash - end", "%s %d\\n", "'\"'\"\\$ \t tab"]


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_mongodump_reads_back_exactly_the_password(tmp_path, password):
    """The mongodump job run for real by sh (docker exec stripped off), with a mongodump stand-in that parses its
    --config file as YAML, as mongodump does: it must read back exactly the password."""
    (tmp_path / "pw").write_text(password + "\n")
    job = runner.dump_jobs({"name": "mongo", "engine": "mongodb", "container": "mongo-mongodb-1",
                            "superuser": "root", "password_file": str(tmp_path / "pw"), "databases": []})[0]
    label, argv, env, _filename = job
    # The stored secret is stripped of surrounding whitespace by read_secret, like every secret file.
    expected = password.strip()
    assert password not in " ".join(argv) or not password.strip()
    got = run_in_fake_container(tmp_path, argv, env, "mongodump")
    assert got == {"user": "root", "password": expected, "archive": True}, (label, got)


def run_in_fake_container(tmp_path, argv, env, tool):
    """Run a ``docker exec [-i] [-e NAME]... CONTAINER cmd...`` argv locally: the container part is dropped, the
    named variables come from ENV, and TOOL is a stand-in that reports what it parsed (argv, --config as YAML)."""
    import subprocess

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / tool
    stub.write_text("#!%s\n" % sys.executable + (
        "import json, sys, yaml\n"
        "args = sys.argv[1:]\n"
        "cfg = yaml.safe_load(open(args[args.index('--config') + 1], encoding='utf-8'))\n"
        "print(json.dumps({'user': args[args.index('-u') + 1], 'password': cfg['password'],\n"
        "                  'archive': '--archive' in args}))\n"))
    stub.chmod(0o755)
    rest = argv[2:]
    names = []
    while rest[0] in ("-i", "-e"):
        if rest[0] == "-e":
            names.append(rest[1])
            rest = rest[2:]
        else:
            rest = rest[1:]
    cmd = rest[1:]  # after the container name
    child_env = {"PATH": "%s:/usr/bin:/bin" % bindir, "TMPDIR": str(tmp_path)}
    child_env.update({n: env[n] for n in names})
    proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob("tmp.*")), "the config file was not removed"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_mongorestore_reads_back_exactly_the_password(tmp_path, password):
    """restore.yml's MongoDB command (the data_tier_restore_job filter) with the secret env it is given."""
    from ansible_collections.selfhosted.platform.plugins.filter.data_tier import FilterModule

    filters = FilterModule().filters()
    record = filters["data_tier_instance"]({"name": "mongo", "engine": "mongodb"})
    job = filters["data_tier_restore_job"](record)
    assert job["filename"] == "mongodb/mongo/all.archive" and "--drop" in job["argv"][-3]
    env = filters["data_tier_secret_env"](password, "mongodb")
    assert list(env) == [job["env_name"]]
    got = run_in_fake_container(tmp_path, job["argv"], env, "mongorestore")
    assert got == {"user": "root", "password": password, "archive": True}


class FakeRedis:
    """redis-cli inside the container, as redis_bgsave calls it: INFO persistence, LASTSAVE, BGSAVE."""

    def __init__(self, bgsave_fails):
        self.bgsave_fails = bgsave_fails
        self.lastsave = 1000
        self.in_progress = 0
        self.status = "ok"
        self.calls = []

    def __call__(self, argv, env=None, **_kw):
        import subprocess

        cmd = argv[argv.index("--raw") + 1:]
        self.calls.append(cmd)
        assert env.get("REDISCLI_AUTH") == SECRET and SECRET not in " ".join(argv)
        out = ""
        if cmd[0] == "LASTSAVE":
            out = str(self.lastsave)
        elif cmd[0] == "BGSAVE":
            out = "Background saving started"
            if self.bgsave_fails:
                self.status = "err"  # the forked child failed to write the RDB: LASTSAVE never moves on
            else:
                self.lastsave += 5
        elif cmd[0] == "INFO":
            out = "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:%d\r\nrdb_last_bgsave_status:%s\r\n" % (
                self.in_progress, self.status)
        return subprocess.CompletedProcess(argv, 0, out + "\n", "")


def test_a_failed_bgsave_is_reported_at_once(secrets_dir):
    fake = FakeRedis(bgsave_fails=True)
    sleeps = []
    with pytest.raises(rs.ResticError, match=r"cache: BGSAVE failed \(rdb_last_bgsave_status:err\)"):
        runner.redis_bgsave(instance(secrets_dir, "cache", "redis"), timeout=3, run=fake, sleep=sleeps.append)
    assert len(sleeps) <= 1, sleeps  # not after the timeout

    good = FakeRedis(bgsave_fails=False)
    runner.redis_bgsave(instance(secrets_dir, "cache", "redis"), timeout=3, run=good, sleep=sleeps.append)
    assert ["BGSAVE"] in good.calls


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


def test_on_restic_0_17_a_failed_dump_is_a_problem_and_no_snapshot_is_made(secrets_dir):
    """The runner on Debian 13's restic 0.18: restic runs the dumps itself, a failed one leaves no snapshot to forget
    and the problem says so."""
    from tests.unit.test_restic import FAILED_018

    fake = FakeRestic(version="0.18.0", **{"cat": (0, '{"version": 2, "id": "r1"}', ""),
                                           "backup": (1, "", FAILED_018.replace("oops", "pg_dump: error: refused")),
                                           "snapshots": (0, json.dumps([SNAP]), "")})
    problems = runner.backup_set(config(secrets_dir), "databases", client=fake_client(fake))
    assert len(problems) == 2 and all("restic made no snapshot" in p for p in problems), problems
    assert "exited 3: pg_dump: error: refused" in problems[1]
    assert [fake.sub(a)[0] for a, _e, _d in fake.calls].count("forget") == 0
    assert fake.pipes == []
    backups = [(argv, env) for argv, env, _d in fake.calls if fake.sub(argv)[0] == "backup"]
    argv, env = backups[1]
    # 0.18.0 saves a stdin file below a directory under its flat name only (restic issue 5324)
    assert argv[argv.index("--stdin-filename") + 1] == "postgres%2Fpg%2Fapp.dump" and "--stdin-from-command" in argv
    assert env["SHP_CMD_ENV_PGPASSWORD"] == SECRET and SECRET not in " ".join(argv)


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

    # Any exception, not only restic's, pings the failure URL and runs the hook before the unit fails.
    seen.clear()

    def crash():
        raise KeyError("databases")

    assert runner.with_reporting(cfg, "backup databases", url, crash) == 1
    assert [p for p, b in seen] == ["/ping/abc/start", "/ping/abc/1"] and "KeyError" in seen[1][1]
    assert out.read_text().strip().startswith("backup databases|failure|1|KeyError")
    # a monitoring outage never fails a backup
    assert runner.with_reporting({}, "check", "http://127.0.0.1:9/nowhere", list) == 0
