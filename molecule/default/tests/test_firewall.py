"""Verify role firewall on the converged server (testinfra over the molecule inventory), with probes
from outside: TCP connects from the test host and from client containers on the test host's Docker
bridge to the server's address. Writes the probe table to tests/output/firewall-probes.md."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

SERVER = "shp-mol-platform"
IMAGE = "shp-test/httpapp:latest"
# host port -> what a client outside the server must see. "open": connection accepted; "refused": the
# firewall lets it through but nothing listens (RST); "filtered": dropped (timeout).
EXPECTED = {
    22: "open",        # SSH, rate-limited
    80: "open",        # public, published by a container (the proxy's port)
    443: "refused",    # public, nothing listening
    8083: "open",      # an explicitly allowed published port
    6379: "filtered",  # published by a container, not allowed
    5432: "filtered",
    81: "filtered",    # NPM's admin port: SSH tunnel only
    9100: "filtered",  # host rule for 192.0.2.0/24 only
}
PUBLISHED = (80, 8083, 6379, 5432, 81)
ROWS = []


def outer_docker(*args, check=True, timeout=120):
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {res.stderr}")
    return res.stdout.strip()


def probe(ip, port, timeout=3.0):
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "filtered"


def probe_from(client, ip, port):
    res = subprocess.run(["docker", "exec", client, "timeout", "4", "bash", "-c", f"</dev/tcp/{ip}/{port}"],
                         capture_output=True, text=True, check=False)
    return "open" if res.returncode == 0 else "blocked"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def server_ip():
    return outer_docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", SERVER)


@pytest.fixture(scope="module")
def published(host):
    for port in PUBLISHED:
        host.run(f"docker rm -f shp-mol-pub-{port}")
        host.check_output(f"docker run -d --restart unless-stopped --name shp-mol-pub-{port} -p {port}:8080 {IMAGE}")
    wait_for(lambda: all(host.run(f"curl -fsS http://127.0.0.1:{p}/health").rc == 0 for p in PUBLISHED), 60,
             "the published probe containers")
    yield
    host.run("docker rm -f " + " ".join(f"shp-mol-pub-{p}" for p in PUBLISHED))


@pytest.fixture(scope="module")
def outside():
    """An HTTP server outside the server (on the test host's Docker): the 'outside world'."""
    name = "shp-it-fw-outside"
    outer_docker("rm", "-f", name, check=False)
    outer_docker("run", "-d", "--name", name, IMAGE)
    yield outer_docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
    outer_docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def clients():
    names = ["shp-it-fw-client-a", "shp-it-fw-client-b"]
    for name in names:
        outer_docker("rm", "-f", name, check=False)
        outer_docker("run", "-d", "--name", name, "--entrypoint", "sleep", "shp-test/server:latest", "infinity")
    yield {n[-1]: (n, outer_docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", n)) for n in names}
    for name in names:
        outer_docker("rm", "-f", name, check=False)


def check_probes(server_ip, stage):
    observed = {port: probe(server_ip, port) for port in EXPECTED}
    for port, want in EXPECTED.items():
        ROWS.append(f"| {stage} | {port} | {want} | {observed[port]} |")
    assert observed == EXPECTED, f"{stage}: {observed}"


def check_inside(host, outside):
    # The server itself still reaches its published ports on localhost.
    assert host.run("curl -fsS http://127.0.0.1:6379/health").rc == 0
    # Containers still reach each other ...
    host.run("docker network create shp-mol-net")
    host.run("docker rm -f shp-mol-peer")
    host.check_output(f"docker run -d --name shp-mol-peer --network shp-mol-net {IMAGE}")
    try:
        wait_for(lambda: host.run(f"docker run --rm --network shp-mol-net --entrypoint curl {IMAGE} "
                                  "-fsS --max-time 5 http://shp-mol-peer:8080/health").rc == 0, 60,
                 "container to container")
    finally:
        host.run("docker rm -f shp-mol-peer")
        host.run("docker network rm shp-mol-net")
    # ... and the outside world.
    out = host.run(f"docker run --rm --entrypoint curl {IMAGE} -fsS --max-time 5 http://{outside}:8080/health")
    assert out.rc == 0, out.stderr


def test_docker_user_rules_are_in_place(host):
    rules = host.check_output("iptables -S DOCKER-USER")
    assert "--ctorigdstport 8083 --ctdir ORIGINAL -j RETURN" in rules
    assert "--ctstate INVALID,NEW -j DROP" in rules
    assert host.file("/etc/ufw/after6.rules").contains("selfhosted.platform DOCKER-USER")
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status and "Default: deny (incoming), allow (outgoing)" in status
    assert "22/tcp" in status and "LIMIT IN" in status


def test_only_allowed_ports_are_reachable_from_outside(host, server_ip, published, outside):
    check_probes(server_ip, "after converge")
    check_inside(host, outside)


def test_rules_survive_dockerd_restart_and_ufw_reload(host, server_ip, published, outside):
    host.check_output("systemctl restart docker")
    wait_for(lambda: all(host.run(f"curl -fsS http://127.0.0.1:{p}/health").rc == 0 for p in PUBLISHED), 90,
             "the probe containers after the dockerd restart")
    check_probes(server_ip, "after dockerd restart")
    host.check_output("ufw reload")
    check_probes(server_ip, "after ufw reload")
    check_inside(host, outside)


def test_fail2ban_bans_a_brute_forcer_everywhere_and_spares_others(host, server_ip, published, clients):
    (a_name, a_ip), (b_name, b_ip) = clients["a"], clients["b"]
    for i in range(6):
        # timeout: the attempt during which the ban lands hangs (its packets are rejected mid-handshake).
        subprocess.run(["docker", "exec", a_name, "timeout", "8", "ssh", "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=5", f"shp-nouser{i}@{server_ip}", "true"],
                       capture_output=True, check=False, timeout=60)
    try:
        wait_for(lambda: a_ip in host.check_output("fail2ban-client status sshd"), 60, f"a ban of {a_ip}")
        assert b_ip not in host.check_output("fail2ban-client status sshd")
        observed = {(c, p): probe_from(n, server_ip, p) for c, (n, ip) in clients.items() for p in (22, 8083)}
        ROWS.extend(f"| fail2ban, client {c} | {p} | {'blocked' if c == 'a' else 'open'} | {o} |"
                    for (c, p), o in observed.items())
        assert observed == {("a", 22): "blocked", ("a", 8083): "blocked", ("b", 22): "open", ("b", 8083): "open"}

        # ufw reload rebuilds DOCKER-USER (dropping fail2ban's jump); a fail2ban restart re-applies the
        # ban through the role's action, which puts the jump back.
        host.check_output("ufw reload")
        host.check_output("systemctl restart fail2ban")
        # fail2ban-client exits 255 (which testinfra treats as an ssh failure) until the socket is back.
        wait_for(lambda: a_ip in host.run("fail2ban-client status sshd || true").stdout, 60,
                 "the ban after the restart")
        assert probe_from(a_name, server_ip, 8083) == "blocked"
        assert probe_from(b_name, server_ip, 8083) == "open"
    finally:
        host.run(f"fail2ban-client set sshd unbanip {a_ip}")


def test_ssh_is_key_only_and_fail2ban_uses_the_journal(host):
    cfg = host.check_output("sshd -T")
    assert "passwordauthentication no" in cfg and "permitrootlogin without-password" in cfg
    assert "kbdinteractiveauthentication no" in cfg
    jail = host.file("/etc/fail2ban/jail.d/selfhosted.local").content_string
    assert "backend = systemd" in jail and "bantime.increment = true" in jail
    jails = host.check_output("fail2ban-client status")
    for name in ("sshd", "recidive", "proxy-router"):
        assert name in jails


def test_write_probe_table():
    out = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    table = "| stage | port | expected | observed |\n|---|---|---|---|\n" + "\n".join(ROWS) + "\n"
    (out / "firewall-probes.md").write_text(table)
    assert len(ROWS) >= 3 * len(EXPECTED) + 4, table
