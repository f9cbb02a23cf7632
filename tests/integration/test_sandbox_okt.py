"""Seed 003's "0kt" platform, end to end: `make sandbox-okt` converges inventories/sandbox-okt (the reduced but
structurally complete copy of inventories/okt) on a sandbox server of its own; the second converge runs through
ansible-runner the way AWX runs a job template (private data dir, inventory, extravars, vault password from the
environment) and must report changed=0 in its artifacts; `--check --diff` must report no change and alter nothing;
playbooks/verify.yml must pass and its report is kept. Then real traffic: through NPM's stand-in (the single entry,
TLS forced, HSTS) to every stack by container name, Authelia's auth_request in front of the protected hosts, the
apps reaching their isolated or shared databases with the generated credentials, the isolation between networks,
and UFW leaving only 22/80/443 open. Wall times and the verify report go to tests/output/okt-*.txt."""

from __future__ import annotations

import base64
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration.conftest import early_sandbox, wait_early
from tests.integration.sandbox_helpers import (
    SNAPSHOT,
    append_times,
    assert_fresh_check_predicts_the_first_converge,
    converged_state,
    recap,
    server,
)
from tests.tools.awx_run import run_like_awx

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

OUT = ROOT / "tests" / "output"
OKT_DOMAIN = "0kt.example.test"
PROD_DOMAIN = "seller1.example.test"
# inventories/sandbox-okt/group_vars/all/sso.yml (sandbox dummies).
DEV_USER, DEV_PASSWORD = "dev", "sandbox-dummy-dev-password"
ADMIN_USER, ADMIN_PASSWORD = "admin", "sandbox-dummy-admin-password"


@pytest.fixture(scope="module")
def okt():
    """The okt sandbox, whose first converge (`make sandbox-okt`) tests/integration/conftest.py started in the
    background when the session began, so that it overlaps the other integration tests."""
    yield from early_sandbox("okt")


def make(name: str, state: Path, target: str, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    res = run_tool(["make", "--no-print-directory", target, f"OKT_SANDBOX_NAME={name}", f"OKT_SANDBOX_STATE={state}",
                    *extra], timeout=2400)
    return res, time.monotonic() - start


def write_times(**figures: str) -> None:
    append_times("okt-times.txt", **figures)


def converged(okt) -> Path:
    return converged_state(okt, "okt")


def test_make_sandbox_okt_converges_then_awx_style_rerun_is_idempotent_and_check_is_honest(okt, tmp_path):
    _name, state = okt
    (OUT / "okt-times.txt").unlink(missing_ok=True)

    first, t_first = wait_early("okt")
    assert first.returncode == 0, explain(first)
    r1 = recap(first.stdout)
    assert r1["failed"] == 0 and r1["unreachable"] == 0 and r1["changed"] > 0
    (state / "converged").write_text("yes")

    # The second converge the way AWX runs a job template: ansible-runner, a private data dir, the inventory,
    # extravars, the vault password answered from the job's credentials (tests/integration/test_awx_run.py proves
    # a vaulted variable reaches the play that way; here it must simply never show up in the output).
    vault_secret = "okt-it-" + secrets.token_hex(6)
    start = time.monotonic()
    job = run_like_awx(playbook="playbooks/site.yml", inventory=ROOT / "inventories" / "sandbox-okt",
                       extravars={"okt_it_marker": "awx"}, vault_password=vault_secret,
                       envvars={"SHP_SANDBOX_STATE": str(state)}, private_data_dir=tmp_path / "awx")
    t_second = time.monotonic() - start
    assert job.status == "successful" and job.rc == 0, job.stdout[-6000:]
    host = job.stats["okt-sandbox"]
    assert host["changed"] == 0, job.stdout[-8000:]
    assert host["ok"] > 0 and host["failed"] == 0 and host["unreachable"] == 0
    assert (job.artifact_dir / "status").read_text().strip() == "successful"
    assert vault_secret not in job.stdout

    before = server(state, SNAPSHOT)
    start = time.monotonic()
    check = run_tool(["ansible-playbook", "playbooks/site.yml", "-i", "inventories/sandbox-okt", "--check", "--diff"],
                     timeout=1800, SHP_SANDBOX_STATE=str(state))
    t_check = time.monotonic() - start
    assert check.returncode == 0, explain(check)
    assert recap(check.stdout)["changed"] == 0, explain(check)
    assert server(state, SNAPSHOT) == before, "--check changed the server"

    write_times(**{"okt sandbox first converge (make sandbox-okt, alongside other tests)":
                   f"{t_first:.1f}s (changed={r1['changed']})",
                   "okt sandbox second converge (ansible-runner, AWX-style)": f"{t_second:.1f}s (changed=0)",
                   "okt sandbox --check --diff": f"{t_check:.1f}s (changed=0)"})


def test_check_on_the_fresh_server_runs_to_the_end_and_predicts_the_first_converge(okt):
    """On the okt site too (Nginx Proxy Manager, Authelia): the NPM API and Authelia are not there before the first
    converge, so their tasks predict what the run would do."""
    first, _took = wait_early("okt")
    assert first.returncode == 0, explain(first)
    line = assert_fresh_check_predicts_the_first_converge("okt", first, "okt")
    write_times(**{"okt sandbox --check --diff on the fresh server": line.split(": ", 1)[1].strip()})


# The tags that need this site's layers (Nginx Proxy Manager, Authelia), and app_stack with its many stacks, alone on
# the converged server; test_sandbox.py runs every documented tag on the amn site.
@pytest.mark.parametrize("tag", ["app_stack", "authelia", "proxy"])
def test_tag_works_alone_on_the_converged_server(okt, tag):
    state = converged(okt)
    start = time.monotonic()
    res = run_tool(["ansible-playbook", "playbooks/site.yml", "-i", "inventories/sandbox-okt", "--tags", tag],
                   timeout=900, SHP_SANDBOX_STATE=str(state))
    took = time.monotonic() - start
    assert res.returncode == 0, explain(res)
    r = recap(res.stdout)
    assert r["failed"] == 0 and r["changed"] == 0 and r["ok"] > 1, explain(res)
    write_times(**{f"okt --tags {tag}": f"{took:.1f}s (changed=0)"})


def test_backup_now_then_verify_reports_the_live_server_matches_its_inventory(okt):
    state = converged(okt)
    # A fresh server has no snapshot yet, and verify.yml says so; the operational playbook takes them now.
    res = run_tool(["ansible-playbook", "playbooks/backup_now.yml", "-i", "inventories/sandbox-okt"], timeout=900,
                   SHP_SANDBOX_STATE=str(state))
    assert res.returncode == 0, explain(res)
    res, t_verify = make(okt[0], state, "sandbox-okt-verify")
    assert res.returncode == 0, explain(res)
    assert "[WARNING]" not in res.stdout + res.stderr, explain(res)  # main: tcp_probe's reserved `unreachable` key
    assert recap(res.stdout)["failed"] == 0
    report = res.stdout[res.stdout.index("TASK [Report the verification"):res.stdout.index("TASK [Fail when")]
    summary = re.search(r"(\d+) checks, (\d+) OK, (\d+) FAIL", report)
    assert summary and summary[3] == "0" and int(summary[1]) >= 40, report
    for must in ("tcp/443", "tcp/81", "commerce.demo.0kt.example.test", "seller1-prod-stack/web", "jail proxy-npm",
                 "databases/seller1-prod-db", "CIS 2.16", "CIS 5.4", "CIS 5.13", "CIS 5.32"):
        assert must in report, must
    # The security section: no WARN on the hardened host, and the inventory carries no waiver it does not need.
    assert not re.search(r"\s(WARN|UNUSED)\s*$", report, re.M), report
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "okt-verify-report.txt").write_text(report)
    write_times(**{"okt sandbox verify.yml": f"{t_verify:.1f}s ({summary[1]} checks, 0 FAIL)"})


def curl(state: Path, url: str, *args: str) -> tuple[int, dict[str, str], str]:
    """A request to NPM's public ports from the server itself; returns status, headers, body."""
    host = re.match(r"https?://([^/:]+)", url)[1]
    port = 443 if url.startswith("https") else 80
    out = server(state, f"curl -sk -o /tmp/shp-it-body -D - --resolve {host}:{port}:127.0.0.1 "
                        f"{' '.join(args)} '{url}'; echo; echo '--body--'; cat /tmp/shp-it-body")
    head, _sep, body = out.partition("--body--\n")
    lines = [ln.strip() for ln in head.strip().splitlines() if ln.strip()]
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _colon, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def basic(user: str, password: str) -> str:
    return "'Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "'"


def test_npm_is_the_single_entry_with_forced_tls_and_hsts(okt):
    state = converged(okt)
    status, headers, _body = curl(state, f"http://{PROD_DOMAIN}/")
    assert status == 301 and headers["location"] == f"https://{PROD_DOMAIN}/"
    status, headers, body = curl(state, f"https://{PROD_DOMAIN}/")
    assert status == 200 and body.strip() == "seller1-prod-web 1"
    assert "max-age=" in headers.get("strict-transport-security", "")
    status, _headers, body = curl(state, f"https://pro.{PROD_DOMAIN}/")
    assert status == 200 and body.strip().startswith("seller1-prod-n8n")
    status, _headers, body = curl(state, f"https://git.{OKT_DOMAIN}/")
    assert status == 200 and body.strip().startswith("gitea")
    # A name NPM has no proxy host for gets its default site, not an app.
    status, _headers, body = curl(state, f"https://unknown.{OKT_DOMAIN}/")
    assert "Congratulations" in body


def test_authelia_guards_the_protected_hosts(okt):
    state = converged(okt)
    url = f"https://commerce.demo.{OKT_DOMAIN}/"
    status, headers, _body = curl(state, url)
    assert status == 302, headers
    assert headers["location"].startswith(f"https://auth.{OKT_DOMAIN}/") and "rd=" in headers["location"]
    status, headers, body = curl(state, url, "-H", basic(DEV_USER, DEV_PASSWORD))
    assert status == 200 and body.strip().startswith("commerce-web"), body
    # The snippet's own `location /` keeps the host's HSTS header (nginx drops server-level add_headers there).
    assert "max-age=" in headers.get("strict-transport-security", "")
    status, _headers, _body = curl(state, url, "-H", basic(DEV_USER, "wrong-" + DEV_PASSWORD))
    assert status == 302
    # The dashboard is for admins only: the dev user is authenticated but forbidden.
    status, _headers, _body = curl(state, f"https://home.{OKT_DOMAIN}/", "-H", basic(DEV_USER, DEV_PASSWORD))
    assert status == 403
    status, _headers, body = curl(state, f"https://home.{OKT_DOMAIN}/", "-H", basic(ADMIN_USER, ADMIN_PASSWORD))
    assert status == 200 and body.strip().startswith("homarr"), body
    # The portal itself and an unprotected host need no login.
    status, _headers, _body = curl(state, f"https://auth.{OKT_DOMAIN}/api/health")
    assert status == 200
    # The users file holds argon2id hashes, 0600, no clear-text password.
    out = server(state, "stat -c '%a' /mnt/data/authelia/config/users_database.yml;"
                        " grep -c 'argon2id' /mnt/data/authelia/config/users_database.yml;"
                        f" grep -c '{DEV_PASSWORD}' /mnt/data/authelia/config/users_database.yml || true")
    mode, hashes, clear = out.split()
    assert mode == "600" and int(hashes) >= 2 and clear == "0"


def test_apps_reach_their_databases_and_the_networks_are_isolated(okt):
    state = converged(okt)
    for container, port in (("seller1-prod-web", 80), ("commerce-web", 80), ("pro-0kt-gitea", 3000)):
        out = server(state, f"docker exec {container} curl -s -o /dev/null -w '%{{http_code}}' "
                            f"http://127.0.0.1:{port}/check")
        assert out.strip() == "200", f"{container} cannot reach its database/cache"
    npm = server(state, "docker ps --filter label=com.docker.compose.project=pro-0kt-nginx --format '{{.Names}}'")
    npm = npm.split()[0]
    # NPM joins the stack networks, never a database network; dev stacks never see production's database.
    probes = {
        (npm, "seller1-prod-web"): True, (npm, "python-dev"): True, (npm, "authelia"): True,
        (npm, "seller1-prod-db"): False, (npm, "pro-0kt-postgres"): False,
        ("commerce-web", "seller1-prod-db"): False, ("commerce-web", "pro-0kt-postgres"): True,
        ("seller1-prod-web", "pro-0kt-postgres"): False, ("python-dev", "commerce-db"): False,
    }
    for (src, dst), expected in probes.items():
        out = server(state, f"docker exec {src} getent hosts {dst} >/dev/null && echo yes || echo no")
        assert (out.strip() == "yes") == expected, f"{src} -> {dst}: expected reachable={expected}"
    # The seven-network pattern, reduced: NPM on the four stack networks and Authelia's.
    nets = server(state, f"docker inspect {npm} --format '{{{{range $k, $v := .NetworkSettings.Networks}}}}"
                         "{{$k}} {{end}}'").split()
    assert {"pro-0kt-stack_default", "seller1-prod-stack_default", "commerce-stack_default",
            "python-stack_default", "okt-sso"} <= set(nets)
    assert not any(n.endswith("-data") or n == "okt-shared" for n in nets), nets


def test_ufw_leaves_only_ssh_http_https_open(okt):
    state = converged(okt)
    # The server's own address on the host's Docker bridge: what the controller reaches it at, as the Internet
    # reaches a real server (the addresses of its inner Docker bridges come first in `hostname -I`).
    address = server(state, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").strip()
    reachable = {}
    for port in (22, 80, 443, 81, 5432, 3306, 6379, 9091, 7575):
        with socket.socket() as sock:
            sock.settimeout(2)
            reachable[port] = sock.connect_ex((address, port)) == 0
    assert reachable == {22: True, 80: True, 443: True, 81: False, 5432: False, 3306: False, 6379: False,
                         9091: False, 7575: False}
