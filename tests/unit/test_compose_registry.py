"""Unit tests for compose_registry: reference parsing, credentials lookup, X-Registry-Auth, the daemon's answers
(as measured against Engine 20.10 and Debian's docker-registry 2.8) and the verdict per image."""

from __future__ import annotations

import base64
import json

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_registry as cr

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("ref", "domain", "path", "tag", "digest"),
    [
        ("redis", "docker.io", "library/redis", "latest", None),
        ("redis:7", "docker.io", "library/redis", "7", None),
        ("docker.io/redis:7", "docker.io", "library/redis", "7", None),
        ("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", None),
        ("nickfedor/watchtower", "docker.io", "nickfedor/watchtower", "latest", None),
        ("127.0.0.1:5000/team/app:1", "127.0.0.1:5000", "team/app", "1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:2", "localhost:5000", "app", "2", None),
        ("registry.example.test/a/b/c:v1.2", "registry.example.test", "a/b/c", "v1.2", None),
        ("Upper/app", "Upper", "app", "latest", None),  # an upper-case first component is a host
        ("redis@" + D1, "docker.io", "library/redis", None, D1),
        ("127.0.0.1:5000/app:1@" + D1, "127.0.0.1:5000", "app", "1", D1),
    ],
)
def test_parse_reference_applies_dockers_defaults(ref, domain, path, tag, digest):
    r = cr.parse_reference(ref)
    assert (r.domain, r.path, r.tag, r.digest) == (domain, path, tag, digest)
    assert r.repo == f"{domain}/{path}"


@pytest.mark.parametrize("ref", ["", "sha256:" + "1" * 64, "app:", "Team/App", "app@sha256:xyz", "a b"])
def test_parse_reference_refuses_what_is_not_a_reference(ref):
    with pytest.raises(ValueError):
        cr.parse_reference(ref)


def test_repo_digests_are_keyed_by_canonical_repository():
    got = cr.repo_digests(["redis@" + D1, "docker.io/library/redis@" + D2, "127.0.0.1:5000/app@" + D1, "junk"])
    assert got == {"docker.io/library/redis": {D1, D2}, "127.0.0.1:5000/app": {D1}}


def test_auth_key_is_the_host_or_the_docker_hub_index():
    assert cr.auth_key(cr.parse_reference("redis")) == "https://index.docker.io/v1/"
    assert cr.auth_key(cr.parse_reference("127.0.0.1:5000/app")) == "127.0.0.1:5000"
    assert cr.hostname("https://registry.example.test:443/v1/") == "registry.example.test:443"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_auths_entry_by_exact_key_or_by_host():
    ref = cr.parse_reference("127.0.0.1:5000/app:1")
    conf = {"auths": {"127.0.0.1:5000": {"auth": b64("tester:pa:ss")}}}
    assert cr.find_credentials(conf, ref) == ({"username": "tester", "password": "pa:ss"}, "config.json auths")
    conf = {"auths": {"http://127.0.0.1:5000/v2/": {"username": "u", "password": "p"}}}
    assert cr.find_credentials(conf, ref)[0] == {"username": "u", "password": "p"}
    conf = {"auths": {"127.0.0.1:5000": {"identitytoken": "tok"}}}
    assert cr.find_credentials(conf, ref)[0] == {"identitytoken": "tok"}
    conf = {"auths": {"other:5000": {"auth": b64("a:b")}}}
    assert cr.find_credentials(conf, ref) == (None, "no credentials")
    hub = cr.parse_reference("team/private")
    conf = {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}}
    assert cr.find_credentials(conf, hub)[0] == {"username": "hubuser", "password": "hubpw"}


def test_credentials_from_a_helper_before_auths():
    ref = cr.parse_reference("127.0.0.1:5000/app:1")
    asked = []

    def helper(name, server):
        asked.append((name, server))
        return True, json.dumps({"ServerURL": server, "Username": "hu", "Secret": "hs"})

    conf = {"credHelpers": {"127.0.0.1:5000": "pass"}, "credsStore": "desktop",
            "auths": {"127.0.0.1:5000": {"auth": b64("file:pw")}}}
    creds, source = cr.find_credentials(conf, ref, helper)
    assert creds == {"username": "hu", "password": "hs"} and asked == [("pass", "127.0.0.1:5000")]
    assert "hs" not in source and "docker-credential-pass" in source
    # credsStore for hosts without their own helper; a token user means an identity token
    creds, _source = cr.find_credentials({"credsStore": "desktop"}, ref,
                                         lambda n, s: (True, json.dumps({"Username": "<token>", "Secret": "idt"})))
    assert creds == {"identitytoken": "idt"}
    creds, source = cr.find_credentials({"credsStore": "desktop"}, ref,
                                        lambda n, s: (False, "credentials not found in native keychain"))
    assert creds is None and "credentials not found" in source


def test_auth_header_is_base64url_json_with_the_server_address():
    ref = cr.parse_reference("127.0.0.1:5000/app:1")
    header = cr.auth_header({"username": "u", "password": "p?>>"}, ref)
    assert "+" not in header and "/" not in header
    want = {"username": "u", "password": "p?>>", "serveraddress": "127.0.0.1:5000"}
    assert json.loads(base64.urlsafe_b64decode(header)) == want
    assert cr.auth_header(None, ref) is None


FOUND = json.dumps({"Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                   "digest": D2, "size": 529}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, FOUND, "found"),
        (404, b'{"message":"manifest unknown: manifest unknown"}\n', "missing"),
        (401, b'{"message":"unauthorized: authentication required"}\n', "denied"),
        (500, b'{"message":"Head \\"http://127.0.0.1:5000/v2/app/manifests/1\\": no basic auth credentials"}\n',
         "denied"),
        (500, b'{"message":"Get \\"http://127.0.0.1:5000/v2/\\": dial tcp 127.0.0.1:5000: connect: '
              b'connection refused"}', "unreachable"),
        (500, b'{"message":"Get \\"https://registry-1.docker.io/v2/\\": dial tcp: lookup registry-1.docker.io: no such '
              b'host"}', "unreachable"),
        (500, b'{"message":"toomanyrequests: You have reached your pull rate limit"}', "unreachable"),
        (404, b'{"message":"page not found"}', "unreachable"),  # an Engine without the endpoint
        (200, b'{"Descriptor": {}}', "unreachable"),
    ],
)
def test_classify_the_daemons_answers(status, body, kind):
    got = cr.classify(status, body)
    assert got[0] == kind
    assert got[1] == (D2 if kind == "found" else None)
    if kind != "found":
        assert got[2]


def test_verdicts():
    ref = cr.parse_reference("127.0.0.1:5000/app:1")
    found = ("found", D2, "")
    here = ["127.0.0.1:5000/app@" + D1]
    assert cr.verdict("always", ref, "sha256:local", here, found) == cr.NEWER
    assert cr.verdict("always", ref, "sha256:local", [*here, "127.0.0.1:5000/app@" + D2], found) == cr.CURRENT
    # the same digest under another repository is not this one's
    assert cr.verdict("always", ref, "sha256:local", ["127.0.0.1:5000/other@" + D2], found) == cr.NEWER
    assert cr.verdict("always", ref, "sha256:local", [], found) == cr.NEWER  # built here, never pulled
    assert cr.verdict("always", ref, None, [], found) == cr.PULLABLE
    assert cr.verdict("missing", ref, None, [], found) == cr.PULLABLE
    assert cr.verdict("always", ref, "sha256:local", here, ("missing", None, "manifest unknown")) == cr.MISSING
    assert cr.verdict("missing", ref, None, [], ("denied", None, "no basic auth credentials")) == cr.DENIED
    assert cr.verdict("always", ref, "sha256:local", here, ("unreachable", None, "refused")) == cr.UNVERIFIED


def test_needs_query():
    tagged = cr.parse_reference("127.0.0.1:5000/app:1")
    pinned = cr.parse_reference("127.0.0.1:5000/app@" + D1)
    assert cr.needs_query("always", tagged, "sha256:x", [])
    assert not cr.needs_query("always", pinned, "sha256:x", [])  # a digest's content cannot change
    assert cr.needs_query("always", pinned, None, [])
    assert not cr.needs_query("missing", tagged, "sha256:x", [])
    assert cr.needs_query("missing", tagged, None, [])
    assert not cr.needs_query("never", tagged, None, [])


def test_apply_to_plan_recreates_the_users_of_a_newer_image():
    desired = {"web": {"image": "r/app:1", "replicas": 1}, "cache": {"image": "redis:7", "replicas": 1},
               "spare": {"image": "r/app:1", "replicas": 0}, "new": {"image": "r/app:1", "replicas": 1}}
    steps = [{"service": "cache", "action": "none", "reasons": []},
             {"service": "new", "action": "create", "reasons": ["no container"]},
             {"service": "spare", "action": "none", "reasons": []},
             {"service": "web", "action": "none", "reasons": []}]
    results = {"r/app:1": {"verdict": cr.NEWER, "digest": D2}, "redis:7": {"verdict": cr.CURRENT, "digest": D1}}
    out = {s["service"]: s for s in cr.apply_to_plan(steps, desired, results, "auto")}
    assert out["web"]["action"] == "recreate" and out["web"]["reasons"] == [
        "newer image in registry: r/app:1 (%s)" % D2[:19]]
    assert out["cache"] == steps[0] and out["spare"] == steps[2]
    assert out["new"]["action"] == "create" and len(out["new"]["reasons"]) == 2
    never = {s["service"]: s for s in cr.apply_to_plan(steps, desired, results, "never")}
    assert never["web"]["action"] == "none" and "recreate=never" in never["web"]["reasons"][0]
    assert steps[3] == {"service": "web", "action": "none", "reasons": []}  # the input is not changed


def test_describe_names_the_image_and_the_registry():
    r = {"verdict": cr.MISSING, "registry": "127.0.0.1:5000", "detail": "manifest unknown: manifest unknown"}
    assert cr.describe("127.0.0.1:5000/app:9", r) == (
        "image 127.0.0.1:5000/app:9 is not in registry 127.0.0.1:5000 (manifest unknown: manifest unknown)")
    r = {"verdict": cr.DENIED, "registry": "127.0.0.1:5000", "detail": "unauthorized", "credentials": "no credentials"}
    assert "refused image 127.0.0.1:5000/app:9" in cr.describe("127.0.0.1:5000/app:9", r)
