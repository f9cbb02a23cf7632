"""`make sandbox DEBIAN=trixie`: the amn site (inventories/sandbox, the same inventory as on Debian 12) converged on
a Debian 13 sandbox server (shp-test/server:trixie), whose first converge tests/integration/conftest.py starts in the
background when the session begins.

The Debian 13 server is also the one sandbox converged with Docker's user-namespace remapping on
(docker_engine_userns_remap: default, CIS 2.9: `make sandbox DEBIAN=trixie SANDBOX_USERNS_REMAP=default`, which
tests/integration/conftest.py runs): every check below holds with remapping on, and one test proves the mapping
itself - daemon.json and `docker info`, a data-tier container's processes and its data directory at base+uid on the
host, data written with the unshifted ids moved by a converge, the security audit's 2.9 PASS.

Debian 13 is another platform underneath: Debian's docker.io 26.1 without its CLI (docker-cli is a package of its
own), Compose v2 as Debian's docker-compose 2.26.1 (the plugin in /usr/libexec/docker/cli-plugins), iptables over
nf_tables, restic 0.18 (exit codes 10/11/12, --stdin-from-command), OpenSSH 10, systemd 257. The module proves the
site converges there, a second converge reports changed=0, `--check --diff` reports no change and alters nothing,
only the declared ports answer from an address that is not the admin's (a container port published but not
declared is closed by DOCKER-USER, whose rules live in the nf_tables backend), the backup/restore drill loses
nothing, and a Compose plugin another install method left in /usr/local/lib/docker/cli-plugins (which the docker
CLI would prefer to the package's) is removed. Wall times go to tests/output/trixie-times.txt.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain
from tests.integration import docker_helpers as dh
from tests.integration.conftest import EARLY, destroy_early, wait_early
from tests.integration.sandbox_helpers import (
    SNAPSHOT,
    append_times,
    backup_restore_drill,
    changed_tasks,
    converged_state,
    playbook,
    recap,
    server,
    wait_all_healthy,
)
from tests.integration.test_sandbox import report_of, report_rows, security_rows
from tests.secret_sweep import ProcessSampler, sweep

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

OUT = ROOT / "tests" / "output"
TIMES = OUT / "trixie-times.txt"
PACKAGE_PLUGIN = "/usr/libexec/docker/cli-plugins/docker-compose"
LOCAL_PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"


@pytest.fixture(scope="module")
def trixie():
    """The Debian 13 sandbox (name, state dir); its wall time from the start of the first converge to the end of the
    module is recorded, then it is destroyed."""
    early = EARLY.get("trixie")
    assert early, "tests/integration/conftest.py did not start the trixie sandbox"
    TIMES.unlink(missing_ok=True)
    yield early["name"], early["state"]
    record(**{"trixie module, from the start of the first converge to the end of its last test":
              f"{time.time() - early['start']:.0f}s"})
    destroy_early("trixie")


def record(**figures: str) -> None:
    append_times(TIMES.name, **figures)


def converged(trixie) -> Path:
    return converged_state(trixie, "trixie")


def test_make_sandbox_debian_trixie_converges_then_is_idempotent_and_check_is_honest(trixie):
    _name, state = trixie
    first, t_first = wait_early("trixie")
    assert first.returncode == 0, explain(first)
    r1 = recap(first.stdout)
    assert r1["failed"] == 0 and r1["unreachable"] == 0 and r1["changed"] > 0
    (state / "converged").write_text("yes")

    # What Debian 13 gave, and how the roles took it: the CLI's own package, Compose from Debian's docker-compose
    # (not the copy the same inventory falls back to on Debian 12), iptables on nf_tables, restic 0.18.
    out = server(state, f"""
        . /etc/os-release; echo "debian=$VERSION_ID"
        echo "engine=$(docker version --format '{{{{.Server.Version}}}}')"
        echo "cli=$(dpkg-query -W -f '${{Package}} ${{Status}}' docker-cli)"
        echo "compose=$(docker compose version --short)"
        echo "owner=$(dpkg-query --search {PACKAGE_PLUGIN} | cut -d: -f1)"
        echo "local=$(test -e {LOCAL_PLUGIN} && echo present || echo absent)"
        echo "iptables=$(iptables -V)"
        echo "restic=$(restic version | cut -d' ' -f2)"
        echo "sshd=$(dpkg-query -W -f '${{Version}}' openssh-server)"
        """)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert facts["debian"] == "13", out
    assert facts["engine"].startswith("26."), out
    assert facts["cli"] == "docker-cli install ok installed", out
    assert facts["compose"].startswith("2.26."), out
    assert facts["owner"] == "docker-compose" and facts["local"] == "absent", out
    assert "nf_tables" in facts["iptables"], out
    assert facts["restic"].startswith("0.18."), out
    real, _handlers = changed_tasks(first.stdout)
    assert "selfhosted.platform.docker_engine : Install the docker CLI" in real, real
    assert "selfhosted.platform.docker_engine : Install Compose v2 from apt" in real, real
    assert "selfhosted.platform.docker_engine : Copy the docker-compose binary" not in real, real

    # The second converge and the check as `make sandbox` / `make sandbox-check` run them, without make's set-up
    # (make setup ran for the first converge; its image and venv checks would only add to the module's budget).
    started = time.monotonic()
    second = playbook(state, "site.yml")
    t_second = time.monotonic() - started
    assert second.returncode == 0, explain(second)
    assert recap(second.stdout)["changed"] == 0, explain(second)

    before = server(state, SNAPSHOT)
    started = time.monotonic()
    check = playbook(state, "site.yml", "--check", "--diff")
    t_check = time.monotonic() - started
    assert check.returncode == 0, explain(check)
    assert recap(check.stdout)["changed"] == 0, explain(check)
    assert server(state, SNAPSHOT) == before, "--check changed the server"
    record(**{"trixie first converge (make sandbox DEBIAN=trixie)": f"{t_first:.1f}s (changed={r1['changed']})",
              "trixie second converge": f"{t_second:.1f}s (changed=0)",
              "trixie --check --diff": f"{t_check:.1f}s (changed=0)"})


def userns_base(state: Path) -> int:
    """The start of dockremap's range in the server's /etc/subuid (the mapping's uid base)."""
    line = server(state, "grep '^dockremap:' /etc/subuid").strip()
    assert line.count(":") == 2, line
    return int(line.split(":")[1])


def test_userns_remapping_is_on_and_every_layer_hands_its_files_to_the_shifted_owners(trixie):
    """daemon.json has userns-remap, `docker info` the userns security option and the storage under
    /var/lib/docker/<base>.<base>; a data-tier container's processes run as base+999 on the host (ps on the server)
    and its data directory, secret and the other layers' files are owned by base+uid; the socket proxy alone keeps the
    host's user namespace. Data written with the unshifted ids (a host converged before the remapping) is moved by the
    next converge. The security section of verify.yml reports 2.9 PASS, without a waiver."""
    state = converged(trixie)
    wait_all_healthy(state)
    base = userns_base(state)
    assert base >= 100000
    out = server(state, """
        echo "remap=$(python3 -c 'import json; print(json.load(open("/etc/docker/daemon.json")).get("userns-remap"))')"
        echo "subgid=$(grep '^dockremap:' /etc/subgid)"
        echo "secopts=$(docker info --format '{{json .SecurityOptions}}')"
        echo "root=$(docker info --format '{{.DockerRootDir}}')"
        pid=$(docker inspect -f '{{.State.Pid}}' amn-db-postgres-1)
        echo "main=$(ps -o uid= -p "$pid" | tr -d ' ')"
        echo "postgres=$(ps -C postgres -o uid= | sort -u | tr -d ' ' | paste -sd,)"
        echo "inside=$(docker exec amn-db-postgres-1 id -u)"
        echo "datadir=$(stat -c '%u:%g %a' /mnt/data/amn-db)"
        echo "pgdata=$(find /mnt/data/amn-db -printf '%u\n' | sort -u | paste -sd,)"
        echo "secret=$(stat -c '%u %a' /etc/selfhosted/secrets/amn-db/superuser)"
        echo "redisconf=$(stat -c '%u:%g %a' /etc/selfhosted/secrets/amn-redis/redis.conf)"
        echo "uploads=$(stat -c '%u:%g' /mnt/data/amn/uploads)"
        echo "logs=$(stat -c '%u:%g' /mnt/data/amn/nginx-logs)"
        echo "wtconfig=$(stat -c '%u:%g %a' /etc/selfhosted/watchtower/config.json)"
        echo "proxy=$(docker inspect -f '{{.HostConfig.UsernsMode}}' watchtower-socket-proxy-1)"
        echo "backend=$(docker inspect -f '{{.HostConfig.UsernsMode}}' amn-backend-1)"
        """)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert facts["remap"] == "default", out
    assert facts["subgid"] == f"dockremap:{base}:65536", out
    assert '"name=userns"' in facts["secopts"], out
    assert facts["root"] == f"/var/lib/docker/{base}.{base}", out
    # postgres runs as 999 in the container, base+999 on the host - every process of both Postgres instances.
    assert facts["inside"] == "999", out
    assert facts["main"] == str(base + 999) and facts["postgres"] == str(base + 999), out
    assert facts["datadir"] == f"{base + 999}:{base + 999} 700", out
    assert facts["pgdata"] == str(base + 999), out
    assert facts["secret"] == f"{base + 999} 400", out
    assert facts["redisconf"] == f"{base + 999}:{base} 400", out
    assert facts["uploads"] == f"{base + 1001}:{base + 1001}", out
    assert facts["logs"] == f"{base + 101}:{base + 101}", out
    assert facts["wtconfig"] == f"{base + 65534}:{base + 65534} 600", out
    assert facts["proxy"] == "host" and facts["backend"] == "", out

    # A host converged before the remapping: its data is owned by the unshifted ids. The next converge of the layer
    # moves it (the migration, docs/security.md), once.
    server(state, "set -e; mkdir -p /mnt/data/amn/uploads/old/deep; echo x > /mnt/data/amn/uploads/old/deep/f; "
                  "chown -R 1001:1001 /mnt/data/amn/uploads/old; chown 0:0 /mnt/data/amn/uploads/old/deep/f")
    started = time.monotonic()
    res = playbook(state, "site.yml", "--tags", "app_stack")
    took = time.monotonic() - started
    assert res.returncode == 0, explain(res)
    assert changed_tasks(res.stdout)[0] == [
        "selfhosted.platform.app_stack : Hand the remapped owners the data directories of amn"], explain(res)
    owners = server(state, "stat -c '%n %u:%g' /mnt/data/amn/uploads/old /mnt/data/amn/uploads/old/deep "
                           "/mnt/data/amn/uploads/old/deep/f")
    assert owners.split() == ["/mnt/data/amn/uploads/old", f"{base + 1001}:{base + 1001}",
                              "/mnt/data/amn/uploads/old/deep", f"{base + 1001}:{base + 1001}",
                              "/mnt/data/amn/uploads/old/deep/f", f"{base}:{base}"], owners
    again = playbook(state, "site.yml", "--tags", "app_stack")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, explain(again)
    server(state, "rm -rf /mnt/data/amn/uploads/old")

    # The security audit: 2.9 passes on its own (the inventory waives it only when remapping is off), and the socket
    # proxy's host user namespace (5.31) is the one waived exception.
    started = time.monotonic()
    res = playbook(state, "verify.yml", "-e", "verify_checks=security")
    t_verify = time.monotonic() - started
    assert res.returncode == 0, explain(res)
    report = report_of(res)
    (OUT / "trixie-userns-verify-report.txt").write_text(report)
    cis = security_rows(report_rows(report))
    assert cis["2.9"] == "PASS", report
    assert cis["5.31"] == "WAIVED", report
    assert set(cis.values()) <= {"PASS", "WAIVED"}, report
    record(**{"trixie --tags app_stack moving unshifted data to the remapped owners": f"{took:.1f}s",
              "trixie verify.yml security section (remapping on)": f"{t_verify:.1f}s"})


def test_only_declared_ports_answer_and_docker_user_works_on_nftables(trixie):
    """From a client on the test host's Docker (not the admin address): SSH, and the amn router's 8083 (declared
    with docker: true), answer; a container port published on 0.0.0.0 but not declared, the loopback-only
    shared-postgres port and an undeclared host port do not. DOCKER-USER's rules are in the nf_tables backend
    (iptables-nft), none in the legacy tables."""
    state = converged(trixie)
    wait_all_healthy(state)
    address = server(state, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").strip()
    published = dh.unique_name("trixie-pub")
    client = dh.unique_name("trixie-client")
    server(state, f"docker run -d --name {published} -p 6380:8080 shp-test/httpapp:latest >/dev/null")
    try:
        dh.wait_until(lambda: "ok" in server(state, "curl -fsS -o /dev/null http://127.0.0.1:6380/health && echo ok "
                                                    "|| true"), 60, interval=1, what="the published container")
        dh.docker("run", "-d", "--name", client, "--entrypoint", "sleep", "shp-test/server:latest", "infinity")
        started = time.monotonic()
        seen = {port: dh.probe_from(client, address, port) for port in (22, 8083, 6380, 15432, 9999)}
        took = time.monotonic() - started
        assert seen == {22: "open", 8083: "open", 6380: "filtered", 15432: "filtered", 9999: "filtered"}, seen
    finally:
        dh.docker("rm", "-f", client, check=False)
        server(state, f"docker rm -f {published} >/dev/null 2>&1 || true")
    rules = server(state, "iptables -V; iptables -S DOCKER-USER; echo legacy=$(iptables-legacy -S 2>/dev/null "
                          "| grep -c DOCKER-USER || true)")
    assert "nf_tables" in rules.splitlines()[0], rules
    assert "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8083 --ctdir ORIGINAL -j RETURN" in rules, rules
    assert "-A DOCKER-USER -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j DROP" in rules, rules
    assert "legacy=0" in rules, rules
    record(**{"trixie port probe from a non-admin client (5 ports)": f"{took:.1f}s"})


def test_backup_restore_drill_loses_nothing_with_restic_0_18(trixie):
    """The amn drill (sandbox_helpers.backup_restore_drill) on restic 0.18: dumps made by restic itself
    (--stdin-from-command), a failed dump leaves no snapshot at all, four restores give back every row, file and
    key."""
    state = converged(trixie)
    wait_all_healthy(state)
    # restore.yml's refusals and its scratch restore are the same playbook logic on any Debian (test_sandbox.py).
    # With user-namespace remapping the drill's uploads, written with the app's unshifted uid 1001 (as files saved
    # before the remapping was turned on), come back owned by base+1001: restore.yml shifts them.
    base = userns_base(state)
    times = backup_restore_drill(state, reconverge=False, guards=False, restored_owner=f"{base + 1001}:{base + 1001}")
    record(**{"trixie backup drill": f"backup_now {times['backup']:.1f}s, four restores {times['restore']:.1f}s"})


def test_a_compose_plugin_left_by_another_method_is_removed(trixie):
    """A host converged before its distribution shipped Compose v2 (Debian 12 with the copy or pip method, then
    upgraded) keeps that plugin in /usr/local/lib/docker/cli-plugins, which the docker CLI prefers to the package's:
    `docker compose` would stay the old one (or, the pip method's link after a Python upgrade, break). The package
    method removes it."""
    name, state = trixie
    converged(trixie)
    plugin = (ROOT / ".build" / "compose-floor" / "cli-plugins" / "docker-compose")
    if not plugin.exists():
        pytest.skip("no second Compose binary (make setup fetches Compose 2.20.3 into .build/compose-floor)")
    server(state, f"mkdir -p {Path(LOCAL_PLUGIN).parent}")
    dh.docker("cp", str(plugin), f"{name}:{LOCAL_PLUGIN}")
    version = "docker compose version --short"
    assert server(state, version).strip() == "2.20.3", "the copy in /usr/local/lib does not shadow the package's"
    started = time.monotonic()
    res = playbook(state, "site.yml", "--tags", "docker_engine_compose")
    took = time.monotonic() - started
    assert res.returncode == 0, explain(res)
    assert changed_tasks(res.stdout)[0] == [
        "selfhosted.platform.docker_engine : Remove the Compose plugin that would shadow the package's"], explain(res)
    assert server(state, version).strip().startswith("2.26."), "the package's Compose is not the one docker runs"
    record(**{"trixie shadowing plugin removed (--tags docker_engine_compose)":
              f"{took:.1f}s"})


def test_restic_runs_the_dumps_with_no_secret_on_any_command_line(trixie):
    """restic 0.18 starts the dump commands itself (--stdin-from-command, through the wrapper that hands the command
    its own environment): a backup of every database, sampled every 0.2 s on the controller and in the server, puts
    no password of the data tier or of the repository on a command line, and none in the unit's journal."""
    name, state = trixie
    converged(trixie)
    host_secrets = server(state, "cat /etc/selfhosted/backup/password; for f in $(find /etc/selfhosted/secrets "
                                 "-type f ! -name '*.conf'); do cat \"$f\"; echo; done").split()
    assert len(host_secrets) >= 6, host_secrets
    unit = "selfhosted-backup@databases.service"
    started = time.monotonic()
    with ProcessSampler(containers=[name]) as ps:
        out = server(state, f"systemctl start {unit}; echo rc=$?; journalctl -u {unit} -n 30 --no-pager -o cat")
    took = time.monotonic() - started
    assert "rc=0" in out, out
    assert ps.saw("--stdin-from-command", name), "no restic --stdin-from-command process was sampled"
    assert ps.saw("pg_dump", name), "no dump was sampled"
    sweep({f"{unit}'s journal": out}, host_secrets, ps)
    record(**{"trixie backup of every database (the systemd unit) under the process sampler": f"{took:.1f}s"})
