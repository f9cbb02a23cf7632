"""restic_repository, restic_backup, restic_forget and restic_restore with the real restic (the Debian
package, 0.14 on Debian 12) against local repositories, driven as real Ansible tasks: the restore drill
(back up, change and delete data, restore, byte-identical), a Postgres database dumped through
``docker exec``, dropped and restored from the snapshot, unreadable files (exit code 3), retention,
idempotence, and secrets kept out of output and the process list."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh
from tests.secret_sweep import ProcessSampler, assert_no_secrets

pytestmark = pytest.mark.integration

PASSWORD = "Rst-" + secrets.token_hex(10)


@pytest.fixture(autouse=True)
def _restic():
    if shutil.which("restic") is None:
        if dh.allow_skip():
            pytest.skip("restic is not installed (scripts/testground.sh installs it)")
        pytest.fail("restic is not installed (scripts/testground.sh installs it)", pytrace=False)


def play(tmp: Path, tasks: list[dict], *flags: str, prefix: tuple[str, ...] = ()) -> tuple[list[dict], str]:
    """Run tasks on localhost; returns each task's result and the raw output."""
    pb = tmp / f"play-{secrets.token_hex(3)}.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                               "tasks": [dict(t, ignore_errors=True) for t in tasks]}]))
    res = run_tool([*prefix, "ansible-playbook", "-i", "localhost,", str(pb), *flags], timeout=600,
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false")
    start = res.stdout.find("\n{\n") + 1 if not res.stdout.startswith("{") else 0
    assert res.stdout[start:].startswith("{"), explain(res)
    out = json.loads(res.stdout[start:])
    return [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]], res.stdout + res.stderr


def conn(tmp: Path, **kw) -> dict:
    return {"repository": str(tmp / "repo"), "password": PASSWORD, "cache_dir": str(tmp / "cache"), **kw}


def task(module: str, args: dict, **extra) -> dict:
    return {"name": module, f"selfhosted.platform.{module}": args, **extra}


def restic(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """restic itself, to look at the repository behind the modules' backs."""
    pw = tmp / "restic-pw"
    if not pw.exists():
        pw.write_text(PASSWORD)
        pw.chmod(0o600)
    env = dict(os.environ, RESTIC_REPOSITORY=str(tmp / "repo"), RESTIC_PASSWORD_FILE=str(pw),
               RESTIC_CACHE_DIR=str(tmp / "cache"))
    return subprocess.run(["restic", *args], env=env, capture_output=True, text=True, check=False, timeout=120)


def snapshot_ids(tmp: Path) -> list[str]:
    res = restic(tmp, "snapshots", "--json")
    assert res.returncode == 0, res.stderr
    return [s["id"] for s in json.loads(res.stdout)]


def tree(root: Path) -> dict[str, tuple]:
    """{relative path: (kind, mode, sha256 or link target)} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def make_data(root: Path) -> None:
    (root / "uploads" / "avatars").mkdir(parents=True)
    (root / "uploads" / "avatars" / "a.png").write_bytes(os.urandom(300_000))
    (root / "uploads" / "doc.pdf").write_bytes(os.urandom(70_000) * 3)  # deduplicated chunks
    (root / "uploads" / "empty").write_bytes(b"")
    (root / "uploads" / "notes.txt").write_text("évidence ✓\n")
    (root / "uploads" / "notes.txt").chmod(0o640)
    (root / "uploads" / "latest").symlink_to("notes.txt")
    (root / "uploads" / "cache").mkdir()
    (root / "uploads" / "cache" / "x.tmp").write_text("temporary")


def test_restore_drill_is_byte_identical_and_idempotent(tmp_path):
    data = tmp_path / "data"
    make_data(data)
    uploads = data / "uploads"
    results, _out = play(tmp_path, [
        task("restic_repository", conn(tmp_path)),
        task("restic_repository", conn(tmp_path, check=True, read_data_subset="100%")),
        task("restic_backup", conn(tmp_path, paths=[str(uploads)], excludes=["*.tmp"], tags=["files"],
                                   host="drill")),
    ])
    init, check, backup = results
    assert init["changed"] and init["initialized"] and not init.get("failed"), init
    assert not check["changed"] and check["checked"] and not check["initialized"], check
    assert backup["changed"] and not backup.get("failed"), backup
    assert len(backup["snapshot_id"]) == 64 and backup["snapshot_short_id"] == backup["snapshot_id"][:8]
    assert backup["files_new"] == 4 and backup["exit_code"] == 0 and backup["data_added"] > 0
    assert backup["restic_version"].startswith("0.")
    expected = {k: v for k, v in tree(uploads).items() if not k.endswith(".tmp")}

    # disaster: files changed, deleted, added
    (uploads / "avatars" / "a.png").write_bytes(b"overwritten")
    (uploads / "doc.pdf").unlink()
    shutil.rmtree(uploads / "cache")
    (uploads / "new.txt").write_text("after the backup")

    target = tmp_path / "restore"
    restore = task("restic_restore", conn(tmp_path, target=str(target), tags=["files"], host="drill"))
    checked, _out = play(tmp_path, [restore], "--check", "--diff")
    assert checked[0]["changed"] and not target.exists(), checked
    results, _out = play(tmp_path, [restore, restore])
    first, second = results
    assert first["changed"] and first["snapshot"]["id"] == backup["snapshot_id"], first
    assert not first.get("warnings"), first
    assert not second["changed"] and second["restored_count"] == 0, second
    restored = target / str(uploads).lstrip("/")
    assert tree(restored) == expected

    # in place, over the damaged data: back to exactly what was backed up (new files are left alone)
    in_place = task("restic_restore", conn(tmp_path, target="/", snapshot=backup["snapshot_short_id"]))
    results, _out = play(tmp_path, [in_place, in_place])
    assert results[0]["changed"] and not results[1]["changed"], results
    now = tree(uploads)
    assert now.pop("new.txt")[0] == "file"
    assert now == expected

    # a damaged restored copy is noticed and repaired
    (restored / "notes.txt").write_text("x")
    results, _out = play(tmp_path, [restore])
    assert results[0]["changed"] and any(p.endswith("/notes.txt") for p in results[0]["restored"])
    assert tree(restored) == expected


def test_unreadable_files_are_a_warning_with_the_files(tmp_path):
    data = tmp_path / "data"
    (data / "locked").mkdir(parents=True)
    (data / "ok.txt").write_text("readable")
    (data / "secret.key").write_text("unreadable")
    (data / "locked" / "inner").write_text("unreadable")
    (data / "secret.key").chmod(0)
    (data / "locked").chmod(0)
    # root reads everything: drop the capabilities that let it (the playbook runs without them)
    prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search") if os.geteuid() == 0 else ()
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to make files unreadable for root")
    try:
        results, _out = play(tmp_path, [
            task("restic_repository", conn(tmp_path)),
            task("restic_backup", conn(tmp_path, paths=[str(data)])),
            task("restic_backup", conn(tmp_path, paths=[str(data)], unreadable="fail")),
        ], prefix=prefix)
    finally:
        (data / "locked").chmod(0o755)
    init, warned, failed = results
    assert not init.get("failed"), init
    assert warned["changed"] and not warned.get("failed") and warned["exit_code"] == 3, warned
    assert sorted(warned["unreadable"]) == sorted([str(data / "secret.key"), str(data / "locked")]), warned
    assert any("could not read 2 source file(s)" in w for w in warned["warnings"]), warned
    assert failed.get("failed") and failed["msg"].startswith("paths: restic could not read"), failed
    # both snapshots exist and hold what could be read
    assert len(snapshot_ids(tmp_path)) == 2
    listing = restic(tmp_path, "ls", warned["snapshot_id"]).stdout
    assert str(data / "ok.txt") in listing and "secret.key" not in listing


def test_retention_keeps_what_the_policy_says(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tasks = [task("restic_repository", conn(tmp_path))]
    for i in range(4):
        tasks.append({"name": f"change {i}", "copy": {"dest": str(data / "f"), "content": f"version {i}\n"}})
        tasks.append(task("restic_backup", conn(tmp_path, paths=[str(data)], tags=["files"])))
    tasks.append(task("restic_backup", conn(tmp_path, command=["echo", "dump"], filename="db/x.dump",
                                            tags=["db"])))
    results, _out = play(tmp_path, tasks)
    assert not any(r.get("failed") for r in results), results
    files = [r["snapshot_id"] for r in results[2::2][:4]]
    db = results[-1]["snapshot_id"]
    assert len(set(files)) == 4

    forget = task("restic_forget", conn(tmp_path, keep_last=2, tags=["files"]))
    checked, _out = play(tmp_path, [forget], "--check", "--diff")
    assert checked[0]["changed"] and len(snapshot_ids(tmp_path)) == 5, checked
    assert sorted(s["id"] for s in checked[0]["removed"]) == sorted(files[:2])
    results, _out = play(tmp_path, [forget, forget])
    first, second = results
    assert first["changed"] and first["pruned"], first
    assert sorted(s["id"] for s in first["kept"]) == sorted(files[2:])
    assert not second["changed"] and not second["removed"], second
    assert sorted(snapshot_ids(tmp_path)) == sorted([*files[2:], db])  # other tags untouched
    assert restic(tmp_path, "check").returncode == 0

    results, _out = play(tmp_path, [task("restic_forget", conn(tmp_path))])
    assert results[0]["failed"] and "at least one retention option" in results[0]["msg"]


def test_failures_name_the_cause(tmp_path):
    other = tmp_path / "other"
    results, out = play(tmp_path, [
        task("restic_repository", conn(tmp_path)),
        task("restic_repository", conn(tmp_path, password="not-the-password")),
        task("restic_backup", conn(tmp_path, repository=str(other), paths=[str(tmp_path)])),
        task("restic_repository", conn(tmp_path, repository="rest:http://127.0.0.1:9/")),
        task("restic_backup", conn(tmp_path, paths=["relative"])),
    ])
    assert results[1]["failed"] and results[1]["msg"].startswith("password: wrong password"), results[1]
    assert results[2]["failed"] and results[2]["msg"].startswith("repository: there is no restic repository")
    assert not other.exists()
    # an unreachable server is not "no repository": nothing is initialised, the cause is shown
    assert results[3]["failed"] and "connection refused" in results[3]["msg"], results[3]
    assert results[4]["failed"] and results[4]["msg"].startswith("paths:")
    assert "not-the-password" not in out and PASSWORD not in out


@pytest.fixture(scope="module")
def postgres():
    dk = dh.Session()
    pg = dk.run(dh.require_image("postgres"), kind="restic-pg", env={"POSTGRES_PASSWORD": "Pg-" + secrets.token_hex(6)})
    pg.wait_exec("pg_isready", "-h", "127.0.0.1", "-U", "postgres", timeout=120)
    yield pg
    dk.cleanup()


def psql(pg, sql: str, db: str = "postgres") -> str:
    return pg.exec_ok("psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-U", "postgres", "-d", db, "-c", sql)


def test_postgres_dump_dropped_and_restored_from_the_snapshot(postgres, tmp_path):
    pg = postgres
    psql(pg, "CREATE ROLE shop_app LOGIN PASSWORD 'x'")
    psql(pg, "CREATE DATABASE shop OWNER shop_app")
    psql(pg, "CREATE TABLE orders (id serial PRIMARY KEY, item text, paid numeric(10,2), data bytea);"
             "INSERT INTO orders (item, paid, data) SELECT 'item ' || g, g * 1.5, "
             "decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;"
             "CREATE TABLE disputes (id int, note text); INSERT INTO disputes VALUES (1, 'evidence ✓');"
             "ALTER TABLE orders OWNER TO shop_app", db="shop")
    counts = psql(pg, "SELECT (SELECT count(*) FROM orders) || ' ' || (SELECT count(*) FROM disputes) || ' ' || "
                      "(SELECT sum(paid) FROM orders)", db="shop").strip()
    dump = ["docker", "exec", pg.name, "pg_dump", "-Fc", "-U", "postgres", "shop"]
    globals_ = ["docker", "exec", pg.name, "pg_dumpall", "--globals-only", "-U", "postgres"]
    results, _out = play(tmp_path, [
        task("restic_repository", conn(tmp_path)),
        task("restic_backup", conn(tmp_path, command=dump, filename="postgres/shop.dump", tags=["db", "postgres"])),
        task("restic_backup", conn(tmp_path, command=globals_, filename="postgres/globals.sql",
                                   tags=["db", "postgres-globals"])),
        # a dump that fails: the task fails and leaves no snapshot behind
        task("restic_backup", conn(tmp_path, command=[*dump[:-1], "no_such_db"], filename="postgres/x.dump",
                                   tags=["db"])),
    ])
    _init, shop, glob, broken = results
    assert shop["changed"] and not shop.get("failed") and shop["total_bytes_processed"] > 10000, shop
    assert not glob.get("failed"), glob
    assert broken["failed"] and broken["msg"].startswith("command: exited 1:"), broken
    assert "no_such_db" in broken["msg"] and "was forgotten" in broken["msg"]
    assert sorted(snapshot_ids(tmp_path)) == sorted([shop["snapshot_id"], glob["snapshot_id"]])

    # disaster: the database and its owner are gone
    psql(pg, "DROP DATABASE shop")
    psql(pg, "DROP ROLE shop_app")
    target = tmp_path / "restore"
    results, _out = play(tmp_path, [
        task("restic_restore", conn(tmp_path, target=str(target), tags=["postgres-globals"])),
        task("restic_restore", conn(tmp_path, target=str(target), tags=["db", "postgres"])),
    ])
    assert all(r["changed"] and not r.get("failed") for r in results), results
    sql = (target / "postgres" / "globals.sql").read_text()
    assert "CREATE ROLE shop_app" in sql
    pg.exec_ok("psql", "-X", "-q", "-U", "postgres", "-d", "postgres", input=sql)  # "role postgres exists" is fine
    raw = (target / "postgres" / "shop.dump").read_bytes()
    assert raw.startswith(b"PGDMP")
    res = dh.docker("exec", "-i", pg.name, "pg_restore", "--create", "--exit-on-error", "-U", "postgres", "-d",
                    "postgres", input=raw, text=False, check=False)
    assert res.returncode == 0, res.stderr
    after = psql(pg, "SELECT (SELECT count(*) FROM orders) || ' ' || (SELECT count(*) FROM disputes) || ' ' || "
                     "(SELECT sum(paid) FROM orders)", db="shop").strip()
    assert after == counts == "5000 1 18753750.00"
    assert psql(pg, "SELECT note FROM disputes", db="shop").strip() == "evidence ✓"
    assert psql(pg, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'").strip() == "shop_app"


def test_secrets_stay_out_of_output_and_the_process_list(tmp_path):
    s3_secret = "AwsSecret-" + secrets.token_hex(8)
    dump_secret = "DumpSecret-" + secrets.token_hex(8)
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            time.sleep(0.05)

    before = set(Path("/tmp").glob("shp-restic-*"))
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        slow = ["sh", "-c", 'sleep 2; test -n "$DUMP_PW" && echo "dump made with a password"']
        results, out = play(tmp_path, [
            task("restic_repository", conn(tmp_path, env={"AWS_SECRET_ACCESS_KEY": s3_secret})),
            task("restic_backup", conn(tmp_path, command=slow, filename="x.txt", command_env={"DUMP_PW": dump_secret},
                                       env={"AWS_SECRET_ACCESS_KEY": s3_secret})),
        ], "-vvv")
    finally:
        stop.set()
        thread.join()
    assert not any(r.get("failed") for r in results), results
    assert any("restic" in cmd and "backup" in cmd for cmd in seen), "the sampler never saw restic run"
    for secret in (PASSWORD, s3_secret, dump_secret):
        assert secret not in out
        assert not [cmd for cmd in seen if secret in cmd]
    # the dump saw its secret (through the environment)
    target = tmp_path / "r"
    results, out = play(tmp_path, [task("restic_restore", conn(tmp_path, target=str(target)))])
    assert (target / "x.txt").read_text() == "dump made with a password\n"
    # and no temporary password file is left behind
    assert set(Path("/tmp").glob("shp-restic-*")) <= before


def test_sftp_repository_over_real_ssh(tmp_path):
    """The sftp backend against a real OpenSSH server (the "server" image's sshd, run as the container's only
    process): the missing repository is detected over sftp and initialised once, a backup and a byte-identical
    restore go through it, and the SSH options travel as restic's -o sftp.command."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    dk = dh.Session()
    try:
        sshd = dk.run(dh.require_image("server"), "-c",
                      "mkdir -p /run/sshd /root/.ssh /srv/backup && ssh-keygen -A >/dev/null && "
                      "exec /usr/sbin/sshd -D -e", kind="restic-sftp", entrypoint="/bin/sh")
        dh.docker("exec", "-i", sshd.name, "sh", "-c",
                  "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
                  input=key.with_suffix(".pub").read_text())
        sshd.wait_exec("sh", "-c", "pgrep -x sshd >/dev/null && test -s /root/.ssh/authorized_keys", timeout=60)
        ip = dh.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       sshd.name).stdout.strip()
        ssh = (f"ssh -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               f"-o LogLevel=ERROR root@{ip} -s sftp")
        remote = conn(tmp_path, repository=f"sftp:root@{ip}:/srv/backup/restic", options=[f"sftp.command={ssh}"])
        data = tmp_path / "data"
        make_data(data)
        target = tmp_path / "restored"
        results, out = play(tmp_path, [
            task("restic_repository", remote),
            task("restic_repository", remote),
            task("restic_backup", dict(remote, paths=[str(data / "uploads")], tags=["files"])),
            task("restic_restore", dict(remote, target=str(target), tags=["files"])),
            task("restic_repository", dict(remote, password="not-the-password")),
        ])
        assert results[0]["changed"] and results[0]["initialized"], results[0]
        assert not results[1]["changed"] and results[1]["repository_id"] == results[0]["repository_id"]
        assert results[2]["snapshot_id"] and results[2]["files_new"] >= 4, results[2]
        assert results[3]["changed"], results[3]
        assert tree(target / str(data / "uploads").lstrip("/")) == tree(data / "uploads")
        assert results[4]["failed"] and results[4]["msg"].startswith("password: wrong password"), results[4]
        layout = sshd.exec_ok("sh", "-c", "ls /srv/backup/restic").split()
        assert layout == ["config", "data", "index", "keys", "locks", "snapshots"]
        assert PASSWORD not in out
    finally:
        dk.cleanup()


@pytest.fixture
def s3_server(tmp_path):
    """moto's standalone S3 server on a loopback port: an S3-compatible endpoint for restic's s3 backend."""
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        dh.wait_until(lambda: subprocess.run(["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                             check=False).returncode == 0, 60, what="moto_server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_s3_repository_with_credentials_from_env(tmp_path, s3_server):
    """The s3 backend against an S3-compatible endpoint (moto's server): credentials only in the module's env
    option (never printed), the missing bucket/repository detected and initialised once, backup and restore."""
    secret_key = "S3secret-" + secrets.token_hex(8)
    remote = conn(tmp_path, repository=f"s3:{s3_server}/shp-it-restic-{secrets.token_hex(3)}/host1",
                  env={"AWS_ACCESS_KEY_ID": "shp-it-access", "AWS_SECRET_ACCESS_KEY": secret_key,
                       "AWS_DEFAULT_REGION": "us-east-1"})
    data = tmp_path / "data"
    make_data(data)
    target = tmp_path / "restored"
    results, out = play(tmp_path, [
        task("restic_repository", remote),
        task("restic_repository", remote),
        task("restic_backup", dict(remote, paths=[str(data / "uploads")], tags=["files"])),
        task("restic_restore", dict(remote, target=str(target), tags=["files"])),
    ], "-vvv")
    assert results[0]["changed"] and results[0]["initialized"], results[0]
    assert not results[1]["changed"] and results[1]["repository_id"] == results[0]["repository_id"]
    assert results[2]["snapshot_id"], results[2]
    assert tree(target / str(data / "uploads").lstrip("/")) == tree(data / "uploads")
    assert secret_key not in out


def test_repository_url_passwords_never_shown(tmp_path, s3_server):
    """A password in the repository URL (raw "/", "@" and ":" percent-encoded, as restic needs them; and raw,
    which restic cannot parse but echoes) never appears in the output of ``ansible-playbook -vvv``, neither
    in messages (wrong password, no repository, no snapshot, an unreachable or unparsable backend, an
    argument error found by AnsibleModule itself) nor in results nor in ``invocation.module_args``; restic
    0.14 echoes s3 locations with their user information, so its stderr is masked too."""
    mark = "UrlPw" + secrets.token_hex(6)
    raw = mark + "/x@y:z"
    enc = raw.replace("/", "%2F").replace("@", "%40").replace(":", "%3A")
    host = s3_server.split("://", 1)[1]
    bucket = f"shp-it-restic-{secrets.token_hex(3)}"
    repo = f"s3:http://key:{enc}@{host}/{bucket}/h1"
    s3 = {"AWS_ACCESS_KEY_ID": "shp-it-access", "AWS_SECRET_ACCESS_KEY": "shp-it-s3", "AWS_DEFAULT_REGION": "us-east-1"}
    remote = conn(tmp_path, repository=repo, env=s3)
    data = tmp_path / "data"
    make_data(data)
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD)
    pw_file.chmod(0o600)
    sampler = ProcessSampler()
    with sampler:
        results, out = play(tmp_path, [
            task("restic_repository", remote),
            task("restic_backup", dict(remote, paths=[str(data / "uploads")], tags=["files"])),
            task("restic_snapshot_info", dict(remote, group_by="host")),
            task("restic_repository", dict(remote, password="not-the-password")),
            task("restic_backup", dict(remote, repository=f"s3:http://key:{enc}@{host}/{bucket}/none",
                                       paths=[str(data)])),
            task("restic_restore", dict(remote, target=str(tmp_path / "r"), snapshot="deadbeef")),
            task("restic_forget", dict(remote, repository=f"s3:http://key:{enc}@127.0.0.1:9/{bucket}/h1", keep_last=1)),
            task("restic_snapshot_info", dict(remote, repository=f"rest:http://user:{raw}@127.0.0.1:9/h1/")),
            task("restic_repository", dict(remote, password_file=str(pw_file))),
        ], "-vvv", "-e", "ansible_inject_invocation=true")  # ansible-core 2.21 leaves invocation out by default
    ok_init, ok_backup, ok_info, wrong_pw, no_repo, no_snap, unreachable, unparsable, arg_error = results
    assert not ok_init.get("failed") and ok_init["initialized"], ok_init
    assert not ok_backup.get("failed") and ok_backup["snapshot_id"], ok_backup
    assert not ok_info.get("failed") and ok_info["count"] == 1, ok_info
    assert wrong_pw["failed"] and wrong_pw["msg"].startswith("password: wrong password"), wrong_pw
    assert no_repo["failed"] and no_repo["msg"].startswith("repository: there is no restic repository"), no_repo
    assert no_snap["failed"] and no_snap["msg"].startswith("snapshot: no snapshot deadbeef"), no_snap
    assert unreachable["failed"] and "connection refused" in unreachable["msg"], unreachable
    assert unparsable["failed"] and "parsing repository location failed" in unparsable["msg"], unparsable
    assert arg_error["failed"] and "mutually exclusive" in arg_error["msg"], arg_error
    for res in (ok_init, wrong_pw, arg_error):
        assert res["invocation"]["module_args"]["repository"] == f"s3:http://key:********@{host}/{bucket}/h1", res
    assert f"s3:http://key:***@{host}/{bucket}/h1" in wrong_pw["msg"]
    assert_no_secrets(out, [mark, enc, raw, PASSWORD], where="ansible-playbook -vvv")
    assert sampler.saw("restic"), "the sampler never saw restic run"
    sampler.assert_no_secrets([mark, enc, raw, PASSWORD])  # the URL travels in RESTIC_REPOSITORY, never on argv
