# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the container_db module: an application database and its user inside a database
server that runs in a container (postgres, mariadb, mongodb), managed with the server's own client
through `docker exec -i`.

Secrets never reach a command line: the admin password and the user's password travel on the
client's stdin (read by a fixed `sh -c` wrapper into the client's environment), and the user's
password is sent to the server only as a verifier (SCRAM-SHA-256 for Postgres, the
mysql_native_password hash for MariaDB); MongoDB receives it through mongosh's environment. The
current verifier is read back and checked against the wanted password, so a second run changes
nothing and a changed password is noticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import unicodedata

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

PG_WRAPPER = (
    'IFS= read -r SHP_PW; PGPASSWORD="$SHP_PW"; export PGPASSWORD; unset SHP_PW; '
    'exec psql -X -q -v ON_ERROR_STOP=1 -A -t -F "|" -U "$1" -d postgres'
)
MARIADB_WRAPPER = (
    'IFS= read -r SHP_PW; MYSQL_PWD="$SHP_PW"; export MYSQL_PWD; unset SHP_PW; '
    'M="$(command -v mariadb || command -v mysql)"; '
    'exec "$M" --protocol=socket -u "$1" --batch --raw --skip-column-names --database=mysql'
)
MONGO_WRAPPER = (
    'IFS= read -r SHP_ADMIN_PW; IFS= read -r SHP_USER_PW; export SHP_ADMIN_PW SHP_USER_PW; '
    'exec mongosh --quiet --norc "mongodb://127.0.0.1:${2:-27017}/admin" --eval "$1"'
)


class DbError(Exception):
    """A failure with a message naming the option or the step that failed."""


class ContainerMissing(DbError):
    """The instance's container does not exist (yet)."""


# ---------------------------------------------------------------------------------------------
# Password verifiers (pure)
# ---------------------------------------------------------------------------------------------

def saslprep(password):
    """SASLprep as Postgres and MongoDB apply it, for the passwords this platform handles:
    ASCII passwords are used as they are; others are NFKC-normalised with non-ASCII spaces mapped
    to a space and the "commonly mapped to nothing" characters removed (RFC 4013 2.1/2.2)."""
    if all(ord(c) < 128 for c in password):
        return password
    mapped = []
    for char in password:
        if char in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff" or \
                "\ufe00" <= char <= "\ufe0f":
            continue
        mapped.append(" " if unicodedata.category(char) == "Zs" else char)
    return unicodedata.normalize("NFKC", "".join(mapped))


def _scram_keys(salted, digest):
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = digest(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    return stored_key, server_key


def scram_sha256_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    return _scram_keys(salted, hashlib.sha256)


def pg_scram_verifier(password, salt=None, iterations=4096):
    """The SCRAM-SHA-256 verifier Postgres stores in pg_authid.rolpassword."""
    salt = os.urandom(16) if salt is None else salt
    stored, server = scram_sha256_keys(password, salt, iterations)
    b64 = base64.b64encode
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt).decode(), b64(stored).decode(),
                                          b64(server).decode())


def pg_password_matches(stored, password, user):
    """Whether a rolpassword value (SCRAM, md5 or, on very old servers, plain) is for password."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        match = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", stored)
        if not match:
            return False
        iterations, salt, stored_key, server_key = match.groups()
        want = scram_sha256_keys(password, base64.b64decode(salt), int(iterations))
        have = (base64.b64decode(stored_key), base64.b64decode(server_key))
        return hmac.compare_digest(want[0], have[0]) and hmac.compare_digest(want[1], have[1])
    if stored.startswith("md5") and len(stored) == 35:
        digest = "md5" + hashlib.md5((password + user).encode("utf-8")).hexdigest()  # nosec - Postgres' md5 format
        return hmac.compare_digest(digest, stored)
    return hmac.compare_digest(stored, password)


def mysql_native_hash(password):
    """MariaDB/MySQL mysql_native_password hash: '*' + upper(hex(SHA1(SHA1(password))))."""
    inner = hashlib.sha1(password.encode("utf-8")).digest()  # nosec - the server's own format
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # nosec


def mongo_password_matches(credentials, user, password):
    """Whether MongoDB's stored SCRAM credentials (getUser showCredentials) are for password."""
    if not credentials:
        return False
    cred = credentials.get("SCRAM-SHA-256")
    if cred:
        stored, server = scram_sha256_keys(password, base64.b64decode(cred["salt"]), int(cred["iterationCount"]))
        return hmac.compare_digest(stored, base64.b64decode(cred["storedKey"])) and \
            hmac.compare_digest(server, base64.b64decode(cred["serverKey"]))
    cred = credentials.get("SCRAM-SHA-1")
    if cred:
        digest = hashlib.md5(("%s:mongo:%s" % (user, password)).encode("utf-8")).hexdigest()  # nosec
        salted = hashlib.pbkdf2_hmac("sha1", digest.encode("utf-8"), base64.b64decode(cred["salt"]),
                                     int(cred["iterationCount"]))
        stored, server = _scram_keys(salted, hashlib.sha1)
        return hmac.compare_digest(stored, base64.b64decode(cred["storedKey"])) and \
            hmac.compare_digest(server, base64.b64decode(cred["serverKey"]))
    return False


def mariadb_grant_db(name):
    """A database name as a GRANT pattern: '_' and '%' are wildcards there and must be escaped."""
    return name.replace("_", "\\_").replace("%", "\\%")


# ---------------------------------------------------------------------------------------------
# Engines: read the state, plan the statements (pure), apply them
# ---------------------------------------------------------------------------------------------

class Postgres:
    name = "postgres"

    @staticmethod
    def empty():
        """The state query() reads from a server that has neither the user nor the database (a new instance)."""
        return {"user": None, "database": None}

    def __init__(self, exec_client):
        self.exec_client = exec_client

    def query(self, p):
        sql = (
            "SELECT 'role', coalesce(rolpassword, ''), rolcanlogin, rolsuper FROM pg_authid WHERE rolname = '{u}';\n"
            "SELECT 'db', pg_get_userbyid(datdba), has_database_privilege('public', oid, 'CONNECT') "
            "FROM pg_database WHERE datname = '{d}';\n"
        ).format(u=p["user"], d=p["database"])
        out = self.exec_client(PG_WRAPPER, [p["admin_user"]], p["admin_password"] or "", sql)
        state = {"user": None, "database": None}
        for line in out.splitlines():
            fields = line.split("|")
            if fields[0] == "role" and len(fields) == 4:
                state["user"] = {"verifier": fields[1], "login": fields[2] == "t", "superuser": fields[3] == "t"}
            elif fields[0] == "db" and len(fields) == 3:
                state["database"] = {"owner": fields[1], "public_connect": fields[2] == "t"}
        return state

    @staticmethod
    def plan(p, state):
        """[(action description, SQL)] that bring state to what p asks for."""
        u, d = p["user"], p["database"]
        steps = []
        if p["state"] == "absent":
            if state["database"]:
                steps.append(("drop database %s" % d, 'DROP DATABASE "%s";' % d))
            if state["user"] and not p["keep_user"]:
                steps.append(("drop user %s" % u, 'DROP ROLE "%s";' % u))
            return steps
        user = state["user"]
        if user is None:
            steps.append(("create user %s" % u, "CREATE ROLE \"%s\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                          "PASSWORD '%s';" % (u, pg_scram_verifier(p["password"]))))
        else:
            if user["superuser"]:
                raise DbError("user: %s is a superuser on this server; refusing to hand it an application "
                              "database" % u)
            if not pg_password_matches(user["verifier"], p["password"], u):
                steps.append(("set the password of %s" % u,
                              "ALTER ROLE \"%s\" PASSWORD '%s';" % (u, pg_scram_verifier(p["password"]))))
            if not user["login"]:
                steps.append(("allow %s to log in" % u, 'ALTER ROLE "%s" LOGIN;' % u))
        db = state["database"]
        if db is None:
            steps.append(("create database %s owned by %s" % (d, u), 'CREATE DATABASE "%s" OWNER "%s";' % (d, u)))
        elif db["owner"] != u:
            steps.append(("make %s the owner of %s (was %s)" % (u, d, db["owner"]),
                          'ALTER DATABASE "%s" OWNER TO "%s";' % (d, u)))
        if db is None or db["public_connect"]:
            steps.append(("revoke CONNECT on %s from PUBLIC" % d, 'REVOKE ALL ON DATABASE "%s" FROM PUBLIC;' % d))
        return steps

    def apply(self, p, steps):
        sql = "\n".join(stmt for dummy, stmt in steps) + "\n"
        self.exec_client(PG_WRAPPER, [p["admin_user"]], p["admin_password"] or "", sql)


class MariaDB:
    name = "mariadb"

    @staticmethod
    def empty():
        return {"user": None, "database": None, "grants": {}}

    PRIVS = ("Select_priv", "Insert_priv", "Update_priv", "Delete_priv", "Create_priv", "Drop_priv",
             "Index_priv", "Alter_priv", "Create_tmp_table_priv", "Lock_tables_priv", "Create_view_priv",
             "Show_view_priv", "Create_routine_priv", "Alter_routine_priv", "Execute_priv", "Event_priv",
             "Trigger_priv", "References_priv")

    def __init__(self, exec_client):
        self.exec_client = exec_client

    def query(self, p):
        host = p["user_host"]
        all_privs = " AND ".join("%s = 'Y'" % col for col in self.PRIVS)
        sql = (
            "SELECT 'user', plugin, authentication_string FROM mysql.user WHERE User = '{u}' AND Host = '{h}';\n"
            "SELECT 'db', SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{d}';\n"
            "SELECT 'grant', Db, IF({all_privs}, 'all', 'partial') FROM mysql.db "
            "WHERE User = '{u}' AND Host = '{h}';\n"
        ).format(u=p["user"], h=host, d=p["database"], all_privs=all_privs)
        out = self.exec_client(MARIADB_WRAPPER, [p["admin_user"]], p["admin_password"] or "", sql)
        state = {"user": None, "database": None, "grants": {}}
        for line in out.splitlines():
            fields = line.split("\t")
            if fields[0] == "user" and len(fields) == 3:
                state["user"] = {"plugin": fields[1], "hash": fields[2]}
            elif fields[0] == "db" and len(fields) == 2:
                state["database"] = fields[1]
            elif fields[0] == "grant" and len(fields) == 3:
                state["grants"][fields[1]] = fields[2]
        return state

    @staticmethod
    def plan(p, state):
        u, d, h = p["user"], p["database"], p["user_host"]
        account = "'%s'@'%s'" % (u, h)
        pattern = mariadb_grant_db(d)
        steps = []
        if p["state"] == "absent":
            if state["database"]:
                steps.append(("drop database %s" % d, "DROP DATABASE `%s`;" % d))
            if state["user"] and not p["keep_user"]:
                steps.append(("drop user %s" % u, "DROP USER %s;" % account))
            return steps
        if state["database"] is None:
            steps.append(("create database %s" % d,
                          "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;" % d))
        want_hash = mysql_native_hash(p["password"])
        user = state["user"]
        if user is None:
            steps.append(("create user %s" % u, "CREATE USER %s IDENTIFIED BY PASSWORD '%s';" % (account, want_hash)))
        elif user["plugin"] not in ("mysql_native_password", "") or not hmac.compare_digest(user["hash"], want_hash):
            steps.append(("set the password of %s" % u,
                          "ALTER USER %s IDENTIFIED VIA mysql_native_password USING '%s';" % (account, want_hash)))
        if state["grants"].get(pattern) != "all":
            steps.append(("grant %s all privileges on %s" % (u, d),
                          "GRANT ALL PRIVILEGES ON `%s`.* TO %s;" % (pattern, account)))
        for other in sorted(state["grants"]):
            if other != pattern:
                steps.append(("revoke %s's privileges on %s" % (u, other),
                              "REVOKE ALL PRIVILEGES ON `%s`.* FROM %s;" % (other, account)))
        return steps

    def apply(self, p, steps):
        sql = "\n".join(stmt for dummy, stmt in steps) + "\n"
        self.exec_client(MARIADB_WRAPPER, [p["admin_user"]], p["admin_password"] or "", sql)


class MongoDB:
    name = "mongodb"

    @staticmethod
    def empty():
        return {"user": None, "database": False}

    def __init__(self, exec_client):
        self.exec_client = exec_client

    @staticmethod
    def _script(p, body):
        return (
            "const admin = db.getSiblingDB('admin');\n"
            "if (process.env.SHP_ADMIN_PW) { admin.auth(%s, process.env.SHP_ADMIN_PW); }\n"
            "const target = db.getSiblingDB(%s);\n"
            "%s\n"
        ) % (json.dumps(p["admin_user"]), json.dumps(p["database"]), body)

    def _run(self, p, body):
        stdin = (p["admin_password"] or "") + "\n" + (p["password"] or "") + "\n"
        return self.exec_client(MONGO_WRAPPER, [self._script(p, body), str(p["port"] or 27017)], None, stdin)

    def query(self, p):
        body = (
            "const u = target.getUser(%s, {showCredentials: true});\n"
            "const names = admin.adminCommand({listDatabases: 1, nameOnly: true}).databases.map(x => x.name);\n"
            "print(JSON.stringify({user: u, database: names.includes(%s)}));"
        ) % (json.dumps(p["user"]), json.dumps(p["database"]))
        out = self._run(p, body)
        line = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not line:
            raise DbError("mongosh printed no state: %s" % out.strip()[-500:])
        data = json.loads(line[-1])
        user = data.get("user")
        if user:
            user = {"credentials": user.get("credentials") or {},
                    "roles": sorted((r["role"], r["db"]) for r in user.get("roles", []))}
        return {"user": user or None, "database": bool(data.get("database"))}

    @staticmethod
    def plan(p, state):
        u, d = p["user"], p["database"]
        roles = sorted([("dbAdmin", d), ("readWrite", d)])
        js_roles = json.dumps([{"role": r, "db": x} for r, x in roles])
        steps = []
        if p["state"] == "absent":
            if state["user"] and not p["keep_user"]:
                steps.append(("drop user %s" % u, "target.dropUser(%s);" % json.dumps(u)))
            if state["database"]:
                steps.append(("drop database %s" % d, "target.dropDatabase();"))
            return steps
        user = state["user"]
        if user is None:
            steps.append(("create user %s" % u, "target.createUser({user: %s, pwd: process.env.SHP_USER_PW, "
                          "roles: %s, mechanisms: ['SCRAM-SHA-256']});" % (json.dumps(u), js_roles)))
            return steps
        if not mongo_password_matches(user["credentials"], u, p["password"]):
            steps.append(("set the password of %s" % u, "target.updateUser(%s, {pwd: process.env.SHP_USER_PW, "
                          "mechanisms: ['SCRAM-SHA-256']});" % json.dumps(u)))
        if user["roles"] != roles:
            steps.append(("give %s exactly readWrite and dbAdmin on %s" % (u, d),
                          "target.updateUser(%s, {roles: %s});" % (json.dumps(u), js_roles)))
        return steps

    def apply(self, p, steps):
        self._run(p, "\n".join(stmt for dummy, stmt in steps) + "\nprint('applied');")


ENGINES = {"postgres": Postgres, "mariadb": MariaDB, "mongodb": MongoDB}
DEFAULT_ADMIN = {"postgres": "postgres", "mariadb": "root", "mongodb": "root"}


def validate(p):
    for opt in ("database", "user"):
        if not NAME_RE.match(p[opt] or ""):
            raise DbError("%s: %r is not a valid name (lower-case letters, digits and '_', starting with a letter "
                          "or '_', at most 63 characters)" % (opt, p[opt]))
    if p["database"] in ("postgres", "template0", "template1", "mysql", "information_schema",
                         "performance_schema", "sys", "admin", "local", "config"):
        raise DbError("database: %s is a system database" % p["database"])
    if p["user"] in ("postgres", "root", "mysql", "mariadb.sys", "healthcheck"):
        raise DbError("user: %s is a system account" % p["user"])
    if p["state"] == "present" and not p["password"]:
        raise DbError("password: required when state=present")
    if not re.match(r"^[A-Za-z0-9_.%:-]+$", p["user_host"]):
        raise DbError("user_host: %r is not a host pattern" % p["user_host"])


def make_exec_client(module, docker, container, client="database"):
    """A function running a fixed shell wrapper in the container with data on stdin."""
    def exec_client(wrapper, args, first_line, body):
        stdin = body if first_line is None else first_line + "\n" + body
        cmd = [docker, "exec", "-i", container, "sh", "-c", wrapper, "sh"] + list(args)
        rc, out, err = module.run_command(cmd, data=stdin, binary_data=True)
        if rc != 0:
            text = (err or out or "").strip()
            if "No such container" in text:
                raise ContainerMissing("container: %s does not exist (%s)" % (container, text.splitlines()[-1]))
            if "is not running" in text:
                raise DbError("container: %s is not running (%s)" % (container, text.splitlines()[-1]))
            raise DbError("the %s client in %s failed (rc=%d): %s" % (client, container, rc, text[-1500:]))
        return out
    return exec_client


def converge(p, engine, check_mode, container_exists=True):
    """Read, plan and (unless check_mode) apply. Returns the result dict.

    In check mode a container that does not exist yet (or a host without Docker yet) is an instance this run creates:
    a new instance has neither the user nor the database, so the plan is made from that empty state and the result
    says what the run would do, instead of failing on a container that is not there (site.yml --check on a fresh
    host). Outside check mode a missing container is an error naming it."""
    validate(p)
    missing = None
    if container_exists:
        try:
            state = engine.query(p)
        except ContainerMissing as exc:
            if not check_mode:
                raise
            missing = str(exc)
    else:
        if not check_mode:
            raise ContainerMissing("container: %s cannot be reached: there is no docker CLI on this host"
                                   % p["container"])
        missing = "container: %s does not exist yet (no docker CLI on this host)" % p["container"]
    if missing:
        state = engine.empty()
    steps = engine.plan(p, state)
    if steps and not check_mode:
        engine.apply(p, steps)
    before = {"database": p["database"], "database_exists": bool(state["database"]),
              "user": p["user"], "user_exists": bool(state["user"])}
    after = dict(before)
    if p["state"] == "present":
        after.update(database_exists=True, user_exists=True)
    else:
        after.update(database_exists=False, user_exists=bool(state["user"]) and p["keep_user"])
    result = {"changed": bool(steps), "actions": [desc for desc, dummy in steps],
              "diff": {"before": before, "after": dict(after, actions=[desc for desc, dummy in steps])}}
    if missing:
        result["container_missing"] = True
        result["msg"] = ("check mode: %s; the run creates the instance first, so it would %s in %s" % (
            missing.split(": ", 1)[1], ", ".join(result["actions"]) or "do nothing", p["container"]))
    return result


def run(module):
    p = dict(module.params)
    p["admin_user"] = p["admin_user"] or DEFAULT_ADMIN[p["engine"]]
    # check mode on a host whose Docker this run installs: no CLI yet, the instance is predicted from nothing
    docker = module.get_bin_path("docker", required=not module.check_mode)
    engine = ENGINES[p["engine"]](make_exec_client(module, docker, p["container"], p["engine"]))
    try:
        result = converge(p, engine, module.check_mode, container_exists=docker is not None)
    except DbError as exc:
        module.fail_json(msg=str(exc), changed=False)
    if not module._diff:
        result.pop("diff")
    module.exit_json(engine=p["engine"], container=p["container"], database=p["database"], user=p["user"], **result)
