"""The stand-in images under tests/images/ keep the contract of the official images they replace.

Each test starts real containers from ``shp-test/<name>:latest`` (built by tests/images/build.py)
and checks, from outside, what compose files written for the official image rely on: environment
variables, init scripts, users and uids, ports, arguments, health checks. Containers are reached by
``docker exec``, by client containers on a user-defined ``shp-it-*`` network, or through ports
published on 127.0.0.1. A missing image fails the test (skips it with SHP_ALLOW_SKIP=1).
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import time

import pytest

from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration


@pytest.fixture
def dk(request):
    """A docker_helpers.Session whose containers, networks and volumes go away after the test;
    when the test failed, the containers' last log lines are written to the terminal first."""
    session = dh.Session()
    failed_before = request.session.testsfailed
    yield session
    if request.session.testsfailed > failed_before:
        text = session.describe()
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if text and reporter is not None:
            reporter.write_line(f"\n[{request.node.nodeid}] container logs:\n{text}")
    errors = session.cleanup()
    assert not errors, f"cleanup failed: {errors}"


# --------------------------------------------------------------------------------------------------
# image metadata
# --------------------------------------------------------------------------------------------------

METADATA = {
    "postgres": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["postgres"], "StopSignal": "SIGINT",
                 "ports": {"5432/tcp"}, "volumes": {"/var/lib/postgresql/data"}},
    "mariadb": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["mariadbd"],
                "ports": {"3306/tcp"}, "volumes": {"/var/lib/mysql"}},
    "redis": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"], "WorkingDir": "/data",
              "ports": {"6379/tcp"}, "volumes": {"/data"}},
    "nginx": {"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
              "StopSignal": "SIGQUIT", "ports": {"80/tcp"}, "volumes": set()},
    "httpapp": {"Entrypoint": ["python3", "/app/app.py"], "User": "app", "ports": {"8080/tcp"}, "volumes": set()},
    "npm": {"Entrypoint": ["/init"], "ports": {"80/tcp", "81/tcp", "443/tcp"},
            "volumes": {"/data", "/etc/letsencrypt"}},
    "socketproxy": {"Entrypoint": ["/socket-proxy"], "User": "65534:65534", "ports": {"2375/tcp"},
                    "volumes": {"/var/run/docker.sock"}},
}


@pytest.mark.parametrize("name", sorted(METADATA))
def test_image_metadata(name):
    """ENTRYPOINT, CMD, STOPSIGNAL, ports and volumes as in the official image; no HEALTHCHECK
    (compose files define their own)."""
    ref = dh.require_image(name)
    cfg = dh.image_config(ref)
    want = dict(METADATA[name])
    assert set(cfg.get("ExposedPorts") or {}) == want.pop("ports")
    assert set(cfg.get("Volumes") or {}) == want.pop("volumes")
    for key, value in want.items():
        assert cfg.get(key) == value, f"{ref} {key}: {cfg.get(key)!r} != {value!r}"
    assert not cfg.get("Healthcheck"), f"{ref} has a HEALTHCHECK: {cfg.get('Healthcheck')}"


# --------------------------------------------------------------------------------------------------
# postgres
# --------------------------------------------------------------------------------------------------

PG_INIT = {
    "/docker-entrypoint-initdb.d/01-schema.sql": (
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n"
        "INSERT INTO items (name) VALUES ('alpha'), ('beta');\n"
        "CREATE TABLE init_runs (source text NOT NULL);\n"
        "INSERT INTO init_runs VALUES ('sql');\n"
    ),
    # executable: run as a program, with the entrypoint's environment
    "/docker-entrypoint-initdb.d/02-run.sh": (
        "#!/bin/bash\nset -e\n"
        'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" '
        "-c \"INSERT INTO init_runs VALUES ('sh')\"\n"
        'echo "ran as $(id -u)" >> "$PGDATA/init-sh.log"\n',
        0o755,
    ),
    # not executable: sourced, so the entrypoint's functions are there
    "/docker-entrypoint-initdb.d/03-sourced.sh": "docker_process_sql <<<\"INSERT INTO init_runs VALUES ('sourced')\"\n",
    "/docker-entrypoint-initdb.d/04-data.sql.gz": gzip.compress(b"INSERT INTO items (name) VALUES ('gamma');\n"),
    "/docker-entrypoint-initdb.d/05-ignored.txt": "not SQL\n",
}


def pg_ready(c: dh.Container, timeout: float = 90) -> None:
    # over TCP: the temporary init server listens on the unix socket only
    c.wait_exec("pg_isready", "-h", "127.0.0.1", "-q", timeout=timeout)


def psql(c: dh.Container, sql: str, user: str = "postgres", db: str = "postgres") -> str:
    return c.exec_ok("psql", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db, "-tAc", sql).strip()


def test_postgres_contract(dk):
    image = dh.require_image("postgres")
    net = dk.network()
    env = {"POSTGRES_USER": "appuser", "POSTGRES_PASSWORD": "s3cr3t-pw", "POSTGRES_DB": "appdb"}
    db = dk.run(image, env=env, network=net, alias="db", files=PG_INIT)
    pg_ready(db)

    # the role and database exist; the init files ran in order, each once
    assert psql(db, "select current_user || '@' || current_database()", "appuser", "appdb") == "appuser@appdb"
    assert psql(db, "select rolsuper from pg_roles where rolname = 'appuser'", "appuser", "appdb") == "t"
    assert psql(db, "select string_agg(name, ',' order by id) from items", "appuser", "appdb") == "alpha,beta,gamma"
    assert psql(db, "select string_agg(source, ',' order by source) from init_runs", "appuser", "appdb") == \
        "sh,sourced,sql"
    assert db.exec_ok("cat", "/var/lib/postgresql/data/init-sh.log").strip() == "ran as 999"
    assert "ignoring /docker-entrypoint-initdb.d/05-ignored.txt" in db.logs()

    # the server runs as postgres (999:999), which owns PGDATA
    assert db.uid_of_pid1() == 999
    assert db.exec_ok("id", "-u", "postgres").strip() == "999"
    assert db.exec_ok("id", "-g", "postgres").strip() == "999"
    assert db.exec_ok("stat", "-c", "%u:%g %a", "/var/lib/postgresql/data").strip() == "999:999 700"

    # TCP from anywhere needs the password, checked with scram-sha-256
    methods = psql(db, "select string_agg(distinct auth_method, ',') from pg_hba_file_rules "
                       "where type = 'host' and address = 'all'", "appuser", "appdb")
    assert methods == "scram-sha-256"
    assert psql(db, "show password_encryption", "appuser", "appdb") == "scram-sha-256"
    query = ["psql", "-h", "db", "-U", "appuser", "-d", "appdb", "-tAc", "select 'via-tcp:' || current_user"]
    ok = dk.run_once(image, *query, network=net, env={"PGPASSWORD": "s3cr3t-pw"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "via-tcp:appuser"
    bad = dk.run_once(image, *query, network=net, env={"PGPASSWORD": "wrong"})
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr

    # the official image's tools are on PATH
    assert db.exec("pg_isready").returncode == 0
    db.exec_ok("bash", "-c", "command -v pg_isready pg_dump pg_dumpall psql pg_ctl initdb postgres")
    assert "CREATE TABLE public.items" in db.exec_ok("pg_dump", "-U", "appuser", "appdb")
    assert "CREATE ROLE appuser" in db.exec_ok("pg_dumpall", "-U", "appuser", "--roles-only")

    # a restart with the data in place skips initialisation (the init files do not run again)
    db.restart()
    pg_ready(db)
    assert "Skipping initialization" in db.logs()
    assert psql(db, "select count(*) from init_runs", "appuser", "appdb") == "3"
    assert db.exec_ok("cat", "/var/lib/postgresql/data/init-sh.log").strip() == "ran as 999"


def test_postgres_flags_and_password_file(dk):
    """`-c key=value` arguments reach postgres; POSTGRES_PASSWORD_FILE; user and db default to postgres."""
    image = dh.require_image("postgres")
    net = dk.network()
    db = dk.run(image, "-c", "max_connections=42", "-c", "shared_buffers=16MB", network=net, alias="pg",
                env={"POSTGRES_PASSWORD_FILE": "/run/secrets/pg-password", "POSTGRES_INITDB_ARGS": "--data-checksums"},
                files={"/run/secrets/pg-password": "from-a-file\n"})
    pg_ready(db)
    assert psql(db, "show data_checksums") == "on"
    assert psql(db, "select datcollate || ' ' || pg_encoding_to_char(encoding) from pg_database "
                    "where datname = 'postgres'") == "en_US.utf8 UTF8"
    assert psql(db, "show max_connections") == "42"
    assert psql(db, "show shared_buffers") == "16MB"
    assert psql(db, "show listen_addresses") == "*"
    query = ["psql", "-h", "pg", "-U", "postgres", "-tAc", "select current_database()"]
    ok = dk.run_once(image, *query, network=net, env={"PGPASSWORD": "from-a-file"})
    assert (ok.returncode, ok.stdout.strip()) == (0, "postgres"), ok.stderr
    bad = dk.run_once(image, *query, network=net, env={"PGPASSWORD": "from-a-fil"})
    assert bad.returncode != 0


def test_postgres_requires_a_password(dk):
    image = dh.require_image("postgres")
    bare = dk.run(image)
    assert bare.wait_exit(60) == 1
    assert "superuser password is not specified" in bare.logs()
    assert "POSTGRES_PASSWORD" in bare.logs()

    # ...unless trust is asked for explicitly
    trusting = dk.run(image, env={"POSTGRES_HOST_AUTH_METHOD": "trust"})
    pg_ready(trusting)
    assert 'POSTGRES_HOST_AUTH_METHOD has been set to "trust"' in trusting.logs()
    assert psql(trusting, "select 1") == "1"


# --------------------------------------------------------------------------------------------------
# mariadb
# --------------------------------------------------------------------------------------------------

MARIADB_INIT = {
    "/docker-entrypoint-initdb.d/01-schema.sql": (
        "CREATE TABLE seed (id INT PRIMARY KEY, name VARCHAR(20));\n"
        "INSERT INTO seed VALUES (1, 'one');\n"
        "CREATE TABLE init_runs (src VARCHAR(20));\n"
        "INSERT INTO init_runs VALUES ('sql');\n"
        "CREATE DATABASE otherdb;\n"
        "CREATE TABLE otherdb.secret (v INT);\n"
    ),
    "/docker-entrypoint-initdb.d/02-run.sh": (
        "#!/bin/bash\nset -e\n"
        "mariadb -uroot -p\"$MARIADB_ROOT_PASSWORD\" appdb -e \"INSERT INTO init_runs VALUES ('sh')\"\n",
        0o755,
    ),
    "/docker-entrypoint-initdb.d/03-data.sql.gz": gzip.compress(b"INSERT INTO seed VALUES (2, 'two');\n"),
    "/docker-entrypoint-initdb.d/04-sourced.sh": "docker_process_sql <<<\"INSERT INTO init_runs VALUES ('sourced')\"\n",
}


def mariadb_ready(c: dh.Container, timeout: float = 120) -> None:
    c.wait_exec("healthcheck.sh", "--connect", "--innodb_initialized", timeout=timeout, interval=1)


def sql(c: dh.Container, query: str, user: str, password: str, db: str = "", *, check: bool = True):
    """QUERY over TCP (127.0.0.1) inside C; stdout when CHECK, else the completed process."""
    cmd = ["mariadb", "--protocol=tcp", "-h127.0.0.1", f"-u{user}", f"-p{password}", "-N", "-B", "-e", query]
    if db:
        cmd.append(db)
    return c.exec_ok(*cmd).strip() if check else c.exec(*cmd)


def test_mariadb_contract(dk):
    image = dh.require_image("mariadb")
    net = dk.network()
    env = {"MARIADB_ROOT_PASSWORD": "root-pw", "MARIADB_DATABASE": "appdb",
           "MARIADB_USER": "app", "MARIADB_PASSWORD": "app-pw"}
    db = dk.run(image, env=env, network=net, alias="db", files=MARIADB_INIT)
    mariadb_ready(db)

    # healthcheck.sh as compose files use it; mariadb-admin ping
    db.exec_ok("healthcheck.sh", "--connect", "--innodb_initialized")
    db.exec_ok("healthcheck.sh", "--su-mysql", "--connect", "--innodb_initialized")
    db.exec_ok("healthcheck.sh", "--innodb_buffer_pool_loaded", "--mariadbupgrade")
    assert db.exec("healthcheck.sh", "--no-such-test").returncode != 0
    assert db.exec_ok("stat", "-c", "%U %a", "/var/lib/mysql/.my-healthcheck.cnf").strip() == "mysql 600"
    assert db.exec("mariadb-admin", "ping").returncode == 0
    assert "mysqld is alive" in db.exec_ok("mariadb-admin", "-uroot", "-proot-pw", "ping")

    # root works from another container (root@'%') and on the socket (root@localhost)
    query = ["mariadb", "-h", "db", "-uroot", "-N", "-e", "select current_user()"]
    ok = dk.run_once(image, *query, "-proot-pw", network=net)
    assert (ok.returncode, ok.stdout.strip()) == (0, "root@%"), ok.stderr
    bad = dk.run_once(image, *query, "-pwrong", network=net)
    assert bad.returncode != 0
    assert "Access denied" in bad.stderr
    assert db.exec_ok("mariadb", "-uroot", "-proot-pw", "-N", "-e", "select current_user()").strip() == "root@localhost"

    # the user owns its database, and nothing else
    assert sql(db, "CREATE TABLE t1 (i INT); INSERT INTO t1 VALUES (7); SELECT SUM(i) FROM t1", "app", "app-pw",
               "appdb") == "7"
    denied = sql(db, "SELECT * FROM otherdb.secret", "app", "app-pw", check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr, denied
    denied = sql(db, "CREATE DATABASE sneaky", "app", "app-pw", check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr, denied
    assert sql(db, "SHOW DATABASES", "app", "app-pw").split() == ["appdb", "information_schema"]

    # the init files ran once, in order (the .sql.gz too), against MARIADB_DATABASE
    assert sql(db, "SELECT GROUP_CONCAT(name ORDER BY id) FROM seed", "root", "root-pw", "appdb") == "one,two"
    assert sql(db, "SELECT GROUP_CONCAT(src ORDER BY src) FROM init_runs", "root", "root-pw", "appdb") == \
        "sh,sourced,sql"

    # the server runs as mysql (999:999), which owns the datadir; it listens on all interfaces
    assert db.uid_of_pid1() == 999
    assert db.exec_ok("id", "mysql").startswith("uid=999(mysql) gid=999(mysql)")
    assert db.exec_ok("stat", "-c", "%u:%g", "/var/lib/mysql").strip() == "999:999"
    assert sql(db, "SELECT @@bind_address, @@skip_name_resolve, @@port", "root", "root-pw").split() in (
        ["*", "1", "3306"], ["0.0.0.0", "1", "3306"], ["NULL", "1", "3306"])

    # restart with data: no second initialisation
    db.restart()
    mariadb_ready(db)
    assert db.logs().count("running /docker-entrypoint-initdb.d/01-schema.sql") == 1
    assert sql(db, "SELECT COUNT(*) FROM init_runs", "app", "app-pw", "appdb") == "3"


def test_mariadb_mysql_aliases_and_files(dk):
    """MYSQL_* names and *_FILE variants work as in the official image."""
    image = dh.require_image("mariadb")
    db = dk.run(image, env={"MYSQL_ROOT_PASSWORD_FILE": "/run/secrets/root", "MYSQL_DATABASE": "legacy",
                            "MYSQL_USER": "old", "MARIADB_PASSWORD_FILE": "/run/secrets/user"},
                files={"/run/secrets/root": "root-from-file\n", "/run/secrets/user": "user-from-file"})
    mariadb_ready(db)
    assert sql(db, "SELECT DATABASE(), CURRENT_USER()", "old", "user-from-file", "legacy").split() == \
        ["legacy", "old@%"]
    assert sql(db, "SELECT 1", "root", "root-from-file") == "1"


def test_mariadb_password_options(dk):
    image = dh.require_image("mariadb")
    bare = dk.run(image)
    assert bare.wait_exit(60) == 1
    assert "password option is not specified" in bare.logs()

    rnd = dk.run(image, env={"MARIADB_RANDOM_ROOT_PASSWORD": "1"})
    empty = dk.run(image, env={"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD": "yes"})
    mariadb_ready(rnd)
    mariadb_ready(empty)
    assert empty.exec_ok("mariadb", "--protocol=tcp", "-h127.0.0.1", "-uroot", "-N", "-e", "SELECT 2").strip() == "2"
    line = next(x for x in rnd.logs().splitlines() if "GENERATED ROOT PASSWORD:" in x)
    password = line.split("GENERATED ROOT PASSWORD:", 1)[1].strip()
    assert len(password) >= 16
    assert sql(rnd, "SELECT 1", "root", password) == "1"


# --------------------------------------------------------------------------------------------------
# redis
# --------------------------------------------------------------------------------------------------

def redis_cli(c: dh.Container, *args: str, password: str | None = None) -> str:
    auth = ["-a", password, "--no-auth-warning"] if password else []
    return c.exec_ok("redis-cli", *auth, *args).strip()


def test_redis_contract(dk):
    image = dh.require_image("redis")
    net = dk.network()
    # flags only: the entrypoint puts redis-server in front
    cache = dk.run(image, "--requirepass", "r3dis-pw", "--appendonly", "yes", network=net, alias="cache",
                   publish=[6379])
    cache.wait_exec("redis-cli", "-a", "r3dis-pw", "--no-auth-warning", "ping", timeout=30)

    # requirepass is enforced, inside and over the network
    noauth = cache.exec("redis-cli", "ping")
    assert "NOAUTH" in noauth.stdout + noauth.stderr
    assert redis_cli(cache, "ping", password="r3dis-pw") == "PONG"
    remote = dk.run_once(image, "redis-cli", "-h", "cache", "ping", network=net)
    assert "NOAUTH" in remote.stdout + remote.stderr
    remote = dk.run_once(image, "redis-cli", "-h", "cache", "-a", "r3dis-pw", "--no-auth-warning", "ping",
                         network=net)
    assert remote.stdout.strip() == "PONG", remote.stderr
    host, port = cache.host_port(6379)
    assert dh.tcp_exchange(host, port, b"AUTH r3dis-pw\r\nPING\r\n", b"+PONG\r\n") == b"+OK\r\n+PONG\r\n"

    # the arguments reached the server; protected mode is off as in the official image
    assert redis_cli(cache, "config", "get", "appendonly", password="r3dis-pw").split() == ["appendonly", "yes"]
    assert redis_cli(cache, "config", "get", "protected-mode", password="r3dis-pw").split() == \
        ["protected-mode", "no"]
    assert redis_cli(cache, "set", "k", "v", password="r3dis-pw") == "OK"

    # runs as redis (999:999), in /data, which it owns and writes the AOF to
    assert cache.uid_of_pid1() == 999
    assert cache.exec_ok("id", "redis").startswith("uid=999(redis) gid=999(redis)")
    assert cache.exec_ok("stat", "-c", "%u:%g", "/data").strip() == "999:999"
    assert redis_cli(cache, "config", "get", "dir", password="r3dis-pw").split() == ["dir", "/data"]
    assert "appendonlydir" in cache.exec_ok("ls", "/data")


def test_redis_defaults_and_config_file(dk):
    image = dh.require_image("redis")
    net = dk.network()
    # no arguments, no password: reachable from other containers (no protected-mode refusal)
    plain = dk.run(image, network=net, alias="plain")
    plain.wait_exec("redis-cli", "ping", timeout=30)
    remote = dk.run_once(image, "redis-cli", "-h", "plain", "set", "from", "elsewhere", network=net)
    assert remote.stdout.strip() == "OK", remote.stdout + remote.stderr
    assert redis_cli(plain, "get", "from") == "elsewhere"

    # a *.conf first argument gets redis-server in front; settings in it are used
    conf = dk.run(image, "/usr/local/etc/redis/redis.conf", "--maxmemory", "10mb",
                  files={"/usr/local/etc/redis/redis.conf": "port 6380\nappendonly no\n"})
    conf.wait_exec("redis-cli", "-p", "6380", "ping", timeout=30)
    assert redis_cli(conf, "-p", "6380", "config", "get", "maxmemory").split() == ["maxmemory", str(10 * 1024 ** 2)]
    assert redis_cli(conf, "-p", "6380", "config", "get", "protected-mode").split() == ["protected-mode", "no"]
    assert conf.uid_of_pid1() == 999


# --------------------------------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------------------------------

def wait_http(url: str, timeout: float = 30, status: int = 200) -> tuple[int, bytes, dict]:
    return dh.wait_until(lambda: (r := dh.http(url, timeout=3))[0] == status and r, timeout,
                         what=f"{url} to answer {status}")


def test_nginx_default_site(dk):
    image = dh.require_image("nginx")
    web = dk.run(image, publish=[80])
    _ignored, body, headers = wait_http(web.url(80))
    assert b"Welcome to nginx!" in body
    assert headers["content-type"].startswith("text/html")
    assert headers["server"].startswith("nginx")
    status, _ignored, _ignored = dh.http(web.url(80, "/nope"))
    assert status == 404

    res = web.exec("nginx", "-t")
    assert res.returncode == 0 and "test is successful" in res.stderr, res.stderr

    # master as root, workers as nginx (101:101), as `user nginx;` in nginx.conf says
    assert web.exec_ok("id", "nginx").startswith("uid=101(nginx) gid=101(nginx)")
    procs = [line.split(None, 1) for line in web.exec_ok("ps", "-eo", "uid=,args=").splitlines()]
    workers = [uid for uid, args in procs if "nginx: worker process" in args]
    assert workers and set(workers) == {"101"}, procs
    assert [uid for uid, args in procs if "nginx: master process" in args] == ["0"]

    # the official layout: conf.d included, logs are the container's stdout/stderr, no Debian site
    assert "include /etc/nginx/conf.d/*.conf;" in web.exec_ok("cat", "/etc/nginx/nginx.conf")
    assert web.exec_ok("readlink", "/var/log/nginx/access.log", "/var/log/nginx/error.log").split() == \
        ["/dev/stdout", "/dev/stderr"]
    assert web.exec("test", "-e", "/etc/nginx/sites-enabled/default").returncode != 0
    out = dh.wait_until(lambda: (s := dh.docker("logs", web.name).stdout) and '"GET /nope HTTP/1.1" 404' in s and s,
                        10, what="the access log line on stdout")
    assert "/docker-entrypoint.sh: Configuration complete; ready for start up" in out

    # other commands skip /docker-entrypoint.d
    other = dk.run_once(image, "echo", "plain")
    assert other.stdout == "plain\n"


NGINX_SITE = r"""
server {
    listen       80 default_server;
    server_name  _;
    gzip on;
    gzip_min_length 1;
    gzip_types text/plain application/json;

    location = /hello { default_type text/plain; return 200 "hello from conf.d\n"; }
    location /static/ { alias /usr/share/nginx/html/; }
    location / {
        proxy_pass http://app:8080;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
    }
}
"""


def test_nginx_conf_d_proxy_websocket_gzip(dk):
    image = dh.require_image("nginx")
    app_image = dh.require_image("httpapp")
    net = dk.network()
    app = dk.run(app_image, network=net, alias="app", env={"APP_NAME": "backend", "APP_VERSION": "3"})
    app.wait_exec("curl", "-fs", "http://localhost:8080/health", timeout=30)
    web = dk.run(image, network=net, publish=[80], files={"/etc/nginx/conf.d/default.conf": NGINX_SITE})
    _ignored, body, _ignored = wait_http(web.url(80, "/hello"))
    assert body == b"hello from conf.d\n"

    # a mounted default.conf is left as it is by the IPv6 step
    assert "[::]" not in web.exec_ok("cat", "/etc/nginx/conf.d/default.conf")

    # reverse proxy, websocket upgrade through the proxy, gzip
    status, body, _ignored = dh.http(web.url(80, "/"))
    assert (status, body) == (200, b"backend 3\n")
    host, port = web.host_port(80)
    assert dh.ws_echo(host, port, "/ws", ["hello", "again"]) == ["backend: hello", "backend: again"]
    status, body, headers = dh.http(web.url(80, "/static/index.html"), headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip", headers
    assert b"Welcome to nginx!" in gzip.decompress(body)


def test_nginx_keeps_its_temporary_files_under_var_cache_nginx_and_runs_read_only_as_nginx(dk, tmp_path):
    """As the official image: client bodies and proxied responses are buffered under /var/cache/nginx, the pid file is
    /var/run/nginx.pid; so with a read-only root filesystem, tmpfs on /run and /var/cache/nginx owned by nginx and
    no capability at all, it serves as the nginx user (101), port 80 included (Docker's unprivileged-port sysctl)."""
    image = dh.require_image("nginx")
    site = tmp_path / "conf.d"
    site.mkdir()
    (site / "default.conf").write_text(
        "server { listen 80; client_body_buffer_size 1k; proxy_buffer_size 1k; proxy_buffers 2 1k;\n"
        "  proxy_busy_buffers_size 1k;\n"
        "  location / { proxy_pass http://127.0.0.1:8081; } }\n"
        "server { listen 8081; location / { return 200 \"posted\\n\"; }\n"
        "  location = /mime.types { root /etc/nginx; } }\n")
    owned = "uid=101,gid=101,mode=0755"
    web = dk.run(image, publish=[80], user="101:101", volumes=[f"{site}:/etc/nginx/conf.d:ro"],
                 extra=["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                        "--tmpfs", f"/run:{owned}", "--tmpfs", f"/var/cache/nginx:{owned}", "--tmpfs", "/tmp"])
    status, body, _ignored = wait_http(web.url(80, "/mime.types"))
    assert status == 200 and b"text/html" in body  # larger than the proxy buffers: through proxy_temp
    status, body, _ignored = dh.http(web.url(80, "/upload"), method="POST", data=b"x" * 100_000)
    assert (status, body) == (200, b"posted\n")    # larger than the body buffer: through client_temp
    assert "client request body is buffered to a temporary file /var/lib/nginx/body/" in dh.docker(
        "logs", web.name).stderr
    assert web.exec_ok("readlink", "/var/lib/nginx").strip() == "/var/cache/nginx"
    assert set(web.exec_ok("ls", "/var/cache/nginx").split()) >= {"body", "proxy"}
    assert web.exec_ok("stat", "-c", "%u", "/var/cache/nginx/body").strip() == "101"
    assert web.exec_ok("cat", "/var/run/nginx.pid").strip().isdigit()
    procs = {line.split(None, 1)[0] for line in web.exec_ok("ps", "-eo", "uid=,args=").splitlines()
             if "nginx:" in line}
    assert procs == {"101"}


NGINX_TEMPLATE = r"""
server {
    listen ${NGINX_PORT};
    location / { default_type text/plain; return 200 "${GREETING} from $host\n"; }
}
"""


def test_nginx_templates(dk):
    image = dh.require_image("nginx")
    web = dk.run(image, env={"NGINX_PORT": "8081", "GREETING": "hi-there"}, publish=[8081],
                 files={"/etc/nginx/templates/site.conf.template": NGINX_TEMPLATE,
                        "/etc/nginx/templates/sub/extra.conf.template": "# ${GREETING}\n"})
    _ignored, body, _ignored = wait_http(web.url(8081))
    assert body == b"hi-there from 127.0.0.1\n"
    rendered = web.exec_ok("cat", "/etc/nginx/conf.d/site.conf")
    assert "listen 8081;" in rendered and "$host" in rendered
    assert web.exec_ok("cat", "/etc/nginx/conf.d/sub/extra.conf") == "# hi-there\n"
    assert "20-envsubst-on-templates.sh: Running envsubst on /etc/nginx/templates/site.conf.template" in web.logs()
    # the default site is still there
    assert "<h1>Welcome to nginx!</h1>" in web.exec_ok("curl", "-fs", "http://localhost/")


# --------------------------------------------------------------------------------------------------
# httpapp
# --------------------------------------------------------------------------------------------------

def test_httpapp_endpoints(dk):
    image = dh.require_image("httpapp")
    app = dk.run(image, publish=[5001], env={
        "APP_NAME": "backend", "APP_VERSION": "7", "PORT": "5001", "UPLOAD_DIR": "/tmp/uploads",
        "PUBLIC_API_URL": "https://api.example.test", "SECRET_KEY": "do-not-show"})
    status, body, _ignored = wait_http(app.url(5001, "/health"))
    assert json.loads(body) == {"status": "ok", "name": "backend", "version": "7"}
    assert dh.http(app.url(5001, "/"))[:2] == (200, b"backend 7\n")

    # only PUBLIC_* variables can be read back
    assert dh.http(app.url(5001, "/env/PUBLIC_API_URL"))[:2] == (200, b"https://api.example.test")
    for name in ("SECRET_KEY", "PATH", "PUBLIC_MISSING"):
        status, body, _ignored = dh.http(app.url(5001, f"/env/{name}"))
        assert status == 404 and b"do-not-show" not in body

    # websocket echo on /ws and /socket.io/
    host, port = app.host_port(5001)
    assert dh.ws_echo(host, port, "/ws", ["hello", "x" * 70000]) == ["backend: hello", "backend: " + "x" * 70000]
    assert dh.ws_echo(host, port, "/socket.io/?EIO=4&transport=websocket", ["hi"]) == ["backend: hi"]

    # uploads land in UPLOAD_DIR
    status, body, _ignored = dh.http(app.url(5001, "/upload?name=photo.jpg"), method="POST", data=b"\x00\x01jpeg")
    assert status == 201 and json.loads(body) == {"name": "photo.jpg", "bytes": 6}
    assert app.exec_ok("od", "-An", "-c", "/tmp/uploads/photo.jpg").split() == ["\\0", "001", "j", "p", "e", "g"]
    assert dh.http(app.url(5001, "/upload?name=../etc/passwd"), method="POST", data=b"x")[0] == 400

    # what compose healthchecks run, and who it runs as
    app.exec_ok("curl", "-f", "http://localhost:5001/health")
    assert app.uid_of_pid1() == 1001
    assert app.exec_ok("id").startswith("uid=1001(app) gid=1001(app)")


def test_httpapp_health_modes(dk):
    image = dh.require_image("httpapp")
    sick = dk.run(image, publish=[8080], env={"HEALTH": "unhealthy"})
    wait_http(sick.url(8080, "/"))
    status, body, _ignored = dh.http(sick.url(8080, "/health"))
    assert status == 500 and json.loads(body)["status"] == "unhealthy"
    assert sick.exec("curl", "-f", "http://localhost:8080/health").returncode == 22

    crash = dk.run(image, env={"HEALTH": "crash", "APP_VERSION": "2"})
    assert crash.wait_exit(30) == 1
    assert "HEALTH=crash" in crash.logs()

    # starts unhealthy, then recovers
    slow = dk.run(image, publish=[8080], env={"HEALTHY_AFTER": "4"})
    wait_http(slow.url(8080, "/"))
    started = time.monotonic()
    status, body, _ignored = dh.http(slow.url(8080, "/health"))
    assert status == 500 and json.loads(body)["status"] == "starting"
    wait_http(slow.url(8080, "/health"), timeout=20)
    assert time.monotonic() - started >= 2

    # does not listen before STARTUP_DELAY
    late = dk.run(image, env={"STARTUP_DELAY": "5"})
    assert late.exec("curl", "-s", "http://localhost:8080/health").returncode == 7  # connection refused
    late.wait_exec("curl", "-fs", "http://localhost:8080/health", timeout=30)


def test_httpapp_check_backends(dk):
    """/check against the postgres, mariadb and redis stand-ins on a user-defined network."""
    image = dh.require_image("httpapp")
    pg_image, maria_image, redis_image = (dh.require_image(n) for n in ("postgres", "mariadb", "redis"))
    net = dk.network()
    pg = dk.run(pg_image, network=net, alias="postgres",
                env={"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pg-pw", "POSTGRES_DB": "appdb"})
    maria = dk.run(maria_image, network=net, alias="mariadb",
                   env={"MARIADB_ROOT_PASSWORD": "root-pw", "MARIADB_DATABASE": "shop",
                        "MARIADB_USER": "shop", "MARIADB_PASSWORD": "maria-pw"})
    cache = dk.run(redis_image, "--requirepass", "redis-pw", network=net, alias="redis")
    pg_ready(pg)
    mariadb_ready(maria)
    cache.wait_exec("redis-cli", "-a", "redis-pw", "--no-auth-warning", "ping", timeout=30)

    good = dk.run(image, network=net, publish=[8080], env={
        "DATABASE_URL": "postgres://app:pg-pw@postgres:5432/appdb",
        "MYSQL_URL": "mysql://shop:maria-pw@mariadb:3306/shop",
        "REDIS_URL": "redis://:redis-pw@redis:6379/0"})
    wait_http(good.url(8080, "/health"))
    status, body = dh.http_json(good.url(8080, "/check"), timeout=30)
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["backends"]) == {"postgres", "mysql", "redis"}
    assert body["backends"]["postgres"]["database"] == "appdb"
    assert body["backends"]["mysql"]["database"] == "shop"
    assert body["backends"]["redis"]["ping"] is True

    wrong = {"pg-WRONG", "maria-WRONG", "redis-WRONG", "mongo-WRONG"}
    bad = dk.run(image, network=net, publish=[8080], env={
        "DATABASE_URL": "postgresql://app:pg-WRONG@postgres:5432/appdb",
        "MYSQL_URL": "mysql://shop:maria-WRONG@mariadb:3306/shop",
        "REDIS_URL": "redis://:redis-WRONG@redis:6379/0",
        "MONGO_URL": "mongodb://app:mongo-WRONG@no-such-host:27017/app"})
    wait_http(bad.url(8080, "/health"))
    status, raw, _ignored = dh.http(bad.url(8080, "/check"), timeout=60)
    body = json.loads(raw)
    assert status == 503, body
    assert body["status"] == "error"
    assert {k: v["ok"] for k, v in body["backends"].items()} == \
        {"postgres": False, "mysql": False, "redis": False, "mongo": False}
    assert "password authentication failed" in body["backends"]["postgres"]["error"]
    assert "Access denied" in body["backends"]["mysql"]["error"]
    for secret in wrong | {"pg-pw", "maria-pw", "redis-pw"}:
        assert secret not in raw.decode(), f"{secret} leaked into /check output: {raw!r}"


# --------------------------------------------------------------------------------------------------
# npm (jc21/nginx-proxy-manager)
# --------------------------------------------------------------------------------------------------

def test_npm_contract(dk):
    """GET /api/ on 81 (unauthenticated status and version), NPM_FAKE_VERSION, INITIAL_ADMIN_*, the default site
    on 80, TLS with the dummy certificate on 443, /usr/bin/check-health, and the database kept in /data: a new
    container on the same volume has the same users and hosts."""
    image = dh.require_image("npm")
    vol = dk.volume()
    env = {"NPM_FAKE_VERSION": "2.14.0", "INITIAL_ADMIN_EMAIL": "ops@example.test",
           "INITIAL_ADMIN_PASSWORD": "initial-pw-1"}
    first = dk.run(image, publish=[80, 81, 443], volumes=[f"{vol}:/data"], env=env)
    api = first.url(81, "/api/")
    wait_http(api)
    status, health = dh.http_json(api)
    assert status == 200 and health == {"status": "OK", "setup": True,
                                        "version": {"major": 2, "minor": 14, "revision": 0}}
    assert first.exec_ok("/usr/bin/check-health").strip() == "OK"
    status, body, _ignored = dh.http(first.url(80, "/anything"), headers={"Host": "unknown.example.test"})
    assert status == 200 and b"Congratulations" in body
    subject = first.exec_ok("openssl", "x509", "-noout", "-subject", "-in", "/data/nginx/dummycert.pem")
    assert "Dummy Certificate" in subject
    host, port = first.host_port(443)
    with socket.create_connection((host, port), timeout=10) as raw:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        with tls.wrap_socket(raw) as conn:
            assert conn.getpeercert(binary_form=True)

    def login(box):
        status, token = dh.http_json(box.url(81, "/api/tokens"), method="POST",
                                     data=json.dumps({"identity": "ops@example.test",
                                                      "secret": "initial-pw-1"}).encode(),
                                     headers={"Content-Type": "application/json"})
        assert status == 200, token
        return {"Authorization": f"Bearer {token['token']}", "Content-Type": "application/json"}

    status, created = dh.http_json(first.url(81, "/api/nginx/proxy-hosts"), method="POST", headers=login(first),
                                   data=json.dumps({"domain_names": ["kept.example.test"], "forward_scheme": "http",
                                                    "forward_host": "app", "forward_port": 8080}).encode())
    assert status == 201, created
    dh.docker("rm", "-f", first.name)

    # A new container on the same /data, without INITIAL_ADMIN_*: the admin and the host are still there.
    second = dk.run(image, publish=[81], volumes=[f"{vol}:/data"], env={"NPM_FAKE_VERSION": "2.14.0"})
    wait_http(second.url(81, "/api/"))
    status, hosts = dh.http_json(second.url(81, "/api/nginx/proxy-hosts"), headers=login(second))
    kept = [(h["id"], h["domain_names"]) for h in hosts]
    assert status == 200 and kept == [(created["id"], ["kept.example.test"])]
    started = time.monotonic()
    second.stop(timeout=20)
    assert time.monotonic() - started < 10, "SIGTERM did not stop the API (PID 1)"
