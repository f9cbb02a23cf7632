"""The data tier's layer contract (plugins/module_utils/data_tier.py and its filters): names, secret paths, owners,
restore requests; and the redis_restore procedure with docker faked at the process boundary."""

from __future__ import annotations

import json
import os

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.data_tier import FilterModule
from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier as dt
from ansible_collections.selfhosted.platform.plugins.module_utils import redis_restore as rr

F = FilterModule().filters()


def test_one_record_for_every_layer():
    rec = F["data_tier_instance"]({"name": "amn-db", "engine": "postgres", "databases": [{"name": "marketplace"}]},
                                  "/etc/selfhosted/secrets", {"postgres": "postgres:16"})
    assert rec["container"] == "amn-db-postgres-1" and rec["project"] == "amn-db" and rec["service"] == "postgres"
    assert rec["password_file"] == "/etc/selfhosted/secrets/amn-db/superuser"
    assert rec["superuser"] == "postgres" and rec["port"] == 5432 and rec["databases"] == ["marketplace"]
    assert (rec["uid"], rec["gid"]) == (999, 999)
    assert F["data_tier_secret_path"]("amn-db", "/s/", "db:marketplace") == "/s/amn-db/db-marketplace"
    assert F["data_tier_secret_path"]("cache", None, "redis.conf") == "/etc/selfhosted/secrets/cache/redis.conf"
    # Explicit keys of a backup_databases item win.
    custom = F["data_tier_instance"]({"name": "x", "engine": "mariadb", "container": "legacy-db",
                                      "superuser": "admin", "password_file": "/root/pw"})
    assert (custom["container"], custom["superuser"], custom["password_file"]) == ("legacy-db", "admin", "/root/pw")
    conn = F["data_tier_connection"](rec, "pw", {"marketplace": {"user": "m", "password": "p"}}, ["amn-data"])
    assert conn == {"engine": "postgres", "host": "amn-db", "port": 5432, "networks": ["amn-data"],
                    "superuser": "postgres", "superuser_password": "pw",
                    "databases": {"marketplace": {"user": "m", "password": "p"}}}
    with pytest.raises(AnsibleFilterError, match="engine 'oracle'"):
        F["data_tier_instance"]({"name": "x", "engine": "oracle"})
    with pytest.raises(AnsibleFilterError, match="instance name 'Bad Name'"):
        F["data_tier_instance"]({"name": "Bad Name", "engine": "redis"})


INSTANCES = [{"name": "amn-db", "engine": "postgres", "networks": ["amn-data"],
              "databases": [{"name": "marketplace"}, {"name": "ops", "user": "operator"}]},
             {"name": "amn-redis", "engine": "redis", "networks": ["amn-data"]},
             {"name": "shared-mariadb", "engine": "mariadb", "databases": ["wiki"]}]


def test_connections_are_built_in_one_place_from_declarations_and_secret_files():
    """data_tier_connections: the data tier role builds it from the secrets it keeps, a run without the data tier
    (site.yml --tags app_stack) from the files it reads back - one filter, the same result."""
    paths = F["data_tier_secret_files"](INSTANCES, "/s")
    assert paths == ["/s/amn-db/superuser", "/s/amn-db/db-marketplace", "/s/amn-db/db-ops", "/s/amn-redis/superuser",
                     "/s/shared-mariadb/superuser", "/s/shared-mariadb/db-wiki"]
    secrets = {path: "pw-%d" % n for n, path in enumerate(paths)}
    conns = F["data_tier_connections"](INSTANCES, secrets, "/s", None, "data-shared")
    assert conns["amn-db"] == {"engine": "postgres", "host": "amn-db", "port": 5432, "networks": ["amn-data"],
                               "superuser": "postgres", "superuser_password": "pw-0",
                               "databases": {"marketplace": {"user": "marketplace", "password": "pw-1"},
                                             "ops": {"user": "operator", "password": "pw-2"}}}
    assert conns["amn-redis"]["superuser_password"] == "pw-3" and conns["amn-redis"]["databases"] == {}
    assert conns["shared-mariadb"]["networks"] == ["data-shared"]  # none declared: the shared network
    assert conns["shared-mariadb"]["databases"] == {"wiki": {"user": "wiki", "password": "pw-5"}}
    # each entry is exactly what data_tier_connection makes of the record
    rec = F["data_tier_instance"](INSTANCES[0], "/s")
    assert conns["amn-db"] == F["data_tier_connection"](rec, "pw-0", conns["amn-db"]["databases"], ["amn-data"])
    assert F["data_tier_connections"]([], {}) == {}


def test_a_secret_the_data_tier_has_not_kept_is_named():
    paths = F["data_tier_secret_files"](INSTANCES[:1], "/s")
    with pytest.raises(AnsibleFilterError, match=r"amn-db: no password of database ops in /s/amn-db/db-ops .*"
                                                 r"--tags data_tier"):
        F["data_tier_connections"](INSTANCES[:1], {p: "x" for p in paths if not p.endswith("db-ops")}, "/s")


@pytest.mark.parametrize(("image", "explicit", "owner"), [
    ("postgres:16", {}, (999, 999)),
    ("postgres:16-alpine", {}, (70, 70)),
    ("docker.io/library/postgres:17.2-alpine3.21", {}, (70, 70)),
    ("postgis/postgis:16-3.4-alpine", {}, (70, 70)),
    ("postgis/postgis:16-3.4", {}, (999, 999)),
    ("redis:8-alpine", {}, (999, 1000)),
    ("redis:7", {}, (999, 999)),
    ("mariadb:11", {}, (999, 999)),
    ("mongo:8.0", {}, (999, 999)),
    ("bitnami/postgresql:16", {}, (1001, 0)),
    ("registry.example.test/bitnami/redis:7.2", {}, (1001, 0)),
    ("postgres:16-alpine", {"uid": 1234}, (1234, 1234)),
    ("postgres:16-alpine", {"uid": 1234, "gid": 50}, (1234, 50)),
    ("postgres:16", {"gid": 5}, (999, 5)),
])
def test_secret_owner_follows_the_image(image, explicit, owner):
    rec = F["data_tier_instance"]({"name": "db", "engine": "postgres", "image": image, **explicit})
    assert (rec["uid"], rec["gid"]) == owner


def test_redis_and_mongodb_are_confirmed_by_their_instance_name():
    redis = F["data_tier_instance"]({"name": "amn-redis", "engine": "redis"})
    mongo = F["data_tier_instance"]({"name": "amn-mongodb", "engine": "mongodb"})
    pg = F["data_tier_instance"]({"name": "amn-db", "engine": "postgres", "databases": ["marketplace"]})
    ok = F["data_tier_restore_problems"]
    known = ["amn-db", "amn-redis", "amn-mongodb"]
    base = {"kind": "database", "into": "live"}
    assert ok(dict(base, instance="amn-redis", confirm="amn-redis"), redis, known) == []
    assert ok(dict(base, instance="amn-mongodb", confirm="amn-mongodb"), mongo, known) == []
    assert ok(dict(base, instance="amn-db", database="marketplace", confirm="amn-db/marketplace"), pg, known) == []
    assert ok(dict(base, instance="amn-db", database="marketplace", into="scratch"), pg, known) == []


@pytest.mark.parametrize(("request_", "which", "message"), [
    ({"kind": "table"}, None, "restore_kind=table: it is database"),
    ({"into": "elsewhere", "instance": "amn-db", "database": "m"}, "pg", "restore_into=elsewhere: it is live"),
    ({"kind": "path", "path": "mnt/data"}, None, "restore_path=mnt/data: an absolute path is required"),
    ({}, None, "restore_instance is required for restore_kind=database (backed up: amn-db, amn-redis)"),
    ({"instance": "nope"}, None, "restore_instance=nope is not in any backup set (backed up: amn-db, amn-redis)"),
    ({"instance": "amn-db"}, "pg", "restore_database is required: amn-db is a postgres instance, dumped per "
                                   "database (marketplace)"),
    ({"instance": "amn-redis", "database": "0"}, "redis", "restore_database=0: amn-redis is a redis instance"),
    ({"instance": "amn-redis", "into": "scratch"}, "redis", "restore_into=scratch: scratch restores are for"),
    ({"instance": "amn-redis"}, "redis", "confirm it with -e restore_confirm=amn-redis"),
    ({"instance": "amn-redis", "confirm": "amn-redis/"}, "redis",
     "restore_confirm=amn-redis/ does not match what this restore replaces: give -e restore_confirm=amn-redis"),
    ({"instance": "amn-db", "database": "marketplace", "confirm": "amn-db"}, "pg",
     "restore_confirm=amn-db does not match what this restore replaces: give -e restore_confirm=amn-db/marketplace"),
    ({"kind": "path", "path": "/mnt/data/up"}, None, "confirm it with -e restore_confirm=/mnt/data/up"),
])
def test_each_refusal_names_what_was_wrong(request_, which, message):
    records = {"pg": F["data_tier_instance"]({"name": "amn-db", "engine": "postgres", "databases": ["marketplace"]}),
               "redis": F["data_tier_instance"]({"name": "amn-redis", "engine": "redis"})}
    req = {"kind": "database", "into": "live", **request_}
    problems = F["data_tier_restore_problems"](req, records.get(which), ["amn-db", "amn-redis"])
    assert len(problems) == 1 and message in problems[0], problems


def test_restore_jobs_keep_the_secret_off_argv():
    pg = F["data_tier_instance"]({"name": "amn-db", "engine": "postgres"})
    job = F["data_tier_restore_job"](pg, "marketplace", "shp-restore-x", True)
    assert job["argv"][:6] == ["docker", "exec", "-i", "-e", "PGPASSWORD", "shp-restore-x"]
    assert job["argv"][-2:] == ["--no-owner", "--no-acl"] and job["filename"] == "postgres/amn-db/marketplace.dump"
    maria = F["data_tier_instance"]({"name": "wiki", "engine": "mariadb"})
    assert F["data_tier_restore_job"](maria, "w")["argv"][-3:] == ["mariadb", "-u", "root"]
    assert F["data_tier_secret_env"]("pw", "mariadb") == {"MYSQL_PWD": "pw"}
    assert F["data_tier_secret_env"]("it's", "mongodb") == {"SHP_MONGO_CONFIG": 'password: "it\'s"\n'}
    redis = F["data_tier_instance"]({"name": "amn-redis", "engine": "redis"})
    assert F["data_tier_dump_file"](redis, "ignored") == "redis/amn-redis/dump.rdb"
    with pytest.raises(AnsibleFilterError, match="redis_restore module"):
        F["data_tier_restore_job"](redis)


# ---------------------------------------------------------------------------------------------
# redis_restore with docker faked at the process boundary
# ---------------------------------------------------------------------------------------------

class FakeDockerRedis:
    """docker inspect/stop/start/run/rm and redis-cli through docker exec, with a tiny model of the container."""

    def __init__(self, data_dir, fail_at=None):
        self.data_dir = str(data_dir)
        self.fail_at = fail_at
        self.calls = []
        self.running = True
        self.started = "2026-12-04T10:00:00.5Z"
        self.finished = "2026-12-04T09:00:00Z"
        self.twin_aof = 0

    def inspect_doc(self, name):
        if name.startswith("shp-restore-"):
            return {"Name": "/" + name, "State": {"ExitCode": 0}}
        return {"Name": "/" + name, "Image": "sha256:abc",
                "Config": {"Image": "redis:8-alpine", "Entrypoint": ["docker-entrypoint.sh"],
                           "Cmd": ["redis-server", "/usr/local/etc/redis/redis.conf"], "User": "",
                           "Healthcheck": {"Test": ["CMD-SHELL", "redis-cli ping"]}},
                "Mounts": [{"Type": "bind", "Source": self.data_dir, "Destination": "/data", "RW": True},
                           {"Type": "bind", "Source": "/etc/s/redis.conf",
                            "Destination": "/usr/local/etc/redis/redis.conf", "RW": False}],
                "State": {"Running": self.running, "StartedAt": self.started, "FinishedAt": self.finished,
                          "Health": {"Status": "healthy"}}}

    def run_command(self, argv, environ_update=None, **_kw):
        self.calls.append(list(argv))
        verb = argv[1]
        if verb == "exec":
            assert environ_update == {"REDISCLI_AUTH": "s3cret"} and "s3cret" not in argv
            cmd = argv[argv.index("--raw") + 1:]
            if self.fail_at == " ".join(cmd):
                return 0, "ERR injected", ""
            replies = {"PING": "PONG", "DBSIZE": "7", "CONFIG SET appendonly yes": "OK",
                       "INFO persistence": "loading:0\naof_enabled:1\naof_rewrite_in_progress:0\n"
                                           "aof_rewrite_scheduled:0\naof_last_bgrewrite_status:ok"}
            if cmd[:2] == ["CONFIG", "GET"]:
                return 0, "%s\n%s\n" % (cmd[2], {"dir": "/data", "dbfilename": "dump.rdb",
                                                 "appenddirname": "appendonlydir",
                                                 "appendfilename": "appendonly.aof"}[cmd[2]]), ""
            return 0, replies[" ".join(cmd)] + "\n", ""
        if verb == "inspect":
            return 0, json.dumps([self.inspect_doc(argv[2])]), ""
        if verb == "stop" and not argv[-1].startswith("shp-restore-"):
            self.running, self.finished = False, "2026-12-04T10:00:01.25Z"
        if verb == "start":
            self.running, self.started = True, "2026-12-04T10:00:01.3Z"  # later, although it sorts before as text
        return 0, "", ""


class Mod:
    def __init__(self, fake):
        self.run_command = fake.run_command


def test_redis_restore_replaces_the_files_through_a_twin_and_waits_for_the_new_start(tmp_path):
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "appendonlydir" / "appendonly.aof.1.base.rdb").write_bytes(b"old")
    (data / "dump.rdb").write_bytes(b"REDIS0009old")
    rdb = tmp_path / "backup.rdb"
    rdb.write_bytes(b"REDIS0011new")
    fake = FakeDockerRedis(data)
    result = rr.restore(rr.Docker(Mod(fake), "s3cret"), "amn-redis-redis-1", str(rdb), sleep=lambda s: None,
                        now=lambda: 0)
    assert result["key_count"] == 7 and result["aof_enabled"] and result["health"] == "healthy", result
    assert result["started_at"] == "2026-12-04T10:00:01.3Z"
    assert (data / "dump.rdb").read_bytes() == b"REDIS0011new"
    aside = data / "before-restore-19700101T000000Z"
    assert result["previous_dir"] == str(aside) and sorted(os.listdir(aside)) == ["appendonlydir", "dump.rdb"]
    run = next(c for c in fake.calls if c[1] == "run")
    assert run[-4:] == ["redis-server", "/usr/local/etc/redis/redis.conf", "--appendonly", "no"]
    assert run[5:7] == ["--network", "none"] and f"{data}:/data" in run
    assert "/etc/s/redis.conf:/usr/local/etc/redis/redis.conf:ro" in run
    assert run[run.index("--entrypoint") + 1] == "docker-entrypoint.sh"
    verbs = [c[1] for c in fake.calls if c[1] in ("stop", "run", "rm", "start")]
    assert verbs == ["stop", "run", "stop", "rm", "start"], verbs


def test_a_failed_load_puts_the_old_files_back_and_starts_the_instance(tmp_path):
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "dump.rdb").write_bytes(b"REDIS0009old")
    rdb = tmp_path / "backup.rdb"
    rdb.write_bytes(b"REDIS0011new")
    fake = FakeDockerRedis(data, fail_at="CONFIG SET appendonly yes")
    with pytest.raises(rr.RestoreError, match="CONFIG SET appendonly yes: ERR injected"):
        rr.restore(rr.Docker(Mod(fake), "s3cret"), "amn-redis-redis-1", str(rdb), sleep=lambda s: None)
    assert (data / "dump.rdb").read_bytes() == b"REDIS0009old" and (data / "appendonlydir").is_dir()
    assert not [p for p in os.listdir(data) if p.startswith("before-restore")]
    assert fake.calls[-1] == ["docker", "start", "amn-redis-redis-1"] and fake.running
    assert next(c for c in fake.calls if c[1] == "rm")[:3] == ["docker", "rm", "-f"]


def test_check_mode_reads_and_touches_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fake = FakeDockerRedis(data)
    result = rr.restore(rr.Docker(Mod(fake), "s3cret"), "c", str(tmp_path / "not-fetched-yet.rdb"), check_mode=True)
    assert result["changed"] and "would stop c" in result["msg"]
    assert {c[1] for c in fake.calls} <= {"inspect", "exec"}
    bogus = tmp_path / "bogus"
    bogus.write_text("hello")
    with pytest.raises(rr.RestoreError, match="is not a Redis RDB file"):
        rr.restore(rr.Docker(Mod(fake), "s3cret"), "c", str(bogus), check_mode=True)


def test_docker_times_sort_by_time():
    assert rr.time_key("2026-12-04T10:00:01.3Z") > rr.time_key("2026-12-04T10:00:01.25Z")
    assert rr.time_key("2026-12-04T10:00:01Z") < rr.time_key("2026-12-04T10:00:01.000000001Z")
    assert dt.container_name("a", "redis") == "a-redis-1"
