# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contracts between the layers that touch a data tier instance, in one place.

The data tier role deploys an instance; the backup role's config, the backup runner on the host, restore.yml and
rotate_db_password.yml find it again. What they must agree on lives here, and nowhere else:

  - names: the Compose project is the instance name, the service the engine, so the container is
    ``<instance>-<engine>-1`` (:func:`container_name`); on a Docker Swarm (site.yml on a cluster) the stack is the
    instance name and the service ``<instance>_<engine>``, whose task container on the node that holds the instance
    is found by the service's label (:func:`swarm_service_name`, :func:`swarm_container_argv`);
  - the secrets layout under the secrets directory (``/etc/selfhosted/secrets``): ``<instance>/superuser``,
    ``<instance>/db-<database>``, ``<instance>/redis.conf`` (:func:`secret_path`);
  - the superuser each engine's image creates, its port, where it keeps its data inside the container, and the uid
    its server runs as, which owns the secret files it must read (:func:`server_owner`);
  - the file names of the dumps in the backup repository and the commands that make and restore them (database
    passwords travel in the environment of ``docker exec -e NAME`` only, never on a command line;
    :func:`dump_jobs`, :func:`restore_job`, :func:`mongo_password_config`);
  - the ``data_tier_connections`` fact the app stacks read (:func:`connection`, :func:`connections`, built from the
    declarations and the secret files :func:`secret_files` names).

Pure functions, no I/O and no Ansible imports: the backup runner on the host imports this file as
``shp_data_tier.py``, the filter plugin ``selfhosted.platform.data_tier_*`` exposes it to roles and playbooks.
"""

from __future__ import annotations

import json
import re

ENGINES = ("postgres", "mariadb", "mongodb", "redis")
DEFAULT_SECRETS_DIR = "/etc/selfhosted/secrets"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

# The superuser each engine's official image creates (redis: the ACL default user).
SUPERUSER = {"postgres": "postgres", "mariadb": "root", "mongodb": "root", "redis": "default"}
# Port each engine listens on inside the container.
PORT = {"postgres": 5432, "mariadb": 3306, "mongodb": 27017, "redis": 6379}
# Where each engine keeps its data inside the container.
DATA_DIR = {"postgres": "/var/lib/postgresql/data", "mariadb": "/var/lib/mysql", "mongodb": "/data/db",
            "redis": "/data"}
# The variable that carries the superuser's password into a client inside the container.
PASSWORD_ENV = {"postgres": "PGPASSWORD", "mariadb": "MYSQL_PWD", "mongodb": "SHP_MONGO_CONFIG",
                "redis": "REDISCLI_AUTH"}
# Engines whose dumps are per database (the others dump the whole instance).
PER_DATABASE = ("postgres", "mariadb")

# uid:gid the server of an image family runs as (the owner of the files it must read: secrets, data). The first
# pattern that matches the image reference wins; an instance can set ``uid``/``gid`` itself.
#   - official Debian-based postgres, mariadb, mysql, mongo and redis images: 999:999;
#   - postgres (and postgis) Alpine images: postgres is 70:70;
#   - redis Alpine images: redis is 999:1000;
#   - Bitnami images run as the non-root user 1001 (group root).
OWNER_RULES = (
    (re.compile(r"(^|/)(postgres|postgis)(:|@|$).*alpine", re.IGNORECASE), (70, 70)),
    (re.compile(r"(^|/)redis(:|@|$).*alpine", re.IGNORECASE), (999, 1000)),
    (re.compile(r"(^|/)bitnami/", re.IGNORECASE), (1001, 0)),
)
DEFAULT_OWNER = (999, 999)


class ContractError(ValueError):
    """An instance that breaks the contract (unknown engine, bad name, ...)."""


def check_instance(inst):
    """Raise ContractError naming what is wrong with one declared instance."""
    if not isinstance(inst, dict):
        raise ContractError("an instance must be a dict with name and engine, got %r" % (inst,))
    name = inst.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ContractError("instance name %r: lower-case letters, digits, '-' and '_', starting with a letter or "
                            "digit" % (name,))
    if inst.get("engine") not in ENGINES:
        raise ContractError("instance %s: engine %r is not one of %s" % (name, inst.get("engine"), ", ".join(ENGINES)))


def container_name(name, engine):
    """The container of an instance: Compose project <name>, service <engine>, replica 1."""
    return "%s-%s-1" % (name, engine)


def swarm_service_name(name, engine):
    """The Swarm service of an instance deployed with swarm_stack: stack <name>, service <engine>."""
    return "%s_%s" % (name, engine)


def swarm_container_argv(service):
    """``docker ps`` argv that prints the id of the running task container of Swarm SERVICE on this node."""
    return ["docker", "ps", "--quiet", "--filter", "label=com.docker.swarm.service.name=%s" % service,
            "--filter", "status=running"]


def secret_path(secrets_dir, name, kind="superuser"):
    """Where a secret of instance NAME lives: kind ``superuser``, ``redis.conf`` or ``db:<database>``."""
    base = "%s/%s" % ((secrets_dir or DEFAULT_SECRETS_DIR).rstrip("/"), name)
    if kind.startswith("db:"):
        return "%s/db-%s" % (base, kind[3:])
    if kind in ("superuser", "redis.conf"):
        return "%s/%s" % (base, kind)
    raise ContractError("unknown secret kind %r" % (kind,))


def server_owner(image, uid=None, gid=None):
    """(uid, gid) the server in IMAGE runs as; explicit UID/GID win (GID defaults to UID then)."""
    if uid not in (None, ""):
        return int(uid), int(gid) if gid not in (None, "") else int(uid)
    for pattern, owner in OWNER_RULES:
        if pattern.search(image or ""):
            return owner[0], owner[1] if gid in (None, "") else int(gid)
    return DEFAULT_OWNER[0], DEFAULT_OWNER[1] if gid in (None, "") else int(gid)


def database_names(databases):
    """Names of an instance's declared databases (items may be dicts with ``name`` or plain names)."""
    return [d["name"] if isinstance(d, dict) else str(d) for d in databases or []]


def instance_record(inst, secrets_dir=None, images=None):
    """Everything the other layers need to know of one instance, from its declaration (a data_tier_instances or
    backup_databases item). Explicit ``container``, ``superuser``, ``password_file``, ``uid``, ``gid`` keys win. An
    instance marked ``swarm`` (site.yml on a cluster) also names its ``swarm_service``, whose task on the node that
    holds the instance is its container (found at run time: :func:`swarm_container_argv`)."""
    check_instance(inst)
    name, engine = inst["name"], inst["engine"]
    image = inst.get("image") or (images or {}).get(engine) or ""
    uid, gid = server_owner(image, inst.get("uid"), inst.get("gid"))
    record = {
        "name": name,
        "engine": engine,
        "image": image,
        "project": name,
        "service": engine,
        "container": inst.get("container") or container_name(name, engine),
        "superuser": inst.get("superuser") or SUPERUSER[engine],
        "password_file": inst.get("password_file") or secret_path(secrets_dir, name),
        "secret_dir": "%s/%s" % ((secrets_dir or DEFAULT_SECRETS_DIR).rstrip("/"), name),
        "port": PORT[engine],
        "data_dir": DATA_DIR[engine],
        "uid": uid,
        "gid": gid,
        "databases": database_names(inst.get("databases")),
    }
    if inst.get("swarm"):
        record["swarm_service"] = swarm_service_name(name, engine)
    return record


def connection(record, superuser_password, databases=None, networks=None):
    """One entry of the ``data_tier_connections`` fact: how an app stack reaches the instance."""
    return {
        "engine": record["engine"],
        "host": record["name"],
        "port": record["port"],
        "networks": list(networks or []),
        "superuser": record["superuser"],
        "superuser_password": superuser_password,
        "databases": dict(databases or {}),
    }


def secret_files(instances, secrets_dir=None):
    """Every secret file the connections of INSTANCES (declarations) need: each instance's superuser password and the
    password of each of its databases, in declaration order."""
    paths = []
    for inst in instances or []:
        check_instance(inst)
        paths.append(inst.get("password_file") or secret_path(secrets_dir, inst["name"]))
        paths += [secret_path(secrets_dir, inst["name"], "db:" + db) for db in database_names(inst.get("databases"))]
    return paths


def connections(instances, secrets, secrets_dir=None, images=None, shared_network="data-shared"):
    """The whole ``data_tier_connections`` fact: {instance name: :func:`connection`} of every declared instance,
    with the passwords taken from SECRETS ({secret file path: value}, the files :func:`secret_files` names). The one
    place the fact is built, whether the data tier role has just kept the secrets or a later layer read them back
    (``site.yml --tags app_stack``). A missing secret raises ContractError naming the instance and the file."""
    out = {}
    for inst in instances or []:
        record = instance_record(inst, secrets_dir, images)

        def secret(path, what, name=record["name"]):
            if path not in (secrets or {}):
                raise ContractError("data tier instance %s: no %s in %s (the data tier layer keeps it: converge it "
                                    "first, e.g. site.yml --tags data_tier)" % (name, what, path))
            return secrets[path]

        databases = {}
        for db in inst.get("databases") or []:
            db_name = db["name"] if isinstance(db, dict) else str(db)
            user = (db.get("user") if isinstance(db, dict) else None) or db_name
            databases[db_name] = {"user": user, "password": secret(
                secret_path(secrets_dir, record["name"], "db:" + db_name), "password of database %s" % db_name)}
        networks = inst.get("networks", [shared_network])
        out[record["name"]] = connection(record, secret(record["password_file"], "superuser password"), databases,
                                         networks)
    return out


# ---------------------------------------------------------------------------------------------
# Dumps and restores
# ---------------------------------------------------------------------------------------------

def mongo_password_config(password):
    """The YAML document mongodump/mongorestore read with ``--config`` (the password never on argv): a
    double-quoted scalar, JSON-escaped, which YAML reads back exactly (quotes, backslashes, ``$``, spaces and
    non-ASCII included)."""
    return "password: %s\n" % json.dumps(password, ensure_ascii=False)


# Shell snippets run inside the MongoDB container: the config document comes from the environment
# (SHP_MONGO_CONFIG) into a private temporary file, which is removed again whatever the tool's exit code.
MONGO_WRAPPER = ('umask 077; f=$(mktemp); printf "%%s" "$SHP_MONGO_CONFIG" >"$f"; '
                 '%s --archive --authenticationDatabase admin -u "$1" --config "$f"%s; rc=$?; rm -f "$f"; exit $rc')


def docker_exec(container, env_names, *argv, stdin=False):
    """``docker exec`` argv that passes ENV_NAMES by name (their values come from docker's own environment)."""
    cmd = ["docker", "exec"] + (["-i"] if stdin else [])
    for name in env_names:
        cmd += ["-e", name]
    return cmd + [container] + list(argv)


def dump_file(engine, name, database=None):
    """File name of a dump inside a snapshot (stable, so restic dump and restores find it)."""
    if engine == "postgres":
        return "postgres/%s/%s" % (name, "globals.sql" if database is None else database + ".dump")
    if engine == "mariadb":
        return "mariadb/%s/%s.sql" % (name, database)
    if engine == "mongodb":
        return "mongodb/%s/all.archive" % name
    if engine == "redis":
        return "redis/%s/dump.rdb" % name
    raise ContractError("unknown engine %r" % (engine,))


def dump_files(engine, name, databases=()):
    """Every file one backup of an instance saves (postgres: the globals, then one per database)."""
    if engine == "postgres":
        return [dump_file(engine, name)] + [dump_file(engine, name, db) for db in databases or ()]
    if engine == "mariadb":
        return [dump_file(engine, name, db) for db in databases or ()]
    return [dump_file(engine, name)]


def secret_env(engine, password):
    """{variable: value} that carries PASSWORD to the engine's client inside the container."""
    if not password:
        return {}
    value = mongo_password_config(password) if engine == "mongodb" else password
    return {PASSWORD_ENV[engine]: value}


def dump_jobs(record, password, databases=None):
    """[(label, argv, env, filename)] that dump one instance: ENV holds the secret, passed by name."""
    name, engine, container = record["name"], record["engine"], record["container"]
    if engine not in ENGINES:
        raise ContractError("%s: unknown engine %r" % (name, engine))
    user = record.get("superuser") or SUPERUSER[engine]
    dbs = databases if databases is not None else record.get("databases") or []
    env = secret_env(engine, password)
    jobs = []
    if engine == "postgres":
        jobs.append(("%s globals" % name, docker_exec(container, env, "pg_dumpall", "--globals-only", "-U", user),
                     env, dump_file(engine, name)))
        for db in dbs:
            jobs.append(("%s/%s" % (name, db), docker_exec(container, env, "pg_dump", "-Fc", "-U", user, "-d", db),
                         env, dump_file(engine, name, db)))
    elif engine == "mariadb":
        for db in dbs:
            jobs.append(("%s/%s" % (name, db),
                         docker_exec(container, env, "mariadb-dump", "-u", user, "--single-transaction", "--routines",
                                     "--events", "--triggers", "--databases", db),
                         env, dump_file(engine, name, db)))
    elif engine == "mongodb":
        jobs.append((name, docker_exec(container, env, "sh", "-c", MONGO_WRAPPER % ("mongodump", ""), "sh", user),
                     env, dump_file(engine, name)))
    elif engine == "redis":
        # The RDB file BGSAVE just wrote (redis_bgsave runs first).
        jobs.append((name, docker_exec(container, env, "sh", "-c",
                                       'cat "$(redis-cli --raw CONFIG GET dir | tail -n 1)/'
                                       '$(redis-cli --raw CONFIG GET dbfilename | tail -n 1)"'),
                     env, dump_file(engine, name)))
    else:
        raise ContractError("%s: unknown engine %r" % (name, engine))
    return jobs


def restore_job(record, database=None, container=None, scratch=False):
    """(argv, env_name, filename) that stream a dump into an instance through ``docker exec -i``; the password
    travels in ENV_NAME (see :func:`secret_env`). Redis is not streamed: see the redis_restore module."""
    engine, name, user = record["engine"], record["name"], record["superuser"]
    container = container or record["container"]
    env_name = PASSWORD_ENV[engine]
    if engine == "postgres":
        if not database:
            raise ContractError("%s: a postgres restore needs the database" % name)
        # One transaction: a failing restore leaves the database as it was. In a scratch instance the application
        # roles do not exist, so ownership is not restored there.
        argv = docker_exec(container, [env_name], "pg_restore", "-U", user, "--clean", "--if-exists",
                           "--single-transaction", "-d", database, stdin=True)
        if scratch:
            argv += ["--no-owner", "--no-acl"]
    elif engine == "mariadb":
        if not database:
            raise ContractError("%s: a mariadb restore needs the database" % name)
        argv = docker_exec(container, [env_name], "mariadb", "-u", user, stdin=True)
    elif engine == "mongodb":
        argv = docker_exec(container, [env_name], "sh", "-c", MONGO_WRAPPER % ("mongorestore", " --drop"), "sh",
                           user, stdin=True)
    else:
        raise ContractError("%s: %s instances are restored by the redis_restore module, not streamed" % (name, engine))
    return argv, env_name, dump_file(engine, name, database if engine in PER_DATABASE else None)


# ---------------------------------------------------------------------------------------------
# Restore requests (restore.yml)
# ---------------------------------------------------------------------------------------------

def restore_target(kind, instance=None, database=None, path=None, record=None):
    """What a live restore replaces, as restore_confirm must repeat it: ``<instance>/<database>`` for the engines
    dumped per database, ``<instance>`` for the others (Redis, MongoDB: one dump of the whole instance), the path for
    a path restore."""
    if kind == "path":
        return path or ""
    if record is not None and record["engine"] not in PER_DATABASE:
        return instance or ""
    return "%s/%s" % (instance or "", database or "")


def restore_problems(request, record=None, known=()):
    """Every reason to refuse a restore request (restore.yml's variables without the ``restore_`` prefix: kind,
    into, instance, database, path, confirm), each naming the variable and what is wrong. RECORD is the instance's
    record when the backup configuration knows it, KNOWN the names of the instances it knows."""
    kind, into = request.get("kind"), request.get("into")
    instance, database = request.get("instance") or "", request.get("database") or ""
    path, confirm = request.get("path") or "", request.get("confirm") or ""
    problems = []
    if kind not in ("database", "path"):
        return ["restore_kind=%s: it is database (with restore_instance) or path (with restore_path)" % kind]
    if into not in ("live", "scratch"):
        problems.append("restore_into=%s: it is live (replace the data) or scratch (restore beside it)" % into)
    if kind == "path":
        if not path.startswith("/"):
            problems.append("restore_path=%s: an absolute path is required for restore_kind=path" % (path or "''"))
    elif not instance:
        problems.append("restore_instance is required for restore_kind=database (backed up: %s)" % (
            ", ".join(known) or "none"))
    elif record is None:
        problems.append("restore_instance=%s is not in any backup set (backed up: %s)" % (
            instance, ", ".join(known) or "none"))
    elif record["engine"] in PER_DATABASE and not database:
        problems.append("restore_database is required: %s is a %s instance, dumped per database%s" % (
            instance, record["engine"], " (%s)" % ", ".join(record["databases"]) if record.get("databases") else ""))
    elif record["engine"] not in PER_DATABASE and database:
        problems.append("restore_database=%s: %s is a %s instance, whose dump holds the whole instance; leave "
                        "restore_database out" % (database, instance, record["engine"]))
    elif into == "scratch" and record["engine"] not in PER_DATABASE:
        problems.append("restore_into=scratch: scratch restores are for postgres and mariadb; %s is a %s instance "
                        "(restore it live)" % (instance, record["engine"]))
    elif into == "live" and record.get("swarm_service") and record["engine"] == "redis":
        problems.append("restore_instance=%s: a live Redis restore restarts the instance's container, which on a "
                        "Docker Swarm belongs to Swarm (service %s); not supported on a swarm yet" % (
                            instance, record["swarm_service"]))
    if problems or into != "live":
        return problems
    target = restore_target(kind, instance, database, path, record)
    if not confirm:
        problems.append("a live restore replaces data: confirm it with -e restore_confirm=%s" % target)
    elif confirm != target:
        problems.append("restore_confirm=%s does not match what this restore replaces: give -e restore_confirm=%s" % (
            confirm, target))
    return problems
