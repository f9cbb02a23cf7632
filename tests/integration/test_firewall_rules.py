"""Role firewall (after docker_engine) on a throwaway server of its own, probed from outside with real UFW and
iptables: client containers on the test host's Docker bridge (never the admin address; the controller, which
connects from the bridge gateway, is the admin) and test-owned listeners on the test host's Docker.

In order, on one server:
1. A wide converge (SSH from anywhere, a host-only rule for 9200, a published-port rule for 8083). Containers on a
   bridge with a custom name (docker_gwbridge, as Swarm and Dokploy hosts have) and on a default compose network
   open connections out - TCP to a test listener on 8080 and DNS over UDP and TCP to a test resolver on 5353 -
   while a port a container publishes on an unlisted host port stays unreachable from outside.
2. A narrowed converge (SSH from a documentation network only, 9200 gone): the removed rules are gone from UFW and
   closed for a non-admin client, the declared ones stay open, a rule added by hand (`ufw allow 9300/tcp`) stays,
   the next converge reports changed=0, and `--check` with the wide variables predicts changes but makes none.
3. Origin restriction (firewall_origin_sources: [cloudflare], with firewall_cloudflare_sources set to client B's
   address standing in for the CDN's ranges): 80 (a published container) and 443 (a host service) answer client B
   only; SSH still answers client A.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool
from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

IMAGE = "shp-test/httpapp:latest"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PLAY = """
- name: Firewall under test
  hosts: all
  gather_facts: true
  vars:
    docker_engine_compose_method: copy
    docker_engine_compose_src: /usr/local/lib/docker/cli-plugins/docker-compose
    docker_engine_preload_images:
      - name: shp-test/httpapp:latest
        src: "{{ preload_tar }}"
    firewall_admin_include_controller: true
    firewall_ssh_harden: false
  roles:
    - role: selfhosted.platform.docker_engine
    - role: selfhosted.platform.firewall
"""
BASE_RULES = [{"port": 8083, "docker": True, "comment": "app"}]
WIDE = {"firewall_ssh_sources": ["0.0.0.0/0"],
        "firewall_rules": [*BASE_RULES, {"port": 9200, "comment": "metrics"}]}
NARROW = {"firewall_ssh_sources": ["192.0.2.0/24"], "firewall_rules": BASE_RULES}

# A DNS responder (RFC 1035 wire format over UDP and TCP): A 192.0.2.53 for names under shp.test, else NXDOMAIN.
RESOLVER = r"""
import socket, struct, threading
def answer(q):
    tid, flags, qd = struct.unpack('>HHH', q[:6]); i = 12; labels = []
    while q[i]: labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    question = q[12:i+5]; name = '.'.join(labels)
    if name.endswith('shp.test'):
        return (struct.pack('>HHHHHH', tid, 0x8180, 1, 1, 0, 0) + question
                + struct.pack('>HHHIH', 0xC00C, 1, 1, 60, 4) + socket.inet_aton('192.0.2.53'))
    return struct.pack('>HHHHHH', tid, 0x8183, 1, 0, 0, 0) + question
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353))
    while True:
        q, peer = s.recvfrom(512); s.sendto(answer(q), peer)
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 5353)); s.listen(8)
    while True:
        c, _ = s.accept(); n = struct.unpack('>H', c.recv(2))[0]; r = answer(c.recv(n))
        c.sendall(struct.pack('>H', len(r)) + r); c.close()
threading.Thread(target=udp, daemon=True).start(); tcp()
"""

# Run in a container on the server: TCP out to the listener, DNS out over UDP and TCP; prints what worked.
EGRESS = r"""
import json, socket, struct, sys, urllib.request
web, dns = sys.argv[1], sys.argv[2]
out = {}
try:
    out['tcp_8080'] = urllib.request.urlopen('http://%s:8080/health' % web, timeout=4).status == 200
except OSError:
    out['tcp_8080'] = False
q = struct.pack('>HHHHHH', 0x5eed, 0x0100, 1, 0, 0, 0) + b'\x06egress\x03shp\x04test\x00' + struct.pack('>HH', 1, 1)
def addr(r):
    return socket.inet_ntoa(r[-4:]) if struct.unpack('>H', r[:2])[0] == 0x5eed and r[3] & 15 == 0 else None
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(4); s.sendto(q, (dns, 5353))
    out['dns_udp_5353'] = addr(s.recv(512))
except OSError:
    out['dns_udp_5353'] = None
try:
    c = socket.create_connection((dns, 5353), timeout=4); c.sendall(struct.pack('>H', len(q)) + q)
    n = struct.unpack('>H', c.recv(2))[0]; out['dns_tcp_5353'] = addr(c.recv(n))
except OSError:
    out['dns_tcp_5353'] = None
print(json.dumps(out))
"""
EGRESS_OK = {"tcp_8080": True, "dns_udp_5353": "192.0.2.53", "dns_tcp_5353": "192.0.2.53"}


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {res.stderr}")
    return res.stdout.strip()


def ip_of(name: str) -> str:
    return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)


class Server:
    def __init__(self, name: str, state: Path, work: Path):
        self.name, self.state, self.work = name, state, work
        self.ip = ""

    def create(self) -> None:
        res = run_tool(["python3", str(ROOT / "tests/tools/sandbox.py"), "create", "--name", self.name,
                        "--state-dir", str(self.state)], timeout=300)
        assert res.returncode == 0, explain(res)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        self.ip = ip_of(self.name)
        (self.work / "inventory.ini").write_text(
            f"server ansible_host=127.0.0.1 ansible_port={info['ssh_port']} ansible_user=root "
            f"ansible_ssh_private_key_file={info['key']} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={info['known_hosts']} -o StrictHostKeyChecking=no'\n")
        (self.work / "play.yml").write_text(PLAY)
        res = run_tool(["python3", str(ROOT / "tests/tools/sandbox.py"), "export-images", "--output",
                        str(self.work / "httpapp.tar"), IMAGE], timeout=300)
        assert res.returncode == 0, explain(res)

    def converge(self, extra: dict, *flags: str) -> tuple[dict[str, int], str]:
        args = {"preload_tar": str(self.work / "httpapp.tar"), **extra}
        (self.work / "vars.json").write_text(json.dumps(args))
        res = run_tool(["ansible-playbook", "-i", str(self.work / "inventory.ini"), str(self.work / "play.yml"),
                        "-e", f"@{self.work / 'vars.json'}", *flags], timeout=1500)
        assert res.returncode == 0, explain(res)
        m = RECAP.search(res.stdout)
        assert m, explain(res)
        return {"ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}, res.stdout

    def sh(self, script: str, check: bool = True) -> str:
        res = subprocess.run(["docker", "exec", "-i", self.name, "bash", "-s"], input=script, capture_output=True,
                             text=True, timeout=180, check=False)
        if check:
            assert res.returncode == 0, f"{script}\n{res.stdout}\n{res.stderr}"
        return res.stdout


@pytest.fixture(scope="module")
def server():
    suffix = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"shp-it-fw-{suffix}-"))
    srv = Server(f"shp-it-fw-{suffix}", work / "state", work)
    try:
        srv.create()
        yield srv
    finally:
        subprocess.run(["python3", str(ROOT / "tests/tools/sandbox.py"), "destroy", "--name", srv.name,
                        "--state-dir", str(srv.state), "--purge-state"], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def outside(server):
    """On the test host's Docker: two clients (neither is the admin address), an HTTP listener on 8080 and a DNS
    resolver on 5353 - the world outside the server, made by the test."""
    suffix = secrets.token_hex(3)
    names = {k: f"shp-it-fw-{k}-{suffix}" for k in ("a", "b", "web", "dns")}
    try:
        for key in ("a", "b"):
            docker("run", "-d", "--name", names[key], "--entrypoint", "sleep", "shp-test/server:latest", "infinity")
        docker("run", "-d", "--name", names["web"], IMAGE)
        docker("run", "-d", "--name", names["dns"], "--entrypoint", "python3", IMAGE, "-c", RESOLVER)
        yield {k: (n, ip_of(n)) for k, n in names.items()}
    finally:
        docker("rm", "-f", *names.values(), check=False)


def probe(client: str, ip: str, port: int) -> str:
    return dh.probe_from(client, ip, port)


def probes(outside: dict, server: Server, ports: dict[str, list[int]]) -> dict[tuple[str, int], str]:
    return {(c, p): probe(outside[c][0], server.ip, p) for c, plist in ports.items() for p in plist}


def managed_rules(server: Server) -> list[str]:
    return [line for line in server.sh("ufw show added").splitlines() if line.startswith("ufw ")]


def test_wide_converge_then_container_egress_and_inbound(server, outside):
    server.converge(WIDE)
    # Host services on 9200 (a declared rule) and 9300 (a rule added by hand below), nothing on 443.
    server.sh("systemd-run --unit shp-listen-9200 python3 -m http.server 9200\n"
              "systemd-run --unit shp-listen-9300 python3 -m http.server 9300\n"
              "ufw allow 9300/tcp\n"
              # Published containers: 8083 is listed (firewall_rules docker: true), 6379 is not.
              f"docker run -d --name pub-8083 -p 8083:8080 {IMAGE}\n"
              f"docker run -d --name pub-6379 -p 6379:8080 {IMAGE}\n"
              # A bridge with a custom name (docker_gwbridge's) and a compose project's default network.
              "docker network create -o com.docker.network.bridge.name=docker_gwbridge shp-gw\n"
              "mkdir -p /opt/shp-egress && cd /opt/shp-egress\n"
              f"printf 'services:\\n  app:\\n    image: {IMAGE}\\n' > compose.yaml\n"
              "docker compose up -d --wait\n")
    dh.wait_until(lambda: "ready" in server.sh("curl -fsS http://127.0.0.1:8083/health && "
                                               "curl -fsS http://127.0.0.1:6379/health && echo ready", check=False),
                  60, interval=1, what="the published containers")

    web, dns = outside["web"][1], outside["dns"][1]
    code = base64.b64encode(EGRESS.encode()).decode()
    for network in ("shp-gw", "shp-egress_default"):
        out = server.sh(f"docker run --rm --network {network} --entrypoint python3 {IMAGE} -c "
                        f"'import base64; exec(base64.b64decode(\"{code}\"))' {web} {dns}")
        assert json.loads(out) == EGRESS_OK, f"egress from {network}: {out}"

    seen = probes(outside, server, {"a": [22, 8083, 6379, 9200, 9300, 443]})
    assert seen == {("a", 22): "open", ("a", 8083): "open", ("a", 6379): "filtered", ("a", 9200): "open",
                    ("a", 9300): "open", ("a", 443): "refused"}, seen


def test_narrowed_converge_removes_what_is_no_longer_declared(server, outside):
    before = managed_rules(server)
    assert any("port 9200" in r or "9200/tcp" in r for r in before), before
    recap = server.converge(NARROW, "--diff")[0]
    assert recap["changed"] > 0
    after = managed_rules(server)
    assert not any("9200" in r for r in after), after
    assert "ufw limit 22/tcp comment 'selfhosted ssh'" not in after, after
    assert "ufw limit from 192.0.2.0/24 to any port 22 proto tcp comment 'selfhosted ssh'" in after, after
    assert "ufw allow 9300/tcp" in after, after  # added by hand: not the role's
    assert "ufw allow 8083/tcp comment 'selfhosted rule: app'" in after, after

    seen = probes(outside, server, {"a": [22, 8083, 6379, 9200, 9300]})
    assert seen == {("a", 22): "filtered", ("a", 8083): "open", ("a", 6379): "filtered", ("a", 9200): "filtered",
                    ("a", 9300): "open"}, seen

    recap, out = server.converge(NARROW)
    assert recap["changed"] == 0, out

    # --check with the wide variables: predicts the rules back, changes nothing.
    fingerprint = "cat /etc/ufw/user.rules /etc/ufw/user6.rules /etc/ufw/after.rules | sha256sum; iptables -S | sort"
    snap = server.sh(fingerprint)
    recap, out = server.converge(WIDE, "--check", "--diff")
    assert recap["changed"] > 0 and "+ufw allow proto tcp from any to any port 9200" in out, out
    assert server.sh(fingerprint) == snap


def test_origin_sources_restrict_the_public_ports(server, outside):
    b_ip = outside["b"][1]
    server.sh(f"docker run -d --name pub-80 -p 80:8080 {IMAGE}\n"
              "systemd-run --unit shp-listen-443 python3 -m http.server 443\n")
    # The CDN's list, given a test address: client B stands for the CDN's edge.
    server.converge({"firewall_rules": BASE_RULES, "firewall_origin_sources": ["cloudflare"],
                     "firewall_cloudflare_sources": [f"{b_ip}/32", "2001:db8::/32"]})
    seen = probes(outside, server, {"a": [22, 80, 443, 8083], "b": [22, 80, 443]})
    assert seen == {("a", 22): "open", ("a", 80): "filtered", ("a", 443): "filtered", ("a", 8083): "open",
                    ("b", 22): "open", ("b", 80): "open", ("b", 443): "open"}, seen
    rules = managed_rules(server)
    assert f"ufw allow from {b_ip} to any port 443 proto tcp comment 'selfhosted public'" in rules, rules
    assert "ufw allow 443/tcp comment 'selfhosted public'" not in rules, rules
