"""What the sandbox test modules share (test_sandbox.py: the amn site on Debian 12, test_sandbox_okt.py: the okt site,
test_sandbox_trixie.py: the amn site on Debian 13): commands on the server over its SSH, the play recap, the
fingerprint of what a converge may touch, the fresh-host check's comparison with the first converge, and the
backup/restore drill of the amn site."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from ansible_collections.selfhosted.platform.plugins.module_utils import restic as rs

from tests.conftest import ROOT, explain, run_tool
from tests.integration.conftest import fresh_check

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
HEADER = re.compile(r"^(TASK|RUNNING HANDLER) \[(.+)\] \**$")

# What a converge may touch, fingerprinted from inside the server.
SNAPSHOT = r"""
set -e
# The Compose plugin the docker CLI runs: the copy/pip methods' (first in its search order) or a package's.
plugin=$(ls -d /usr/local/lib/docker/cli-plugins/docker-compose /usr/libexec/docker/cli-plugins/docker-compose \
  2>/dev/null | head -n 1)
sha256sum /etc/docker/daemon.json "$plugin"
stat -c '%n %a %U %Y' /etc/docker/daemon.json /mnt/data "$plugin"
dpkg-query -W -f '${Package} ${Version} ${Status}\n' | sort | sha256sum
systemctl show docker -p ActiveEnterTimestampMonotonic -p MainPID
docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort
find /etc /opt/selfhosted /var/cache/selfhosted -newer /etc/hostname -xdev 2>/dev/null \
  | grep -v '^/etc/ssh/ssh_host' | sort | xargs -r stat -c '%n %Y' || true
# Data directories: owner and mode only (the databases write inside them on their own).
stat -c '%n %a %U' /mnt/data/* /mnt/data/*/*/ 2>/dev/null \
  | grep -v '/mnt/data/[^/]*-\(db\|redis\|postgres\|mariadb\)/' || true
# No container was recreated or restarted.
docker ps -a --format '{{.Names}} {{.ID}} {{.CreatedAt}} {{.State}}' | sort
iptables -S | sort | sha256sum
"""


def recap(output: str) -> dict[str, int]:
    m = RECAP.search(output)
    assert m, f"no PLAY RECAP in:\n{output[-4000:]}"
    return {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}


def append_times(filename: str, **figures: str) -> None:
    """Add FIGURES ({label: value}) to tests/output/FILENAME, one 'label: value' line each, and print them."""
    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    lines = path.read_text().splitlines() if path.exists() else []
    lines += [f"{k}: {v}" for k, v in figures.items()]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(f"{k}: {v}" for k, v in figures.items()))


def converged_state(sandbox: tuple[str, Path], what: str) -> Path:
    """The state directory of SANDBOX (name, state) once its converge test passed (it writes <state>/converged);
    the test that needs it is skipped otherwise."""
    import pytest

    _name, state = sandbox
    if not (state / "converged").exists():
        pytest.skip(f"the {what} sandbox did not converge")
    return state


def server(state: Path, script: str) -> str:
    port = (state / "ssh_port").read_text().strip()
    res = subprocess.run(
        ["ssh", "-i", str(state / "id_ed25519"), "-p", port, "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
         "root@127.0.0.1", "bash", "-s"], input=script, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def changed_tasks(output: str) -> tuple[list[str], list[str]]:
    """(names of the tasks and handlers that reported a change, names of the handlers that ran at all) of a
    playbook's output (default callback), in order."""
    changed, handlers, current = [], [], None
    for line in output.splitlines():
        m = HEADER.match(line)
        if m:
            current = m[2]
            if m[1] == "RUNNING HANDLER" and current not in handlers:
                handlers.append(current)
        elif current and line.startswith("changed: [") and current not in changed:
            changed.append(current)
    return changed, handlers


def assert_fresh_check_predicts_the_first_converge(key: str, first: subprocess.CompletedProcess, name: str) -> str:
    """`site.yml --check --diff` on the fresh server (run by the background job before the first converge) ran to
    the end without a failure or an ignored error, and every task the first converge changed was predicted: reported
    changed, or (handlers whose command check mode skips) run. Returns the figures line."""
    got = fresh_check(key)
    assert got is not None, "the background job did not run the fresh-host check"
    rc, out, took = got
    assert rc == 0, out[-12000:]
    r = recap(out)
    assert r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0, out[-6000:]
    assert "...ignoring" not in out, "a failure was hidden by ignore_errors"
    predicted, handlers = changed_tasks(out)
    real, _real_handlers = changed_tasks(first.stdout)
    # The check left the host alone: the first converge still installed the engine.
    assert "selfhosted.platform.docker_engine : Install the engine packages" in real
    missed = [t for t in real if t not in predicted and t not in handlers]
    assert not missed, f"the first converge changed what the fresh-host check did not predict: {missed}"
    extra = [t for t in predicted if t not in real]
    line = (f"{name} --check --diff on the fresh server: {took:.1f}s, changed={r['changed']} "
            f"({len(predicted)} tasks predicted changed, the first converge changed {len(real)}; "
            f"predicted but not changed: {extra or 'none'})\n")
    out_dir = ROOT / "tests" / "output"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"sandbox-fresh-check-{key}.txt").write_text(line)
    print(line)
    return line


def wait_all_healthy(state: Path, timeout: float = 240) -> str:
    """Every container running, and healthy where it has a healthcheck."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = server(state, "docker ps -a --format '{{.Names}} {{.State}} {{.Status}}' | sort")
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if lines and all(" running " in ln + " " and "starting" not in ln and "unhealthy" not in ln for ln in lines):
            return out
        time.sleep(3)
    raise AssertionError(f"not all containers healthy after {timeout}s:\n{out}")


RESTIC_ENV = "export RESTIC_REPOSITORY=/mnt/backup/restic RESTIC_PASSWORD_FILE=/etc/selfhosted/backup/password; "
PG = ("export PGPASSWORD=$(cat /etc/selfhosted/secrets/amn-db/superuser); "
      "docker exec -i -e PGPASSWORD amn-db-postgres-1 psql -U postgres -d marketplace -v ON_ERROR_STOP=1 -Atq ")
MARIA = ("export MYSQL_PWD=$(cat /etc/selfhosted/secrets/shared-mariadb/superuser); "
         "docker exec -i -e MYSQL_PWD shared-mariadb-mariadb-1 mariadb -u root -N -B wiki ")
# redis-cli in amn-redis, the password from the data tier's secret file through the environment only.
REDIS = ("export REDISCLI_AUTH=$(cat /etc/selfhosted/secrets/amn-redis/superuser); "
         "r() { docker exec -e REDISCLI_AUTH amn-redis-redis-1 redis-cli --raw \"$@\"; }; ")
# Every key of amn-redis: name, type, value, whether it has a TTL.
REDIS_KEYS = REDIS + r"""for k in $(r KEYS '*' | sort); do t=$(r TYPE "$k"); case $t in
  string) v=$(r GET "$k");; hash) v=$(r HGETALL "$k" | paste -sd,);; list) v=$(r LRANGE "$k" 0 -1 | paste -sd,);;
  set) v=$(r SMEMBERS "$k" | sort | paste -sd,);; *) v='?';; esac
  ttl=$(r TTL "$k"); [ "$ttl" -gt 0 ] && ttl=ttl || ttl=none; echo "$k $t $v $ttl"; done"""
FINGERPRINTS = (
    PG + "-c \"SELECT count(*), md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM drill\"; "
    + MARIA + "-e \"SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT(id, ':', v) ORDER BY id SEPARATOR ',')) FROM drill\"; "
    "cd /mnt/data/amn/uploads && find . -type f -printf '%P %m %s\\n' | sort | sha256sum && "
    "find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"
)


def snapshots(state: Path) -> list[dict]:
    return json.loads(server(state, RESTIC_ENV + "restic snapshots --json --no-lock"))


def playbook(state: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return run_tool(["ansible-playbook", f"playbooks/{name}", "-i", "inventories/sandbox", *args], timeout=900,
                    SHP_SANDBOX_STATE=str(state))


def backup_restore_drill(state: Path, reconverge: bool = True, guards: bool = True,
                         restored_owner: str = "") -> dict[str, float]:
    """Known rows in Postgres and MariaDB, files in the uploads dir and keys in Redis -> the systemd backup units
    -> the data directories destroyed -> restore.yml -> identical row counts, checksums and keys. A failed dump
    leaves no snapshot of it behind: restic 0.17+ (read on the server) makes none, an older one's is forgotten.
    With GUARDS, restore.yml's refusals (no or a wrong confirmation) and a scratch restore; with RECONVERGE,
    `site.yml --tags data_tier,app_stack,backup` is a no-op afterwards. The uploads are written owned by 1001:1001
    (the app's uid); with RESTORED_OWNER (uid:gid) every restored upload, and the uploads directory, must be owned by
    it afterwards (a host with user-namespace remapping: files saved with the unshifted ids come back shifted).
    Returns the wall times of the backup and the restores."""
    times = {}
    # What the role installed: private secrets, four timers, an initialised repository.
    out = server(state, "stat -c '%n %a %U' /etc/selfhosted/backup /etc/selfhosted/backup/password "
                        "/etc/selfhosted/backup/config.json; systemctl list-timers --all --no-legend 'selfhosted-*' "
                        "| grep -o 'selfhosted-backup[^ ]*timer' | sort; restic version")
    assert "/etc/selfhosted/backup 700 root" in out and "/etc/selfhosted/backup/password 600 root" in out, out
    assert "/etc/selfhosted/backup/config.json 600 root" in out, out
    restic = tuple(int(x) for x in re.search(r"restic (\d+)\.(\d+)\.(\d+)", out).groups())
    for timer in ("selfhosted-backup-check.timer", "selfhosted-backup-forget.timer",
                  "selfhosted-backup@databases.timer", "selfhosted-backup@files.timer"):
        assert timer in out, out

    fill_pg = ("-c \"DROP TABLE IF EXISTS drill; CREATE TABLE drill (id int PRIMARY KEY, v text); "
               "INSERT INTO drill SELECT g, md5(g::text) || repeat('x', g % 97) FROM generate_series(1, 20000) g\"; ")
    fill_maria = ("-e \"DROP TABLE IF EXISTS drill; CREATE TABLE drill (id INT PRIMARY KEY, v TEXT); "
                  "INSERT INTO drill SELECT seq, CONCAT(MD5(seq), REPEAT('y', seq % 89)) FROM seq_1_to_20000\"; ")
    fill_files = ("mkdir -p /mnt/data/amn/uploads/2026/11 && for i in $(seq 1 60); do "
                  "head -c $((i * 1531)) /dev/urandom > /mnt/data/amn/uploads/2026/11/img-$i.bin; done; "
                  "chmod 0640 /mnt/data/amn/uploads/2026/11/img-7.bin; chown -R 1001:1001 /mnt/data/amn/uploads")
    fill_redis = ("r FLUSHALL >/dev/null; r SET drill:str 'hello world' >/dev/null; "
                  "r HSET drill:hash name Ada role admin >/dev/null; r RPUSH drill:list a b c >/dev/null; "
                  "r SADD drill:set x y z >/dev/null; r SET drill:ttl soon EX 86400 >/dev/null; ")
    server(state, PG + fill_pg + MARIA + fill_maria + fill_files + "; " + REDIS + fill_redis)
    before = server(state, FINGERPRINTS)
    redis_before = server(state, REDIS_KEYS)
    assert len(redis_before.splitlines()) == 5 and "drill:ttl string soon ttl" in redis_before, redis_before
    assert before.splitlines()[0].startswith("20000|") and before.splitlines()[1].startswith("20000\t"), before

    start = time.monotonic()
    res = playbook(state, "backup_now.yml")
    times["backup"] = time.monotonic() - start
    assert res.returncode == 0, explain(res)
    snaps = snapshots(state)
    # A dump is stored under its name, or (restic 0.18.0) its flat name: both count as that dump.
    paths = sorted(p.replace("%2F", "/").replace("%25", "%") for s in snaps for p in s["paths"])
    for expected in ("/postgres/amn-db/globals.sql", "/postgres/amn-db/marketplace.dump",
                     "/postgres/shared-postgres/devapp.dump", "/mariadb/shared-mariadb/wiki.sql",
                     "/redis/amn-redis/dump.rdb", "/mnt/data/amn/uploads"):
        assert expected in paths, paths

    # A dump that fails (its instance is down) fails the unit and leaves no snapshot of it behind;
    # the other instances are still saved.
    server(state, "docker stop shared-mariadb-mariadb-1 >/dev/null")
    try:
        failed = server(state, "systemctl start selfhosted-backup@databases.service; echo rc=$?; "
                               "journalctl -u selfhosted-backup@databases.service -n 30 --no-pager -o cat")
    finally:
        server(state, "docker start shared-mariadb-mariadb-1 >/dev/null")
    assert "rc=0" not in failed and "shared-mariadb/wiki" in failed, failed
    # The restic on the server decides how: 0.17+ runs the dump itself and makes no snapshot, 0.14 forgets its own.
    marker = "restic made no snapshot" if restic >= (0, 17, 0) else "the incomplete snapshot"
    assert marker in failed and ("forgotten" in failed) == (restic < (0, 17, 0)), failed
    after_fail = snapshots(state)

    def count(snaps: list[dict], path: str) -> int:
        return len([s for s in snaps if set(rs.stored_paths(path)) & set(s["paths"])])

    maria, pg = "/mariadb/shared-mariadb/wiki.sql", "/postgres/amn-db/marketplace.dump"
    assert count(after_fail, maria) == count(snaps, maria), after_fail
    assert count(after_fail, pg) == count(snaps, pg) + 1, after_fail

    # Destroy the data: the database instances with their data directories, and the uploads.
    server(state, "set -e; for i in amn-db shared-mariadb; do (cd /opt/selfhosted/stacks/$i && "
                  "docker compose down --timeout 5 >/dev/null 2>&1); rm -rf /mnt/data/$i; done; "
                  "rm -rf /mnt/data/amn/uploads/*")
    gone = server(state, "ls -A /mnt/data/amn/uploads | wc -l; test -d /mnt/data/amn-db && echo db-dir || true")
    assert gone.split() == ["0"], gone
    # Redis keeps running; writes after the backup must be gone after the restore.
    server(state, REDIS + "r SET drill:after 1 >/dev/null; r DEL drill:str >/dev/null; "
                          "r HSET drill:hash role guest >/dev/null; r RPUSH drill:list d >/dev/null")
    assert server(state, REDIS_KEYS) != redis_before
    redis_started = server(state, "docker inspect -f '{{.State.StartedAt}}' amn-redis-redis-1")

    start = time.monotonic()
    for args in (["-e", "restore_instance=amn-db", "-e", "restore_database=marketplace",
                  "-e", "restore_confirm=amn-db/marketplace"],
                 ["-e", "restore_instance=shared-mariadb", "-e", "restore_database=wiki",
                  "-e", "restore_confirm=shared-mariadb/wiki"],
                 ["-e", "restore_kind=path", "-e", "restore_path=/mnt/data/amn/uploads",
                  "-e", "restore_confirm=/mnt/data/amn/uploads"],
                 ["-e", "restore_instance=amn-redis", "-e", "restore_confirm=amn-redis"]):
        res = playbook(state, "restore.yml", *args)
        assert res.returncode == 0, explain(res)
    times["restore"] = time.monotonic() - start
    assert server(state, FINGERPRINTS) == before
    if restored_owner:
        owners = server(state, "find /mnt/data/amn/uploads -printf '%U:%G\\n' | sort | uniq -c")
        assert owners.split()[1:] == [restored_owner] and len(owners.splitlines()) == 1, owners
    # Redis: exactly the snapshot's keys (TTL included), AOF on again, and the task waited for the restarted
    # instance: it is healthy now, started after the restore began.
    assert server(state, REDIS_KEYS) == redis_before
    after = server(state, REDIS + "r CONFIG GET appendonly | tail -n 1; r INFO persistence | grep -E "
                                  "'^(aof_enabled|loading):' | tr -d '\\r' | sort; "
                                  "docker inspect -f '{{.State.StartedAt}} {{.State.Health.Status}}' amn-redis-redis-1")
    assert after.split()[:3] == ["yes", "aof_enabled:1", "loading:0"], after
    assert after.split()[3] != redis_started.strip() and after.split()[4] == "healthy", (after, redis_started)

    if guards:
        # Without the confirmation a live restore refuses, before touching anything.
        res = playbook(state, "restore.yml", "-e", "restore_instance=amn-db", "-e", "restore_database=marketplace")
        assert res.returncode != 0 and "restore_confirm=amn-db/marketplace" in res.stdout, explain(res)
        res = playbook(state, "restore.yml", "-e", "restore_instance=amn-redis", "-e", "restore_confirm=amn-redis/")
        assert res.returncode != 0, explain(res)
        assert ("restore_confirm=amn-redis/ does not match what this restore replaces: give -e "
                "restore_confirm=amn-redis") in res.stdout, explain(res)
        # A scratch restore needs no confirmation and leaves the live instance alone.
        res = playbook(state, "restore.yml", "-e", "restore_instance=amn-db", "-e", "restore_database=marketplace",
                       "-e", "restore_into=scratch")
        assert res.returncode == 0, explain(res)
        scratch = re.search(r"shp-restore-amn-db-\d+", res.stdout)
        assert scratch, explain(res)
        out = server(state, f"docker exec {scratch[0]} psql -U postgres -d marketplace -Atc "
                            f"'SELECT count(*) FROM drill'; docker rm -f {scratch[0]} >/dev/null")
        assert out.strip() == "20000", out

    if reconverge:
        # The data tier, the apps and the backups converge as a no-op after all this (restored instances included).
        again = playbook(state, "site.yml", "--tags", "data_tier,app_stack,backup")
        assert again.returncode == 0, explain(again)
        assert recap(again.stdout)["changed"] == 0, explain(again)
    return times
