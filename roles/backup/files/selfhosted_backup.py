# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host side of the backup role: what the systemd units run, with no Ansible on the host.

    python3 selfhosted_backup.py [--config FILE] run SET   # one backup set: database dumps, then paths
    python3 selfhosted_backup.py [--config FILE] forget    # the retention policy (and prune)
    python3 selfhosted_backup.py [--config FILE] check     # restic check (with --read-data-subset)
    python3 selfhosted_backup.py [--config FILE] plan SET  # print the dump commands, run nothing

It drives restic through the same client the restic_* modules use (plugins/module_utils/restic.py,
installed next to this file as shp_restic.py), so the rules are the same: the repository password
comes from a 0600 file, no secret is ever on a command line (database passwords travel in the
environment of ``docker exec -e NAME`` only), a dump command that fails leaves no snapshot behind
(restic 0.17+ runs it with --stdin-from-command and makes none; restic 0.14 has no such option, so the
dump is piped and a snapshot of a failed dump is forgotten: the client decides by the restic version on
the host), and unreadable files (restic exit code 3) are a warning listing them.

Dumps (each its own snapshot, tagged with the set, ``db`` and the instance, saved under a stable
file name so ``restic dump`` and restic_restore find it):
  postgres  pg_dumpall --globals-only  -> postgres/<instance>/globals.sql
            pg_dump -Fc, per database  -> postgres/<instance>/<db>.dump
  mariadb   mariadb-dump --single-transaction --routines --events --databases <db>
                                       -> mariadb/<instance>/<db>.sql
  mongodb   mongodump --archive        -> mongodb/<instance>/all.archive
  redis     BGSAVE, wait for it, then the RDB file -> redis/<instance>/dump.rdb

Healthcheck pings follow healthchecks.io's convention: <url>/start, <url> on success and
<url>/<exit code> on failure. A notification command gets SHP_BACKUP_JOB, SHP_BACKUP_STATUS,
SHP_BACKUP_EXIT_CODE and SHP_BACKUP_MESSAGE in its environment. Everything is logged to stdout,
which systemd sends to the journal.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
rs = importlib.import_module("shp_restic")
# The data tier's layer contracts (plugins/module_utils/data_tier.py): container names, superusers, dump commands.
dt = importlib.import_module("shp_data_tier")

DEFAULT_CONFIG = "/etc/selfhosted/backup/config.json"


def log(msg):
    print(msg, flush=True)


class HostModule:
    """What rs.Runner needs of an AnsibleModule (run_command, get_bin_path), with subprocess."""

    def run_command(self, argv, data=None, binary_data=False, environ_update=None):
        env = dict(os.environ)
        env.update(environ_update or {})
        proc = subprocess.run(argv, input=data.encode() if isinstance(data, str) else data, env=env,
                              capture_output=True, check=False)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")

    @staticmethod
    def get_bin_path(name, required=False):
        path = shutil.which(name)
        if required and not path:
            raise rs.ResticError("%s not found on PATH" % name)
        return path


def read_secret(path):
    with open(path) as fh:
        return fh.read().strip()


def client_for(config, module=None):
    return rs.Restic(rs.Runner(module or HostModule()), config.get("restic_bin") or "restic", config["repository"],
                     config["password_file"], env=config.get("env") or {}, cache_dir=config.get("cache_dir"),
                     options=config.get("options") or [], unlock_stale=config.get("unlock_stale", True))


# ---------------------------------------------------------------------------------------------
# Dump jobs
# ---------------------------------------------------------------------------------------------

def list_databases(instance):
    """The databases of an instance that declares none (every non-template Postgres database, every
    MariaDB schema but the system ones)."""
    engine = instance["engine"]
    env = dict(os.environ, **dt.secret_env(engine, read_secret(instance["password_file"])))
    user = instance.get("superuser") or dt.SUPERUSER[engine]
    if engine == "postgres":
        argv = dt.docker_exec(instance["container"], ["PGPASSWORD"], "psql", "-U", user, "-At",
                              "-c", "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
    elif engine == "mariadb":
        argv = dt.docker_exec(instance["container"], ["MYSQL_PWD"], "mariadb", "-u", user, "-N", "-B",
                              "-e", "SHOW DATABASES")
    else:
        return []
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise rs.ResticError("%s: listing the databases failed: %s" % (instance["name"], proc.stderr.strip()[-500:]))
    system = {"information_schema", "performance_schema", "mysql", "sys"}
    return [d for d in proc.stdout.split() if d and d not in system]


def task_container(instance, run=None):
    """INSTANCE with its container: a Swarm instance (site.yml on a cluster: ``swarm_service``) is dumped through its
    service's running task on this node, whose container name Swarm chooses; any other keeps its own."""
    service = instance.get("swarm_service")
    if not service:
        return instance
    proc = (run or subprocess.run)(dt.swarm_container_argv(service), capture_output=True, text=True, check=False)
    ids = proc.stdout.split() if proc.returncode == 0 else []
    if not ids:
        detail = proc.stderr.strip()[-300:] if proc.returncode != 0 else "no running task of it on this node"
        raise rs.ResticError("%s: the Swarm service %s has no container to dump through here: %s (the backup runs on "
                             "the node the instance is pinned to)" % (instance["name"], service, detail))
    return dict(instance, container=ids[0])


def dump_jobs(instance, databases=None):
    """[(label, argv, env, filename)] for one database instance (dt.dump_jobs with the instance's password).
    ENV holds the secrets the dump needs; they reach the container by name only."""
    password = read_secret(instance["password_file"]) if instance.get("password_file") else ""
    try:
        return dt.dump_jobs(instance, password, databases)
    except dt.ContractError as exc:
        raise rs.ResticError(str(exc)) from exc


def redis_bgsave(instance, timeout=600, run=None, sleep=time.sleep):
    """BGSAVE and wait until it finished with status ok (LASTSAVE moved on). A save that fails (the child could
    not write, fork refused, ...) is reported as soon as Redis reports it, not after TIMEOUT."""
    password = read_secret(instance["password_file"]) if instance.get("password_file") else ""
    env = dict(os.environ, **dt.secret_env("redis", password))
    names = list(dt.secret_env("redis", password))

    def cli(*args):
        argv = dt.docker_exec(instance["container"], names, "redis-cli", "--raw", *args)
        proc = (run or subprocess.run)(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or proc.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS", "MISCONF")):
            detail = (proc.stderr or proc.stdout).strip()[-300:]
            raise rs.ResticError("%s: redis-cli %s failed: %s" % (instance["name"], args[0], detail))
        return proc.stdout.strip()

    def persistence():
        return dict(line.split(":", 1) for line in cli("INFO", "persistence").splitlines() if ":" in line)

    before = cli("LASTSAVE")
    reply = cli("BGSAVE")
    if "in progress" in reply.lower():  # one is already running: wait for it, then save again
        wait_bgsave(persistence, timeout, sleep, instance["name"])
        before = cli("LASTSAVE")
        cli("BGSAVE")
    deadline = time.monotonic() + timeout
    while True:
        info = persistence()
        if info.get("rdb_bgsave_in_progress", "0").strip() == "0":
            # Finished: LASTSAVE moves on only when the save succeeded.
            if info.get("rdb_last_bgsave_status", "").strip() != "ok":
                raise rs.ResticError("%s: BGSAVE failed (rdb_last_bgsave_status:%s); see the Redis log (docker logs "
                                     "%s)" % (instance["name"], info.get("rdb_last_bgsave_status", "?").strip(),
                                              instance["container"]))
            if cli("LASTSAVE") != before:
                return
        if time.monotonic() > deadline:
            raise rs.ResticError("%s: BGSAVE did not finish within %ss" % (instance["name"], timeout))
        sleep(0.5)


def wait_bgsave(persistence, timeout, sleep, name):
    deadline = time.monotonic() + timeout
    while persistence().get("rdb_bgsave_in_progress", "0").strip() == "1":
        if time.monotonic() > deadline:
            raise rs.ResticError("%s: BGSAVE still running after %ss" % (name, timeout))
        sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Notifications
# ---------------------------------------------------------------------------------------------

def ping(url, suffix="", body=""):
    """A healthcheck ping; a failing ping is logged, never fatal."""
    if not url:
        return
    target = url.rstrip("/") + ("/" + suffix if suffix else "")
    try:
        req = urllib.request.Request(target, data=body.encode()[-10000:] or None,
                                     headers={"User-Agent": "selfhosted-backup"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except Exception as exc:  # a monitoring outage must not fail the backup
        log("warning: healthcheck ping %s failed: %s" % (target, exc))


def notify(command, job, status, code, message):
    if not command:
        return
    env = dict(os.environ, SHP_BACKUP_JOB=job, SHP_BACKUP_STATUS=status, SHP_BACKUP_EXIT_CODE=str(code),
               SHP_BACKUP_MESSAGE=message[-4000:])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        log("warning: notification command exited %d: %s" % (proc.returncode, proc.stderr.strip()[-300:]))


def with_reporting(config, job, url, func):
    """Run FUNC() between the start ping and the success/failure ping; returns the exit code."""
    ping(url, "start")
    try:
        problems = func()
        code = 1 if problems else 0
        message = "; ".join(problems) if problems else "ok"
    except rs.ResticError as exc:
        code, message = 1, str(exc)
    except Exception as exc:  # pylint: disable=broad-except  # any failure is reported, then fails the unit
        code, message = 1, "%s: %s" % (type(exc).__name__, exc)
    if code:
        log("FAILED: %s" % message)
        ping(url, str(code), message)
        notify(config.get("notify_command"), job, "failure", code, message)
    else:
        log("done: %s" % job)
        ping(url, "", message)
        if config.get("notify_on_success"):
            notify(config.get("notify_command"), job, "success", 0, message)
    return code


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def backup_set(config, name, client=None):
    """Run one set; returns the list of problems (empty when everything was saved)."""
    sets = config.get("sets") or {}
    if name not in sets:
        raise rs.ResticError("set: %r is not configured (known: %s)" % (name, ", ".join(sorted(sets)) or "none"))
    bset = sets[name]
    client = client or client_for(config)
    if client.config() is None:
        raise rs.ResticError("repository: there is no restic repository at %s (the backup role initialises it)" %
                             rs.redact(config["repository"]))
    host = config.get("host") or None
    problems = []
    for declared in bset.get("databases") or []:
        tags = list(bset.get("tags") or [name]) + ["db", declared["name"]]
        try:
            instance = task_container(declared)
            dbs = instance.get("databases")
            if not dbs and instance["engine"] in ("postgres", "mariadb"):
                dbs = list_databases(instance)
            if instance["engine"] == "redis":
                redis_bgsave(instance)
            jobs = dump_jobs(instance, dbs)
        except (rs.ResticError, OSError) as exc:
            problems.append(str(exc))
            log("error: %s" % exc)
            continue
        for label, argv, env, filename in jobs:
            started = time.monotonic()
            try:
                summary, _full, short = rs.command_snapshot(client, argv, env, filename, tags, host)
            except rs.ResticError as exc:
                problems.append("%s: %s" % (label, exc))
                log("error: %s: %s" % (label, exc))
                continue
            log("saved %s as %s in snapshot %s (%d bytes, %.1fs)" % (
                label, filename, short, int(summary.get("total_bytes_processed") or 0), time.monotonic() - started))
    if bset.get("paths"):
        tags = list(bset.get("tags") or [name]) + ["files"]
        rc, summary, errors = client.backup_paths(bset["paths"], excludes=bset.get("excludes") or [], tags=tags,
                                                  host=host, exclude_caches=bset.get("exclude_caches", True),
                                                  one_file_system=bset.get("one_file_system", False))
        short = rs.snapshot_ids(client, summary.get("snapshot_id"))[1]
        log("saved %s in snapshot %s (%d new, %d changed files, %d bytes added)" % (
            ", ".join(bset["paths"]), short, int(summary.get("files_new") or 0),
            int(summary.get("files_changed") or 0), int(summary.get("data_added") or 0)))
        if rc == 3:
            items = rs.unique_items(errors)
            text = "restic could not read %d file(s); snapshot %s lacks them: %s" % (
                len(items), short, ", ".join(items[:20]))
            if bset.get("unreadable") == "fail":
                problems.append(text)
            log("warning: " + text)
    if client.stale_locks_removed:
        log("removed %d stale lock(s)" % client.stale_locks_removed)
    return problems


def forget(config, client=None):
    client = client or client_for(config)
    spec = config.get("forget") or {}
    policy = dict(spec.get("policy") or {})
    if not rs.retention_args(policy):
        raise rs.ResticError("forget: no retention policy configured")
    keep, remove = client.forget(policy, host=config.get("host") or None, group_by=spec.get("group_by", "host,tags"),
                                 prune=spec.get("prune", True))
    pruned = " and pruned" if remove and spec.get("prune", True) else ""
    log("kept %d snapshot(s), removed %d%s" % (len(keep), len(remove), pruned))
    return []


def check(config, client=None):
    client = client or client_for(config)
    rc, out, err = client.check((config.get("check") or {}).get("read_data_subset"))
    log("\n".join((out + err).strip().splitlines()[-20:]))
    return [] if rc == 0 else ["restic check found errors (rc=%d)" % rc]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="selfhosted-backup", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("set")
    sub.add_parser("plan").add_argument("set")
    sub.add_parser("forget")
    sub.add_parser("check")
    args = parser.parse_args(argv)
    with open(args.config) as fh:
        config = json.load(fh)
    if args.cmd == "plan":
        for instance in (config.get("sets") or {}).get(args.set, {}).get("databases") or []:
            for label, cmd, env, filename in dump_jobs(instance):
                print("%s -> %s: %s (env: %s)" % (label, filename, " ".join(cmd), ", ".join(env)))
        return 0
    os.umask(0o077)
    urls = config.get("healthcheck_urls") or {}
    if args.cmd == "run":
        job = "backup %s" % args.set
        return with_reporting(config, job, urls.get(args.set), lambda: backup_set(config, args.set))
    if args.cmd == "forget":
        return with_reporting(config, "forget", urls.get("forget"), lambda: forget(config))
    return with_reporting(config, "check", urls.get("check"), lambda: check(config))


if __name__ == "__main__":
    sys.exit(main())
