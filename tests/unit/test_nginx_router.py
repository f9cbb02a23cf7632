"""The nginx router's name-based sites and TLS (plugins/module_utils/nginx_router.py, the nginx_router_* filters, the
proxy role's template): every problem at once naming the option, certificate files named by their content, routes
resolved at request time, and the default server rendered exactly as before when no site is declared. None of
proxy_nginx_sites exists on the base commit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.nginx_router import FilterModule
from ansible_collections.selfhosted.platform.plugins.module_utils import nginx_router as nr

from tests.conftest import ROOT

FILTERS = FilterModule().filters()
CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n"
TLS = {"certificate": CERT, "key": KEY}
PORTS = ["80:80", "443:443"]


def site(name, **extra):
    return dict({"server_names": [name], "tls": TLS,
                 "routes": [{"path": "/", "upstream": "http://%s_backend:8080" % name.split(".")[1], "resolve": True}]},
                **extra)


def test_a_valid_tls_site_has_no_problem_and_is_planned_with_content_named_files():
    sites = [site("backend.example.test"), site("backend.stage.example.test")]
    assert nr.problems([], sites, PORTS) == []
    got = nr.plan([], sites, PORTS)
    assert got["tls"] is True and got["default_routes"] == []
    digest = hashlib.sha256((CERT.strip() + "\n" + KEY.strip()).encode()).hexdigest()[:12]
    assert [f["name"] for f in got["tls_files"]] == [
        f"backend.example.test.{digest}.crt", f"backend.example.test.{digest}.key",
        f"backend.stage.example.test.{digest}.crt", f"backend.stage.example.test.{digest}.key"]
    assert [f["key"] for f in got["tls_files"]] == [False, True, False, True]
    first = got["sites"][0]
    assert (first["tls_name"], first["http"], first["server_names"]) == (
        f"backend.example.test.{digest}", "redirect", ["backend.example.test"])
    route = first["routes"][0]
    assert (route["resolve_host"], route["resolve_pass"]) == ("example_backend", "http://$selfhosted_upstream:8080")


def test_a_renewed_certificate_is_a_new_file_name():
    before = nr.plan([], [site("backend.example.test")], PORTS)["sites"][0]["tls_name"]
    renewed = site("backend.example.test", tls={"certificate": CERT.replace("fake", "renewed"), "key": KEY})
    after = nr.plan([], [renewed], PORTS)["sites"][0]["tls_name"]
    assert before != after and before.split(".")[:3] == after.split(".")[:3]


def test_htpasswd_files_keep_their_names_and_a_sites_are_its_own():
    routes = [{"path": "/admin", "return": "200 ok", "auth": {"users": [{"name": "a", "password": "b"}]}}]
    sites = [dict(site("backend.example.test"), routes=routes)]
    got = nr.plan(routes, sites, PORTS)
    # the default server's: Ansible's hash('md5') of the path, the name the role always used
    assert got["default_routes"][0]["auth_file"] == hashlib.md5(b"/admin").hexdigest()
    assert got["sites"][0]["routes"][0]["auth_file"] == hashlib.md5(b"backend.example.test /admin").hexdigest()
    assert len(got["auth_routes"]) == 2


@pytest.mark.parametrize(("sites", "ports", "message"), [
    ([site("backend.example.test")], ["80:80"],
     'proxy_nginx_ports: a site has tls, but no port publishes the router\'s 443 (add "443:443")'),
    ([site("backend.example.test"), site("backend.example.test")], PORTS,
     "proxy_nginx_sites[1]: backend.example.test is already served by proxy_nginx_sites[0]"),
    ([dict(site("b.example.test"), tls={"certificate": "not a pem", "key": KEY})], PORTS,
     "proxy_nginx_sites[0] (b.example.test): tls.certificate must be a PEM certificate"),
    ([dict(site("b.example.test"), tls={"certificate": CERT, "key": "secret-not-pem"})], PORTS,
     "proxy_nginx_sites[0] (b.example.test): tls.key must be a PEM private key (the value is not shown)"),
    ([dict(site("b.example.test"), tls={"certificate": CERT, "key": KEY.replace("PRIVATE", "ENCRYPTED PRIVATE")})],
     PORTS, "proxy_nginx_sites[0] (b.example.test): tls.key is encrypted"),
    ([{"server_names": [], "routes": [{"path": "/", "return": "200"}]}], PORTS,
     "proxy_nginx_sites[0]: server_names must be a non-empty list of host names"),
    ([{"server_names": ["bad name"], "routes": [{"path": "/", "return": "200"}]}], PORTS,
     "proxy_nginx_sites[0]: 'bad name' is not a host name nginx can match"),
    ([{"server_names": ["b.example.test"], "routes": []}], PORTS,
     "proxy_nginx_sites[0] (b.example.test): routes must be a non-empty list"),
    ([{"server_names": ["b.example.test"], "http": "redirect", "routes": [{"path": "/", "return": "200"}]}], PORTS,
     "proxy_nginx_sites[0] (b.example.test): http redirect needs tls"),
    ([dict(site("b.example.test"), http="both")], PORTS,
     "proxy_nginx_sites[0] (b.example.test): http must be redirect or serve, got 'both'"),
    ([dict(site("b.example.test"), routes=[{"path": "/", "upstream": "http://app:80/api", "resolve": True}])], PORTS,
     "proxy_nginx_sites[0] (b.example.test).routes[0] (/): resolve needs an upstream of the form http://name:port "
     "without a path, got http://app:80/api"),
    ([dict(site("b.example.test"), routes=[{"path": "/", "return": "200", "alias": "/srv"}])], PORTS,
     "routes[0] (/): give exactly one of upstream, alias or return, got alias, return"),
    ([dict(site("b.example.test"), routes=[{"path": "/", "return": "200"}, {"path": "/", "return": "404"}])], PORTS,
     "routes[1]: the path / is routed twice"),
])
def test_each_problem_names_the_option(sites, ports, message):
    found = nr.problems([], sites, ports)
    assert any(message in p for p in found), found
    with pytest.raises(AnsibleFilterError, match="proxy_nginx"):
        FILTERS["nginx_router_plan"]([], sites, ports)


def test_every_problem_is_reported_at_once_and_no_key_is_shown():
    sites = [dict(site("b.example.test"), tls={"certificate": "x", "key": "s3cr3t-key"}),
             {"server_names": ["c.example.test"], "routes": [{"path": "/x"}]}]
    found = FILTERS["nginx_router_problems"]([{"path": "/", "match": "glob", "return": "200"}], sites, ["80:80"])
    assert len(found) == 5, found
    assert not any("s3cr3t" in p for p in found)


def test_a_router_with_nothing_to_route_is_the_roles_problem_not_the_preflights():
    assert nr.problems([], [], ["80:80"]) == [
        "proxy_nginx_routes: the router has nothing to route - declare routes or proxy_nginx_sites"]
    assert nr.problems([], [], ["80:80"], require_routes=False) == []


def test_long_form_ports_count_for_tls():
    assert nr.problems([], [site("b.example.test")], [{"target": 443, "published": 8443}]) == []


# ---------------------------------------------------------------------------------------------
# the template
# ---------------------------------------------------------------------------------------------
TEMPLATE = ROOT / "roles" / "proxy" / "templates" / "nginx.conf.j2"
BASE = {"ansible_managed": "managed", "proxy_nginx_project": "router", "proxy_nginx_real_ip_enabled": False,
        "proxy_nginx_server_name": "_", "proxy_nginx_client_max_body_size": "10m", "proxy_nginx_gzip": False,
        "proxy_nginx_server_directives": [], "proxy_nginx_health_path": "/nginx-health",
        "proxy_nginx_resolver": "127.0.0.11", "proxy_nginx_resolver_valid": "5s"}


def render(routes, sites):
    # Ansible renders role templates with trim_blocks (and without lstrip_blocks).
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(Path(TEMPLATE).read_text()).render(
        dict(BASE, proxy__router=nr.plan(routes, sites, PORTS)))


def test_without_sites_the_router_has_its_one_server_and_no_tls():
    out = render([{"path": "/", "upstream": "http://frontend:8083"}], [])
    assert out.count("server {") == 1 and "ssl" not in out and "resolver" not in out
    assert "listen 80 default_server;" in out and "proxy_pass http://frontend:8083;" in out


def test_tls_sites_redirect_port_80_and_refuse_unknown_names():
    out = render([], [site("backend.example.test"), dict(site("backend.stage.example.test"), http="serve")])
    assert "ssl_reject_handshake on;" in out
    assert out.count("return 301 https://$host$request_uri;") == 1  # the stage site serves port 80 too
    assert out.count("listen 443 ssl;") == 2
    name = nr.plan([], [site("backend.example.test")], PORTS)["sites"][0]["tls_name"]
    assert f"ssl_certificate_key /etc/nginx/tls/{name}.key;" in out
    assert "set $selfhosted_upstream example_backend;" in out and "resolver 127.0.0.11 valid=5s ipv6=off;" in out
    # the default server routes nothing itself: 404 for names no site serves
    assert "return 404;" in out
    assert KEY.splitlines()[1] not in out
