"""Unit tests of the Authelia stand-in's logic (tests/images/authelia/authelia.py), without Docker: configuration
validation, AUTHELIA_*_FILE secrets, access-control rule evaluation as Authelia 4.38's authorizer does it, the
AuthRequest decision table and the authn strategies, the users database (argon2, watch) and sessions."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import sys
import time
from email.message import Message

import argon2
import pytest
import yaml

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("authelia_standin", ROOT / "tests/images/authelia/authelia.py")
au = importlib.util.module_from_spec(_spec)
sys.modules["authelia_standin"] = au
_spec.loader.exec_module(au)

DOMAIN = "0kt.example.test"
HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
BASE = {
    "authentication_backend": {"file": {"path": "/config/users_database.yml"}},
    "access_control": {"default_policy": "deny", "rules": [{"domain": f"*.{DOMAIN}", "policy": "one_factor"}]},
    "session": {"cookies": [{"domain": DOMAIN, "authelia_url": f"https://auth.{DOMAIN}"}]},
    "storage": {"encryption_key": "k" * 20, "local": {"path": "/data/db.sqlite3"}},
    "notifier": {"filesystem": {"filename": "/data/notification.txt"}},
    "identity_validation": {"reset_password": {"jwt_secret": "j" * 32}},
}


def config(**changes):
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = doc
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return au.Config(doc)


def errors_of(**changes):
    with pytest.raises(au.ConfigErrors) as info:
        config(**changes)
    return info.value.errors


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------

def test_a_valid_configuration_gets_authelias_defaults():
    cfg = config()
    assert (cfg.host, cfg.port, cfg.path) == ("", 9091, "/")
    strategies = cfg.authz["auth-request"]["authn_strategies"]
    assert strategies == [{"name": "HeaderAuthorization", "schemes": ["basic"]}, {"name": "CookieSession"}]
    cookie = cfg.cookies[0]
    assert (cookie["name"], cookie["expiration"], cookie["inactivity"], cookie["remember_me"]) == (
        "authelia_session", 3600, 300, 30 * 86400)
    assert cookie["authelia_url"] == f"https://auth.{DOMAIN}/"
    assert cfg.cookie_for_host(f"a.b.{DOMAIN}") is cookie and cfg.cookie_for_host("example.test") is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"storage__encryption_key": "x" * 19}, "storage: option 'encryption_key' must be 20 characters or longer"),
    ({"storage__encryption_key": None}, "storage: option 'encryption_key' is required"),
    ({"storage__local": None}, "storage: configuration for a 'local', 'mysql' or 'postgres' database"),
    ({"identity_validation": None}, "identity_validation: reset_password: option 'jwt_secret' is required"),
    ({"session__redis": {"host": "redis"}}, "session: option 'secret' is required when using the 'redis' provider"),
    ({"session__cookies": None}, "session: option 'cookies' is required"),
    ({"session__cookies": [{"domain": f"*.{DOMAIN}", "authelia_url": f"https://auth.{DOMAIN}"}]},
     "must be the domain you wish to protect not a wildcard domain"),
    ({"session__cookies": [{"domain": DOMAIN}]}, "option 'authelia_url' is required"),
    ({"session__cookies": [{"domain": DOMAIN, "authelia_url": "https://auth.other.test"}]},
     "does not share a cookie scope with domain"),
    ({"session__expiration": "soon"}, "session: option 'expiration' is invalid"),
    ({"access_control__default_policy": "allow"}, "option 'default_policy' must be one of"),
    ({"access_control__rules": []}, "when no rules are specified it must be 'two_factor' or 'one_factor'"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "maybe"}]},
     f"rule #1 (domain '{DOMAIN}'): option 'policy' must be one of"),
    ({"access_control__rules": [{"policy": "deny"}]}, "option 'domain' or 'domain_regex' must be present"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "bypass", "subject": ["user:a"]}]},
     "'policy' option 'bypass' is not supported when 'subject' option is configured"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "deny", "subject": "admins"}]},
     "'subject' option 'admins' is invalid"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "deny", "methods": ["FETCH"]}]},
     "'methods' option 'FETCH' is invalid"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "deny", "resources": ["(["]}]},
     "is an invalid regex"),
    ({"access_control__rules": [{"domain": DOMAIN, "policy": "deny", "networks": ["office"]}]},
     "the network 'office' is not a valid Group Name, IP, or CIDR notation"),
    ({"authentication_backend__file": None}, "either the 'file' or 'ldap' authentication backend"),
    ({"notifier": None}, "notifier: you must ensure either the 'smtp' or 'filesystem' notifier is configured"),
    ({"server__address": "tcp://:9091/authelia"}, "a path prefix is not supported by the stand-in"),
    ({"log__level": "loud"}, "log: option 'level' must be one of"),
    ({"server__endpoints__authz": {"auth-request": {"implementation": "AuthRequest",
                                                    "authn_strategies": [{"name": "Magic"}]}}},
     "option 'name' must be one of"),
    ({"unknown_section": {}}, "configuration key not expected: unknown_section"),
])
def test_configuration_errors_authelia_refuses(changes, message):
    errors = errors_of(**changes)
    assert any(message in e for e in errors), errors


def test_password_reset_disabled_needs_no_jwt_secret_and_legacy_jwt_secret_is_mapped():
    cfg = config(identity_validation=None, authentication_backend__password_reset={"disable": True})
    assert cfg.reset_disabled
    cfg = config(identity_validation=None, jwt_secret="legacy-secret-0123456789")
    assert any("deprecated" in w for w in cfg.warnings)


def test_secrets_come_from_file_variables_and_may_not_be_given_twice(tmp_path):
    (tmp_path / "configuration.yml").write_text(yaml.safe_dump(
        {k: v for k, v in BASE.items() if k not in ("identity_validation",)} | {
            "storage": {"local": {"path": "/data/db.sqlite3"}}}))
    (tmp_path / "key").write_text("file-encryption-key-0123456789\n")
    (tmp_path / "jwt").write_text("file-jwt-secret")
    env = {"AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": str(tmp_path / "key"),
           "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE": str(tmp_path / "jwt")}
    cfg = au.load_config([str(tmp_path / "configuration.yml")], env)
    assert cfg.encryption_key == "file-encryption-key-0123456789"
    assert cfg.doc["identity_validation"]["reset_password"]["jwt_secret"] == "file-jwt-secret"
    with pytest.raises(au.ConfigErrors, match=r"secret path .*missing.* into key 'session\.secret'"):
        au.load_config([str(tmp_path / "configuration.yml")],
                       {**env, "AUTHELIA_SESSION_SECRET_FILE": str(tmp_path / "missing")})
    (tmp_path / "twice.yml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(au.ConfigErrors, match=r"'storage\.encryption_key': it's already defined"):
        au.load_config([str(tmp_path / "twice.yml")], env)


def test_several_config_files_are_merged(tmp_path):
    (tmp_path / "a.yml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"log": {"level": "debug"}, "server": {"address": "tcp://:9999"}}))
    cfg = au.load_config([str(tmp_path / "a.yml"), str(tmp_path / "b.yml")], {})
    assert (cfg.log_level, cfg.port) == ("debug", 9999)


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("5m", 300), ("1M", 2592000), ("1h30m", 5400),
                                               ("2 days", 172800), (90, 90), ("45", 45), ("1w", 604800)])
def test_durations(text, seconds):
    assert au.parse_duration(text) == seconds


# --------------------------------------------------------------------------------------------------
# access control
# --------------------------------------------------------------------------------------------------

RULES = [
    {"domain": f"public.{DOMAIN}", "policy": "bypass"},
    {"domain": f"*.{DOMAIN}", "policy": "deny", "resources": ["^/admin/.*$"], "subject": "group:dev"},
    {"domain": [f"admin.{DOMAIN}", f"Ops.{DOMAIN}"], "policy": "one_factor",
     "subject": ["group:admins", ["user:bob", "group:dev"]]},
    {"domain": f"*.{DOMAIN}", "policy": "one_factor", "methods": ["GET", "HEAD"], "subject": "group:dev"},
    {"domain_regex": r"^(?P<User>\w+)\.home\.example\.test$", "policy": "one_factor"},
    {"domain": "{group}.teams.example.test", "policy": "one_factor"},
    {"domain": f"office.{DOMAIN}", "policy": "one_factor", "networks": ["office"]},
    {"domain_regex": r"vault", "policy": "two_factor"},
]


@pytest.fixture
def acl():
    return config(access_control__rules=RULES,
                  access_control__networks=[{"name": "office", "networks": ["198.51.100.0/24"]}],
                  session__cookies=[{"domain": DOMAIN, "authelia_url": f"https://auth.{DOMAIN}"},
                                    {"domain": "example.org", "authelia_url": "https://auth.example.org"}])


def level(cfg, domain, path="/", method="GET", user="", groups=(), ip="192.0.2.1"):
    has_subjects, policy, _rule = au.required_level(cfg, au.Subject(user, groups, ip), method, domain, path)
    return has_subjects, policy


def test_rules_first_match_wins_with_wildcards_subjects_methods_and_resources(acl):
    assert level(acl, f"public.{DOMAIN}") == (False, "bypass")
    # Wildcards cover any depth of subdomain, not the apex; exact names are case-insensitive.
    assert level(acl, f"a.b.{DOMAIN}", user="carol", groups=["dev"]) == (True, "one_factor")
    assert level(acl, DOMAIN, user="carol", groups=["dev"]) == (False, "deny")
    assert level(acl, f"ops.{DOMAIN}", user="al", groups=["admins"]) == (True, "one_factor")
    # Resources: dev is denied /admin/ everywhere (before the admins rule), others are not matched by that rule.
    assert level(acl, f"admin.{DOMAIN}", "/admin/x", user="carol", groups=["dev"]) == (True, "deny")
    assert level(acl, f"admin.{DOMAIN}", "/admin/x", user="al", groups=["admins"]) == (True, "one_factor")
    # OR of ANDs: bob counts only while in dev.
    assert level(acl, f"admin.{DOMAIN}", user="bob", groups=["dev"]) == (True, "one_factor")
    assert level(acl, f"admin.{DOMAIN}", user="bob", groups=["ops"]) == (False, "deny")
    # Methods: the dev rule is GET/HEAD only.
    assert level(acl, f"x.{DOMAIN}", method="POST", user="carol", groups=["dev"]) == (False, "deny")
    # Anonymous subjects match subject rules (so they get the login redirect, not a 403).
    assert level(acl, f"admin.{DOMAIN}", "/admin/x") == (True, "deny")
    assert level(acl, f"admin.{DOMAIN}", "/") == (True, "one_factor")


def test_domain_regex_identity_placeholders_and_networks(acl):
    assert level(acl, "alice.home.example.test", user="alice") == (True, "one_factor")
    assert level(acl, "alice.home.example.test", user="bob") == (False, "deny")
    assert level(acl, "alice.home.example.test") == (True, "one_factor")
    assert level(acl, "dev.teams.example.test", user="carol", groups=["Dev"]) == (True, "one_factor")
    assert level(acl, "ops.teams.example.test", user="carol", groups=["dev"]) == (False, "deny")
    assert level(acl, f"office.{DOMAIN}", ip="198.51.100.20", user="x") == (False, "one_factor")
    assert level(acl, f"office.{DOMAIN}", ip="203.0.113.1", user="x") == (False, "deny")
    # domain_regex is unanchored, as Go's MatchString.
    assert level(acl, "my.vault.example.org") == (False, "two_factor")


@pytest.mark.parametrize(("level_", "required", "has_subjects", "result"), [
    (0, "bypass", False, "authorized"),
    (0, "deny", False, "forbidden"),
    (0, "deny", True, "unauthorized"),
    (1, "deny", True, "forbidden"),
    (0, "one_factor", False, "unauthorized"),
    (0, "one_factor", True, "unauthorized"),
    (1, "one_factor", True, "authorized"),
    (1, "two_factor", False, "unauthorized"),
    (2, "two_factor", False, "authorized"),
])
def test_authelias_decision_table(level_, required, has_subjects, result):
    assert au.authz_result(level_, required, has_subjects) == result


# --------------------------------------------------------------------------------------------------
# the AuthRequest endpoint, users and sessions
# --------------------------------------------------------------------------------------------------

class FakeRequest:
    def __init__(self, headers, path="/api/authz/auth-request", command="GET", client=("172.30.0.9", 5555)):
        self.headers = Message()
        for key, value in headers.items():
            self.headers[key] = value
        self.path, self.command, self.client_address = path, command, client


def write_users(path, alice_password="alice-pw", **extra):
    users = {"alice": {"displayname": "Alice", "email": f"alice@{DOMAIN}", "groups": ["admins", "ops"],
                       "password": HASHER.hash(alice_password)},
             "bob": {"displayname": "Bob", "groups": ["dev"], "password": HASHER.hash("bob-pw")},
             "zed": {"displayname": "Zed", "groups": ["admins"], "password": HASHER.hash("zed-pw"), "disabled": True}}
    users.update(extra)
    path.write_text(yaml.safe_dump({"users": users}))


@pytest.fixture
def app(tmp_path):
    users_file = tmp_path / "users.yml"
    write_users(users_file)
    cfg = config(authentication_backend__file={"path": str(users_file), "watch": True},
                 server__endpoints__authz={"auth-request": {"implementation": "AuthRequest", "authn_strategies": [
                     {"name": "HeaderAuthRequestProxyAuthorization", "schemes": ["basic"]},
                     {"name": "CookieSession"}]}},
                 access_control__rules=[{"domain": f"public.{DOMAIN}", "policy": "bypass"},
                                        {"domain": f"admin.{DOMAIN}", "policy": "one_factor",
                                         "subject": "group:admins"},
                                        {"domain": f"vault.{DOMAIN}", "policy": "two_factor"}])
    application = au.App(cfg, au.UserProvider(str(users_file), True))
    application.users_file = users_file
    return application


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authz(app, url, method="GET", **headers):
    req = FakeRequest({"X-Original-URL": url, "X-Original-Method": method, **headers})
    return app.dispatch(req, b"")


def test_auth_request_answers(app):
    url = f"https://admin.{DOMAIN}/a b?x=1&y=/"
    status, headers, body = authz(app, url)
    assert status == 401
    assert headers["Location"] == (f"https://auth.{DOMAIN}/?rd=https%3A%2F%2Fadmin.{DOMAIN}%2Fa+b%3Fx%3D1%26y%3D%2F"
                                   "&rm=GET")
    assert b"401 Unauthorized" in body
    assert authz(app, url, "HEAD")[2] == b""
    status, headers, _body = authz(app, url, **{"Proxy-Authorization": basic("alice", "alice-pw")})
    assert status == 200 and headers == {"Remote-User": "alice", "Remote-Groups": "admins,ops",
                                         "Remote-Name": "Alice", "Remote-Email": f"alice@{DOMAIN}"}
    status, headers, _body = authz(app, url, **{"Proxy-Authorization": basic("alice", "nope")})
    assert status == 401 and headers == {"WWW-Authenticate": 'Basic realm="Authentication required"'}
    assert authz(app, url, **{"Proxy-Authorization": basic("bob", "bob-pw")})[0] == 403
    assert authz(app, url, **{"Proxy-Authorization": basic("zed", "zed-pw")})[0] == 401  # disabled
    # This endpoint reads Proxy-Authorization: an application's own Authorization header is not Authelia's.
    assert authz(app, url, Authorization=basic("alice", "alice-pw"))[0] == 401
    assert authz(app, url, **{"Proxy-Authorization": "Bearer abc"})[0] == 401
    # No second factor in the stand-in: two_factor is never satisfied by Basic credentials.
    status, headers, _body = authz(app, f"https://vault.{DOMAIN}/",
                                   **{"Proxy-Authorization": basic("alice", "alice-pw")})
    assert status == 401 and "Location" not in headers
    assert authz(app, f"https://public.{DOMAIN}/", **{"Proxy-Authorization": basic("alice", "nope")})[0] == 200
    assert authz(app, f"https://other.{DOMAIN}/")[0] == 403
    # 400s: no URL, no method, insecure scheme, no cookie domain for the host.
    assert app.dispatch(FakeRequest({"X-Original-Method": "GET"}), b"")[0] == 400
    assert app.dispatch(FakeRequest({"X-Original-URL": url}), b"")[0] == 400
    assert authz(app, f"http://admin.{DOMAIN}/")[0] == 400
    assert authz(app, "https://admin.example.org/")[0] == 400
    assert app.dispatch(FakeRequest({}, path="/api/authz/forward-auth"), b"")[0] == 404


def firstfactor(app, username, password, host=f"auth.{DOMAIN}", target=None):
    body = {"username": username, "password": password}
    if target:
        body["targetURL"] = target
    req = FakeRequest({"Host": host, "Content-Type": "application/json"}, path="/api/firstfactor", command="POST")
    return app.dispatch(req, json.dumps(body).encode())


def session_of(headers):
    return headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


def test_firstfactor_cookie_sessions_and_logout(app):
    assert firstfactor(app, "alice", "bad")[0] == 401
    assert firstfactor(app, "alice", "alice-pw", host="auth.example.org")[0] == 401
    status, headers, body = firstfactor(app, "alice", "alice-pw", target=f"https://admin.{DOMAIN}/")
    assert status == 200 and b'"redirect": "https://admin.' in body
    assert f"Domain={DOMAIN}" in headers["Set-Cookie"] and "Secure" in headers["Set-Cookie"]
    token = session_of(headers)
    url = f"https://admin.{DOMAIN}/"
    status, headers, _body = authz(app, url, Cookie=f"other=1; authelia_session={token}")
    assert status == 200 and headers["Remote-User"] == "alice"
    # A session is one_factor: two_factor sends back to the portal.
    assert authz(app, f"https://vault.{DOMAIN}/", Cookie=f"authelia_session={token}")[1]["Location"].startswith(
        f"https://auth.{DOMAIN}/?rd=")
    state = app.dispatch(FakeRequest({"Host": f"auth.{DOMAIN}", "Cookie": f"authelia_session={token}"},
                                     path="/api/state"), b"")
    assert b'"username": "alice"' in state[2] and b'"authentication_level": 1' in state[2]
    app.dispatch(FakeRequest({"Host": f"auth.{DOMAIN}", "Cookie": f"authelia_session={token}"}, path="/api/logout",
                             command="POST"), b"")
    assert authz(app, url, Cookie=f"authelia_session={token}")[0] == 401


def test_sessions_expire_when_inactive(app, monkeypatch):
    token = session_of(firstfactor(app, "alice", "alice-pw")[1])
    now = time.time()
    monkeypatch.setattr(au.time, "time", lambda: now + 301)
    assert authz(app, f"https://admin.{DOMAIN}/", Cookie=f"authelia_session={token}")[0] == 401


def test_watched_users_file_is_reread_and_a_disabled_user_loses_its_session(app):
    token = session_of(firstfactor(app, "alice", "alice-pw")[1])
    write_users(app.users_file, alice_password="new-pw")
    st = app.users_file.stat()
    os.utime(app.users_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert authz(app, f"https://admin.{DOMAIN}/", **{"Proxy-Authorization": basic("alice", "alice-pw")})[0] == 401
    assert authz(app, f"https://admin.{DOMAIN}/", **{"Proxy-Authorization": basic("alice", "new-pw")})[0] == 200
    write_users(app.users_file, alice={"displayname": "Alice", "groups": ["admins"], "password": HASHER.hash("x1"),
                                       "disabled": True})
    os.utime(app.users_file, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert authz(app, f"https://admin.{DOMAIN}/", Cookie=f"authelia_session={token}")[0] == 401


@pytest.mark.parametrize(("users", "message"), [
    ({"users": {}}, "users: non zero value required"),
    ({"users": {"a": {"displayname": "A"}}}, "users.a.password: non zero value required"),
    ({"users": {"a": {"password": "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA"}}},
     "users.a.displayname: non zero value required"),
    ({"users": {"a": {"displayname": "A", "password": "$6$rounds=5000$salt$hash"}}},
     "sha2crypt digests are valid for Authelia but not supported by the stand-in"),
    ({"users": {"a": {"displayname": "A", "password": "$foo$bar"}}}, "the identifier 'foo' is unknown"),
    ({"users": {"a": {"displayname": "A", "password": "$argon2id$v=19$m=1024$x$y"}}},
     "error occurred decoding the password hash for 'a': argon2 decode error"),
])
def test_users_database_startup_check(tmp_path, users, message):
    path = tmp_path / "users.yml"
    path.write_text(yaml.safe_dump(users))
    with pytest.raises(au.StartupError) as info:
        au.load_users(str(path))
    assert message in str(info.value) and info.value.provider == "user"
    with pytest.raises(au.StartupError, match="doesn't exist"):
        au.load_users(str(tmp_path / "missing.yml"))


def test_storage_remembers_its_encryption_key(tmp_path):
    db = str(tmp_path / "db.sqlite3")
    au.check_storage(db, "first-key-0123456789")
    au.check_storage(db, "first-key-0123456789")
    with pytest.raises(au.StartupError, match="encryption key does not appear to be valid"):
        au.check_storage(db, "other-key-0123456789")
