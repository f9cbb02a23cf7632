"""The Docker socket proxy's allowlist (plugins/module_utils/socket_proxy.py, the socket_proxy_* filters, the
preflight's check of the watchtower role's allowlists) and the socketproxy stand-in's flag handling
(tests/images/socketproxy/socket_proxy.py), without Docker.

The role's default allowlists are checked against the calls Watchtower makes, as read in nicholas-fedor/watchtower's
pkg/container (client.go, container_source.go, container_target.go, image.go) and containrrr/watchtower's
pkg/container/client.go: every one passes, and nothing else a compromised client would want does."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.action.preflight import (
    check_options,
    load_role_options,
    site_problems,
)
from ansible_collections.selfhosted.platform.plugins.filter.socket_proxy import (
    socket_proxy_flags,
    socket_proxy_problems,
)
from ansible_collections.selfhosted.platform.plugins.module_utils import socket_proxy as sp

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("socketproxy_standin", ROOT / "tests/images/socketproxy/socket_proxy.py")
standin = importlib.util.module_from_spec(_spec)
sys.modules["socketproxy_standin"] = standin
_spec.loader.exec_module(standin)

DEFAULTS = yaml.safe_load((ROOT / "roles/watchtower/defaults/main.yml").read_text())
ALLOW, UPDATE, CLEANUP = (DEFAULTS[f"watchtower_socket_proxy_allow{s}"] for s in ("", "_update", "_cleanup"))
CID = "4f1b2a9c0e3d" + "a" * 52
IMAGE_ID = "sha256:" + "0123456789abcdef" * 4

# Watchtower's calls through the moby client, as it builds the paths (version prefix after negotiation).
MONITOR_CALLS = [
    ("HEAD", "/_ping"),                                        # Ping, API version negotiation (unversioned)
    ("GET", "/_ping"),                                         # Ping's fallback when HEAD is not answered
    ("GET", "/v1.41/version"),                                 # ServerVersion
    ("GET", "/v1.41/info"),                                    # getRuntime: Docker or Podman; registry mirrors
    ("GET", "/v1.41/containers/json"),                         # ListSourceContainers; RemoveImageByID's in-use check
    ("GET", f"/v1.41/containers/{CID}/json"),                  # GetSourceContainer, waits while a container stops
    ("GET", "/v1.41/containers/amn-backend-1/json"),           # network_mode container:<name> resolution
    ("GET", f"/v1.41/images/{IMAGE_ID}/json"),                 # the container's image
    ("GET", "/v1.41/images/127.0.0.1:5000/team/app:stable/json"),  # HasNewImage: the image by name after the pull
    ("GET", "/v1.41/images/nickfedor/watchtower:1.12.0/json"),
    ("POST", "/v1.41/images/create"),                          # ImagePull (fromImage, tag in the query)
]
UPDATE_CALLS = [
    ("POST", f"/v1.41/containers/{CID}/stop"),                 # StopSourceContainer (the fork)
    ("POST", f"/v1.41/containers/{CID}/kill"),                 # StopContainer (containrrr)
    ("DELETE", f"/v1.41/containers/{CID}"),                    # StopAndRemoveSourceContainer
    ("POST", "/v1.41/containers/create"),                      # StartTargetContainer: create without a name
    ("POST", f"/v1.41/containers/{CID}/rename"),               # ... then the old name
    ("POST", "/v1.41/networks/amn_default/connect"),           # attachNetworks on API < 1.44
    ("POST", f"/v1.41/containers/{CID}/start"),
    ("POST", f"/v1.41/containers/{CID}/update"),               # SetNoRestartPolicy after a fatal start failure
]
CLEANUP_CALLS = [("DELETE", f"/v1.41/images/{IMAGE_ID}")]      # RemoveImageByID
# What a client that got hold of the proxy would want, and none of which Watchtower calls.
REFUSED = [
    ("POST", f"/v1.41/containers/{CID}/exec"),                 # a shell in any container
    ("POST", "/v1.41/exec/" + "b" * 64 + "/start"),
    ("POST", f"/v1.41/containers/{CID}/attach"),
    ("POST", "/v1.41/containers/create/"),                     # path variants of an allowed call
    ("POST", "/v2.0/containers/create"),
    ("POST", "/v1.41/containers/x/../create"),
    ("POST", "/v1.41/v1.41/containers/create"),
    ("GET", f"/v1.41/containers/{CID}/archive"),               # copy files out
    ("GET", f"/v1.41/containers/{CID}/logs"),
    ("GET", "/v1.41/secrets"), ("GET", "/v1.41/configs"), ("GET", "/v1.41/swarm"), ("GET", "/v1.41/events"),
    ("POST", "/v1.41/volumes/create"), ("POST", "/v1.41/build"), ("POST", "/v1.41/plugins/pull"),
    ("POST", "/v1.41/swarm/init"), ("POST", "/v1.41/networks/create"), ("POST", "/v1.41/images/load"),
    ("POST", "/v1.41/networks/amn_default/disconnect"),
    ("DELETE", "/v1.41/volumes/amn-uploads"), ("DELETE", "/v1.41/networks/amn_default"),
    ("DELETE", "/v1.41/images/postgres:16"),                   # by name: Watchtower deletes by id only
    ("DELETE", f"/v1.41/containers/{CID}/x"),
]


def merged(*lists):
    return sp.merge([(str(i), a) for i, a in enumerate(lists)])


def test_the_default_allowlists_are_valid():
    assert sp.named_problems({"allow": ALLOW, "update": UPDATE, "cleanup": CLEANUP}) == []


@pytest.mark.parametrize(("method", "path"), MONITOR_CALLS + UPDATE_CALLS + CLEANUP_CALLS)
def test_every_call_watchtower_makes_passes_when_updating_with_cleanup(method, path):
    assert sp.decide(merged(ALLOW, UPDATE, CLEANUP), method, path) is None


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_what_watchtower_never_calls_is_refused(method, path):
    assert sp.decide(merged(ALLOW, UPDATE, CLEANUP), method, path) == 403


def test_monitor_only_passes_reads_and_pulls_and_refuses_every_change():
    monitor = merged(ALLOW)
    assert all(sp.decide(monitor, m, p) is None for m, p in MONITOR_CALLS)
    refused = [sp.decide(monitor, m, p) for m, p in UPDATE_CALLS + CLEANUP_CALLS]
    assert refused == [403, 403, 405, 403, 403, 403, 403, 403, 405]
    # Without --cleanup, images stay; containers can still be replaced.
    no_cleanup = merged(ALLOW, UPDATE)
    assert sp.decide(no_cleanup, "DELETE", f"/v1.41/images/{IMAGE_ID}") == 403


def test_a_method_without_a_regex_is_405_a_path_outside_it_403():
    allow = merged(ALLOW, UPDATE, CLEANUP)
    assert sp.decide(allow, "PUT", f"/v1.41/containers/{CID}/archive") == 405
    assert sp.decide(allow, "PATCH", "/v1.41/anything") == 405
    assert sp.decide(allow, "GET", "/v1.41/secrets") == 403


def test_flags_join_a_methods_regexes_behind_the_version_prefix_in_the_proxys_method_order():
    flags = socket_proxy_flags({"a": {"POST": ["/images/create"], "GET": ["/version", "/info"]},
                                "b": {"GET": ["/info", "/containers/json"], "DELETE": ["/containers/[a-z]+"]}})
    assert flags == [
        r"-allowGET=(?:/v1\.[0-9]+)?(?:/version|/info|/containers/json)",
        r"-allowPOST=(?:/v1\.[0-9]+)?(?:/images/create)",
        r"-allowDELETE=(?:/v1\.[0-9]+)?(?:/containers/[a-z]+)",
    ]
    # An empty list adds no flag (the method stays refused).
    assert socket_proxy_flags({"a": {"GET": ["/version"], "PUT": []}}) == [r"-allowGET=(?:/v1\.[0-9]+)?(?:/version)"]


def test_the_proxys_anchors_hold_for_every_alternative():
    # socket-proxy compiles "^" + flag + "$": without the group, "/a|/b" would allow anything that starts with /a.
    [flag] = socket_proxy_flags({"x": {"GET": ["/version|/info"]}})
    regex = "^" + flag.split("=", 1)[1] + "$"
    assert re.match(regex, "/info") and re.match(regex, "/v1.41/version")
    assert not re.match(regex, "/versionX") and not re.match(regex, "/version/../secrets")
    assert not re.match(regex, "/v1.41/info/x") and not re.match(regex, "/x/info")


@pytest.mark.parametrize(("entry", "why"), [
    ("/containers/(", "is not a valid regular expression (missing ), unterminated subpattern"),
    ("containers/json", "must start with /"),
    ("", "must be a non-empty string"),
    ("^/version", "anchors (^) are added by the proxy"),
    ("/version$", "anchors ($) are added by the proxy"),
    ("/containers/(?!secret)[a-z]+", "lookaround groups ((?!...) are not supported by Go's RE2"),
    ("/x(?<=y)", "lookaround groups ((?<=...) are not supported"),
    ("/(a)\\1", "backreferences (\\1) are not supported"),
    ("/(?P<n>a)(?P=n)", "named backreferences"),
    ("/(?>a)", "atomic groups"),
    ("/a++", "possessive quantifiers (++) are not supported"),
])
def test_a_bad_entry_is_named_with_its_option_method_and_index(entry, why):
    problems = socket_proxy_problems({"watchtower_socket_proxy_allow_extra": {"GET": ["/version", entry]}})
    assert len(problems) == 1, problems
    assert problems[0].startswith("watchtower_socket_proxy_allow_extra.GET[1]: "), problems
    assert why in problems[0], problems


def test_escaped_and_bracketed_text_is_not_mistaken_for_a_construct():
    ok = ["/a\\(?=b", "/[$^]x", "/[]^$]y", "/[^/]+/json", "/x\\$", "/a\\\\", "/\\d+/logs", "/(?:a|b)", "/(?P<n>a)",
          "/(?i:abc)", "/a{2}"]
    assert socket_proxy_problems({"o": {"GET": ok}}) == []


def test_the_shape_of_an_allowlist_is_checked():
    assert socket_proxy_problems({"o": None, "p": {"GET": None}}) == []
    assert socket_proxy_problems({"o": ["/version"]}) == [
        "o: expected a dict of HTTP method -> list of path regexes, got list"]
    assert socket_proxy_problems({"o": {"get": ["/version"], "FETCH": ["/x"], "POST": "/images/create"}}) == [
        "o.get: unknown HTTP method (write GET); the proxy knows GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, "
        "TRACE, OPTIONS",
        "o.FETCH: unknown HTTP method; the proxy knows GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, TRACE, OPTIONS",
        "o.POST: expected a list of path regexes, got str",
    ]


def test_the_flags_filter_fails_naming_every_problem():
    with pytest.raises(AnsibleFilterError) as err:
        socket_proxy_flags({"first": {"GET": ["/ok", "/bad("]}, "second": {"POST": ["nope"]}})
    assert "first.GET[1]: '/bad(' is not a valid regular expression" in str(err.value)
    assert "second.POST[0]: 'nope' must start with /" in str(err.value)
    with pytest.raises(AnsibleFilterError, match="expects a dict of option name"):
        socket_proxy_flags([{"GET": ["/x"]}])


def test_preflight_names_a_bad_regex_and_a_misspelt_method_before_any_host_is_touched():
    extra = {"POST": ["/containers/[a-z]+/(start|exec"]}
    assert site_problems({"watchtower"}, {"watchtower_socket_proxy_allow": ALLOW,
                                          "watchtower_socket_proxy_allow_extra": extra}) == [
        "watchtower_socket_proxy_allow_extra.POST[0]: '/containers/[a-z]+/(start|exec' is not a valid regular "
        "expression (missing ), unterminated subpattern at position 19)"]
    assert site_problems(set(), {"watchtower_socket_proxy_allow_extra": extra}) == []  # layer switched off
    problems: list[str] = []
    values = {"watchtower_socket_proxy_allow_extra": {"Get": ["/x("], "DELETE": "/containers/x"}}
    check_options(load_role_options("watchtower"), values, "", problems, top=True)
    problems += site_problems({"watchtower"}, values)  # each said once: the spec names the shape, not the regexes
    assert problems == ["watchtower_socket_proxy_allow_extra.Get: unsupported parameter; did you mean GET?",
                        "watchtower_socket_proxy_allow_extra.DELETE: expected list of str, got str"]


# ---------------------------------------------------------------------------------------------------------------------
# The stand-in reads socket-proxy's flags as Go's flag package does
# ---------------------------------------------------------------------------------------------------------------------

def test_standin_reads_flags_like_go_and_env_fills_the_rest():
    opts = standin.parse(["-listenip=0.0.0.0", "--allowfrom", "watchtower,10.0.0.0/8", "-allowhealthcheck",
                          "-allowGET=/version", "-allowGET=/info", "-stoponwatchdog=false"],
                         {"SP_ALLOW_POST": "/images/create", "SP_ALLOW_GET": "/ignored", "SP_PROXYPORT": "2376"})
    assert opts["listenip"] == "0.0.0.0" and opts["allowfrom"] == "watchtower,10.0.0.0/8"
    assert opts["allowhealthcheck"] is True and opts["stoponwatchdog"] is False and opts["proxyport"] == "2376"
    # A flag wins over its variable; repeated flags add up (socket-proxy 1.12).
    assert opts["allow"] == {"GET": ["/version", "/info"], "POST": ["/images/create"]}


@pytest.mark.parametrize(("argv", "code", "said"), [
    (["-nosuchflag"], 2, "flag provided but not defined: -nosuchflag"),
    (["-allowGET"], 2, "flag needs an argument: -allowGET"),
    (["-proxysocketendpoint=/tmp/s"], 1, "not offered by this stand-in"),
])
def test_standin_refuses_flags_as_the_proxy_does(argv, code, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        standin.parse(argv, {})
    assert exit_.value.code == code
    out = capsys.readouterr()
    assert said in out.out + out.err


@pytest.mark.parametrize(("argv", "said"), [
    (["-allowGET=/containers/("], 'invalid regex "/containers/(" for method GET in command line parameter'),
    (["-allowGET=/(?!x)"], "invalid or unsupported Perl syntax"),
    (["-listenip=not-an-ip"], 'invalid IP "not-an-ip" for listenip'),
    (["-proxyport=70000"], "port number has to be between 1 and 65535"),
    (["-loglevel=TRACE"], "invalid log level TRACE"),
])
def test_standin_stops_on_a_bad_value(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        standin.validate(standin.parse(argv, {}))
    assert exit_.value.code == 1 and said in capsys.readouterr().out


def test_standin_config_checks_client_then_method_then_path():
    cfg = standin.haproxy_config(standin.parse(["-allowfrom=watchtower,192.0.2.0/24", "-allowGET=/version",
                                                "-allowhealthcheck", "-socketpath=/run/docker.sock"], {}))
    lines = [ln.strip() for ln in cfg.split("frontend health")[0].splitlines()]
    assert "acl client_allowed src 192.0.2.0/24" in lines
    assert "http-request do-resolve(txn.af0,docker,ipv4) str(watchtower)" in lines
    assert "acl method_configured method GET" in lines
    assert "server docker unix@/run/docker.sock" in lines and "bind 127.0.0.1:55555" in cfg
    returns = [ln for ln in lines if ln.startswith("http-request return status 40")]
    assert [r.split()[3] for r in returns] == ["403", "405", "403"]
    assert [r.rsplit(" if ", 1)[1] for r in returns] == ["!client_allowed", "!method_configured", "!path_allowed"]
