"""tests/images/npm/edge.py, the NPM stand-in's ports 80/443, as a local process on 127.0.0.1 (ports, state file,
certificate and ACME root from its NPM_EDGE_* variables) against a database.json written by the fake NPM API
(tests/fakes/npm_api.py, so the rows have the fake's exact shape), local HTTP backends and a local fake of
Authelia's /api/authz/auth-request. Each test writes its state; the edge re-reads the file on change."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import ROOT
from tests.fakes.npm_api import FakeNpm

EDGE = ROOT / "tests" / "images" / "npm" / "edge.py"
NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname, NO_VERIFY.verify_mode = False, ssl.CERT_NONE
USER_PASSWORD = "pw-" + secrets.token_hex(6)

# /tmp/authelia_snippet.md, the contract between the proxy role and the edge (AUTHELIA_URL filled in per test).
AUTHELIA_SNIPPET = """\
location /internal/authelia/authz {
    internal;
    proxy_pass AUTHELIA_URL/api/authz/auth-request;
    proxy_set_header X-Original-Method $request_method;
    proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header Content-Length "";
    proxy_set_header Connection "";
    proxy_pass_request_body off;
}

location / {
    auth_request /internal/authelia/authz;
    auth_request_set $user $upstream_http_remote_user;
    auth_request_set $groups $upstream_http_remote_groups;
    auth_request_set $name $upstream_http_remote_name;
    auth_request_set $email $upstream_http_remote_email;
    proxy_set_header Remote-User $user;
    proxy_set_header Remote-Groups $groups;
    proxy_set_header Remote-Name $name;
    proxy_set_header Remote-Email $email;
    auth_request_set $redirection_url $upstream_http_location;
    error_page 401 =302 $redirection_url;
    include conf.d/include/proxy.conf;
}
"""


# --------------------------------------------------------------------------------------------------
# Local servers: backends that report what reached them, and a fake Authelia
# --------------------------------------------------------------------------------------------------

class Recorder:
    """A threaded HTTP server on 127.0.0.1 that keeps every request it got."""

    def __init__(self, name: str, handler: type) -> None:
        self.name = name
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (handler,), {"recorder": self}))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def last(self) -> dict:
        assert self.requests, f"{self.name} got no request"
        return self.requests[-1]

    def clear(self) -> None:
        self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder

    def log_message(self, format, *args):
        return

    def record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": self.path, "headers": list(self.headers.items()), "body": body,
                 "peer": self.client_address[0]}
        self.recorder.requests.append(entry)
        return entry

    def header(self, entry: dict, name: str) -> list[str]:
        return [v for k, v in entry["headers"] if k.lower() == name.lower()]

    def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class BackendHandler(RecordingHandler):
    """/ws: websocket-ish echo (101, then every byte back) when asked to upgrade, else 400; /stream: a chunked
    answer; /eof: an answer ended by closing the connection; /status/N: status N; anything else: 200 JSON."""

    def handle_any(self):
        entry = self.record()
        name = self.recorder.name
        if self.path.startswith("/ws"):
            if (self.headers.get("Upgrade") or "").lower() != "websocket":
                self.answer(400, b"websocket upgrade expected\n")
                return
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.wfile.write(data)
            self.close_connection = True
            return
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Backend", name)
            self.end_headers()
            for part in (b"first ", b"second ", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/eof":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True
            return
        m = re.match(r"^/status/(\d+)", self.path)
        status = int(m[1]) if m else 200
        body = json.dumps({"backend": name, "method": entry["method"], "path": entry["path"],
                           "body_sha256": hashlib.sha256(entry["body"]).hexdigest(),
                           "body_len": len(entry["body"])}).encode()
        self.answer(status, body, {"Content-Type": "application/json", "X-Backend": name,
                                   "Server": "backend/1.0"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class AuthHandler(RecordingHandler):
    """Authelia's /api/authz/auth-request as the contract describes it, by the authelia_session cookie: alice ->
    200 with Remote-*; mallory -> 403; broken -> 500; none -> 401 with the portal's Location."""

    def handle_any(self):
        entry = self.record()
        cookies = dict(part.strip().split("=", 1) for part in (self.headers.get("Cookie") or "").split(";")
                       if "=" in part)
        session = cookies.get("authelia_session")
        if session == "alice":
            self.answer(200, b"", {"Remote-User": "alice", "Remote-Groups": "admins,dev",
                                   "Remote-Name": "Alice Example", "Remote-Email": "alice@example.test"})
        elif session == "mallory":
            self.answer(403, b"forbidden")
        elif session == "broken":
            self.answer(500, b"oops")
        else:
            original = self.header(entry, "X-Original-URL")
            method = self.header(entry, "X-Original-Method")
            location = "https://auth.example.test/?rd=%s&rm=%s" % (quote(original[0] if original else "", safe=""),
                                                                   method[0] if method else "")
            self.answer(401, b"unauthorized", {"Location": location})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


@pytest.fixture(scope="module")
def backends():
    servers = {name: Recorder(name, BackendHandler) for name in ("alpha", "beta", "gamma", "delta")}
    servers["auth"] = Recorder("auth", AuthHandler)
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(autouse=True)
def fresh_backends(backends):
    for server in backends.values():
        server.clear()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# --------------------------------------------------------------------------------------------------
# The edge process and its database
# --------------------------------------------------------------------------------------------------

class EdgeProcess:
    def __init__(self, proc: subprocess.Popen, http_port: int, https_port: int, state: Path, log: Path) -> None:
        self.proc, self.http_port, self.https_port, self.state, self.log_path = proc, http_port, https_port, state, log

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-days", "2", "-nodes", "-x509",
                    "-subj", "/O=Nginx Proxy Manager/OU=Dummy Certificate/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    acme = tmp / "acme" / ".well-known" / "acme-challenge"
    acme.mkdir(parents=True)
    (acme / "test-challenge").write_text("Success")
    state = tmp / "database.json"
    log = tmp / "edge.log"
    env = {**os.environ, "NPM_EDGE_BIND": "127.0.0.1", "NPM_EDGE_HTTP_PORT": "0", "NPM_EDGE_HTTPS_PORT": "0",
           "NPM_EDGE_STATE_FILE": str(state), "NPM_EDGE_CERT": str(cert), "NPM_EDGE_KEY": str(key),
           "NPM_EDGE_ACME_ROOT": str(tmp / "acme"), "NPM_EDGE_PROXY_TIMEOUT": "5", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as errors:
        proc = subprocess.Popen([sys.executable, str(EDGE)], env=env, stdout=subprocess.PIPE, stderr=errors,
                                text=True)
    line = proc.stdout.readline()
    m = re.search(r"http on [\d.]+:(\d+), https on [\d.]+:(\d+)", line)
    assert m, f"edge did not start: {line!r}\n{log.read_text()}"
    yield EdgeProcess(proc, int(m[1]), int(m[2]), state, log)
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


class Db:
    """A state as the fake NPM API writes it (its methods make the rows, save_state writes the file)."""

    def __init__(self, path: Path) -> None:
        self.fake = FakeNpm(version="2.13.5", initial_admin=("ops@example.test", "admin-" + secrets.token_hex(6)))
        self.fake.state_file = str(path)
        self.admin = next(iter(self.fake.users.values()))

    def host(self, names: list[str], port: int, **fields) -> dict:
        return self.fake.add_proxy_host(names, forward_host=fields.pop("forward_host", "127.0.0.1"),
                                        forward_port=port, **fields)

    def cert(self, names: list[str]) -> int:
        return self.fake.add_certificate(names)["id"]

    def acl(self, name: str, users=(), clients=(), satisfy_any=False, pass_auth=False) -> int:
        return self.fake.create_acl(self.admin, {
            "name": name, "satisfy_any": satisfy_any, "pass_auth": pass_auth,
            "items": [{"username": u, "password": p} for u, p in users],
            "clients": [{"address": a, "directive": d} for d, a in clients]})["id"]

    def save(self) -> None:
        self.fake.save_state()


@pytest.fixture
def db(edge):
    return Db(edge.state)


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {dict(self.headers)} {self.body[:300]!r}>"


def call(edge: EdgeProcess, path: str = "/", host: str = "app.example.test", method: str = "GET",
         headers: dict | None = None, body=None, tls: bool = False, source: str = "127.0.0.1",
         chunked: bool = False) -> Answer:
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", edge.https_port, timeout=20, context=NO_VERIFY,
                                           source_address=(source, 0))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=20, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})}, encode_chunked=chunked)
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def got(backend: Recorder, name: str) -> list[str]:
    return [v for k, v in backend.last["headers"] if k.lower() == name.lower()]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def is_default_page(answer: Answer) -> bool:
    return answer.status == 200 and b"Congratulations" in answer.body


# --------------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------------

def test_unknown_hosts_get_the_default_page_over_http_and_https(edge, db, backends):
    db.host(["app.example.test"], backends["alpha"].port)
    db.save()
    for tls in (False, True):
        answer = call(edge, "/anything", host="nowhere.example.test", tls=tls)
        assert is_default_page(answer), answer
        assert answer.headers["Server"] == "openresty"
    assert call(edge, "/", host="nowhere.example.test", method="HEAD").status == 200
    assert backends["alpha"].requests == []


def test_routes_by_host_header_with_npm_wildcards_as_nginx_ranks_them(edge, db, backends):
    db.host(["app.example.test"], backends["alpha"].port)
    db.host(["*.example.test"], backends["beta"].port)
    db.host([".deep.example.test"], backends["gamma"].port)
    db.host(["www.example.*"], backends["delta"].port)
    db.save()
    expected = {
        "APP.Example.Test:8080": "alpha",  # exact, case and port ignored
        "app.example.test.": "alpha",  # trailing dot
        "other.example.test": "beta",  # *.example.test
        "a.b.example.test": "beta",
        "deep.example.test": "gamma",  # .deep.example.test matches the bare name too ...
        "x.deep.example.test": "gamma",  # ... and, longer than *.example.test, wins over it
        "www.example.org": "delta",  # www.example.*
        "www.example.test": "beta",  # a leading wildcard outranks a trailing one
    }
    for host, backend in expected.items():
        answer = call(edge, "/", host=host)
        assert answer.status == 200 and answer.headers["X-Backend"] == backend, (host, answer)
    assert is_default_page(call(edge, "/", host="example.test"))  # *.example.test needs a label in front


def test_disabled_hosts_are_not_served_but_a_put_enabled_false_leaves_the_site_live(edge, db, backends):
    disabled = db.host(["off.example.test"], backends["alpha"].port)
    put_off = db.host(["put-off.example.test"], backends["beta"].port)
    db.fake.enable_host(disabled["id"], False)  # POST /disable
    db.fake.update_host(db.admin, put_off["id"], {"enabled": False})  # BRIEF: the site stays live
    db.save()
    assert is_default_page(call(edge, "/", host="off.example.test"))
    answer = call(edge, "/", host="put-off.example.test")
    assert answer.status == 200 and answer.headers["X-Backend"] == "beta", answer
    # A state without the fake's "live" list falls back to the enabled flags.
    data = json.loads(edge.state.read_text())
    del data["live"]
    edge.state.write_text(json.dumps(data))
    assert is_default_page(call(edge, "/", host="put-off.example.test"))


def test_hosts_without_certificate_are_not_on_443(edge, db, backends):
    db.host(["plain.example.test"], backends["alpha"].port)
    db.host(["tls.example.test"], backends["beta"].port, certificate_id=db.cert(["tls.example.test"]))
    db.save()
    assert call(edge, "/", host="plain.example.test").headers["X-Backend"] == "alpha"
    assert is_default_page(call(edge, "/", host="plain.example.test", tls=True))
    assert call(edge, "/", host="tls.example.test", tls=True).headers["X-Backend"] == "beta"
    assert call(edge, "/", host="tls.example.test").headers["X-Backend"] == "beta"


def test_an_unreachable_or_unresolvable_upstream_is_a_502(edge, db):
    db.host(["down.example.test"], closed_port())
    db.host(["nxdomain.example.test"], 80, forward_host="no-such-host.invalid")
    db.save()
    for host in ("down.example.test", "nxdomain.example.test"):
        answer = call(edge, "/x", host=host)
        assert answer.status == 502 and b"<h1>502 Bad Gateway</h1>" in answer.body, answer
        assert answer.headers["Server"] == "openresty" and "X-Served-By" not in answer.headers
    assert "connect() to 127.0.0.1" in edge.log() and "could not be resolved" in edge.log()


def test_the_state_file_is_reread_when_it_changes(edge, db, backends):
    db.host(["app.example.test"], backends["alpha"].port)
    db.save()
    assert call(edge).headers["X-Backend"] == "alpha"
    row = next(iter(db.fake.proxy_hosts.values()))
    db.fake.update_host(db.admin, row["id"], {"forward_port": backends["beta"].port})  # size unchanged
    db.save()
    assert call(edge).headers["X-Backend"] == "beta"
    edge.state.write_text("{ not json")  # a broken file keeps the last good configuration
    assert call(edge).headers["X-Backend"] == "beta"
    assert "not loaded" in edge.log()
    edge.state.unlink()
    assert is_default_page(call(edge))
    db.save()
    assert call(edge).headers["X-Backend"] == "beta"


# --------------------------------------------------------------------------------------------------
# Proxying: headers, methods, bodies, websockets
# --------------------------------------------------------------------------------------------------

def test_proxy_headers_method_and_raw_uri_are_those_of_npm_proxy_conf(edge, db, backends):
    alpha = backends["alpha"]
    db.host(["app.example.test"], alpha.port, certificate_id=db.cert(["app.example.test"]))
    db.save()
    answer = call(edge, "/a%2Fb/../c?x=1&y=%20z", host="App.Example.test:8080", method="PATCH", body=b"{}",
                  headers={"X-Forwarded-For": "198.51.100.9", "X-Real-IP": "203.0.113.5", "X-Custom": "kept",
                           "Upgrade": "h2c", "Connection": "Upgrade, keep-alive", "Cookie": "a=1"})
    assert answer.status == 200, answer
    assert answer.json()["method"] == "PATCH" and answer.json()["path"] == "/a%2Fb/../c?x=1&y=%20z"
    assert got(alpha, "Host") == ["app.example.test"]  # $host: lower case, no port
    assert got(alpha, "X-Forwarded-For") == ["198.51.100.9, 127.0.0.1"]  # $proxy_add_x_forwarded_for
    assert got(alpha, "X-Real-IP") == ["127.0.0.1"]  # 127.0.0.1 is not a set_real_ip_from network
    assert got(alpha, "X-Forwarded-Proto") == ["http"] and got(alpha, "X-Forwarded-Scheme") == ["http"]
    assert got(alpha, "X-Custom") == ["kept"] and got(alpha, "Cookie") == ["a=1"]
    assert got(alpha, "Upgrade") == [] and got(alpha, "Connection") == ["close"]
    # The answer: nginx's Server and Date, X-Served-By from proxy.conf's add_header, the upstream's Server hidden.
    assert answer.headers["Server"] == "openresty" and answer.headers["X-Served-By"] == "app.example.test"
    assert answer.headers["Date"] and answer.headers["Content-Type"] == "application/json"

    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        assert call(edge, "/m", method=method, body=b"x" * 10).json()["method"] == method
    head = call(edge, "/h", method="HEAD")
    assert head.status == 200 and head.body == b"" and alpha.last["method"] == "HEAD"

    tls = call(edge, "/secure", tls=True)
    assert tls.status == 200 and got(alpha, "X-Forwarded-Proto") == ["https"]


def test_bodies_are_streamed_both_ways(edge, db, backends):
    alpha = backends["alpha"]
    db.host(["app.example.test"], alpha.port)
    db.save()
    big = os.urandom(3 * 1024 * 1024)
    answer = call(edge, "/upload", method="POST", body=big)
    assert answer.json()["body_len"] == len(big)
    assert answer.json()["body_sha256"] == hashlib.sha256(big).hexdigest()
    # A chunked request body reaches the upstream with a Content-Length (nginx buffers it).
    parts = [b"alpha-", b"beta-", b"gamma"]
    answer = call(edge, "/chunked", method="PUT", body=iter(parts), chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
    assert answer.json()["body_len"] == len(b"".join(parts)), answer
    assert got(alpha, "Content-Length") == [str(len(b"".join(parts)))] and got(alpha, "Transfer-Encoding") == []
    # A chunked answer and one ended by closing the connection come through whole.
    stream = call(edge, "/stream")
    assert stream.status == 200 and stream.body == b"first second third"
    assert stream.headers["Transfer-Encoding"] == "chunked"
    assert call(edge, "/eof").body == b"until the end"
    # Keep-alive: two requests on one client connection.
    conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=10)
    try:
        for path in ("/one", "/two"):
            conn.request("GET", path, headers={"Host": "app.example.test"})
            assert conn.getresponse().read() and alpha.last["path"] == path
    finally:
        conn.close()


def websocket_exchange(edge: EdgeProcess, host: str, message: bytes) -> tuple[bytes, bytes]:
    """The handshake answer's status line and what came back after sending MESSAGE."""
    with socket.create_connection(("127.0.0.1", edge.http_port), timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     % host.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _sep, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            return status, rest
        sock.sendall(message)
        while len(rest) < len(message):
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        return status, rest


def test_websocket_upgrade_only_with_allow_websocket_upgrade(edge, db, backends):
    db.host(["ws.example.test"], backends["alpha"].port, allow_websocket_upgrade=True)
    db.host(["nows.example.test"], backends["beta"].port)
    db.save()
    status, echoed = websocket_exchange(edge, "ws.example.test", b"\x81\x85hello-frame")
    assert status == b"HTTP/1.1 101 Switching Protocols" and echoed == b"\x81\x85hello-frame"
    assert got(backends["alpha"], "Upgrade") == ["websocket"] and got(backends["alpha"], "Connection") == ["Upgrade"]
    status, _rest = websocket_exchange(edge, "nows.example.test", b"x")
    assert status.startswith(b"HTTP/1.1 400"), status
    assert got(backends["beta"], "Upgrade") == []


# --------------------------------------------------------------------------------------------------
# Forced SSL, HSTS, exploits
# --------------------------------------------------------------------------------------------------

def test_forced_ssl_redirects_http_to_https_as_force_ssl_conf(edge, db, backends):
    db.host(["secure.example.test"], backends["alpha"].port, certificate_id=db.cert(["secure.example.test"]),
            ssl_forced=True)
    db.save()
    for method in ("GET", "POST"):
        answer = call(edge, "/p/q?x=1&y=2", host="Secure.Example.test:8080", method=method, body=b"data")
        assert answer.status == 301, answer
        assert answer.headers["Location"] == "https://secure.example.test/p/q?x=1&y=2"
        assert b"<h1>301 Moved Permanently</h1>" in answer.body
    assert backends["alpha"].requests == []
    # The ACME test file is exempt (and a Let's Encrypt host serves the challenge directory).
    acme = call(edge, "/.well-known/acme-challenge/test-challenge", host="secure.example.test")
    assert acme.status == 200 and acme.body == b"Success"
    assert call(edge, "/.well-known/acme-challenge/missing", host="secure.example.test").status == 301
    assert call(edge, "/", host="secure.example.test", tls=True).headers["X-Backend"] == "alpha"


def test_forced_ssl_needs_a_certificate_and_trust_forwarded_proto_skips_it(edge, db, backends):
    db.host(["nocert.example.test"], backends["alpha"].port)
    db.host(["trusted.example.test"], backends["beta"].port, certificate_id=db.cert(["trusted.example.test"]),
            ssl_forced=True, trust_forwarded_proto=True)
    db.save()
    # A row that says ssl_forced without a certificate (the API cleans that, a hand-made state may not).
    data = json.loads(edge.state.read_text())
    next(h for h in data["proxy_hosts"] if h["domain_names"] == ["nocert.example.test"])["ssl_forced"] = True
    edge.state.write_text(json.dumps(data))
    assert call(edge, "/", host="nocert.example.test").status == 200
    assert call(edge, "/", host="trusted.example.test").status == 301
    answer = call(edge, "/", host="trusted.example.test", headers={"X-Forwarded-Proto": "https"})
    assert answer.status == 200 and got(backends["beta"], "X-Forwarded-Proto") == ["https"]


def test_hsts_header_on_https_answers_only_as_hsts_conf(edge, db, backends):
    db.host(["hsts.example.test"], backends["alpha"].port, certificate_id=db.cert(["hsts.example.test"]),
            ssl_forced=True, hsts_enabled=True)
    db.host(["sub.example.test"], backends["beta"].port, certificate_id=db.cert(["sub.example.test"]),
            ssl_forced=True, hsts_enabled=True, hsts_subdomains=True)
    db.host(["nohsts.example.test"], backends["gamma"].port, certificate_id=db.cert(["nohsts.example.test"]),
            ssl_forced=True)
    db.host(["gone.example.test"], closed_port(), certificate_id=db.cert(["gone.example.test"]),
            ssl_forced=True, hsts_enabled=True)
    db.save()
    answer = call(edge, "/", host="hsts.example.test", tls=True)
    assert answer.status == 200 and answer.headers.get_all("Strict-Transport-Security") == [
        "max-age=63072000; preload"]
    answer = call(edge, "/", host="sub.example.test", tls=True)
    assert answer.headers["Strict-Transport-Security"] == "max-age=63072000;includeSubDomains; preload"
    assert "Strict-Transport-Security" not in call(edge, "/", host="nohsts.example.test", tls=True).headers
    redirect = call(edge, "/", host="hsts.example.test")
    assert redirect.status == 301 and "Strict-Transport-Security" not in redirect.headers  # HTTP: never
    failed = call(edge, "/", host="gone.example.test", tls=True)  # "always": error answers too
    assert failed.status == 502 and failed.headers["Strict-Transport-Security"] == "max-age=63072000; preload"


def test_block_exploits_rules_answer_403(edge, db, backends):
    db.host(["guarded.example.test"], backends["alpha"].port, block_exploits=True)
    db.host(["open.example.test"], backends["beta"].port)
    db.save()
    bad = ["/?id=1+union+select+concat(1)", "/?page=../../etc/passwd", "/?u=http://evil.example/x",
           "/?q=%3Cscript%3Ealert(1)%3C/script%3E", "/?GLOBALS[x]=1", "/?a=base64_decode(x)", "/?buy=viagra"]
    for path in bad:
        assert call(edge, path, host="guarded.example.test").status == 403, path
        assert call(edge, path, host="open.example.test").status == 200, path
    assert call(edge, "/", host="guarded.example.test", headers={"User-Agent": "libwww-perl/6.0"}).status == 403
    assert call(edge, "/?page=2&sort=name", host="guarded.example.test").status == 200
    assert [r["path"] for r in backends["alpha"].requests] == ["/?page=2&sort=name"]


def test_client_max_body_size_from_the_advanced_config(edge, db, backends):
    db.host(["small.example.test"], backends["alpha"].port, advanced_config="client_max_body_size 1k;")
    db.save()
    assert call(edge, "/", host="small.example.test", method="POST", body=b"x" * 1024).status == 200
    answer = call(edge, "/", host="small.example.test", method="POST", body=b"x" * 1025)
    assert answer.status == 413 and len(backends["alpha"].requests) == 1


# --------------------------------------------------------------------------------------------------
# Access lists
# --------------------------------------------------------------------------------------------------

def test_access_list_satisfy_all_needs_an_allowed_client_and_a_user(edge, db, backends):
    alpha = backends["alpha"]
    acl = db.acl("staff", users=[("alice", USER_PASSWORD)], clients=[("allow", "127.0.0.1")])
    db.host(["staff.example.test"], alpha.port, access_list_id=acl)
    db.save()
    answer = call(edge, "/", host="staff.example.test")
    assert answer.status == 401 and answer.headers["WWW-Authenticate"] == 'Basic realm="Authorization required"'
    assert call(edge, "/", host="staff.example.test",
                headers={"Authorization": basic("alice", "wrong")}).status == 401
    ok = call(edge, "/", host="staff.example.test", headers={"Authorization": basic("alice", USER_PASSWORD)})
    assert ok.status == 200 and got(alpha, "Authorization") == []  # pass_auth off: not passed on
    # Another client address (127.0.0.2 is local too): denied by "deny all" even with the right password.
    denied = call(edge, "/", host="staff.example.test", source="127.0.0.2",
                  headers={"Authorization": basic("alice", USER_PASSWORD)})
    assert denied.status == 403
    assert len(alpha.requests) == 1


def test_access_list_satisfy_any_and_pass_auth(edge, db, backends):
    alpha = backends["alpha"]
    acl = db.acl("any", users=[("alice", USER_PASSWORD)], clients=[("allow", "127.0.0.1/32")], satisfy_any=True,
                 pass_auth=True)
    db.host(["any.example.test"], alpha.port, access_list_id=acl)
    db.save()
    assert call(edge, "/", host="any.example.test").status == 200  # the client rule suffices
    answer = call(edge, "/", host="any.example.test", source="127.0.0.2")
    assert answer.status == 401 and "WWW-Authenticate" in answer.headers  # 401 wins over the rules' 403
    ok = call(edge, "/", host="any.example.test", source="127.0.0.2",
              headers={"Authorization": basic("alice", USER_PASSWORD)})
    assert ok.status == 200 and got(alpha, "Authorization") == [basic("alice", USER_PASSWORD)]


def test_access_list_rules_only_and_a_missing_list(edge, db, backends):
    acl = db.acl("lan", clients=[("deny", "127.0.0.2"), ("allow", "all")])
    db.host(["rules.example.test"], backends["alpha"].port, access_list_id=acl)
    db.host(["dangling.example.test"], backends["beta"].port, access_list_id=999)
    db.save()
    assert call(edge, "/", host="rules.example.test").status == 200
    assert call(edge, "/", host="rules.example.test", source="127.0.0.2").status == 403
    assert call(edge, "/", host="dangling.example.test").status == 403
    assert backends["beta"].requests == []
    assert "access list 999 does not exist" in edge.log()


# --------------------------------------------------------------------------------------------------
# advanced_config: Authelia's auth_request snippet, custom locations
# --------------------------------------------------------------------------------------------------

def authelia_snippets(port: int) -> list[str]:
    """The contract's text, and (when it is importable) what the collection's filter renders."""
    url = f"http://127.0.0.1:{port}"
    texts = [AUTHELIA_SNIPPET.replace("AUTHELIA_URL", url)]
    try:
        from ansible_collections.selfhosted.platform.plugins.filter import authelia
    except ImportError:
        return texts
    rendered = getattr(authelia, "npm_authelia_snippet", None)
    if rendered is not None:
        texts.append(rendered(url))
    return texts


@pytest.mark.parametrize("variant", [0, 1])
def test_auth_request_snippet_2xx_401_403_and_errors(edge, db, backends, variant):
    alpha, auth = backends["alpha"], backends["auth"]
    snippets = authelia_snippets(auth.port)
    if variant >= len(snippets):
        pytest.skip("the collection's npm_authelia_snippet filter is not there")
    deny_all = db.acl("nobody", clients=[("deny", "all")])
    db.host(["protected.example.test"], alpha.port, advanced_config="client_max_body_size 50m;\n" + snippets[variant],
            certificate_id=db.cert(["protected.example.test"]), ssl_forced=True, hsts_enabled=True,
            access_list_id=deny_all, allow_websocket_upgrade=True)
    db.host(["authdown.example.test"], alpha.port,
            advanced_config=AUTHELIA_SNIPPET.replace("AUTHELIA_URL", f"http://127.0.0.1:{closed_port()}"))
    db.save()
    host = "protected.example.test"
    port = edge.https_port

    # No session: the auth answer's Location as a 302; the subrequest is a GET without body, as the snippet says.
    answer = call(edge, "/private/page?x=1", host=f"{host}:{port}", tls=True, method="POST", body=b"secret-body")
    original = f"https://{host}:{port}/private/page?x=1"
    assert answer.status == 302, answer
    assert answer.headers["Location"] == f"https://auth.example.test/?rd={quote(original, safe='')}&rm=POST"
    request = auth.last
    assert request["method"] == "GET" and request["path"] == "/api/authz/auth-request" and request["body"] == b""
    headers = {k.lower(): v for k, v in request["headers"]}
    assert headers["x-original-method"] == "POST" and headers["x-original-url"] == original
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["host"] == f"127.0.0.1:{auth.port}"
    assert "content-length" not in headers and "connection" not in headers
    assert alpha.requests == []

    # A session: the request goes through with the Remote-* headers of the auth answer (a client's are replaced).
    answer = call(edge, "/app?y=2", host=host, tls=True, method="POST", body=b"payload",
                  headers={"Cookie": "authelia_session=alice", "Remote-User": "evil"})
    assert answer.status == 200 and answer.json()["body_len"] == len(b"payload"), answer
    assert alpha.last["path"] == "/app?y=2"
    assert got(alpha, "Remote-User") == ["alice"] and got(alpha, "Remote-Groups") == ["admins,dev"]
    assert got(alpha, "Remote-Name") == ["Alice Example"] and got(alpha, "Remote-Email") == ["alice@example.test"]
    assert got(alpha, "Cookie") == ["authelia_session=alice"] and got(alpha, "X-Forwarded-Proto") == ["https"]
    assert {k.lower(): v for k, v in auth.last["headers"]}["cookie"] == "authelia_session=alice"
    # nginx's inheritance, as NPM's nginx has it: the snippet's location / has its own add_header (proxy.conf's
    # X-Served-By) so the server's HSTS header is not sent, and the host's access list is not applied there.
    assert answer.headers["X-Served-By"] == host and "Strict-Transport-Security" not in answer.headers
    # ... and its proxy_set_header lines replace the server's websocket ones: no Upgrade reaches the upstream.
    upgrade = {"Cookie": "authelia_session=alice", "Upgrade": "websocket", "Connection": "Upgrade"}
    call(edge, "/ws", host=host, tls=True, headers=upgrade)
    assert got(alpha, "Upgrade") == [] and got(alpha, "Connection") == ["close"]

    assert call(edge, "/", host=host, tls=True, headers={"Cookie": "authelia_session=mallory"}).status == 403
    assert call(edge, "/", host=host, tls=True, headers={"Cookie": "authelia_session=broken"}).status == 500
    # Forced SSL is server-level: it still redirects before any auth request.
    before = len(auth.requests)
    assert call(edge, "/", host=host).status == 301 and len(auth.requests) == before
    # The internal location cannot be requested from outside.
    assert call(edge, "/internal/authelia/authz", host=host, tls=True).status == 404
    # The auth server down: 500.
    assert call(edge, "/", host="authdown.example.test", headers={"Cookie": "authelia_session=alice"}).status == 500
    assert len(alpha.requests) == 2


def test_an_advanced_config_of_another_shape_serves_the_host_without_auth_and_warns(edge, db, backends):
    odd = "location / {\n    if ($http_x_test) { return 403; }\n    auth_request /auth;\n}\n"
    row = db.host(["odd.example.test"], backends["alpha"].port, advanced_config=odd)
    db.host(["unknownvar.example.test"], backends["beta"].port,
            advanced_config="location / {\n    proxy_set_header X-A $no_such_variable;\n"
                            "    include conf.d/include/proxy.conf;\n}\n")
    db.save()
    answer = call(edge, "/", host="odd.example.test", headers={"X-Test": "1"})
    assert answer.status == 200 and answer.headers["X-Backend"] == "alpha"
    assert call(edge, "/", host="unknownvar.example.test").headers["X-Backend"] == "beta"
    log = edge.log()
    assert re.search(r"\[warn\] proxy host %d \(odd.example.test\): advanced_config \w+ is not emulated "
                     r"\(.if \{ \.\.\. \}. inside a location is not emulated\)" % row["id"], log), log
    assert 'unknown variable "$no_such_variable"' in log


def test_custom_locations_forward_their_paths_elsewhere(edge, db, backends):
    alpha, beta, gamma = backends["alpha"], backends["beta"], backends["gamma"]
    db.host(["paths.example.test"], alpha.port, locations=[
        {"path": "/api", "forward_scheme": "http", "forward_host": "127.0.0.1", "forward_port": beta.port,
         "forward_path": "/v1"},
        {"path": "/files", "forward_scheme": "http", "forward_host": "127.0.0.1/base/dir",
         "forward_port": gamma.port},
        {"path": "/plain/", "forward_scheme": "http", "forward_host": "127.0.0.1", "forward_port": gamma.port}])
    db.save()
    answer = call(edge, "/api/items?x=1", host="paths.example.test", headers={"X-Forwarded-For": "192.0.2.1"})
    assert answer.headers["X-Backend"] == "beta" and beta.last["path"] == "/v1/items?x=1"
    assert got(beta, "X-Forwarded-For") == ["127.0.0.1"]  # _location.conf: $remote_addr, not appended
    assert "X-Served-By" not in answer.headers  # no proxy.conf there
    assert call(edge, "/files/a.txt", host="paths.example.test").headers["X-Backend"] == "gamma"
    assert gamma.last["path"] == "/base/dir/a.txt"
    assert call(edge, "/plain/x?y=1", host="paths.example.test").headers["X-Backend"] == "gamma"
    assert gamma.last["path"] == "/plain/x?y=1"
    answer = call(edge, "/other", host="paths.example.test")
    assert answer.headers["X-Backend"] == "alpha" and answer.headers["X-Served-By"] == "paths.example.test"
