"""The README's main command, `make sandbox`, end to end on a server of its own.

A sandbox under a test-only name and state directory gets its first converge (`make sandbox`) in
the background from the start of the session (tests/integration/conftest.py); the module then
converges it again with `make sandbox` (it must report changed=0), then runs `--check --diff` and
proves it reported no change and altered nothing on the server. Then the platform itself is probed
on the server (the "amn" topology of seeds 000/001 on the stand-in images): the backend reaches its
databases with the generated credentials, no data port is published, an app on the shared Postgres
is refused another app's database, Watchtower's scope is exactly the opted-in containers, a dockerd
restart brings everything back healthy and a bad release rolls back while the app keeps answering.
Finally the sandbox is destroyed. Wall times are printed for the closing notes (pytest -s shows
them; they are also written to tests/output/sandbox-times.txt).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration.conftest import early_sandbox, wait_early
from tests.integration.sandbox_helpers import (
    SNAPSHOT,
    assert_fresh_check_predicts_the_first_converge,
    backup_restore_drill,
    playbook,
    recap,
    server,
    snapshots,
    wait_all_healthy,
)
from tests.secret_sweep import ProcessSampler, sweep
from tests.unit.test_site_tags import documented_tags

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def sandbox():
    """The amn sandbox, whose first converge (`make sandbox`) tests/integration/conftest.py started in the
    background when the session began, so that it overlaps the tests that run before this module."""
    yield from early_sandbox("amn")


def make_sandbox(name: str, state: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    res = run_tool(["make", "--no-print-directory", *extra, f"SANDBOX_NAME={name}", f"SANDBOX_STATE={state}"],
                   timeout=1800)
    return res, time.monotonic() - start


def test_make_sandbox_converges_then_is_idempotent_and_check_is_honest(sandbox):
    name, state = sandbox
    times = {}

    first, times["first"] = wait_early("amn")
    assert first.returncode == 0, explain(first)
    r1 = recap(first.stdout)
    assert r1["failed"] == 0 and r1["unreachable"] == 0
    assert r1["changed"] > 0, "a fresh server must have been changed by the first converge"

    # The server really has what site.yml promises so far: engine, Compose v2, the stand-ins.
    out = server(state, "docker compose version --short; docker info --format '{{.LiveRestoreEnabled}}';"
                        " docker image ls --format '{{.Repository}}' | sort")
    assert out.splitlines()[0].startswith("2.")
    assert out.splitlines()[1] == "true"
    for image in ("shp-test/httpapp", "shp-test/mariadb", "shp-test/nginx", "shp-test/postgres", "shp-test/redis"):
        assert image in out.splitlines()
    # A stand-in actually runs on the server's own Docker.
    out = server(state, "docker run --rm --name shp-it-probe shp-test/redis:latest redis-server --version")
    assert "Redis server" in out

    second, times["second"] = make_sandbox(name, state, "sandbox")
    assert second.returncode == 0, explain(second)
    assert recap(second.stdout)["changed"] == 0, explain(second)

    before = server(state, SNAPSHOT)
    check, times["check"] = make_sandbox(name, state, "sandbox-check")
    assert check.returncode == 0, explain(check)
    assert recap(check.stdout)["changed"] == 0, explain(check)
    after = server(state, SNAPSHOT)
    assert before == after, "--check changed the server"

    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    report = (f"make sandbox first run: {times['first']:.1f}s (changed={r1['changed']}); "
              f"second run: {times['second']:.1f}s (changed=0); --check --diff: {times['check']:.1f}s (changed=0)\n")
    (out / "sandbox-times.txt").write_text(report)
    print(report)


def test_check_on_the_fresh_server_runs_to_the_end_and_predicts_the_first_converge(sandbox):
    """site.yml --check on a fresh host failed on main (the engine's packages on a host without apt lists, then
    container_db on a container that does not exist yet, ...); now it reports what the first converge does."""
    first, _took = wait_early("amn")
    assert first.returncode == 0, explain(first)
    assert_fresh_check_predicts_the_first_converge("amn", first, "amn")


# Every documented tag (docs/operations.md, "Tags of site.yml"), alone on the converged server: it works and changes
# nothing. The aliases (engine, security, data, apps, sso) are on exactly the plays of their tag
# (tests/unit/test_site_tags.py), so they are not run again; authelia (off on this site) runs on okt, with proxy and
# app_stack again there (npm mode, the okt stacks).
TAG_TIMES: dict[str, float] = {}


@pytest.mark.parametrize("tag", [t for t, alias in documented_tags().items() if alias is None and t != "authelia"])
def test_each_documented_tag_works_alone_on_the_converged_server(sandbox, tag):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    started = time.monotonic()
    res = playbook(state, "site.yml", "--tags", tag)
    TAG_TIMES[tag] = time.monotonic() - started
    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"--tags {k}: {v:.1f}s\n" for k, v in TAG_TIMES.items()]
    (out / "sandbox-tags-times.txt").write_text("".join(lines) + f"total: {sum(TAG_TIMES.values()):.1f}s\n")
    assert res.returncode == 0, explain(res)
    r = recap(res.stdout)
    assert r["failed"] == 0 and r["changed"] == 0, explain(res)
    assert r["ok"] > 1, explain(res)  # more than the preflight ran


def docker_json(state: Path, *args: str) -> str:
    return server(state, "docker " + " ".join(args))


def test_platform_databases_apps_and_watchtower(sandbox):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    wait_all_healthy(state)

    # The backend stand-in reaches Postgres (the Mongo stand-in here) and Redis with generated credentials.
    out = server(state, "docker exec amn-backend-1 curl -fsS http://localhost:5001/check")
    assert '"postgres": {"ok": true' in out and '"redis": {"ok": true' in out, out
    out = server(state, "docker exec devapp-web-1 curl -fsS http://localhost:8080/check")
    assert '"database": "devapp", "user": "devapp"' in out, out

    # No data port published on the host; shared-postgres only on loopback for SSH tunnels.
    ports = dict(ln.split(" ", 1) for ln in server(
        state, "docker ps --format '{{.Names}} {{.Ports}}.'").splitlines())
    for db in ("amn-db-postgres-1", "amn-redis-redis-1"):
        assert "->" not in ports[db], ports
    assert "127.0.0.1:15432->5432/tcp" in ports["shared-postgres-postgres-1"], ports
    assert "0.0.0.0:15432" not in ports["shared-postgres-postgres-1"]
    listening = server(state, "ss -Hltn | awk '{print $4}'")
    assert not [a for a in listening.split() if a.rsplit(":", 1)[1] in ("5432", "6379", "3306", "27017")]
    assert "127.0.0.1:15432" in listening.split()

    # Isolation on the shared instance: devapp's user gets its database and is refused tools'.
    probe = (
        'PW="$(cat /etc/selfhosted/secrets/shared-postgres/db-devapp)"; '
        'for db in devapp tools; do docker exec -e PGPASSWORD="$PW" shared-postgres-postgres-1 '
        'sh -c "psql -h \\$(hostname -i | cut -d\\" \\" -f1) -U devapp -d $db -Atc \'select current_database()\'" '
        '2>&1; echo "rc=$?"; done'
    )
    out = server(state, probe)
    assert "devapp\nrc=0" in out and 'permission denied for database "tools"' in out, out

    # Secrets: root-only files, the stack env 0600, nothing readable by others.
    out = server(state, "stat -c '%n %a' /etc/selfhosted/secrets /etc/selfhosted/secrets/*/* "
                        "/opt/selfhosted/stacks/amn/.env")
    modes = dict(ln.split() for ln in out.splitlines())
    assert modes["/etc/selfhosted/secrets"] == "700"
    assert modes["/opt/selfhosted/stacks/amn/.env"] == "600"
    assert all(m in ("400", "600") for n, m in modes.items() if n.count("/") > 3), modes

    # Watchtower watches exactly the opted-in services, never the databases or itself.
    out = server(state, "docker logs watchtower-watchtower-1 2>&1 | grep 'Checking containers' | tail -1")
    assert out.strip() == "Checking containers: amn-backend-1 amn-frontend-1", out
    out = server(state, "docker logs watchtower-watchtower-1 2>&1 | head -1")
    assert "label_enable=True" in out and "monitor_only=True" in out

    # The uploads volume belongs to uid 1001 (the image's nextjs/marketplace user).
    assert server(state, "stat -c '%u' /mnt/data/amn/uploads").strip() == "1001"


def test_dockerd_restart_brings_everything_back(sandbox):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    before = server(state, "docker ps --format '{{.Names}}' | sort")
    server(state, "systemctl restart docker")
    out = wait_all_healthy(state)
    assert server(state, "docker ps --format '{{.Names}}' | sort") == before, out
    out = server(state, "docker exec amn-backend-1 curl -fsS http://localhost:5001/check")
    assert '"status": "ok"' in out


def test_bad_release_rolls_back_and_the_app_keeps_answering(sandbox, tmp_path):
    import yaml  # from the toolchain venv (ansible depends on it)

    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    group_vars = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/all/main.yml").read_text())
    amn = next(s for s in group_vars["app_stack_stacks"] if s["name"] == "amn")
    amn["services"]["backend"]["environment"].update(APP_VERSION="2", HEALTH="unhealthy")
    # An unhealthy container may still recover, so compose_stack waits the whole wait_timeout before it
    # gives up; a short one keeps the test quick.
    amn["wait_timeout"] = 45
    bad = tmp_path / "bad-release.yml"
    bad.write_text(yaml.safe_dump({"app_stack_stacks": [amn]}))

    res = playbook(state, "site.yml", "--tags", "data_tier,app_stack", "-e", f"@{bad}")
    assert res.returncode != 0, explain(res)
    assert "rolled back" in res.stdout or "rolled_back" in res.stdout, explain(res)
    out = server(state, "docker exec amn-backend-1 curl -fsS http://localhost:5001/health")
    assert '"version": "1"' in out, out
    assert server(state, "docker inspect -f '{{.State.Health.Status}}' amn-backend-1").strip() == "healthy"

    # The good definition converges as a no-op again: the rollback restored the last good files. (The bad run touched
    # nothing outside these two tags; the whole site's no-op is proven by the converge test.)
    again = playbook(state, "site.yml", "--tags", "data_tier,app_stack")
    assert again.returncode == 0, explain(again)
    assert recap(again.stdout)["changed"] == 0, explain(again)


def test_backup_restore_drill_loses_nothing(sandbox):
    """Known rows in Postgres and MariaDB and files in the uploads dir -> the systemd backup units ->
    the data directories destroyed -> restore.yml -> identical row counts and checksums."""
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    times = backup_restore_drill(state)
    report = f"backup drill: backup_now {times['backup']:.1f}s, four restores {times['restore']:.1f}s\n"
    (ROOT / "tests" / "output").mkdir(parents=True, exist_ok=True)
    (ROOT / "tests" / "output" / "backup-drill-times.txt").write_text(report)
    print(report)


def test_bad_backup_names_and_schedules_are_refused_before_any_unit_changes(sandbox):
    """Set names and timer values are checked (names on the controller, schedules by systemd-analyze on the host)
    before a unit is written; each refusal names the set and the value."""
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    units = ("stat -c '%n %Y %s' /etc/systemd/system/selfhosted-backup* /etc/selfhosted/backup/config.json | sort; "
             "systemctl list-timers --all --no-legend 'selfhosted-*' | grep -o 'selfhosted-backup[^ ]*timer' | sort")
    before = server(state, units)
    bad = {"backup_sets": [{"name": "databases", "databases": "all", "on_calendar": "*-*-* 25:00"},
                           {"name": "files", "paths": ["/mnt/data/amn/uploads"], "randomized_delay": "10 parsecs"}]}
    res = playbook(state, "site.yml", "--tags", "backup", "-e", json.dumps(bad))
    assert res.returncode != 0, explain(res)
    text = flat(res.stdout)
    assert 'backup_sets[databases]: on_calendar "*-*-* 25:00" is not a valid systemd calendar event' in text, text
    assert 'backup_sets[files]: randomized_delay "10 parsecs" is not a valid systemd time span' in text, text
    res = playbook(state, "site.yml", "--tags", "backup", "-e", json.dumps({"backup_sets": [{"name": "nightly db"}]}))
    assert res.returncode != 0, explain(res)
    assert 'the set name "nightly db" cannot name a systemd unit' in flat(res.stdout), explain(res)
    assert server(state, units) == before


# ---------------------------------------------------------------------------------------------
# Secrets: a sweep of everything a run prints and every command line while it runs.
# ---------------------------------------------------------------------------------------------
INVENTORY_SECRETS = ["sandbox-dummy-jwt-secret", "sandbox-dummy-restic-password", "sandbox-dummy-router-password"]


def failing_modules_playbook(path: Path, s1: str, s2: str) -> int:
    """A play with one failing task per module of the collection, each given secrets; returns the task count."""
    repo = f"rest:http://backup:{s1}@127.0.0.1:9/repo"
    npm = {"url": "http://127.0.0.1:9", "username": "admin@example.test", "password": s1}
    dokploy = {"url": "http://127.0.0.1:9", "api_key": s1, "project": "p", "name": "n"}
    restic = {"repository": repo, "password": s2}
    tasks = [
        {"selfhosted.platform.compose_stack": {
            "project_name": "shp-it-sweep", "project_dir": "/tmp/shp-it-sweep", "env": {"TOKEN": s1},
            "definition": {"services": {"web": {"image": "shp-test/httpapp:latest", "bogus_key": "${TOKEN}"}}}}},
        {"selfhosted.platform.container_db": {"container": "shp-it-none", "engine": "postgres", "admin_password": s1,
                                              "database": "app", "password": s2}},
        {"selfhosted.platform.host_secret": {"path": "/proc/1/shp-it-none/secret", "value": s1}},
        {"selfhosted.platform.redis_restore": {"container": "shp-it-none", "rdb": "/nonexistent.rdb",
                                               "password": s1}},
        {"selfhosted.platform.restic_repository": restic},
        {"selfhosted.platform.restic_backup": dict(restic, paths=["/etc/hostname"])},
        {"selfhosted.platform.restic_forget": dict(restic, keep_daily=1)},
        {"selfhosted.platform.restic_restore": dict(restic, target="/tmp/shp-it-sweep-restore")},
        {"selfhosted.platform.restic_snapshot_info": restic},
        {"selfhosted.platform.npm_admin": {"url": npm["url"], "email": npm["username"], "password": s1}},
        {"selfhosted.platform.npm_proxy_host": dict(npm, domain_names=["sweep.example.test"], forward_host="app",
                                                    forward_port=80)},
        {"selfhosted.platform.npm_proxy_hosts": dict(npm, hosts=[])},
        {"selfhosted.platform.npm_certificate": dict(npm, domain_names=["sweep.example.test"])},
        {"selfhosted.platform.npm_access_list": dict(npm, name="ops", users=[{"username": "ops", "password": s2}])},
        {"selfhosted.platform.dokploy_app": dict(dokploy, image="shp-test/httpapp:latest", secret_env={"TOKEN": s2})},
        {"selfhosted.platform.dokploy_database": dict(dokploy, type="postgres", database_password=s2)},
    ]
    play = [{"hosts": "all", "become": True, "gather_facts": False,
             "tasks": [dict(t, name=f"fail {next(iter(t))}", ignore_errors=True) for t in tasks]}]
    path.write_text(json.dumps(play))
    return len(tasks)


def test_no_secret_reaches_any_output_or_command_line(sandbox, tmp_path):
    """A converge, a backup, two restores and one failure of every module, all with -vvv: no secret of the inventory
    or generated on the server appears in any output (0 hits), nor on any command line sampled every 0.2 s on the
    controller and inside the server meanwhile."""
    name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    host_secrets = server(state, "for f in $(find /etc/selfhosted/secrets -type f ! -name '*.conf'); do "
                                 "cat \"$f\"; echo; done").split()
    assert len(host_secrets) >= 6, host_secrets  # superusers of every instance and the app databases' passwords
    s1, s2 = "Sw33p-" + secrets.token_hex(6) + "/@:$'", "Sw33p-" + secrets.token_hex(6) + ' "two"'
    failing = tmp_path / "failures.yml"
    count = failing_modules_playbook(failing, s1, s2)
    outputs = {}
    with ProcessSampler(containers=[name]) as ps:
        outputs["site.yml -vvv"] = playbook(state, "site.yml", "-vvv")
        outputs["backup_now.yml -vvv"] = playbook(state, "backup_now.yml", "-vvv")
        outputs["restore redis -vvv"] = playbook(state, "restore.yml", "-vvv", "-e", "restore_instance=amn-redis",
                                                 "-e", "restore_confirm=amn-redis")
        outputs["restore postgres -vvv"] = playbook(state, "restore.yml", "-vvv", "-e", "restore_instance=amn-db",
                                                    "-e", "restore_database=marketplace",
                                                    "-e", "restore_confirm=amn-db/marketplace")
        outputs["module failures -vvv"] = run_tool(["ansible-playbook", str(failing), "-i", "inventories/sandbox",
                                                    "-vvv"], timeout=900, SHP_SANDBOX_STATE=str(state))
    for what, res in outputs.items():
        assert res.returncode == 0, f"{what}: " + explain(res)
    failures = outputs["module failures -vvv"]
    assert failures.stdout.count("...ignoring") == count, explain(failures)
    sweep({what: res.stdout + res.stderr for what, res in outputs.items()},
          INVENTORY_SECRETS + host_secrets + [s1, s2], ps)
    assert ps.saw("restic") and ps.saw("redis-cli"), "the sampler never saw restic or redis-cli run"


# ---------------------------------------------------------------------------------------------
# The amn router (roles/proxy, mode nginx): routes, websocket, uploads, nginx -t before replace.
# ---------------------------------------------------------------------------------------------
ROUTER = "amn-router-nginx-1"
ROUTER_CONF = "/opt/selfhosted/stacks/amn-router/conf.d/default.conf"

# A minimal RFC 6455 client (stdlib only, runs with the server's python3): handshake through the
# router, one masked text frame, the echo read back.
WS_CLIENT = r"""
import base64, os, socket, sys
path, message = sys.argv[1], sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", 8083), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8083\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
print(head.split(b"\r\n")[0].decode())
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(message)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))
hdr = s.recv(2)
n = hdr[1] & 0x7F
data = b""
while len(data) < n:
    data += s.recv(n - len(data))
print(data.decode())
"""


def router_state(state: Path) -> str:
    return server(state, f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}} {{{{.RestartCount}}}}' {ROUTER}; "
                         f"sha256sum {ROUTER_CONF}")


def test_router_reaches_backend_frontend_websocket_and_uploads(sandbox):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    wait_all_healthy(state)
    token = secrets.token_hex(6)

    # Everything else goes to the frontend; /api/ reaches the backend (its own 404 and its access log).
    assert server(state, "curl -fsS http://127.0.0.1:8083/").strip() == "frontend 1"
    out = server(state, f"curl -sS -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8083/api/probe-{token}; echo; "
                        f"sleep 1; docker logs amn-backend-1 2>&1 | grep -c 'probe-{token}' || true")
    assert out.split() == ["404", "1"], out

    # A websocket upgrade through /socket.io/ is answered by the backend's echo.
    out = server(state, f"python3 - /socket.io/ hello-{token} <<'EOF'\n{WS_CLIENT}\nEOF")
    assert out.splitlines() == ["HTTP/1.1 101 Switching Protocols", f"backend: hello-{token}"], out

    # A file in the uploads volume is served by nginx itself (alias), not by an app.
    out = server(state, f"echo 'upload {token}' > /mnt/data/amn/uploads/probe-{token}.txt; "
                        f"curl -fsS -D - http://127.0.0.1:8083/uploads/probe-{token}.txt; "
                        f"rm -f /mnt/data/amn/uploads/probe-{token}.txt; "
                        f"docker logs amn-frontend-1 2>&1 | grep -c 'probe-{token}.txt' || true")
    assert f"upload {token}" in out and "Server: nginx" in out and out.splitlines()[-1] == "0", out

    # gzip, the body limit, basic auth from the passlib-made htpasswd file (0640, group nginx).
    out = server(state, f"seq 1 2000 > /mnt/data/amn/uploads/gz-{token}.txt; curl -fsS -D - -o /dev/null "
                        f"-H 'Accept-Encoding: gzip' http://127.0.0.1:8083/uploads/gz-{token}.txt; "
                        f"rm -f /mnt/data/amn/uploads/gz-{token}.txt")
    assert "Content-Encoding: gzip" in out, out
    out = server(state, "head -c 11000000 /dev/zero > /tmp/big && curl -s -o /dev/null -w '%{http_code}' "
                        "-X POST --data-binary @/tmp/big http://127.0.0.1:8083/api/upload; rm -f /tmp/big")
    assert out.strip() == "413", out
    out = server(state, "curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8083/internal/health; "
                        "curl -s -u ops:wrong -o /dev/null -w '%{http_code} ' http://127.0.0.1:8083/internal/health; "
                        "curl -fsS -u ops:sandbox-dummy-router-password http://127.0.0.1:8083/internal/health; "
                        "stat -c ' %a %g' /opt/selfhosted/stacks/amn-router/htpasswd/*")
    assert out.startswith("401 401 ") and '"name": "backend"' in out and out.rstrip().endswith("640 101"), out

    # Config mounted read-only; logs in the host directory, rotated by logrotate with USR1 (no restart).
    mounts = server(state, f"docker inspect -f '{{{{range .Mounts}}}}{{{{.Destination}}}}={{{{.RW}}}} "
                           f"{{{{end}}}}' {ROUTER}").split()
    assert "/etc/nginx/conf.d=false" in mounts and "/var/log/nginx=true" in mounts, mounts
    before = router_state(state)
    out = server(state, f"grep -c 'probe-{token}' /mnt/data/amn/nginx-logs/access.log; "
                        "logrotate -f /etc/logrotate.d/selfhosted-amn-router && sleep 1; "
                        f"curl -fsS -o /dev/null http://127.0.0.1:8083/?after-rotate-{token}; sleep 1; "
                        f"grep -c 'after-rotate-{token}' /mnt/data/amn/nginx-logs/access.log; "
                        "ls /mnt/data/amn/nginx-logs")
    lines = out.split()
    assert lines[0] != "0" and lines[1] == "1" and "access.log.1" in lines, out
    assert router_state(state) == before, "log rotation restarted the router"


def test_broken_route_is_rejected_by_nginx_t_and_the_old_config_keeps_serving(sandbox, tmp_path):
    import yaml

    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    proxy_vars = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/all/proxy.yml").read_text())
    routes = proxy_vars["proxy_nginx_routes"]
    next(r for r in routes if r["path"] == "/api/")["directives"] = ["proxy_bogus_directive on"]
    bad = tmp_path / "bad-route.yml"
    bad.write_text(yaml.safe_dump({"proxy_nginx_routes": routes}))

    before = router_state(state)
    res = playbook(state, "site.yml", "--tags", "proxy", "-e", f"@{bad}")
    assert res.returncode != 0, explain(res)
    assert 'unknown directive "proxy_bogus_directive"' in res.stdout, explain(res)
    assert "nginx -t" in res.stdout, explain(res)  # the failed task says what rejected it
    # Live file untouched, same container, never restarted, still serving.
    assert router_state(state) == before
    assert server(state, "curl -fsS http://127.0.0.1:8083/").strip() == "frontend 1"
    assert "proxy_bogus_directive" not in server(state, f"cat {ROUTER_CONF}")

    # A valid change is reloaded, not restarted: same container, same start time, new config live.
    ok = tmp_path / "ok-route.yml"
    next(r for r in routes if r["path"] == "/api/")["directives"] = ["add_header X-Router-Probe reloaded always"]
    ok.write_text(yaml.safe_dump({"proxy_nginx_routes": routes}))
    res = playbook(state, "site.yml", "--tags", "proxy", "-e", f"@{ok}")
    assert res.returncode == 0, explain(res)
    assert "Reload the nginx router" in res.stdout, explain(res)
    assert "X-Router-Probe: reloaded" in server(state, "sleep 1; curl -sS -D - -o /dev/null http://127.0.0.1:8083/api/x")
    after = router_state(state)
    assert after.split()[:3] == before.split()[:3], (before, after)

    # Back to the inventory: reloaded again, then the proxy's converge is a no-op (the runs above touched nothing
    # outside the proxy tag).
    res = playbook(state, "site.yml", "--tags", "proxy")
    assert res.returncode == 0, explain(res)
    assert "Reload the nginx router" in res.stdout, explain(res)
    again = playbook(state, "site.yml", "--tags", "proxy")
    assert again.returncode == 0, explain(again)
    assert recap(again.stdout)["changed"] == 0, explain(again)
    assert router_state(state).split()[:3] == before.split()[:3]


# ---------------------------------------------------------------------------------------------
# Operational playbooks (playbooks/verify.yml, prune_images.yml, add_stack.yml, rotate_db_password.yml) on the
# converged sandbox. Wall times go to tests/output/ops-playbooks-times.txt, the verify report to
# tests/output/sandbox-verify-report.txt.
# ---------------------------------------------------------------------------------------------
OPS_TIMES: dict[str, float] = {}


def ops_time(label: str, started: float) -> None:
    OPS_TIMES[label] = time.monotonic() - started
    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ops-playbooks-times.txt").write_text("".join(f"{k}: {v:.1f}s\n" for k, v in OPS_TIMES.items()))


def flat(text: str) -> str:
    """Text with every run of whitespace as one space (Ansible wraps long messages)."""
    return " ".join(text.split())


def report_of(res: subprocess.CompletedProcess) -> str:
    """The report table verify.yml printed (the debug task's block)."""
    start = res.stdout.find("TASK [Report the verification")
    assert start >= 0, explain(res)
    return res.stdout[start:res.stdout.find("TASK [", start + 10)]


RESULTS = ("OK", "FAIL", "PASS", "WARN", "WAIVED", "UNUSED")


def report_cells(report: str) -> dict[str, list[str]]:
    """{'<section> <item>': [section, item, expected, actual, result]} of the report's rows."""
    rows = {}
    for line in report.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[4] in RESULTS:
            rows[f"{cells[0]} {cells[1]}"] = cells
    return rows


def report_rows(report: str) -> dict[str, str]:
    """{'<section> <item>': 'OK'|'FAIL'|'PASS'|'WARN'|'WAIVED'|'UNUSED'} of the report's rows."""
    return {key: cells[4] for key, cells in report_cells(report).items()}


def security_rows(rows: dict[str, str]) -> dict[str, str]:
    """{'5.13': result} of the security section's CIS rows."""
    return {key.split()[2]: result for key, result in rows.items() if key.startswith("security CIS ")}


def test_verify_reports_the_sandbox_matches_then_names_what_broke(sandbox):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    wait_all_healthy(state)
    if not snapshots(state):  # run on its own: the backup drill has not made any snapshot yet
        res = playbook(state, "backup_now.yml")
        assert res.returncode == 0, explain(res)

    started = time.monotonic()
    res = playbook(state, "verify.yml")
    ops_time("verify.yml (all OK)", started)
    assert res.returncode == 0, explain(res)
    # A clean run warns about nothing (on main tcp_probe's `unreachable` result key, which Ansible reserves, printed
    # "Value for result key 'unreachable' of type list was converted to bool" on every run).
    assert "[WARNING]" not in res.stdout + res.stderr, explain(res)
    assert recap(res.stdout)["failed"] == 0 and recap(res.stdout)["changed"] == 0
    report = report_of(res)
    print(report)
    (ROOT / "tests" / "output" / "sandbox-verify-report.txt").write_text(report)
    rows = report_rows(report)
    # Everything matches; the security section (CIS Docker Benchmark 1.6.0) has no WARN on the hardened host, and
    # the sandbox inventory carries no waiver it does not need (UNUSED).
    assert rows and set(rows.values()) <= {"OK", "PASS", "WAIVED"}, report
    cis = security_rows(rows)
    assert {"2.2", "2.14", "2.16", "3.16", "3.18", "5.4", "5.13", "5.26", "5.29", "5.32"} <= set(cis), report
    for item in ("2.2", "2.14", "2.16", "5.5", "5.26", "5.29", "5.31"):
        assert cis[item] == "PASS", (item, report)
    for item in ("containers amn/backend", "containers amn-db/postgres", "containers amn-router/nginx",
                 "containers watchtower/watchtower", "ports tcp/22", "ports tcp/8083", "ports tcp/5432",
                 "ports tcp/15432", "proxy router config (amn-router)", "proxy health /nginx-health on port 8083",
                 "backup databases/amn-db", "backup files: /mnt/data/amn/uploads", "firewall ufw",
                 "fail2ban jail sshd"):
        assert item in rows, report
    assert "filtered [published by shared-postgres-postgres-1 on 127.0.0.1]" in report

    # Break three things: a stopped service, a route gone from the router's live config, and a container port
    # published and let through the firewall.
    forbidden = f"shp-it-forbidden-{secrets.token_hex(3)}"
    server(state, f"set -e; cp -p {ROUTER_CONF} /root/shp-it-router.conf; "
                  f"sed -i '/location \\/uploads\\//,/}}/d' {ROUTER_CONF}; docker stop devapp-web-1 >/dev/null; "
                  f"docker run -d --name {forbidden} -p 6380:6379 shp-test/redis:latest >/dev/null; "
                  "iptables -I DOCKER-USER 1 -p tcp -m conntrack --ctorigdstport 6380 --ctdir ORIGINAL -j RETURN")
    try:
        started = time.monotonic()
        res = playbook(state, "verify.yml")
        ops_time("verify.yml (three failures)", started)
    finally:
        server(state, "iptables -D DOCKER-USER -p tcp -m conntrack --ctorigdstport 6380 --ctdir ORIGINAL -j RETURN; "
                      f"docker rm -f {forbidden} >/dev/null; mv /root/shp-it-router.conf {ROUTER_CONF}; "
                      "docker start devapp-web-1 >/dev/null")
    assert res.returncode != 0, explain(res)
    report = report_of(res)
    print(report)
    cells = report_cells(report)
    rows = {key: row[4] for key, row in cells.items()}
    failed = sorted(k for k, v in rows.items() if v == "FAIL")
    assert failed == ["containers devapp/web", "ports tcp/6380", "proxy router config (amn-router)"], report
    assert f"open [published by {forbidden} on 0.0.0.0]" in report and "devapp-web-1 exited" in report
    assert "+    location /uploads/ {" in res.stdout  # the drift is shown as a diff
    # The container started by hand without the platform's defaults is a WARN of the security section, by name, on
    # each default it lacks; nothing else turned WARN.
    warned = sorted((k for k, v in security_rows(rows).items() if v == "WARN"), key=lambda i: [int(p) for p in
                                                                                               i.split(".")])
    assert {"5.4", "5.11", "5.12", "5.13", "5.14", "5.29", "5.30"} <= set(warned), report
    for key, row in cells.items():
        if row[4] == "WARN":
            assert row[3].startswith(f"{forbidden}: "), (key, report)
    assert f"{3 + len(warned)} check(s) failed on sandbox: containers devapp/web" in flat(res.stdout), explain(res)
    wait_all_healthy(state)


def test_prune_images_check_mode_changes_nothing_then_a_dangling_image_goes(sandbox):
    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    tag = f"shp-it-prune-{secrets.token_hex(3)}:1"
    # An image with a 2 MB layer of its own, then its tag moved to another image: it is dangling.
    make_dangling = (f"set -e; docker run --name shp-it-prune-src --entrypoint sh shp-test/redis:latest "
                     f"-c 'head -c 2000000 /dev/urandom > /blob'; docker commit shp-it-prune-src {tag} >/dev/null; "
                     f"docker rm shp-it-prune-src >/dev/null; docker image inspect -f '{{{{.Id}}}}' {tag}; "
                     f"docker tag shp-test/redis:latest {tag}")
    dangling = server(state, make_dangling).strip()
    images = "docker image ls -a --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort"
    try:
        before = server(state, images)
        assert dangling in before
        started = time.monotonic()
        res = playbook(state, "prune_images.yml", "--check")
        ops_time("prune_images.yml --check", started)
        assert res.returncode == 0, explain(res)
        assert f"dangling image: {dangling[7:19]} <none>" in flat(res.stdout), explain(res)
        assert "would reclaim about 2MB (check mode: nothing removed)" in flat(res.stdout), explain(res)
        assert server(state, images) == before

        started = time.monotonic()
        res = playbook(state, "prune_images.yml")
        ops_time("prune_images.yml", started)
        assert res.returncode == 0, explain(res)
        assert recap(res.stdout)["changed"] == 1
        assert re.search(r"removed \d+ image\(s\) and \d+ build cache record\(s\); space reclaimed: 2MB",
                         flat(res.stdout)), explain(res)
        after = server(state, images)
        assert dangling not in after
        # everything in use stays (the stand-ins are used by the platform's containers)
        assert set(before.splitlines()) - set(after.splitlines()) == {f"{dangling} <none>:<none>"}
    finally:
        server(state, f"docker rmi {tag} >/dev/null 2>&1 || true")


def test_add_stack_converges_only_the_new_stack(sandbox, tmp_path):
    import json

    import yaml

    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    group_vars = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/all/main.yml").read_text())
    stack = "shp-it-extra"
    url = ("postgres://tools:{{ data_tier_connections['shared-postgres'].databases.tools.password }}"
           "@shared-postgres:5432/tools")
    web = {"image": "shp-test/httpapp:latest", "restart": "unless-stopped", "env_file": [".env"],
           "environment": {"APP_NAME": "extra", "PORT": "8090"},
           "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8090/health"], "interval": "2s",
                           "timeout": "3s", "retries": 15}}
    extra = {"name": stack, "networks": ["data-shared"], "env": {"DATABASE_URL": url}, "services": {"web": web}}
    extra_file = tmp_path / "extra-stack.json"
    extra_file.write_text(json.dumps({"app_stack_stacks": [*group_vars["app_stack_stacks"], extra]}))
    fingerprint = "docker ps --format '{{.Names}} {{.ID}} {{.CreatedAt}}' | grep -v '^shp-it-extra' | sort"
    before = server(state, fingerprint)

    res = playbook(state, "add_stack.yml", "-e", "stack=no-such-stack", "-e", f"@{extra_file}")
    assert res.returncode != 0 and "stack no-such-stack is not in app_stack_stacks" in flat(res.stdout), explain(res)
    assert "['amn', 'devapp', 'shp-it-extra']" in flat(res.stdout), explain(res)
    try:
        started = time.monotonic()
        res = playbook(state, "add_stack.yml", "-e", f"stack={stack}", "-e", f"@{extra_file}")
        ops_time("add_stack.yml (new stack)", started)
        assert res.returncode == 0, explain(res)
        assert "data tier instances on its networks (shared-postgres, shared-mariadb)" in flat(res.stdout), \
            explain(res)
        out = server(state, f"docker inspect -f '{{{{.State.Health.Status}}}}' {stack}-web-1; "
                            f"docker exec {stack}-web-1 curl -fsS http://localhost:8090/check")
        assert out.startswith("healthy\n") and '"database": "tools", "user": "tools"' in out, out
        # nothing else was recreated or restarted
        assert server(state, fingerprint) == before
    finally:
        server(state, f"cd /opt/selfhosted/stacks/{stack} 2>/dev/null && docker compose down -t 2 >/dev/null 2>&1; "
                      f"rm -rf /opt/selfhosted/stacks/{stack}")


def test_rotate_db_password_recreates_the_backend_and_refuses_the_old_one(sandbox, tmp_path):
    import json

    import yaml

    _name, state = sandbox
    if not (state / "ssh_port").exists():
        pytest.skip("the converge test did not create the sandbox")
    wait_all_healthy(state)
    secret = "/etc/selfhosted/secrets/amn-db/db-marketplace"

    # A password the inventory pins is refused before anything changes.
    group_vars = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/all/main.yml").read_text())
    pinned = group_vars["data_tier_instances"]
    next(i for i in pinned if i["name"] == "amn-db")["databases"][0]["password"] = "pinned-in-vault-1234"
    pinned_file = tmp_path / "pinned.json"
    pinned_file.write_text(json.dumps({"data_tier_instances": pinned}))
    old = server(state, f"cat {secret}").strip()
    res = playbook(state, "rotate_db_password.yml", "-e", "instance=amn-db", "-e", "database=marketplace",
                   "-e", f"@{pinned_file}")
    assert res.returncode != 0 and "The inventory pins the password of marketplace on amn-db" in flat(res.stdout), \
        explain(res)
    assert server(state, f"cat {secret}").strip() == old

    backend = server(state, "docker inspect -f '{{.Id}}' amn-backend-1").strip()
    started = time.monotonic()
    res = playbook(state, "rotate_db_password.yml", "-e", "instance=amn-db", "-e", "database=marketplace")
    ops_time("rotate_db_password.yml amn-db/marketplace", started)
    assert res.returncode == 0, explain(res)
    new = server(state, f"cat {secret}").strip()
    assert new != old and len(new) == 32
    assert old not in res.stdout + res.stderr and new not in res.stdout + res.stderr
    assert "app stacks recreated: amn." in flat(res.stdout) and "the old one is refused" in flat(res.stdout), \
        explain(res)

    # The backend was recreated with the new env, is healthy and reaches its database with the new password.
    assert server(state, "docker inspect -f '{{.Id}}' amn-backend-1").strip() != backend
    assert server(state, "docker inspect -f '{{.State.Health.Status}}' amn-backend-1").strip() == "healthy"
    out = server(state, "docker exec amn-backend-1 curl -fsS http://localhost:5001/check")
    assert '"postgres": {"ok": true' in out and '"user": "marketplace"' in out, out
    assert new in server(state, "cat /opt/selfhosted/stacks/amn/.env")
    # The database itself: the new password logs in, the old one is refused (passwords on stdin, never argv).
    login = ("docker exec -i amn-db-postgres-1 sh -c 'IFS= read -r PGPASSWORD; export PGPASSWORD; "
             "psql -h \"$(hostname -i | cut -d\" \" -f1)\" -U marketplace -d marketplace -Atc \"SELECT 1\"' "
             "2>&1; echo rc=$?")
    assert server(state, f"echo '{new}' | {login}").split() == ["1", "rc=0"]
    refused = server(state, f"echo '{old}' | {login}")
    assert "password authentication failed" in refused and "rc=0" not in refused, refused

    # The rotated password is now the kept one: a converge of the whole platform changes nothing.
    started = time.monotonic()
    again = playbook(state, "site.yml")
    ops_time("make sandbox after the rotation", started)
    assert again.returncode == 0, explain(again)
    assert recap(again.stdout)["changed"] == 0, explain(again)
    assert server(state, f"cat {secret}").strip() == new
