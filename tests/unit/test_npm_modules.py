"""Unit tests for the NPM modules' logic (plugins/module_utils/npm_*.py): the client (token cache, re-login,
versions, errors) and npm_proxy_host, npm_proxy_hosts, npm_certificate, npm_access_list and npm_admin run with
AnsibleModule faked (tests/unit/fake_module.py) against the fake NPM server in-process."""

from __future__ import annotations

import io
import os
import stat
import subprocess

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import npm_access_list as acl_mod
from ansible_collections.selfhosted.platform.plugins.module_utils import npm_admin as admin_mod
from ansible_collections.selfhosted.platform.plugins.module_utils import npm_api as api
from ansible_collections.selfhosted.platform.plugins.module_utils import npm_certificate as cert_mod
from ansible_collections.selfhosted.platform.plugins.module_utils import npm_proxy_host as ph

from tests.fakes.npm_api import FakeNpm
from tests.unit.fake_module import Exit, Fail, FakeModule
from tests.unit.test_npm_fake import self_signed

ADMIN = ("ops@example.test", "s3cret-admin-pw")


class Module(FakeModule):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


@pytest.fixture
def fake():
    server = FakeNpm(version="2.13.5", initial_admin=ADMIN, issue_delay=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "tokens")


def conn(fake, cache, **kw):
    p = {"url": fake.url, "username": ADMIN[0], "password": ADMIN[1], "validate_certs": True, "timeout": 10,
         "token_cache": True, "token_cache_dir": cache}
    p.update(kw)
    return p


def host_params(fake, cache, domains, **kw):
    p = conn(fake, cache)
    p.update({k: v.get("default") for k, v in ph.HOST_SPEC.items()})
    p.update(domain_names=domains, certificate_timeout=30)
    p.update(kw)
    return p


def execute(logic, params, check=False, diff=True, factory=None):
    module = Module(params, check_mode=check, diff=diff)
    with pytest.raises((Exit, Fail)) as info:
        api.run(module, logic, client_factory=factory)
    result = dict(info.value.result, failed=isinstance(info.value, Fail), warnings=module.warnings)
    return result


def proxy(fake, cache, domains, check=False, **kw):
    return execute(ph.run_proxy_host, host_params(fake, cache, domains, **kw), check=check)


def bulk(fake, cache, hosts, check=False, **kw):
    full = []
    for item in hosts:
        entry = {k: v.get("default") for k, v in ph.HOST_SPEC.items()}
        entry.update(item)
        full.append(entry)
    p = conn(fake, cache, hosts=full, purge=False, certificate_timeout=30)
    p.update(kw)
    return execute(ph.run_proxy_hosts, p, check=check)


# ---------------------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------------------

def test_versions_expiry_and_templates():
    assert api.parse_version({"major": 2, "minor": 13, "revision": 5}) == (2, 13, 5)
    assert api.parse_version("v2.12.6") == (2, 12, 6) and api.parse_version("x") is None
    assert api.parse_expiry("1970-01-02T00:00:00.000Z") == 86400 and api.parse_expiry(None) is None
    assert api.template("/api/nginx/proxy-hosts/12/enable") == "/api/nginx/proxy-hosts/{id}/enable"
    assert api.option_of("data/forward_port must be <= 65535") == "forward_port"
    assert api.option_of("data/certificate_id must match") == "certificate"
    for url, opt in (("ftp://x", "url"), ("", "url")):
        with pytest.raises(api.NpmError) as info:
            api.NpmClient(url, "a@b.c", "pw")
        assert info.value.msg.startswith(opt + ":")


def test_token_is_cached_in_a_private_file_and_reused(fake, cache):
    first = api.NpmClient(fake.url, *ADMIN, cache_dir=cache)
    first.proxy_hosts()
    assert first.token_source == "login" and first.counts["POST /api/tokens"] == 1
    files = os.listdir(cache)
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(cache, files[0])).st_mode) == 0o600
    with open(os.path.join(cache, files[0])) as handle:
        assert ADMIN[1] not in handle.read()
    fake.reset_counts()
    second = api.NpmClient(fake.url + "/api/", *ADMIN, cache_dir=cache)
    second.proxy_hosts()
    assert second.token_source == "cache" and fake.count("POST", "/api/tokens") == 0


def test_expired_or_revoked_token_logs_in_again_once(fake, cache):
    api.NpmClient(fake.url, *ADMIN, cache_dir=cache).proxy_hosts()
    fake.expire_tokens()  # the cache still believes the token is valid
    fake.reset_counts()
    client = api.NpmClient(fake.url, *ADMIN, cache_dir=cache)
    assert client.proxy_hosts() == []
    assert fake.count("POST", "/api/tokens") == 1 and fake.count("GET", "/api/nginx/proxy-hosts") == 2


def test_a_cache_directory_open_to_others_is_not_used(fake, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    client = api.NpmClient(fake.url, *ADMIN, cache_dir=str(shared))
    client.proxy_hosts()
    assert os.listdir(shared) == []


def test_wrong_credentials_name_the_options_and_hint_at_setup(cache):
    with FakeNpm(version="2.13.5") as fresh:
        with pytest.raises(api.NpmError) as info:
            api.NpmClient(fresh.url, *ADMIN, cache_dir=cache).proxy_hosts()
        assert info.value.msg.startswith("username/password: NPM refused the login")
        assert "has no user yet" in info.value.msg and "npm_admin" in info.value.msg


# ---------------------------------------------------------------------------------------------
# npm_proxy_host
# ---------------------------------------------------------------------------------------------

def test_create_then_nothing_flaps(fake, cache):
    args = {"forward_host": "shop", "forward_port": 8080, "block_exploits": True, "ssl_forced": True,
            "hsts_enabled": True, "allow_websocket_upgrade": True, "advanced_config": "client_max_body_size 10m;\n",
            "locations": [{"path": "/api", "forward_scheme": "http", "forward_host": "api", "forward_port": 5001,
                           "forward_path": "", "advanced_config": ""}]}
    res = proxy(fake, cache, ["WWW.Shop.example.test", "shop.example.test"], **args)
    assert res["changed"] and res["action"] == "create" and not res["failed"], res
    assert res["proxy_host"]["domain_names"] == ["shop.example.test", "www.shop.example.test"]
    assert any("ssl_forced: NPM turns it off" in w for w in res["warnings"])
    fake.reset_counts()
    again = proxy(fake, cache, ["shop.example.test", "www.shop.example.test"], **args)
    assert again["changed"] is False and again["changes"] == [] and again["action"] == "unchanged"
    assert again["requests"] == 2 and fake.total_requests == 2 and fake.mutations() == []


def test_check_mode_diff_shows_the_exact_field_changes(fake, cache):
    proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=8080, block_exploits=True)
    fake.reset_counts()
    res = proxy(fake, cache, ["a.example.test"], check=True, forward_host="app", forward_port=8081,
                block_exploits=False, caching_enabled=True)
    assert res["changes"] == ["forward_port: 8080 -> 8081", "block_exploits: true -> false",
                              "caching_enabled: false -> true"]
    assert res["diff"]["before"] == {"domain_names": ["a.example.test"], "forward_host": "app", "forward_port": 8080,
                                     "block_exploits": True, "caching_enabled": False, "enabled": True}
    assert res["diff"]["after"]["forward_port"] == 8081 and fake.mutations() == []
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=8081)
    assert res["changes"] == ["forward_port: 8080 -> 8081"] and fake.mutations() == ["PUT /api/nginx/proxy-hosts/1"]
    assert fake.proxy_hosts[1]["block_exploits"] is True  # omitted fields are left alone


def test_int_booleans_and_null_locations_do_not_flap(cache):
    with FakeNpm(version="2.12.6", int_booleans=True) as old:
        args = {"username": "admin@example.com", "password": "changeme", "forward_host": "app", "forward_port": 80,
                "block_exploits": True, "locations": []}
        assert proxy(old, cache, ["a.example.test"], **args)["changed"]
        res = proxy(old, cache, ["a.example.test"], **args)
        assert res["changed"] is False, res["changes"]


def test_validation_fails_before_any_request(fake, cache):
    fake.reset_counts()
    cases = [(["bad host.example.test"], {}, "domain_names[0]:"),
             (["a.example.test"], {"forward_port": 70000, "forward_host": "x"}, "forward_port:"),
             (["a.example.test"], {"forward_port": 80, "forward_host": "two words"}, "forward_host:"),
             (["a.example.test"], {"certificate": "sometimes"}, "certificate:"),
             (["a.example.test"], {"certificate": {"match": "a b"}}, "certificate.match:"),
             (["a.example.test"], {"locations": [{"path": "/x", "forward_host": "b", "forward_port": 0}]},
              "locations[0].forward_port:"),
             (["a.example.test"], {"new_certificate": {"dns_provider": "cloudflare"}},
              "new_certificate.dns_credentials:")]
    for domains, kw, opt in cases:
        res = proxy(fake, cache, domains, **kw)
        assert res["failed"] and res["msg"].startswith(opt), (kw, res["msg"])
    assert fake.total_requests == 0


def test_create_needs_upstream_and_overlaps_are_named(fake, cache):
    res = proxy(fake, cache, ["a.example.test"], forward_port=80)
    assert res["failed"] and res["msg"].startswith("forward_host: required to create")
    fake.add_proxy_host(["a.example.test", "b.example.test"])
    res = proxy(fake, cache, ["b.example.test"], forward_host="x", forward_port=80)
    assert res["failed"] and res["msg"].startswith("domain_names: b.example.test already belongs to proxy host #1")
    assert fake.mutations() == []


def test_server_side_duplicate_is_explained(fake, cache, monkeypatch):
    proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80)
    # another client adds the name between our read and our write
    monkeypatch.setattr(ph.Reconciler, "find", lambda self, spec: (None, []))
    res = proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80)
    assert res["failed"] and res["msg"].startswith("domain_names: NPM refused a.example.test: a.example.test is "
                                                   "already in use")


def test_certificate_by_id_match_and_none(fake, cache):
    wild = fake.add_certificate(["*.example.test"])
    res = proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80, certificate={"match": None},
                ssl_forced=True, http2_support=True)
    assert res["proxy_host"]["certificate_id"] == wild["id"] and res["proxy_host"]["ssl_forced"] is True
    fake.reset_counts()
    again = proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80, certificate={"match": None},
                  ssl_forced=True, http2_support=True)
    assert again["changed"] is False and fake.count("GET", "/api/nginx/certificates") == 0
    res = proxy(fake, cache, ["a.example.test"], certificate=999)
    assert res["failed"] and res["msg"] == "certificate: NPM has no certificate with id 999"
    res = proxy(fake, cache, ["b.example.test"], forward_host="x", forward_port=80,
                certificate={"match": "b.other.test"})
    assert res["failed"] and "no NPM certificate covers b.other.test" in res["msg"]
    res = proxy(fake, cache, ["a.example.test"], certificate="none", ssl_forced=True)
    assert res["changes"] == ["certificate: 1 -> 0", "ssl_forced: true -> false", "http2_support: true -> false"]
    assert proxy(fake, cache, ["a.example.test"], certificate="none", ssl_forced=True)["changed"] is False


def test_new_certificate_requested_once_with_ssl_restored(fake, cache):
    args = {"forward_host": "x", "forward_port": 80, "certificate": "new", "ssl_forced": True, "http2_support": True,
            "hsts_enabled": True}
    res = proxy(fake, cache, ["shop.example.test"], **args)
    assert not res["failed"] and res["proxy_host"]["certificate_id"] > 0
    assert res["proxy_host"]["ssl_forced"] and res["proxy_host"]["http2_support"] and res["proxy_host"]["hsts_enabled"]
    assert res["request_counts"]["PUT /api/nginx/proxy-hosts/{id}"] == 1  # NPM dropped the SSL flags: put back
    fake.reset_counts()
    again = proxy(fake, cache, ["shop.example.test"], **args)
    assert again["changed"] is False and fake.mutations() == [] and len(fake.certificates) == 1


def test_failed_new_certificate_leaves_no_half_created_host(fake, cache):
    res = proxy(fake, cache, ["shop.invalid"], forward_host="x", forward_port=80, certificate="new")
    assert res["failed"] and res["msg"].startswith("certificate: NPM could not obtain a Let's Encrypt certificate")
    assert "half-created proxy host" in res["msg"] and res["changed"] is False
    assert fake.hosts_with("shop.invalid") == [] and fake.certificates == {}
    # on an existing host, the host stays as it was and the failed certificate row goes
    proxy(fake, cache, ["later.invalid"], forward_host="x", forward_port=80)
    res = proxy(fake, cache, ["later.invalid"], certificate="new")
    assert res["failed"] and fake.hosts_with("later.invalid")[0]["certificate_id"] == 0 and fake.certificates == {}


def test_new_certificate_on_2_12_needs_the_email(cache):
    with FakeNpm(version="2.12.6", issue_delay=0) as old:
        creds = {"username": "admin@example.com", "password": "changeme"}
        res = proxy(old, cache, ["a.example.test"], forward_host="x", forward_port=80, certificate="new", **creds)
        assert res["failed"] and res["msg"].startswith("new_certificate.email:") and old.mutations() == []
        res = proxy(old, cache, ["a.example.test"], forward_host="x", forward_port=80, certificate="new",
                    new_certificate={"email": "ops@example.test"}, **creds)
        assert not res["failed"] and res["proxy_host"]["certificate_id"] == 1


def test_access_list_by_name_locations_and_states(fake, cache):
    fake.access_lists[1] = {"id": 1, "name": "staff", "satisfy_any": False, "pass_auth": False, "items": [],
                            "clients": [], "meta": {}, "owner_user_id": 1, "created_on": "", "modified_on": ""}
    res = proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80, access_list="staff")
    assert res["proxy_host"]["access_list_id"] == 1
    res = proxy(fake, cache, ["a.example.test"], access_list="nobody")
    assert res["failed"] and res["msg"].startswith("access_list: NPM has no access list named 'nobody'")
    res = proxy(fake, cache, ["a.example.test"], state="disabled")
    assert res["changes"] == ["disable"] and 1 not in fake.live_host_ids()
    assert proxy(fake, cache, ["a.example.test"], state="disabled")["changed"] is False
    assert proxy(fake, cache, ["a.example.test"], state="enabled")["changes"] == ["enable"]
    res = proxy(fake, cache, ["a.example.test"], state="absent")
    assert res["changes"] == ["proxy host a.example.test (delete)"] and not fake.proxy_hosts
    assert proxy(fake, cache, ["a.example.test"], state="absent")["changed"] is False


def test_trust_forwarded_proto_by_version(fake, cache):
    res = proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80, trust_forwarded_proto=True)
    assert res["failed"] and res["msg"].startswith("trust_forwarded_proto: needs Nginx Proxy Manager 2.14")
    assert not proxy(fake, cache, ["a.example.test"], forward_host="x", forward_port=80,
                     trust_forwarded_proto=False)["failed"]
    with FakeNpm(version="2.14.1", initial_admin=ADMIN) as new:
        assert proxy(new, cache, ["a.example.test"], forward_host="x", forward_port=80,
                     trust_forwarded_proto=True)["proxy_host"]["trust_forwarded_proto"] is True
        assert proxy(new, cache, ["a.example.test"], trust_forwarded_proto=True)["changed"] is False


# ---------------------------------------------------------------------------------------------
# npm_proxy_hosts
# ---------------------------------------------------------------------------------------------

def sites(count):
    return [{"domain_names": ["site%02d.example.test" % i], "forward_host": "app%02d" % i, "forward_port": 3000,
             "block_exploits": True, "certificate": {"match": None}, "ssl_forced": True, "access_list": "staff"}
            for i in range(count)]


def noop_cost(count, cache):
    with FakeNpm(version="2.13.5", initial_admin=ADMIN, issue_delay=0) as fake:
        fake.add_certificate(["*.example.test"])
        fake.access_lists[1] = {"id": 1, "name": "staff", "satisfy_any": False, "pass_auth": False, "items": [],
                                "clients": [], "meta": {}, "owner_user_id": 1, "created_on": "", "modified_on": ""}
        first = bulk(fake, cache, sites(count))
        assert first["summary"]["create"] == count and not first["failed"], first
        fake.reset_counts()
        again = bulk(fake, cache + "-cold", sites(count))  # a fresh cache: the no-op includes its login
        assert again["changed"] is False and fake.mutations() == []
        return fake.total_requests, dict(fake.counts)


def test_bulk_noop_costs_a_constant_number_of_requests(cache):
    small, counts = noop_cost(5, cache + "-5")
    large, counts = noop_cost(21, cache + "-21")
    assert small == large == 3, counts
    assert counts == {"GET /api/": 1, "POST /api/tokens": 1, "GET /api/nginx/proxy-hosts": 1}


def test_bulk_changes_purge_and_conflicts(fake, cache):
    fake.add_certificate(["*.example.test"])
    fake.access_lists[1] = {"id": 1, "name": "staff", "satisfy_any": False, "pass_auth": False, "items": [],
                            "clients": [], "meta": {}, "owner_user_id": 1, "created_on": "", "modified_on": ""}
    bulk(fake, cache, sites(3))
    fake.add_proxy_host(["stray.example.test", "site09.example.test"])
    fake.reset_counts()
    declared = sites(3)
    declared[1]["forward_port"] = 3001
    declared.append({"domain_names": ["site09.example.test"], "forward_host": "nine", "forward_port": 80})
    res = bulk(fake, cache, declared, check=True)
    assert res["failed"] and "site09.example.test already belongs to proxy host #4" in res["msg"]
    res = bulk(fake, cache, declared, check=True, purge=True)
    assert [h["action"] for h in res["hosts"]] == ["unchanged", "update", "unchanged", "create", "delete"]
    assert res["hosts"][1]["changes"] == ["forward_port: 3000 -> 3001"] and fake.mutations() == []
    assert len(res["diff"]) == 3
    res = bulk(fake, cache, declared, purge=True)
    assert res["summary"] == {"create": 1, "update": 1, "enable": 0, "disable": 0, "delete": 1, "unchanged": 2}
    assert fake.hosts_with("stray.example.test") == []
    assert fake.hosts_with("site09.example.test")[0]["forward_host"] == "nine"
    assert bulk(fake, cache, declared, purge=True)["changed"] is False
    dup = [{"domain_names": ["x.example.test"]}, {"domain_names": ["X.example.test", "y.example.test"]}]
    res = bulk(fake, cache, dup)
    assert res["failed"] and res["msg"] == "hosts[1].domain_names: x.example.test is also declared in hosts[0]"


# ---------------------------------------------------------------------------------------------
# npm_certificate
# ---------------------------------------------------------------------------------------------

def cert_params(fake, cache, **kw):
    p = conn(fake, cache, timeout=60)
    p.update(state="present", provider="letsencrypt", domain_names=None, nice_name=None, dns_provider=None,
             dns_credentials=None, propagation_seconds=None, letsencrypt_email=None, certificate=None,
             certificate_key=None, intermediate_certificate=None, force=False)
    p.update(kw)
    return p


def test_letsencrypt_http_dns_and_failure(fake, cache):
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, domain_names=["b.example.test", "a.example.test"]))
    assert res["changed"] and res["certificate"]["domain_names"] == ["a.example.test", "b.example.test"]
    fake.reset_counts()
    again = execute(cert_mod.run_certificate, cert_params(fake, cache, domain_names=["a.example.test",
                                                                                     "b.example.test"]))
    assert again["changed"] is False and fake.mutations() == [] and again["requests"] == 2
    dns = cert_params(fake, cache, domain_names=["*.example.test"], dns_provider="cloudflare",
                      dns_credentials="dns_cloudflare_api_token = tok", propagation_seconds=10)
    res = execute(cert_mod.run_certificate, dns)
    assert res["certificate"]["dns_provider"] == "cloudflare"
    assert fake.certificates[res["certificate"]["id"]]["meta"]["propagation_seconds"] == 10
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, domain_names=["shop.invalid"]))
    assert res["failed"] and res["msg"].startswith("domain_names: Let's Encrypt did not issue a certificate")
    assert "no valid A records found for shop.invalid" in res["msg"]  # NPM deleted the failed row itself
    assert not [c for c in fake.certificates.values() if c["domain_names"] == ["shop.invalid"]]


def test_letsencrypt_email_by_generation(fake, cache):
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, domain_names=["a.example.test"],
                                                        letsencrypt_email="ops@example.test"))
    assert not res["failed"] and "letsencrypt_email: not sent" in res["warnings"][0]
    with FakeNpm(version="2.12.6", issue_delay=0) as old:
        creds = {"username": "admin@example.com", "password": "changeme"}
        res = execute(cert_mod.run_certificate, cert_params(old, cache, domain_names=["a.example.test"], **creds))
        assert res["failed"] and res["msg"].startswith("letsencrypt_email:")
        res = execute(cert_mod.run_certificate, cert_params(old, cache, domain_names=["a.example.test"],
                                                            letsencrypt_email="ops@example.test", **creds))
        assert not res["failed"] and res["changed"]


def test_custom_certificate_upload_compare_and_absent(fake, cache):
    cert, key = self_signed("intranet.example.test")
    args = {"provider": "custom", "nice_name": "intranet", "certificate": cert, "certificate_key": key}
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, **args))
    assert res["changed"] and res["certificate"]["domain_names"] == ["intranet.example.test"]
    assert res["certificate"]["certificate_key"] == "(set)" and key not in repr(res)
    assert execute(cert_mod.run_certificate, cert_params(fake, cache, **args))["changed"] is False
    cert2, key2 = self_signed("intranet.example.test")
    changed = {**args, "certificate": cert2, "certificate_key": key2}
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, **changed), check=True)
    assert res["changes"] == ["certificate (changed)", "certificate_key (changed)"] and key2 not in repr(res)
    bad = execute(cert_mod.run_certificate, cert_params(fake, cache, provider="custom", nice_name="other",
                                                        certificate=cert, certificate_key="nope"))
    assert bad["failed"] and bad["msg"].startswith("certificate_key:")
    cid = res["certificate"]["id"]
    fake.add_proxy_host(["intranet.example.test"], certificate_id=cid)
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, state="absent", provider="custom",
                                                        nice_name="intranet"))
    assert res["failed"] and "is used by proxy host(s) #1" in res["msg"]
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, state="absent", provider="custom",
                                                        nice_name="intranet", force=True))
    assert res["changed"] and cid not in fake.certificates


# ---------------------------------------------------------------------------------------------
# npm_access_list
# ---------------------------------------------------------------------------------------------

def acl_params(fake, cache, **kw):
    p = conn(fake, cache)
    p.update(name="staff", state="present", satisfy_any=None, pass_auth=None, users=None, clients=None,
             update_password="on_create")
    p.update(kw)
    return p


def test_access_list_passwords_are_not_reset(fake, cache):
    users = [{"username": "alice", "password": "wonderland"}, {"username": "bob", "password": "builder"}]
    clients = [{"address": "198.51.100.0/24", "directive": "allow"}, {"address": "all", "directive": "deny"}]
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=users, clients=clients, satisfy_any=True))
    assert res["changed"] and res["access_list"]["users"] == {"alice": "(set)", "bob": "(set)"}
    fake.reset_counts()
    again = execute(acl_mod.run_access_list, acl_params(fake, cache, users=users, clients=clients, satisfy_any=True))
    assert again["changed"] is False and fake.mutations() == []
    rotated = [{"username": "alice", "password": "looking-glass"}, {"username": "carol", "password": "c4rol"}]
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=rotated), check=True)
    assert res["changes"] == ["users.carol (added)", "users.bob (removed)"]  # on_create: alice untouched
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=rotated, update_password="on_change"))
    assert res["changes"] == ["users.alice (password)", "users.carol (added)", "users.bob (removed)"]
    assert "looking-glass" not in repr(res) and "wonderland" not in repr(res)
    stored = {i["username"]: i["password"] for i in fake.access_lists[1]["items"]}
    assert stored == {"alice": "looking-glass", "carol": "c4rol"}
    assert fake.access_lists[1]["satisfy_any"] is True  # left alone: sent back with the name
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=rotated, update_password="on_change"))
    assert res["changed"] is False
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=rotated, update_password="always"))
    assert res["changes"] == ["users.alice (password)", "users.carol (password)"]
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, users=[{"username": "dave", "password": None}]))
    assert res["failed"] and res["msg"] == "users[0].password: required for the new user dave"
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, clients=list(reversed(clients))))
    assert res["changes"] == ["clients (2 -> 2 rules)"]
    assert [c["address"] for c in fake.access_lists[1]["clients"]] == ["all", "198.51.100.0/24"]
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, clients=[{"address": "300.1.1.1/99",
                                                                             "directive": "allow"}]))
    assert res["failed"] and res["msg"].startswith("clients[0].address:")
    res = execute(acl_mod.run_access_list, acl_params(fake, cache, state="absent"))
    assert res["changed"] and not fake.access_lists


def test_access_list_hint():
    assert acl_mod.hint("wonderland") == "w*********" and acl_mod.hint("") == "********"


# ---------------------------------------------------------------------------------------------
# npm_admin
# ---------------------------------------------------------------------------------------------

def admin_params(fake, cache, **kw):
    p = {"url": fake.url, "email": ADMIN[0], "password": ADMIN[1], "name": None, "nickname": None,
         "default_email": "admin@example.com", "default_password": "changeme", "validate_certs": True,
         "timeout": 10, "token_cache": True, "token_cache_dir": cache}
    p.update(kw)
    return p


def admin(fake, cache, check=False, **kw):
    return execute(admin_mod.run_admin, admin_params(fake, cache, **kw), check=check,
                   factory=admin_mod.make_admin_client)


def test_admin_first_user_on_2_13(cache):
    with FakeNpm(version="2.13.5") as fresh:
        res = admin(fresh, cache, check=True)
        assert res["changed"] and res["method"] == "first_user" and not fresh.users
        res = admin(fresh, cache, name="Platform Ops")
        assert res["changed"] and res["user"]["roles"] == ["admin"] and res["setup_before"] is False
        assert fresh.users[1]["name"] == "Platform Ops"
        res = admin(fresh, cache, name="Platform Ops")
        assert res["changed"] is False and res["method"] == "login"
        assert admin(fresh, cache, nickname="ops")["changes"] == ["nickname: 'Admin' -> 'ops'"]
        # the cached token serves the next modules
        fresh.reset_counts()
        assert not proxy(fresh, cache, ["a.example.test"], forward_host="x", forward_port=80)["failed"]
        assert fresh.count("POST", "/api/tokens") == 0


def test_admin_changes_the_2_12_default_account(cache):
    with FakeNpm(version="2.12.6") as old:
        res = admin(old, cache, check=True)
        assert res["changed"] and res["method"] == "default_admin" and old.users[1]["email"] == "admin@example.com"
        res = admin(old, cache)
        assert res["changed"] and old.users[1]["email"] == ADMIN[0] and old.users[1]["password"] == ADMIN[1]
        assert admin(old, cache)["changed"] is False
        res = admin(old, cache, password="another-password")
        assert res["failed"] and res["msg"].startswith("password: NPM 2.12.6 refused the declared credentials")
        res = admin(old, cache, password="changeme", email="admin@example.com")
        assert res["failed"] and "well-known default" in res["msg"]


# ---------------------------------------------------------------------------------------------
# Issue 16: auth on NPM >= 2.13, two-factor accounts, hosts nginx rejects, certificate reuse
# ---------------------------------------------------------------------------------------------

RFC6238_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of the ASCII "12345678901234567890"


@pytest.mark.parametrize("at, code", [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                                      (1234567890, "89005924"), (2000000000, "69279037"),
                                      (20000000000, "65353130")])
def test_totp_matches_the_rfc_6238_sha1_vectors(at, code):
    assert api.totp(RFC6238_SECRET, at=at, digits=8) == code
    assert api.totp(RFC6238_SECRET, at=at) == code[-6:]  # the 6 digits authenticator apps show
    assert api.totp(RFC6238_SECRET.lower()[:16] + " " + RFC6238_SECRET.lower()[16:], at=at) == code[-6:]


def test_totp_secret_that_is_not_base32_names_the_option():
    with pytest.raises(api.NpmError) as info:
        api.totp("not base32 !", at=0)
    assert info.value.msg.startswith("totp_secret:")


def test_expired_token_answered_400_logs_in_again_once(fake, cache):
    api.NpmClient(fake.url, *ADMIN, cache_dir=cache).proxy_hosts()
    fake.expire_tokens()  # 2.13+: 400 "Token has expired", no 401
    fake.reset_counts()
    client = api.NpmClient(fake.url, *ADMIN, cache_dir=cache)
    assert client.proxy_hosts() == [] and client.token_source == "login"
    assert fake.count("POST", "/api/tokens") == 1


def test_token_of_a_reinstalled_npm_answered_500_logs_in_again_once(fake, cache):
    api.NpmClient(fake.url, *ADMIN, cache_dir=cache).proxy_hosts()
    fake.rotate_keys()  # new /data/keys.json: the cached token is 500 "Internal Error"
    fake.reset_counts()
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80)
    assert not res["failed"] and res["changed"], res
    assert fake.count("POST", "/api/tokens") == 1 and len(fake.proxy_hosts) == 1
    # a 500 that is not about the token is not retried (a failed certbot run is not requested twice)
    fake.reset_counts()
    res = proxy(fake, cache, ["b.invalid"], forward_host="app", forward_port=80, certificate="new")
    assert res["failed"] and fake.count("POST", "/api/tokens") == 0
    assert fake.count("POST", "/api/nginx/proxy-hosts") == 1


def test_a_changed_password_is_not_hidden_by_the_cached_token(fake, cache):
    assert not proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80)["failed"]
    fake.users[1]["password"] = "rotated-by-hand"  # the password changed in NPM, the vault was not updated
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80,
                password="the-old-vault-password")
    assert res["failed"] and res["msg"].startswith("username/password: NPM refused the login"), res
    assert "Invalid email or password" in res["msg"] and "the-old-vault-password" not in repr(res)
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80, password="rotated-by-hand")
    assert not res["failed"] and res["changed"] is False


def test_two_factor_account_logs_in_with_totp_secret(cache):
    secret = "JBSWY3DPEHPK3PXP"
    with FakeNpm(version="2.14.1", initial_admin=ADMIN, issue_delay=0) as fake:
        fake.set_totp(ADMIN[0], secret)
        res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80)
        assert res["failed"] and res["msg"].startswith("totp_secret:") and "two-factor" in res["msg"], res
        res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80,
                    totp_secret="KRSXG5CTMVRXEZLU")  # another secret: the code is refused
        assert res["failed"] and res["msg"].startswith("totp_secret:") and "HTTP 400" in res["msg"], res
        fake.reset_counts()
        res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80, totp_secret=secret)
        assert not res["failed"] and res["changed"], res
        assert fake.count("POST", "/api/tokens") == 1 and fake.count("POST", "/api/tokens/2fa") == 1
        assert secret not in repr(res)


def test_a_host_nginx_rejects_fails_naming_it_and_is_resaved_until_it_is_online(fake, cache):
    bad = "client_max_body_size 10m;\nproxy_buffering offf_typo;\nbogus_directive on;\n"
    res = proxy(fake, cache, ["Shop.example.test"], forward_host="shop", forward_port=80, advanced_config=bad)
    assert res["failed"] and res["changed"] is True, res
    assert "shop.example.test" in res["msg"] and 'unknown directive "bogus_directive"' in res["msg"]
    assert not fake.live_host_ids()
    # nothing changed in the declaration: the host is still offline, which is drift: re-saved, still rejected
    fake.reset_counts()
    res = proxy(fake, cache, ["shop.example.test"], forward_host="shop", forward_port=80, advanced_config=bad)
    assert res["failed"] and 'unknown directive "bogus_directive"' in res["msg"]
    assert fake.mutations() == ["PUT /api/nginx/proxy-hosts/1"]
    res = proxy(fake, cache, ["shop.example.test"], check=True)
    assert res["changed"] and any("nginx_online" in c for c in res["changes"]) and not res["failed"]
    good = "client_max_body_size 10m;\n"
    res = proxy(fake, cache, ["shop.example.test"], forward_host="shop", forward_port=80, advanced_config=good)
    assert not res["failed"] and res["changed"] and fake.live_host_ids() == {1}
    assert proxy(fake, cache, ["shop.example.test"], advanced_config=good)["changed"] is False


def test_an_offline_host_is_resaved_when_what_nginx_needed_is_back(fake, cache):
    fake.unresolvable_hosts.add("api-internal")
    loc = [{"path": "/api", "forward_scheme": "http", "forward_host": "api-internal", "forward_port": 5001,
            "forward_path": "", "advanced_config": ""}]
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80, locations=loc)
    assert res["failed"] and 'host not found in upstream "api-internal"' in res["msg"]
    assert "a.example.test" in res["msg"]
    fake.unresolvable_hosts.clear()  # the upstream container is up now
    res = proxy(fake, cache, ["a.example.test"], forward_host="app", forward_port=80, locations=loc)
    assert not res["failed"] and res["changed"] and res["action"] == "update", res
    assert fake.live_host_ids() == {1}


def test_bulk_applies_every_host_and_fails_naming_the_rejected_ones(fake, cache):
    hosts = [{"domain_names": ["good.example.test"], "forward_host": "app", "forward_port": 80},
             {"domain_names": ["bad.example.test"], "forward_host": "app", "forward_port": 80,
              "advanced_config": "bogus_directive on;"},
             {"domain_names": ["later.example.test"], "forward_host": "app", "forward_port": 80}]
    res = bulk(fake, cache, hosts)
    assert res["failed"] and res["changed"] and "bad.example.test" in res["msg"] and "bogus_directive" in res["msg"]
    assert "good.example.test" not in res["msg"]
    assert sorted(d for h in fake.proxy_hosts.values() for d in h["domain_names"]) == [
        "bad.example.test", "good.example.test", "later.example.test"]
    assert len(fake.live_host_ids()) == 2
    hosts[1]["advanced_config"] = ""
    res = bulk(fake, cache, hosts)
    assert not res["failed"] and res["summary"]["update"] == 1 and len(fake.live_host_ids()) == 3


def test_a_custom_certificate_whose_key_does_not_match_is_not_uploaded(fake, cache):
    cert = self_signed("intranet.example.test")[0]
    other_key = self_signed("intranet.example.test")[1]
    fake.reset_counts()
    res = execute(cert_mod.run_certificate, cert_params(fake, cache, provider="custom", nice_name="intranet",
                                                        certificate=cert, certificate_key=other_key))
    assert res["failed"] and res["msg"].startswith("certificate_key:"), res
    assert "intranet" in res["msg"] and "does not match" in res["msg"] and other_key not in repr(res)
    assert fake.mutations() == [] and fake.certificates == {}


def test_key_pair_check_with_openssl_when_cryptography_is_missing(monkeypatch):
    cert, key = self_signed("a.example.test")
    other_key = self_signed("a.example.test")[1]
    monkeypatch.setattr(cert_mod, "HAS_CRYPTOGRAPHY", False)

    def run(args, data=None):  # what AnsibleModule.run_command does with data: the text on stdin
        res = subprocess.run(args, input=data.encode(), capture_output=True, check=False)
        return res.returncode, res.stdout.decode(), res.stderr.decode()

    assert cert_mod.key_matches(cert, key, run) is True
    assert cert_mod.key_matches(cert, other_key, run) is False
    assert cert_mod.key_matches(cert, key) is None  # nothing to tell with: the module warns
    with pytest.raises(api.NpmError) as info:
        cert_mod.key_matches(cert, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", run)
    assert info.value.msg.startswith("certificate_key: openssl cannot read it")


def test_certificate_new_reuses_only_lets_encrypt_by_default(fake, cache):
    custom = fake.add_certificate(["*.example.test"], provider="other", nice_name="self-signed wildcard")
    args = {"forward_host": "app", "forward_port": 80, "certificate": "new"}
    res = proxy(fake, cache, ["a.example.test"], **args)
    assert not res["failed"] and res["proxy_host"]["certificate_id"] not in (0, custom["id"])
    assert fake.certificates[res["proxy_host"]["certificate_id"]]["provider"] == "letsencrypt"
    # an existing Let's Encrypt certificate that covers the host is reused, with a warning naming it
    le = fake.add_certificate(["b.example.test", "c.example.test"])
    res = proxy(fake, cache, ["b.example.test"], **args)
    assert res["proxy_host"]["certificate_id"] == le["id"]
    assert any("#%d" % le["id"] in w and "b.example.test, c.example.test" in w for w in res["warnings"]), res
    # any: the custom wildcard too
    res = proxy(fake, cache, ["d.example.test"], certificate_reuse="any", **args)
    assert res["proxy_host"]["certificate_id"] == custom["id"]
    assert any("self-signed wildcard" in w for w in res["warnings"]), res["warnings"]
    # never: a certificate of its own
    before = set(fake.certificates)
    res = proxy(fake, cache, ["c.example.test"], certificate_reuse="never", **args)
    assert not res["failed"] and res["proxy_host"]["certificate_id"] not in before
    assert proxy(fake, cache, ["c.example.test"], certificate_reuse="never",
                 **args)["changed"] is False


def test_a_token_refused_again_after_the_new_login_is_an_error_not_a_loop(cache):
    calls = []

    def transport(method, url, body, headers, timeout, validate_certs):
        calls.append("%s %s" % (method, url.split("/api", 1)[1].split("?")[0]))
        if url.endswith("/api/tokens"):
            return 200, b'{"token": "t", "expires": "2999-01-01T00:00:00.000Z"}'
        raise api.HTTPError(url, 400, "Bad Request", {}, io.BytesIO(
            b'{"error": {"code": 400, "message": "Token has expired"}}'))

    client = api.NpmClient("http://127.0.0.1:9", *ADMIN, cache_dir=cache, transport=transport)
    with pytest.raises(api.NpmError) as info:
        client.proxy_hosts()
    assert info.value.status == 400 and "Token has expired" in info.value.msg
    assert calls == ["POST /tokens", "GET /nginx/proxy-hosts", "POST /tokens", "GET /nginx/proxy-hosts"]
