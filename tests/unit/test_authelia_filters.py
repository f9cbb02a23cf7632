"""Unit tests for plugins/filter/authelia.py: the users database (argon2id hashes that passlib and argon2-cffi both
verify, stable across runs), access-control validation and the NPM proxy-host expansion."""

from __future__ import annotations

import re

import argon2
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter import authelia as af
from passlib.hash import argon2 as passlib_argon2

KEY = "site-key-0123456789abcdef"
ALICE = {"name": "alice", "displayname": "Alice A.", "email": "alice@0kt.example.test", "groups": ["admins"],
         "password": "correct horse battery staple"}
BOB = {"name": "bob", "displayname": "Bob B.", "email": "bob@0kt.example.test", "groups": ["dev"],
       "password": "correct horse battery staple"}
PHC = re.compile(r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")


def test_hash_is_authelias_argon2id_and_verifies_with_passlib_and_argon2_cffi():
    db = af.authelia_users_database([ALICE], KEY)
    entry = db["users"]["alice"]
    assert entry["displayname"] == "Alice A." and entry["email"] == "alice@0kt.example.test"
    assert entry["groups"] == ["admins"] and entry["disabled"] is False
    digest = entry["password"]
    assert PHC.match(digest), digest
    params = argon2.extract_parameters(digest)
    assert (params.type, params.memory_cost, params.time_cost, params.parallelism) == (
        argon2.Type.ID, 65536, 3, 4)
    assert params.hash_len == 32 and params.salt_len == 16
    assert passlib_argon2.verify(ALICE["password"], digest)
    assert not passlib_argon2.verify("wrong", digest)
    assert argon2.PasswordHasher().verify(digest, ALICE["password"])
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        argon2.PasswordHasher().verify(digest, "wrong")


def test_hashes_are_stable_and_change_only_with_the_password_the_user_or_the_site():
    first = yaml.safe_dump(af.authelia_users_database([ALICE, BOB], KEY))
    again = yaml.safe_dump(af.authelia_users_database([ALICE, BOB], KEY))
    assert first == again
    changed = af.authelia_users_database([{**ALICE, "password": "another one"}], KEY)["users"]["alice"]["password"]
    assert changed != af.authelia_users_database([ALICE], KEY)["users"]["alice"]["password"]
    assert passlib_argon2.verify("another one", changed)
    # Same password, different users -> different salts and hashes.
    both = af.authelia_users_database([ALICE, BOB], KEY)["users"]
    assert both["alice"]["password"] != both["bob"]["password"]
    assert both["alice"]["password"].split("$")[4] != both["bob"]["password"].split("$")[4]
    # Another site (salt key) -> another hash of the same user and password.
    other = af.authelia_users_database([ALICE], "another-site-key-0123")["users"]["alice"]["password"]
    assert other != both["alice"]["password"]


def test_the_salt_does_not_depend_on_the_password():
    """A salt derived from the password would verify it at HMAC speed for whoever holds the key."""
    one = af.authelia_users_database([ALICE], KEY)["users"]["alice"]["password"].split("$")[4]
    two = af.authelia_users_database([{**ALICE, "password": "x" * 20}], KEY)["users"]["alice"]["password"]
    assert two.split("$")[4] == one
    assert af.derive_salt(KEY, "alice") != af.derive_salt(KEY, "bob")
    assert len(af.derive_salt(KEY, "alice")) == 16


def test_defaults_disabled_and_no_email():
    db = af.authelia_users_database([{"name": "carol", "password": "pw-carol-123", "disabled": True}], KEY)
    assert db["users"]["carol"] == {"disabled": True, "displayname": "carol", "groups": [],
                                    "password": db["users"]["carol"]["password"]}
    assert af.authelia_users_database([], KEY) == {"users": {}}


@pytest.mark.parametrize(("user", "words"), [
    ({"name": "dave", "displayname": "D"}, ["users[0] (dave)", "password"]),
    ({"name": "dave", "password": ""}, ["users[0] (dave)", "password"]),
    ({"name": "dave", "password": 1234}, ["users[0] (dave)", "password must be a string"]),
    ({"name": "bad name", "password": "secret-pw-1"}, ["users[0]", "name must be"]),
    ({"password": "secret-pw-1"}, ["users[0]", "name must be"]),
    ({"name": "dave", "password": "secret-pw-1", "groups": "admins"}, ["users[0] (dave)", "groups"]),
    ({"name": "dave", "password": "secret-pw-1", "groups": ["a b"]}, ["users[0] (dave)", "groups"]),
    ({"name": "dave", "password": "secret-pw-1", "email": "not-an-address"}, ["users[0] (dave)", "email"]),
    ({"name": "dave", "password": "secret-pw-1", "disabled": "yes"}, ["users[0] (dave)", "disabled"]),
    ({"name": "dave", "password": "secret-pw-1", "displayname": ""}, ["users[0] (dave)", "displayname"]),
    ({"name": "dave", "pasword": "secret-pw-1"}, ["users[0] (dave)", "unknown key(s) pasword"]),
])
def test_invalid_users_fail_naming_the_user_and_the_field_without_the_password(user, words):
    with pytest.raises(AnsibleFilterError) as info:
        af.authelia_users_database([user], KEY)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "secret-pw-1" not in message


def test_second_user_error_names_its_index_and_nothing_is_hashed_before_validation(monkeypatch):
    calls = []
    monkeypatch.setattr(af, "hash_password", lambda pw, salt: calls.append(1) or "x")
    with pytest.raises(AnsibleFilterError, match=r"users\[1\] \(bob\): password"):
        af.authelia_users_database([ALICE, {**BOB, "password": None}], KEY)
    assert calls == []
    with pytest.raises(AnsibleFilterError, match=r"users\[1\] \(alice\): the name is declared twice"):
        af.authelia_users_database([ALICE, ALICE], KEY)


def test_salt_key_must_be_long_enough():
    with pytest.raises(AnsibleFilterError, match="salt key"):
        af.authelia_users_database([ALICE], "short")
    with pytest.raises(AnsibleFilterError, match="salt key"):
        af.authelia_users_database([ALICE], None)


# --------------------------------------------------------------------------------------------------
# access control
# --------------------------------------------------------------------------------------------------

RULES = [
    {"domain": "public.0kt.example.test", "policy": "bypass"},
    {"domain": ["*.0kt.example.test"], "policy": "one_factor", "subject": ["group:admins", ["user:bob", "group:dev"]],
     "resources": ["^/admin/.*$"], "methods": ["GET", "POST"]},
    {"domain_regex": r"^(?P<User>\w+)\.home\.example\.test$", "policy": "two_factor"},
]


def test_rules_come_back_verbatim():
    out = af.authelia_access_control(RULES, "deny")
    assert out == {"default_policy": "deny", "rules": RULES}
    assert out["rules"] is not RULES


@pytest.mark.parametrize(("rules", "default", "words"), [
    (RULES, "allow", ["default_policy 'allow'"]),
    ([], "deny", ["no rules", "one_factor or two_factor"]),
    ([{"domain": "a.example.test", "policy": "allow"}], "deny",
     ["rules[0] (domain 'a.example.test')", "policy 'allow'"]),
    ([{"domain": "a.example.test"}], "deny", ["rules[0]", "policy is missing"]),
    ([{"policy": "deny"}], "deny", ["rules[0]", "domain or domain_regex"]),
    ([RULES[0], {"domain": "a.example.test", "policy": "bypass", "subject": "group:x"}], "deny",
     ["rules[1] (domain 'a.example.test')", "bypass", "subject"]),
    ([{"domain": "a.example.test", "policy": "deny", "subject": "admins"}], "deny", ["subject 'admins'"]),
    ([{"domain": "a.example.test", "policy": "deny", "methods": ["FETCH"]}], "deny", ["method 'FETCH'"]),
    ([{"domain": "a.example.test", "policy": "deny", "resources": ["^/(unclosed"]}], "deny", ["resources", "regular"]),
    ([{"domain_regex": "^(a", "policy": "deny"}], "deny", ["domain_regex", "regular"]),
    ([{"domain": "a.example.test", "policy": "deny", "domains": ["x"]}], "deny", ["unknown key(s) domains"]),
    ([{"domain": [], "policy": "deny"}], "deny", ["domain must be"]),
    ([{"domain_regex": "^(?P<Group>\\w+)\\.example\\.test$", "policy": "bypass"}], "deny", ["bypass", "domain_regex"]),
])
def test_invalid_access_control_fails_naming_the_rule_and_field(rules, default, words):
    with pytest.raises(AnsibleFilterError) as info:
        af.authelia_access_control(rules, default)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_no_rules_with_a_factor_default_is_fine():
    assert af.authelia_access_control([], "one_factor") == {"default_policy": "one_factor", "rules": []}


# --------------------------------------------------------------------------------------------------
# NPM proxy hosts
# --------------------------------------------------------------------------------------------------

HOSTS = [
    {"domain_names": ["admin.0kt.example.test"], "forward_host": "admin", "forward_port": 80, "authelia": True},
    {"domain_names": ["tools.0kt.example.test"], "forward_host": "tools", "forward_port": 80, "authelia": True,
     "advanced_config": "client_max_body_size 50m;\n"},
    {"domain_names": ["www.0kt.example.test"], "forward_host": "www", "forward_port": 80, "authelia": False},
    {"domain_names": ["api.0kt.example.test"], "forward_host": "api", "forward_port": 80,
     "advanced_config": "location / { return 200; }"},
]


def test_protected_hosts_get_the_snippet_and_no_authelia_key():
    out = af.npm_authelia_hosts(HOSTS, "http://authelia:9091/")
    assert all("authelia" not in h for h in out)
    snippet = af.npm_authelia_snippet("http://authelia:9091")
    assert out[0]["advanced_config"] == snippet
    assert "proxy_pass http://authelia:9091/api/authz/auth-request;" in snippet
    assert "AUTHELIA_URL" not in snippet
    assert out[1]["advanced_config"] == "client_max_body_size 50m;\n\n" + snippet
    # authelia: false manages advanced_config explicitly (the item's own or empty), so the snippet goes away.
    assert out[2]["advanced_config"] == ""
    assert out[3] == HOSTS[3]
    assert af.npm_authelia_hosts([{**HOSTS[1], "authelia": False}])[0]["advanced_config"] == HOSTS[1]["advanced_config"]
    assert HOSTS[0]["authelia"] is True  # input untouched
    # Deterministic, so a second run sends the same body.
    assert af.npm_authelia_hosts(HOSTS, "http://authelia:9091") == out


def test_snippet_matches_the_shared_contract():
    """Every directive of /tmp/authelia_snippet.md's block, in order (the contract the NPM stand-in's edge reads)."""
    lines = [line.strip() for line in af.npm_authelia_snippet("http://auth.internal:9091").splitlines() if line.strip()]
    assert lines[:3] == ["location /internal/authelia/authz {", "internal;",
                         "proxy_pass http://auth.internal:9091/api/authz/auth-request;"]
    assert "proxy_set_header X-Original-URL $scheme://$http_host$request_uri;" in lines
    assert "error_page 401 =302 $redirection_url;" in lines
    assert lines[-2:] == ["include conf.d/include/proxy.conf;", "}"]


@pytest.mark.parametrize(("host", "url", "words"), [
    ({"domain_names": ["a.example.test"], "authelia": "yes"}, "http://authelia:9091", ["authelia must be"]),
    ({"domain_names": ["a.example.test"], "authelia": True, "advanced_config": "location / {\n}"},
     "http://authelia:9091", ["a.example.test", "location /"]),
    ({"domain_names": ["a.example.test"], "authelia": True, "locations": [{"path": "/", "forward_host": "x"}]},
     "http://authelia:9091", ["custom location"]),
    ({"domain_names": ["a.example.test"], "authelia": True}, "authelia:9091", ["Authelia URL"]),
    ({"domain_names": ["a.example.test"], "authelia": True}, "http://authelia:9091/auth", ["Authelia URL"]),
])
def test_bad_proxy_hosts_are_refused(host, url, words):
    with pytest.raises(AnsibleFilterError) as info:
        af.npm_authelia_hosts([host], url)
    for word in words:
        assert word in str(info.value)


def test_a_location_other_than_root_is_fine():
    host = {"domain_names": ["a.example.test"], "authelia": True, "advanced_config": "location /static/ { }"}
    out = af.npm_authelia_hosts([host])
    assert out[0]["advanced_config"].startswith("location /static/ { }\n\nlocation /internal/authelia/authz {")
