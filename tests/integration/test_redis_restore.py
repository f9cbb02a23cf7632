"""redis_restore against a real Redis (the stand-in) deployed as the data tier deploys it: a Compose project with
`appendonly yes` in a mounted config file, the password in it, data on a bind mount, a healthcheck, and the data
tier's hardened defaults (started as the server's uid, no capability, a read-only root filesystem). A snapshot of
known keys (strings, hashes, lists, sets, a TTL) is taken with BGSAVE, then changed; the restore must give back
exactly the snapshot, with AOF on, and the data must survive a further restart (so it is in the AOF)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

PASSWORD = "R3dis-pw-" + secrets.token_hex(6) + "-$`'\"x"  # the config quotes it; redis-cli gets it from env


def play(tmp: Path, task: dict, *flags: str) -> tuple[dict, str]:
    pb = tmp / f"play-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "tasks": [dict(task, ignore_errors=True)]}]))
    res = run_tool(["ansible-playbook", "-i", "localhost,", str(pb), *flags], timeout=600,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    out = json.loads(res.stdout[start:])
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"], res.stdout + res.stderr


class Instance:
    """One Redis of the data tier's shape: project <name>, service redis, container <name>-redis-1."""

    def __init__(self, tmp: Path):
        self.project = dh.unique_name("redis")
        self.container = f"{self.project}-redis-1"
        self.dir = tmp / "instance"
        self.data = self.dir / "data"
        self.data.mkdir(parents=True)
        shutil.chown(self.data, 999, 999)
        self.data.chmod(0o700)
        conf = self.dir / "redis.conf"
        quoted = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
        conf.write_text(f'bind 0.0.0.0\nprotected-mode no\nport 6379\ndir /data\nappendonly yes\n'
                        f'appendfsync everysec\nrequirepass "{quoted}"\n')
        shutil.chown(conf, 999)
        conf.chmod(0o400)
        self.password_file = self.dir / "superuser"
        self.password_file.write_text(PASSWORD + "\n")
        shutil.chown(self.password_file, 999, 999)  # the healthcheck reads it as the server's user
        self.password_file.chmod(0o400)
        health = ("REDISCLI_AUTH=\"$$(cat /run/pw)\" redis-cli ping | grep -q PONG")
        service = {
            "image": dh.require_image("redis"), "restart": "unless-stopped",
            "command": ["redis-server", "/usr/local/etc/redis/redis.conf"],
            "volumes": [f"{self.data}:/data", f"{conf}:/usr/local/etc/redis/redis.conf:ro",
                        f"{self.password_file}:/run/pw:ro"],
            "healthcheck": {"test": ["CMD-SHELL", health], "interval": "1s", "timeout": "3s", "retries": 30}}
        # the data tier's hardened defaults (the role passes its service through the same function): started as
        # 999:999, no capability, read-only root filesystem with a tmpfs on /tmp, no-new-privileges
        compose = {"services": {"redis": container_defaults.harden(service, "redis")}}
        (self.dir / "compose.yml").write_text(json.dumps(compose))

    def up(self):
        subprocess.run(["docker", "compose", "-p", self.project, "-f", str(self.dir / "compose.yml"), "up", "-d",
                        "--wait"], check=True, capture_output=True, timeout=180)

    def cli(self, *args: str) -> str:
        res = subprocess.run(["docker", "exec", "-e", "REDISCLI_AUTH", self.container, "redis-cli", "--raw", *args],
                             capture_output=True, text=True, timeout=60,
                             env={"REDISCLI_AUTH": PASSWORD, "PATH": "/usr/bin:/bin"}, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def snapshot(self) -> dict:
        """Every key with its type, value and whether it has a TTL."""
        out = {}
        for key in sorted(self.cli("KEYS", "*").split()):
            kind = self.cli("TYPE", key)
            value = {"string": lambda k: self.cli("GET", k),
                     "hash": lambda k: sorted(self.cli("HGETALL", k).splitlines()),
                     "list": lambda k: self.cli("LRANGE", k, "0", "-1").splitlines(),
                     "set": lambda k: sorted(self.cli("SMEMBERS", k).splitlines())}[kind](key)
            out[key] = (kind, value, int(self.cli("TTL", key)) > 0)
        return out

    def info(self) -> dict:
        return dict(line.split(":", 1) for line in self.cli("INFO", "persistence").splitlines() if ":" in line)

    def started_at(self) -> str:
        return dh.docker("inspect", "-f", "{{.State.StartedAt}}", self.container).stdout.strip()

    def remove(self):
        dh.remove_compose_project(self.project)


@pytest.fixture
def instance(tmp_path):
    dh.require_docker()
    inst = Instance(tmp_path)
    inst.up()
    yield inst
    inst.remove()


def test_rdb_restore_into_an_aof_instance_gives_back_exactly_the_snapshot(instance, tmp_path):
    cli = instance.cli
    cli("SET", "greeting", "hello world")
    cli("HSET", "user:1", "name", "Ada", "role", "admin")
    cli("RPUSH", "queue", "a", "b", "c")
    cli("SADD", "tags", "x", "y", "z")
    cli("SET", "session", "abc")
    cli("EXPIRE", "session", "3600")
    for i in range(0, 500, 100):
        cli("SET", f"bulk:{i}", str(i))
    cli("BGSAVE")
    dh.wait_until(lambda: instance.info().get("rdb_bgsave_in_progress") == "0", timeout=30)
    backup = tmp_path / "backup.rdb"
    shutil.copyfile(instance.data / "dump.rdb", backup)
    expected = instance.snapshot()
    assert expected["session"][2] and len(expected) == 10, expected

    # Writes after the backup: all of them must be gone after the restore.
    cli("SET", "after-backup", "1")
    cli("DEL", "greeting")
    cli("HSET", "user:1", "role", "guest")
    cli("RPUSH", "queue", "d")
    assert instance.snapshot() != expected
    before_start = instance.started_at()

    task = {"selfhosted.platform.redis_restore": {"container": instance.container, "rdb": str(backup),
                                                  "password_file": str(instance.password_file)}}
    checked, _out = play(tmp_path, task, "--check")
    assert checked.get("changed") and not checked.get("failed"), checked
    assert instance.started_at() == before_start and "after-backup" in cli("KEYS", "*")  # check mode touched nothing

    result, out = play(tmp_path, task, "-vvv")
    assert not result.get("failed"), result
    assert result["changed"] and result["key_count"] == 10 and result["aof_enabled"], result
    assert PASSWORD not in out  # not in argv, not in the output
    # The task waited for the new start (not the old process), healthy.
    assert result["started_at"] != before_start and result["health"] == "healthy", result
    assert instance.started_at() == result["started_at"]

    assert instance.snapshot() == expected
    assert int(cli("TTL", "session")) > 3000
    info = instance.info()
    assert info["aof_enabled"] == "1" and info["loading"] == "0", info
    assert cli("CONFIG", "GET", "appendonly").splitlines()[-1] == "yes"
    # The previous files were kept aside, the throwaway twin is gone.
    aside = Path(result["previous_dir"])
    assert (aside / "appendonlydir").is_dir() and (aside / "dump.rdb").is_file()
    twins = dh.docker("ps", "-aq", "--filter", f"label=selfhosted.platform/restore-of={instance.container}")
    assert not twins.stdout.strip()

    # The data is in the AOF: a plain restart (Redis loads the AOF, ignores dump.rdb) still has it.
    (instance.data / "dump.rdb").unlink()
    dh.docker("restart", "-t", "30", instance.container)
    dh.wait_until(lambda: subprocess.run(
        ["docker", "exec", "-e", "REDISCLI_AUTH", instance.container, "redis-cli", "ping"], capture_output=True,
        text=True, env={"REDISCLI_AUTH": PASSWORD, "PATH": "/usr/bin:/bin"}, check=False).stdout.strip() == "PONG",
        timeout=60)
    dh.wait_until(lambda: instance.info().get("loading") == "0", timeout=60)
    assert instance.snapshot() == expected


def test_a_file_that_is_not_an_rdb_is_refused_and_nothing_stops(instance, tmp_path):
    bogus = tmp_path / "bogus.rdb"
    bogus.write_text("not a dump\n")
    before = instance.started_at()
    instance.cli("SET", "kept", "yes")
    result, _out = play(tmp_path, {"selfhosted.platform.redis_restore": {
        "container": instance.container, "rdb": str(bogus), "password_file": str(instance.password_file)}})
    assert result.get("failed") and "is not a Redis RDB file" in result["msg"], result
    time.sleep(0.5)
    assert instance.started_at() == before and instance.cli("GET", "kept") == "yes"
