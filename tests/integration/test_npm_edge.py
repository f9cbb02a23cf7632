"""The shp-test/npm stand-in image really proxies: its edge (tests/images/npm/edge.py) on ports 80/443 serves the
proxy hosts declared through its own admin API (port 81) to an shp-test/httpapp backend reached by container name
through Docker's DNS on a shared test network, the way NPM attached to a stack network reaches a service."""

from __future__ import annotations

import http.client
import json
import secrets
import ssl

import pytest

from tests.integration import docker_helpers as dh

pytestmark = pytest.mark.integration

PASSWORD = "it-edge-" + secrets.token_hex(8)
NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname, NO_VERIFY.verify_mode = False, ssl.CERT_NONE


@pytest.fixture
def dk(request):
    session = dh.Session()
    failed_before = request.session.testsfailed
    yield session
    if request.session.testsfailed > failed_before:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        text = session.describe()
        if text and reporter is not None:
            reporter.write_line(f"\n[{request.node.nodeid}] container logs:\n{text}")
    errors = session.cleanup()
    assert not errors, f"cleanup failed: {errors}"


def call(port: int, host: str, path: str = "/", tls: bool = False, method: str = "GET",
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:PORT with Host: HOST, redirects not followed."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=NO_VERIFY)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def api(box: dh.Container, path: str, body: dict | None = None, token: str | None = None,
        method: str = "POST") -> object:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, data = dh.http_json(box.url(81, path), method=method if body is not None else "GET", headers=headers,
                                data=json.dumps(body).encode() if body is not None else None)
    assert status in (200, 201), f"{path}: {status} {data}"
    return data


def test_requests_through_80_and_443_reach_the_backend_by_container_name(dk):
    npm_image, app_image = dh.require_image("npm"), dh.require_image("httpapp")
    net = dk.network()
    app = dk.run(app_image, network=net, env={"APP_NAME": "edge-backend", "APP_VERSION": "7"})
    npm = dk.run(npm_image, network=net, publish=[80, 81, 443], env={"NPM_FAKE_VERSION": "2.13.5"})
    dh.wait_until(lambda: dh.http_json(npm.url(81, "/api/"), timeout=3)[1]["status"] == "OK", 60,
                  what="the NPM API", explain=npm.describe)
    _ignored, http_port = npm.host_port(80)
    _ignored, https_port = npm.host_port(443)

    # The admin (2.13's first-user setup), then the hosts, as any client of the API declares them.
    api(npm, "/api/users", {"name": "Ops", "nickname": "ops", "email": "ops@example.test",
                            "auth": {"type": "password", "secret": PASSWORD}})
    token = api(npm, "/api/tokens", {"identity": "ops@example.test", "secret": PASSWORD})["token"]
    hosts = [
        {"domain_names": ["app.example.test"], "forward_host": app.name, "allow_websocket_upgrade": True},
        {"domain_names": ["secure.example.test"], "forward_host": app.name, "block_exploits": True},
        {"domain_names": ["gone.example.test"], "forward_host": dh.unique_name("missing")},
    ]
    ids = {}
    for host in hosts:
        row = api(npm, "/api/nginx/proxy-hosts", {"forward_scheme": "http", "forward_port": 8080,
                                                  "certificate_id": "new", **host}, token=token)
        ids[host["domain_names"][0]] = row["id"]
    # NPM (and the fake) clean ssl_forced/HSTS away on a create whose certificate is "new" (cleanSslHstsData runs
    # before the certificate exists): they are set once the host has its certificate.
    api(npm, f"/api/nginx/proxy-hosts/{ids['secure.example.test']}", {"ssl_forced": True, "hsts_enabled": True},
        token=token, method="PUT")

    # HTTP and HTTPS reach the backend (its answer is "<APP_NAME> <APP_VERSION>"); the edge picked the hosts up
    # from /data/database.json without a restart. The backend may still be starting: 502 until then.
    dh.wait_until(lambda: call(http_port, "app.example.test")[0] == 200, 60, what="the backend through port 80",
                  explain=lambda: npm.describe() + "\n" + app.describe())
    status, headers, body = call(http_port, "app.example.test", "/?from=http")
    assert (status, body) == (200, b"edge-backend 7\n"), (status, headers, body)
    assert headers["server"] == "openresty" and headers["x-served-by"] == "app.example.test"
    status, headers, body = call(https_port, "app.example.test", "/?from=https", tls=True)
    assert (status, body) == (200, b"edge-backend 7\n"), (status, headers, body)
    status, _headers, body = call(http_port, "app.example.test", "/env/PUBLIC_NOPE")
    assert status == 404 and b"not found" in body  # the backend's own 404, passed on
    # The backend saw the requests, from NPM's address on the shared network.
    npm_ip = json.loads(dh.docker("inspect", npm.name).stdout)[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
    logs = app.logs()
    for query in ("from=http", "from=https"):
        assert f'{npm_ip} "GET /?{query}" 200' in logs, logs

    # A websocket through port 80 (allow_websocket_upgrade): the backend's echo comes back.
    with dh.WebSocket("127.0.0.1", http_port, "/ws", host_header="app.example.test") as ws:
        ws.send_text("through the edge")
        assert ws.recv_text() == "edge-backend: through the edge"

    # Forced SSL with HSTS, exploit blocking; a forward host Docker cannot resolve; an unknown host.
    status, headers, _body = call(http_port, "secure.example.test", "/login?next=1")
    assert status == 301 and headers["location"] == "https://secure.example.test/login?next=1", headers
    status, headers, body = call(https_port, "secure.example.test", "/", tls=True)
    assert status == 200 and body == b"edge-backend 7\n"
    assert headers["strict-transport-security"] == "max-age=63072000; preload"
    assert call(https_port, "secure.example.test", "/?q=union+select+concat(1)", tls=True)[0] == 403
    status, _headers, body = call(http_port, "gone.example.test")
    assert status == 502 and b"502 Bad Gateway" in body
    assert "could not be resolved" in npm.logs()
    status, _headers, body = call(http_port, "unknown.example.test")
    assert status == 200 and b"Congratulations" in body

    # The image's healthcheck still answers.
    assert npm.exec_ok("/usr/bin/check-health").strip() == "OK"


def test_a_host_nginx_refuses_is_not_served_and_npm_proxy_host_fails_naming_it(dk, tmp_path):
    from tests.integration.test_npm import play

    npm_image, app_image = dh.require_image("npm"), dh.require_image("httpapp")
    net = dk.network()
    app = dk.run(app_image, network=net, env={"APP_NAME": "edge-backend", "APP_VERSION": "8"})
    npm = dk.run(npm_image, network=net, publish=[80, 81, 443], env={
        "NPM_FAKE_VERSION": "2.15.1", "INITIAL_ADMIN_EMAIL": "ops@example.test", "INITIAL_ADMIN_PASSWORD": PASSWORD})
    dh.wait_until(lambda: dh.http_json(npm.url(81, "/api/"), timeout=3)[1]["status"] == "OK", 60,
                  what="the NPM API", explain=npm.describe)
    _ignored, http_port = npm.host_port(80)
    args = {"url": npm.url(81, ""), "username": "ops@example.test", "password": PASSWORD,
            "token_cache_dir": str(tmp_path / "tokens"), "domain_names": ["app.example.test"],
            "forward_host": app.name, "forward_port": 8080}
    bad = {"name": "bad", "selfhosted.platform.npm_proxy_host": dict(args, advanced_config="bogus_directive on;")}
    good = {"name": "good", "selfhosted.platform.npm_proxy_host": dict(args, advanced_config="")}

    results, out = play(tmp_path, [bad])
    assert results[0]["failed"] and results[0]["changed"], results[0]
    assert "app.example.test" in results[0]["msg"] and 'unknown directive "bogus_directive"' in results[0]["msg"]
    assert PASSWORD not in out
    # NPM keeps the row but nginx does not serve it: the edge answers with NPM's default page.
    status, _headers, body = call(http_port, "app.example.test")
    assert status == 200 and b"Congratulations" in body, body
    # The next run with the same declaration saves it again and fails again; with the config fixed it is served.
    assert play(tmp_path, [bad])[0][0]["failed"]
    results = play(tmp_path, [good, good])[0]
    assert results[0]["changed"] and not results[0].get("failed"), results[0]
    assert results[1]["changed"] is False, results[1]
    dh.wait_until(lambda: call(http_port, "app.example.test")[2] == b"edge-backend 8\n", 60,
                  what="the backend through port 80", explain=lambda: npm.describe() + "\n" + app.describe())
