"""The fake NPM server (tests/fakes/npm_api.py) reproduces the facts of the real API the modules depend on:
auth and its status codes, both API generations, validation with additionalProperties false, the server's
normalisation, duplicate domains, the non-atomic "new" certificate, enable/disable, certificates and access lists."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request

import pytest

from tests.fakes.npm_api import FakeNpm

ADMIN = ("ops@example.test", "s3cret-admin-pw")


def request(fake, method, path, body=None, token=None, raw=None, ctype="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(fake.url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def login(fake, identity=ADMIN[0], secret=ADMIN[1]):
    status, body = request(fake, "POST", "/api/tokens", {"identity": identity, "secret": secret})
    assert status == 200, body
    return body["token"]


def host(domains, **kw):
    body = {"domain_names": domains, "forward_scheme": "http", "forward_host": "app", "forward_port": 8080}
    body.update(kw)
    return body


@pytest.fixture
def fake():
    server = FakeNpm(version="2.13.5", initial_admin=ADMIN, issue_delay=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def token(fake):
    return login(fake)


def test_health_and_first_user_setup_on_2_13():
    with FakeNpm(version="2.13.5") as fake:
        assert request(fake, "GET", "/api/") == (200, {"status": "OK", "setup": False,
                                                       "version": {"major": 2, "minor": 13, "revision": 5}})
        status, body = request(fake, "POST", "/api/tokens", {"identity": "admin@example.com", "secret": "changeme"})
        assert status == 400 and body == {"error": {"code": 400, "message": "Invalid email or password"}}
        user = {"name": "Ops", "nickname": "ops", "email": ADMIN[0], "auth": {"type": "password", "secret": ADMIN[1]}}
        status, body = request(fake, "POST", "/api/users", user)
        assert status == 201 and body["roles"] == ["admin"] and "password" not in body
        assert request(fake, "GET", "/api/")[1]["setup"] is True
        # the setup endpoint only works once: afterwards a token is needed
        assert request(fake, "POST", "/api/users", dict(user, email="x@example.test"))[0] == 404
        assert login(fake)


def test_2_12_has_the_default_admin_and_no_setup_flag():
    with FakeNpm(version="2.12.6") as fake:
        assert request(fake, "GET", "/api/") == (200, {"status": "OK",
                                                       "version": {"major": 2, "minor": 12, "revision": 6}})
        token = login(fake, "admin@example.com", "changeme")
        status, me = request(fake, "GET", "/api/users/me", token=token)
        assert status == 200 and me["email"] == "admin@example.com"
        assert request(fake, "PUT", "/api/users/me/auth", {"type": "password", "current": "wrong", "secret": "n3w-pw"},
                       token)[0] == 400
        assert request(fake, "PUT", "/api/users/%d/auth" % me["id"],
                       {"type": "password", "current": "changeme", "secret": "n3w-pw"}, token) == (200, True)
        assert request(fake, "PUT", "/api/users/me", {"email": ADMIN[0]}, token)[1]["email"] == ADMIN[0]
        assert login(fake, ADMIN[0], "n3w-pw")


def test_tokens_missing_bad_and_expired(fake, token):
    assert request(fake, "GET", "/api/nginx/proxy-hosts") == (404, {"error": {"code": 404, "message": "Not Found"}})
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token="nope")[0] == 500  # 2.13+: not signed by us
    assert request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": "bad"}) == (
        400, {"error": {"code": 400, "message": "Invalid email or password"}})
    status, body = request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": ADMIN[1]})
    expires = datetime.datetime.fromisoformat(body["expires"].replace("Z", "+00:00"))
    assert status == 200 and body["token"].count(".") == 2
    assert 86000 < (expires - datetime.datetime.now(datetime.UTC)).total_seconds() <= 86400
    assert request(fake, "GET", "/api/tokens", token=token)[0] == 200  # refresh
    fake.expire_tokens()
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token=token) == (
        400, {"error": {"code": 400, "message": "Token has expired"}})
    # unauthenticated: the health check and the schema
    assert request(fake, "GET", "/api/schema")[1]["info"]["version"] == "2.13.5"
    assert request(fake, "GET", "/api/nginx/nothing", token=login(fake))[0] == 404


def test_validation_is_strict_and_coerces_like_ajv(fake, token):
    cases = [(dict(host(["a.example.test"]), bogus=1), "data must NOT have additional properties"),
             ({"domain_names": ["a.example.test"], "forward_scheme": "http", "forward_port": 80},
              "data must have required property 'forward_host'"),
             (host(["a.example.test"], forward_port=70000), "data/forward_port must be <= 65535"),
             (host(["a b.example.test"]), 'data/domain_names/0 must match pattern'),
             (host([]), "data/domain_names must NOT have fewer than 1 items"),
             (host(["a.example.test"], forward_scheme="ftp"), "data/forward_scheme must be equal to one of the"),
             (host(["a.example.test"], certificate_id="old"), "data/certificate_id must match a schema in anyOf"),
             (host(["a.example.test"], trust_forwarded_proto=True), "data must NOT have additional properties"),
             (host(["a.example.test"], locations=[{"path": "/x", "forward_host": "b", "forward_port": 1,
                                                   "forward_scheme": "http", "extra": 1}]),
              "data/locations/0 must NOT have additional properties")]
    for body, message in cases:
        status, answer = request(fake, "POST", "/api/nginx/proxy-hosts", body, token)
        assert status == 400 and answer["error"]["message"].startswith(message), (body, answer)
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"], forward_port="8081"), token)
    assert status == 201 and row["forward_port"] == 8081
    assert fake.proxy_hosts == {row["id"]: fake.proxy_hosts[row["id"]]} and len(fake.proxy_hosts) == 1


def test_normalisation_defaults_and_ssl_hsts_cleaning(fake, token):
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts",
                          host(["WWW.Example.test", "example.test"], ssl_forced=True, http2_support=True,
                               hsts_enabled=True, hsts_subdomains=True), token)
    assert status == 201
    assert row["domain_names"] == ["WWW.Example.test", "example.test"]  # as sent, sorted
    assert (row["ssl_forced"], row["http2_support"], row["hsts_enabled"], row["hsts_subdomains"]) == (False,) * 4
    assert row["certificate_id"] == 0 and row["access_list_id"] == 0 and row["advanced_config"] == ""
    assert row["enabled"] is True and row["locations"] is None and "trust_forwarded_proto" not in row
    assert row["meta"] == {}  # the POST answer; nginx's verdict is in the row read back
    assert fake.proxy_hosts[row["id"]]["meta"] == {"nginx_online": True, "nginx_err": None}
    cert = fake.add_certificate(["example.test", "www.example.test"])
    status, row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"],
                          {"certificate_id": cert["id"], "ssl_forced": True, "hsts_enabled": True}, token)
    assert (row["ssl_forced"], row["hsts_enabled"], row["hsts_subdomains"]) == (True, True, False)
    # dropping the certificate alone cleans the rest, merged with the stored row
    status, row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"], {"certificate_id": 0}, token)
    assert (row["ssl_forced"], row["hsts_enabled"]) == (False, False)
    hosts = request(fake, "GET", "/api/nginx/proxy-hosts?expand=certificate,access_list", token=token)[1]
    assert hosts[0]["certificate"] is None and hosts[0]["access_list"] is None
    assert "certificate" not in request(fake, "GET", "/api/nginx/proxy-hosts", token=token)[1][0]


def test_list_is_sorted_by_domains_and_expands_certificates_without_meta(fake, token):
    cert = fake.add_certificate(["b.example.test"], meta={"dns_challenge": False})
    request(fake, "POST", "/api/nginx/proxy-hosts", host(["b.example.test"], certificate_id=cert["id"]), token)
    request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)
    rows = request(fake, "GET", "/api/nginx/proxy-hosts?expand=certificate", token=token)[1]
    assert [r["domain_names"] for r in rows] == [["a.example.test"], ["b.example.test"]]
    assert rows[1]["certificate"]["id"] == cert["id"] and rows[1]["certificate"]["meta"] == {}


def test_duplicate_domains_are_refused_case_insensitively(fake, token):
    first = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)[1]
    assert request(fake, "POST", "/api/nginx/proxy-hosts", host(["x.example.test", "A.example.test"]), token) == (
        400, {"error": {"code": 400, "message": "A.example.test is already in use"}})
    second = request(fake, "POST", "/api/nginx/proxy-hosts", host(["b.example.test"]), token)[1]
    assert request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % second["id"], {"domain_names": ["a.example.test"]},
                   token)[0] == 400
    # a host may keep its own names
    assert request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % first["id"], {"domain_names": ["a.example.test"]},
                   token)[0] == 200


def test_new_certificate_is_not_atomic(fake, token):
    status, body = request(fake, "POST", "/api/nginx/proxy-hosts", host(["shop.invalid"], certificate_id="new"), token)
    assert status == 500 and body == {"error": {"code": 500, "message": "Internal Error"}}
    # the host row stays, without a certificate; the certificate row of the failed request is deleted (v2.15.1)
    left = fake.hosts_with("shop.invalid")
    assert len(left) == 1 and left[0]["certificate_id"] == 0
    assert fake.certificates == {}
    # on PUT the certificate is requested first: the host is unchanged
    status, body = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % left[0]["id"],
                           {"certificate_id": "new", "forward_port": 9999}, token)
    assert status == 500 and fake.hosts_with("shop.invalid")[0]["forward_port"] == 8080


def test_new_certificate_success_drops_ssl_flags_on_create(fake, token):
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts",
                          host(["shop.example.test"], certificate_id="new", ssl_forced=True, http2_support=True), token)
    assert status == 201 and row["certificate_id"] > 0 and row["certificate"]["domain_names"] == ["shop.example.test"]
    # NPM cleans SSL flags while the host has no certificate yet, and the follow-up update keeps them off
    assert row["ssl_forced"] is False and row["http2_support"] is False


def test_enable_disable_and_put_enabled_false(fake, token):
    row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)[1]
    path = "/api/nginx/proxy-hosts/%d" % row["id"]
    assert request(fake, "POST", path + "/enable", token=token) == (
        400, {"error": {"code": 400, "message": "Host is already enabled"}})
    request(fake, "PUT", path, {"enabled": False}, token)
    assert row["id"] in fake.live_host_ids()  # stored as disabled, still served
    request(fake, "PUT", path, {"enabled": True}, token)
    assert request(fake, "POST", path + "/disable", token=token) == (200, True)
    assert row["id"] not in fake.live_host_ids()
    assert request(fake, "POST", path + "/disable", token=token)[1]["error"]["message"] == "Host is already disabled"
    assert request(fake, "POST", path + "/enable", token=token) == (200, True) and row["id"] in fake.live_host_ids()
    assert request(fake, "DELETE", path, token=token) == (200, True)
    assert request(fake, "GET", path, token=token) == (404, {"error": {"code": 404,
                                                                       "message": "Item Not Found - %d" % row["id"]}})


def test_trust_forwarded_proto_exists_from_2_14():
    with FakeNpm(version="2.14.0", initial_admin=ADMIN) as fake:
        token = login(fake)
        status, row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)
        assert status == 201 and row["trust_forwarded_proto"] is False
        row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"], {"trust_forwarded_proto": True}, token)[1]
        assert row["trust_forwarded_proto"] is True


def test_letsencrypt_meta_differs_between_generations():
    with FakeNpm(version="2.12.6", issue_delay=0) as old:
        token = login(old, "admin@example.com", "changeme")
        status, body = request(old, "POST", "/api/nginx/certificates",
                               {"provider": "letsencrypt", "domain_names": ["a.example.test"]}, token)
        assert status == 400 and "letsencrypt_email" in body["error"]["message"]
        status, row = request(old, "POST", "/api/nginx/certificates", {
            "provider": "letsencrypt", "domain_names": ["a.example.test"],
            "meta": {"letsencrypt_email": "ops@example.test", "letsencrypt_agree": True}}, token)
        assert status == 201 and row["nice_name"] == "a.example.test"
    with FakeNpm(version="2.13.5", initial_admin=ADMIN, issue_delay=0) as new:
        token = login(new)
        status, body = request(new, "POST", "/api/nginx/certificates", {
            "provider": "letsencrypt", "domain_names": ["a.example.test"],
            "meta": {"letsencrypt_email": "ops@example.test", "letsencrypt_agree": True}}, token)
        assert status == 400 and body["error"]["message"] == "data/meta must NOT have additional properties"


def test_certificates_letsencrypt_dns_and_failures(fake, token):
    status, row = request(fake, "POST", "/api/nginx/certificates", {
        "provider": "letsencrypt", "domain_names": ["b.example.test", "a.example.test"],
        "meta": {"dns_challenge": True, "dns_provider": "cloudflare", "dns_provider_credentials": "token = x"}}, token)
    assert status == 201 and row["domain_names"] == ["a.example.test", "b.example.test"]
    assert row["nice_name"] == "b.example.test, a.example.test" and row["expires_on"] > row["created_on"]
    assert row["meta"]["letsencrypt_certificate"]["cn"] == "a.example.test"
    status, body = request(fake, "POST", "/api/nginx/certificates", {
        "provider": "letsencrypt", "domain_names": ["c.example.test"],
        "meta": {"dns_challenge": True, "dns_provider": "nosuchdns", "dns_provider_credentials": "x"}}, token)
    assert status == 500 and body["error"]["message"] == "Internal Error" and "nosuchdns" in str(body["debug"])
    status, body = request(fake, "POST", "/api/nginx/certificates",
                           {"provider": "letsencrypt", "domain_names": ["d.invalid"]}, token)
    assert status == 500 and "d.invalid" in body["debug"]["previous"]["message"]
    assert request(fake, "PUT", "/api/nginx/certificates/%d" % row["id"], {}, token)[0] == 404  # no PUT in NPM
    assert request(fake, "DELETE", "/api/nginx/certificates/%d" % row["id"], token=token) == (200, True)


def self_signed(cn, days=30):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def multipart(files):
    boundary = "XbOuNdArY"
    body = b"".join(('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s.pem"\r\n\r\n%s\r\n'
                     % (boundary, k, k, v)).encode() for k, v in files.items()) + ("--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def test_custom_certificate_upload(fake, token):
    cert, key = self_signed("intranet.example.test")
    status, row = request(fake, "POST", "/api/nginx/certificates", {"provider": "other", "nice_name": "intranet"},
                          token)
    assert status == 201 and row["domain_names"] == []
    path = "/api/nginx/certificates/%d/upload" % row["id"]
    body, ctype = multipart({"certificate": cert, "certificate_key": "not a key"})
    assert request(fake, "POST", path, token=token, raw=body, ctype=ctype)[0] == 400
    body, ctype = multipart({"certificate": cert, "certificate_key": key})
    status, answer = request(fake, "POST", path, token=token, raw=body, ctype=ctype)
    assert status == 200 and answer == {"certificate": cert, "certificate_key": key}
    stored = request(fake, "GET", "/api/nginx/certificates", token=token)[1][0]
    assert stored["domain_names"] == ["intranet.example.test"] and stored["meta"]["certificate_key"] == key
    le = fake.add_certificate(["x.example.test"])
    assert request(fake, "POST", "/api/nginx/certificates/%d/upload" % le["id"], token=token, raw=body,
                   ctype=ctype)[1]["error"]["message"] == "Cannot upload certificates for this type of provider"


def test_access_lists_mask_passwords_and_keep_them_on_empty_put(fake, token):
    status, acl = request(fake, "POST", "/api/nginx/access-lists", {
        "name": "staff", "satisfy_any": True, "items": [{"username": "alice", "password": "wonderland"}],
        "clients": [{"address": "198.51.100.0/24", "directive": "allow"}, {"address": "all", "directive": "deny"}]},
        token)
    assert status == 201 and acl["items"][0]["password"] == "" and acl["items"][0]["hint"] == "w*********"
    assert request(fake, "POST", "/api/nginx/access-lists", {"name": "x", "items": [{"username": "a", "password": ""}]},
                   token)[0] == 400
    assert request(fake, "POST", "/api/nginx/access-lists", {
        "name": "x", "clients": [{"address": "not an address", "directive": "allow"}]}, token)[0] == 400
    path = "/api/nginx/access-lists/%d" % acl["id"]
    status, answer = request(fake, "PUT", path, {"name": "staff", "items": [
        {"username": "alice", "password": ""}, {"username": "bob", "password": "builder"}]}, token)
    assert status == 200 and answer["satisfy_any"] is True  # the list after the update
    assert [i["username"] for i in answer["items"]] == ["alice", "bob"]
    stored = fake.access_lists[acl["id"]]
    assert {i["username"]: i["password"] for i in stored["items"]} == {"alice": "wonderland", "bob": "builder"}
    # satisfy_any is ignored without name; users left out are deleted
    request(fake, "PUT", path, {"satisfy_any": False, "items": [{"username": "bob", "password": ""}]}, token)
    assert stored["satisfy_any"] is True and [i["username"] for i in stored["items"]] == ["bob"]
    request(fake, "PUT", path, {"name": "staff", "satisfy_any": False, "clients": []}, token)
    assert stored["satisfy_any"] is False and stored["clients"] == []
    row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"], access_list_id=acl["id"]),
                  token)[1]
    listed = request(fake, "GET", "/api/nginx/access-lists?expand=items,clients", token=token)[1][0]
    assert listed["proxy_host_count"] == 1 and listed["items"][0]["hint"] == "b******"
    assert request(fake, "DELETE", path, token=token) == (200, True)
    assert fake.proxy_hosts[row["id"]]["access_list_id"] == 0


def test_request_counter(fake, token):
    fake.reset_counts()
    request(fake, "GET", "/api/nginx/proxy-hosts?expand=certificate", token=token)
    request(fake, "GET", "/api/nginx/proxy-hosts", token=token)
    request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)
    assert fake.count("GET", "/api/nginx/proxy-hosts") == 2 and fake.total_requests == 3
    assert fake.mutations() == ["POST /api/nginx/proxy-hosts"]
    fake.reset_counts()
    assert fake.total_requests == 0


def test_int_booleans_like_older_releases():
    with FakeNpm(version="2.12.6", int_booleans=True) as fake:
        token = login(fake, "admin@example.com", "changeme")
        row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.example.test"]), token)[1]
        assert row["enabled"] == 1 and row["ssl_forced"] == 0


def test_state_file_keeps_the_database_across_restarts(tmp_path):
    state = tmp_path / "database.json"
    with FakeNpm(version="2.13.5", initial_admin=ADMIN, issue_delay=0, state_file=str(state)) as first:
        token = login(first)
        status, row = request(first, "POST", "/api/nginx/proxy-hosts", host(["kept.example.test"]), token)
        assert status == 201, row
        status, acl = request(first, "POST", "/api/nginx/access-lists",
                              {"name": "staff", "items": [{"username": "alice", "password": "pw-alice"}]}, token)
        assert status == 201, acl
        assert state.is_file()  # written before the answer went out
    # A new server on the same file: no initial admin is seeded over it, the old token still works.
    with FakeNpm(version="2.13.5", issue_delay=0, state_file=str(state)) as second:
        assert request(second, "GET", "/api/")[1]["setup"] is True
        status, hosts = request(second, "GET", "/api/nginx/proxy-hosts", token=token)
        kept = [(h["id"], h["domain_names"]) for h in hosts]
        assert status == 200 and kept == [(row["id"], ["kept.example.test"])]
        assert second.live_host_ids() == {row["id"]}
        status, again = request(second, "POST", "/api/nginx/proxy-hosts", host(["next.example.test"]), login(second))
        assert status == 201 and again["id"] == row["id"] + 1
        assert [a["name"] for a in request(second, "GET", "/api/nginx/access-lists", token=token)[1]] == ["staff"]


def test_cli_reads_version_initial_admin_and_state_file(tmp_path, monkeypatch):
    from tests.fakes import npm_api

    started = {}

    def fake_start(self, port=0, host="127.0.0.1"):
        started.update(fake=self, port=port, host=host)
        raise SystemExit(0)

    monkeypatch.setattr(npm_api.FakeNpm, "start", fake_start)
    monkeypatch.setenv("NPM_FAKE_VERSION", "2.12.6")
    monkeypatch.delenv("INITIAL_ADMIN_EMAIL", raising=False)
    with pytest.raises(SystemExit):
        npm_api.main(["--host", "0.0.0.0", "--port", "81", "--state-file", str(tmp_path / "db.json")])
    fake = started["fake"]
    assert (started["host"], started["port"], fake.version) == ("0.0.0.0", 81, "2.12.6")
    assert [u["email"] for u in fake.users.values()] == ["admin@example.com"]
    assert json.loads((tmp_path / "db.json").read_text())["users"][0]["email"] == "admin@example.com"

    monkeypatch.setenv("NPM_FAKE_VERSION", "2.13.5")
    monkeypatch.setenv("INITIAL_ADMIN_EMAIL", "ops@example.test")
    monkeypatch.setenv("INITIAL_ADMIN_PASSWORD", "initial-pw")
    with pytest.raises(SystemExit):
        npm_api.main(["--port", "0"])
    users = [(u["email"], u["password"]) for u in started["fake"].users.values()]
    assert users == [("ops@example.test", "initial-pw")]


# ---------------------------------------------------------------------------------------------
# Issue 16: what the real v2.15.1 does (BRIEF "Learned on the real servers")
# ---------------------------------------------------------------------------------------------

def totp_code(secret_b32, at, digits=6):
    """RFC 6238 (SHA1, 30 s) written out here so the fake's check is tested against an independent computation."""
    import base64
    import hashlib
    import hmac
    import struct

    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return "%0*d" % (digits, (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits)


def test_auth_failures_are_400_and_500_from_2_13_and_401_before(fake, token):
    assert request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": "bad"}) == (
        400, {"error": {"code": 400, "message": "Invalid email or password"}})
    assert request(fake, "POST", "/api/tokens", {"identity": "nobody@example.test", "secret": "bad"}) == (
        400, {"error": {"code": 400, "message": "Invalid email or password"}})
    fake.expire_tokens()
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token=token) == (
        400, {"error": {"code": 400, "message": "Token has expired"}})
    fresh = login(fake)
    fake.rotate_keys()  # NPM reinstalled: a new /data/keys.json, every earlier token is signed by another key
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token=fresh) == (
        500, {"error": {"code": 500, "message": "Internal Error"}})
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token=login(fake))[0] == 200
    with FakeNpm(version="2.12.6") as old:
        assert request(old, "POST", "/api/tokens", {"identity": "admin@example.com", "secret": "bad"})[0] == 401
        old_token = login(old, "admin@example.com", "changeme")
        old.expire_tokens()
        assert request(old, "GET", "/api/nginx/proxy-hosts", token=old_token)[0] == 401


def test_two_factor_login_needs_the_current_totp_code():
    import time

    secret = "JBSWY3DPEHPK3PXP"
    with FakeNpm(version="2.14.1", initial_admin=ADMIN) as fake:
        fake.set_totp(ADMIN[0], secret)
        status, body = request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": ADMIN[1]})
        assert status == 200 and body["requires_2fa"] is True and body["challenge_token"] and "token" not in body
        challenge = body["challenge_token"]
        now = time.time()
        wrong = "%06d" % ((int(totp_code(secret, now)) + 1) % 10 ** 6)
        status, answer = request(fake, "POST", "/api/tokens/2fa", {"challenge_token": challenge, "code": wrong})
        assert status == 400 and answer["error"]["message"] == "Invalid verification code"
        status, answer = request(fake, "POST", "/api/tokens/2fa", {"challenge_token": "forged", "code": "000000"})
        assert status == 400
        for at in (now, now - 30):  # the current window and the one before
            status, body = request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": ADMIN[1]})
            status, answer = request(fake, "POST", "/api/tokens/2fa",
                                     {"challenge_token": body["challenge_token"], "code": totp_code(secret, at)})
            assert status == 200 and answer["token"], answer
            assert request(fake, "GET", "/api/nginx/proxy-hosts", token=answer["token"])[0] == 200
        # a wrong password never reaches the second factor
        assert request(fake, "POST", "/api/tokens", {"identity": ADMIN[0], "secret": "bad"})[0] == 400


def test_nginx_rejects_a_bad_advanced_config_or_an_unresolvable_location(fake, token):
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts",
                          host(["a.example.test"], advanced_config="proxy_read_timeout 1h;\nbogus_directive on;"),
                          token)
    assert status == 201 and row["meta"] == {}  # the POST answer: meta before nginx was configured
    status, rows = request(fake, "GET", "/api/nginx/proxy-hosts", token=token)
    meta = rows[0]["meta"]
    assert meta["nginx_online"] is False and 'unknown directive "bogus_directive"' in meta["nginx_err"]
    assert row["id"] not in fake.live_host_ids()
    status, row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"],
                          {"advanced_config": "proxy_read_timeout 1h;"}, token)
    assert status == 200 and row["meta"]["nginx_online"] is True and row["meta"]["nginx_err"] is None
    assert row["id"] in fake.live_host_ids()
    location = {"path": "/api", "forward_scheme": "http", "forward_host": "api.nowhere.invalid", "forward_port": 80}
    status, row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"], {"locations": [location]}, token)
    assert status == 200 and row["meta"]["nginx_online"] is False
    assert 'host not found in upstream "api.nowhere.invalid"' in row["meta"]["nginx_err"]
    assert row["id"] not in fake.live_host_ids()
    fake.unresolvable_hosts.add("api-internal")
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts",
                          host(["b.example.test"], locations=[dict(location, forward_host="api-internal")]), token)
    assert status == 201 and fake.proxy_hosts[row["id"]]["meta"]["nginx_online"] is False
    status, row = request(fake, "PUT", "/api/nginx/proxy-hosts/%d" % row["id"],
                          {"advanced_config": "location /x {\n  return 200;\n"}, token)
    assert row["meta"]["nginx_online"] is False and "unexpected end of file" in row["meta"]["nginx_err"]


def test_nginx_rejects_a_certificate_whose_key_does_not_match(fake, token):
    cert = self_signed("intranet.example.test")[0]
    other_key = self_signed("intranet.example.test")[1]
    row = request(fake, "POST", "/api/nginx/certificates", {"provider": "other", "nice_name": "intranet"}, token)[1]
    body, ctype = multipart({"certificate": cert, "certificate_key": other_key})
    assert request(fake, "POST", "/api/nginx/certificates/%d/upload" % row["id"], token=token, raw=body,
                   ctype=ctype)[0] == 200  # NPM only checks that each file reads
    proxy = request(fake, "POST", "/api/nginx/proxy-hosts", host(["intranet.example.test"],
                                                                 certificate_id=row["id"]), token)[1]
    meta = fake.proxy_hosts[proxy["id"]]["meta"]
    assert meta["nginx_online"] is False and "key values mismatch" in meta["nginx_err"]
    assert proxy["id"] not in fake.live_host_ids()


def test_domain_case_is_kept_and_sorted_and_duplicates_are_case_insensitive(fake, token):
    status, row = request(fake, "POST", "/api/nginx/proxy-hosts", host(["b.Example.test", "A.example.test"]), token)
    assert status == 201 and row["domain_names"] == ["A.example.test", "b.Example.test"]
    assert request(fake, "GET", "/api/nginx/proxy-hosts", token=token)[1][0]["domain_names"] == [
        "A.example.test", "b.Example.test"]
    assert request(fake, "POST", "/api/nginx/proxy-hosts", host(["a.EXAMPLE.test"]), token) == (
        400, {"error": {"code": 400, "message": "a.EXAMPLE.test is already in use"}})


def test_access_list_put_answers_the_list_after_the_update(fake, token):
    acl = request(fake, "POST", "/api/nginx/access-lists",
                  {"name": "staff", "items": [{"username": "alice", "password": "wonderland"}]}, token)[1]
    status, answer = request(fake, "PUT", "/api/nginx/access-lists/%d" % acl["id"], {
        "name": "staff", "satisfy_any": True, "items": [{"username": "bob", "password": "builder"}],
        "clients": [{"address": "all", "directive": "deny"}]}, token)
    assert status == 200 and answer["satisfy_any"] is True
    assert [i["username"] for i in answer["items"]] == ["bob"] and answer["items"][0]["password"] == ""
    assert [c["address"] for c in answer["clients"]] == ["all"]


def test_a_failed_letsencrypt_request_is_deleted_by_npm(fake, token):
    status = request(fake, "POST", "/api/nginx/certificates",
                     {"provider": "letsencrypt", "domain_names": ["d.invalid"]}, token)[0]
    assert status == 500 and fake.certificates == {}
