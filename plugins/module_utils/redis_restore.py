# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load an RDB file into a containerised Redis that runs with ``appendonly yes`` (the redis_restore module).

Redis with AOF on loads the AOF at start and ignores ``dump.rdb``, so putting an RDB file next to the live one and
restarting restores nothing (and ``redis-cli SHUTDOWN`` through ``docker exec`` ends that exec with 137). The
procedure that works:

  1. read the live instance's ``dir``, ``dbfilename``, ``appenddirname``/``appendfilename`` (CONFIG GET), its
     mounts, image, entrypoint and command (``docker inspect``);
  2. stop the container; move the current RDB and AOF aside (``before-restore-<time>/`` in the data directory);
     put the RDB in place, owned like the data directory;
  3. start a throwaway container of the same image, mounts and command, on no network, with ``--appendonly no``:
     it loads the RDB; ``CONFIG SET appendonly yes`` then writes a fresh AOF from memory; stop it (SIGTERM: Redis
     saves and exits 0) and remove it;
  4. start the instance's own container again and wait for *that* start (a StartedAt newer than the stop), healthy
     (when it has a healthcheck), done loading, with AOF on.

On a failure after the stop, the moved files come back, the throwaway container is removed and the instance is
started again on its old data. The password reaches redis-cli through ``docker exec -e REDISCLI_AUTH`` only.
"""

from __future__ import annotations

import json
import os
import shutil
import time

RDB_MAGIC = b"REDIS"


class RestoreError(Exception):
    pass


def info_fields(text):
    """``INFO`` output -> {field: value}."""
    out = {}
    for line in (text or "").splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def time_key(stamp):
    """Docker's RFC 3339 times (fraction trimmed of trailing zeros) -> a key that sorts by time."""
    stamp = (stamp or "").rstrip("Z")
    whole, _sep, fraction = stamp.partition(".")
    return whole, fraction.ljust(9, "0")


def check_rdb(path):
    """Raise unless PATH is a readable RDB file (magic ``REDIS`` + version)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise RestoreError("rdb: cannot read %s: %s" % (path, exc)) from exc
    if not head.startswith(RDB_MAGIC) or not head[5:9].isdigit():
        raise RestoreError("rdb: %s is not a Redis RDB file (it starts with %r)" % (path, head))


def data_mount(inspect, data_dir):
    """The mount that holds DATA_DIR inside the container -> its host path (bind mounts and local volumes)."""
    for mount in inspect.get("Mounts") or []:
        if mount.get("Destination") == data_dir:
            if not mount.get("Source"):
                raise RestoreError("container: the mount of %s has no host path" % data_dir)
            return mount["Source"]
    raise RestoreError("container: %s is not on a mount of %s, so its data would not outlive a restart" % (
        data_dir, inspect.get("Name", "?").lstrip("/")))


def run_argv(inspect, name, extra):
    """``docker run`` argv for a throwaway twin of the inspected container, on no network, with EXTRA arguments
    appended to its command."""
    cfg = inspect.get("Config") or {}
    argv = ["docker", "run", "-d", "--name", name, "--network", "none",
            "--label", "selfhosted.platform/restore-of=%s" % inspect.get("Name", "").lstrip("/")]
    if cfg.get("User"):
        argv += ["--user", cfg["User"]]
    for mount in inspect.get("Mounts") or []:
        source = mount.get("Name") if mount.get("Type") == "volume" else mount.get("Source")
        argv += ["-v", "%s:%s%s" % (source, mount["Destination"], "" if mount.get("RW", True) else ":ro")]
    entrypoint = cfg.get("Entrypoint") or []
    command = list(cfg.get("Cmd") or [])
    if entrypoint:
        argv += ["--entrypoint", entrypoint[0]]
        command = list(entrypoint[1:]) + command
    return argv + [cfg.get("Image") or inspect["Image"]] + command + list(extra)


class Docker:
    """The docker CLI through AnsibleModule.run_command; the Redis password only in redis-cli's environment."""

    def __init__(self, module, password):
        self.module = module
        self.password = password

    def run(self, argv, what, env=None):
        rc, out, err = self.module.run_command(argv, environ_update=env or {})
        if rc != 0:
            raise RestoreError("%s: %s exited %d: %s" % (what, " ".join(argv[:3]), rc, (err or out).strip()[-500:]))
        return out

    def inspect(self, container):
        return json.loads(self.run(["docker", "inspect", container], "container"))[0]

    def cli(self, container, *args):
        """redis-cli --raw ARGS in CONTAINER -> (ok, stdout)."""
        argv = ["docker", "exec", "-e", "REDISCLI_AUTH", container, "redis-cli", "--raw"] + list(args)
        rc, out, err = self.module.run_command(argv, environ_update={"REDISCLI_AUTH": self.password})
        text = (out or "").strip()
        ok = rc == 0 and not text.startswith(("ERR", "NOAUTH", "WRONGPASS", "LOADING", "MISCONF"))
        return ok, text if ok else (text or err or "").strip()


def wait_until(check, timeout, what, sleep=time.sleep, clock=time.monotonic):
    """Call CHECK() until it returns a true value; RestoreError naming WHAT after TIMEOUT seconds."""
    deadline = clock() + timeout
    last = None
    while True:
        done, last = check()
        if done:
            return last
        if clock() > deadline:
            raise RestoreError("%s within %ss (last: %s)" % (what, timeout, last))
        sleep(0.5)


def redis_settings(docker, container, running):
    """dir, dbfilename and the AOF names of the instance (defaults when it is not running)."""
    settings = {"dir": "/data", "dbfilename": "dump.rdb", "appenddirname": "appendonlydir",
                "appendfilename": "appendonly.aof"}
    if running:
        for key in settings:
            ok, out = docker.cli(container, "CONFIG", "GET", key)
            lines = out.splitlines()
            if ok and len(lines) >= 2:
                settings[key] = lines[-1]
    return settings


def plan(inspect, settings, rdb, stamp):
    """What the restore will do, from what was read (pure)."""
    host_dir = data_mount(inspect, settings["dir"])
    aside = os.path.join(host_dir, "before-restore-%s" % stamp)
    return {
        "container": inspect.get("Name", "").lstrip("/"),
        "image": (inspect.get("Config") or {}).get("Image") or inspect.get("Image"),
        "host_dir": host_dir,
        "aside": aside,
        "move_aside": [settings["dbfilename"], settings["appenddirname"], settings["appendfilename"]],
        "target": os.path.join(host_dir, settings["dbfilename"]),
        "rdb": rdb,
        "twin": "shp-restore-%s-%s" % (inspect.get("Name", "").lstrip("/"), stamp),
        "twin_argv": run_argv(inspect, "shp-restore-%s-%s" % (inspect.get("Name", "").lstrip("/"), stamp),
                              ["--appendonly", "no"]),
        "has_healthcheck": bool(((inspect.get("Config") or {}).get("Healthcheck") or {}).get("Test")),
    }


def restore(docker, container, rdb, wait_timeout=180, sleep=time.sleep, clock=time.monotonic, now=time.time,
            check_mode=False):
    """Run the whole procedure; returns the result dict. In check mode a file that is not there yet (an earlier task
    of the same run would fetch it) is not an error."""
    if not (check_mode and not os.path.exists(rdb)):
        check_rdb(rdb)
    inspect = docker.inspect(container)
    running = bool((inspect.get("State") or {}).get("Running"))
    settings = redis_settings(docker, container, running)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now()))
    steps = plan(inspect, settings, rdb, stamp)
    result = {"changed": True, "container": steps["container"], "rdb": rdb, "data_dir": steps["host_dir"],
              "previous_dir": steps["aside"], "image": steps["image"]}
    if check_mode:
        result["msg"] = "would stop %s, load %s through a throwaway twin with AOF off, rewrite the AOF, and start " \
                        "it again" % (steps["container"], rdb)
        return result
    started = clock()
    docker.run(["docker", "stop", "-t", "60", container], "stop")
    stopped_at = (docker.inspect(container).get("State") or {}).get("FinishedAt", "")
    moved = []
    placed = False
    try:
        st = os.stat(steps["host_dir"])
        os.makedirs(steps["aside"], mode=0o700)
        for name in steps["move_aside"]:
            src = os.path.join(steps["host_dir"], name)
            if os.path.lexists(src):
                os.rename(src, os.path.join(steps["aside"], name))
                moved.append(name)
        tmp = steps["target"] + ".restoring"
        shutil.copyfile(rdb, tmp)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, 0o600)
        os.rename(tmp, steps["target"])
        placed = True
        result["key_count"] = load_through_twin(docker, steps, wait_timeout, sleep, clock)
    except Exception:
        put_back(steps, moved, placed)
        docker.module.run_command(["docker", "rm", "-f", steps["twin"]])
        docker.module.run_command(["docker", "start", container])
        raise
    docker.run(["docker", "start", container], "start")
    result.update(wait_for_restart(docker, container, stopped_at, steps["has_healthcheck"], wait_timeout, sleep,
                                   clock))
    result["moved_aside"] = moved
    result["seconds"] = round(clock() - started, 2)
    result["msg"] = "%s: %d key(s) restored from %s; AOF rewritten and on; the previous files are in %s" % (
        steps["container"], result["key_count"], rdb, steps["aside"])
    return result


def put_back(steps, moved, placed):
    if placed and os.path.lexists(steps["target"]):
        os.unlink(steps["target"])
    for name in moved:
        os.rename(os.path.join(steps["aside"], name), os.path.join(steps["host_dir"], name))
    if os.path.isdir(steps["aside"]) and not os.listdir(steps["aside"]):
        os.rmdir(steps["aside"])


def load_through_twin(docker, steps, wait_timeout, sleep, clock):
    """The throwaway twin loads the RDB with AOF off, then writes the AOF; returns the key count."""
    twin = steps["twin"]
    docker.run(steps["twin_argv"], "twin")
    try:
        wait_until(lambda: docker.cli(twin, "PING"), wait_timeout, "the throwaway Redis did not load the RDB",
                   sleep, clock)
        ok, keys = docker.cli(twin, "DBSIZE")
        if not ok:
            raise RestoreError("DBSIZE: %s" % keys)
        ok, out = docker.cli(twin, "CONFIG", "SET", "appendonly", "yes")
        if not ok:
            raise RestoreError("CONFIG SET appendonly yes: %s" % out)

        def aof_written():
            ok, text = docker.cli(twin, "INFO", "persistence")
            info = info_fields(text)
            if info.get("aof_last_bgrewrite_status") == "err":
                raise RestoreError("the AOF rewrite failed (aof_last_bgrewrite_status:err); see docker logs %s" % twin)
            done = ok and info.get("aof_enabled") == "1" and info.get("aof_rewrite_in_progress") == "0" \
                and info.get("aof_rewrite_scheduled") == "0"
            return done, "aof_enabled:%s aof_rewrite_in_progress:%s" % (
                info.get("aof_enabled"), info.get("aof_rewrite_in_progress"))

        wait_until(aof_written, wait_timeout, "the AOF was not rewritten", sleep, clock)
        docker.run(["docker", "stop", "-t", "60", twin], "twin stop")
        code = (docker.inspect(twin).get("State") or {}).get("ExitCode")
        if code != 0:
            raise RestoreError("the throwaway Redis exited %s on shutdown; see docker logs %s" % (code, twin))
    finally:
        docker.module.run_command(["docker", "rm", "-f", twin])
    return int(keys)


def wait_for_restart(docker, container, stopped_at, has_healthcheck, wait_timeout, sleep, clock):
    """Wait for the start that follows STOPPED_AT (not the old process): running, healthy, loaded, AOF on."""

    def up():
        state = docker.inspect(container).get("State") or {}
        started_at = state.get("StartedAt", "")
        if not state.get("Running") or time_key(started_at) <= time_key(stopped_at):
            return False, "running=%s started=%s" % (state.get("Running"), started_at)
        health = (state.get("Health") or {}).get("Status")
        if has_healthcheck and health != "healthy":
            return False, "health=%s" % health
        ok, text = docker.cli(container, "INFO", "persistence")
        info = info_fields(text)
        if not ok or info.get("loading") != "0":
            return False, text[-200:]
        return True, {"started_at": started_at, "health": health, "aof_enabled": info.get("aof_enabled") == "1"}

    state = wait_until(up, wait_timeout, "%s did not come back (running, healthy, loaded)" % container, sleep, clock)
    if not state["aof_enabled"]:
        raise RestoreError("%s runs without AOF after the restore: check its appendonly setting" % container)
    ok, keys = docker.cli(container, "DBSIZE")
    state["key_count_after_start"] = int(keys) if ok and keys.isdigit() else None
    return state
