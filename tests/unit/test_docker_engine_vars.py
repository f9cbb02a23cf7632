"""The docker_engine role's derived variables (vars/main.yml), rendered with Ansible's own
templating for several inputs: the daemon.json document and the Compose install method; and the filter that
settles the CLI and Compose packages from the host's apt (plugins/filter/docker_engine.py)."""

from __future__ import annotations

import importlib

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tests.conftest import ROOT

ROLE = ROOT / "roles" / "docker_engine"
LOADER = DataLoader()


def trusted(value):
    """Role files are trusted templates in a real play; mark them so here too."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


DEFAULTS = trusted(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
VARS = trusted(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))


def render(name: str, distribution: str = "Debian", major: str = "12", **overrides):
    variables = {**DEFAULTS, **VARS, "inventory_hostname": "node1.example.test",
                 "groups": {"all": ["node1.example.test"]}, **overrides,
                 "ansible_facts": {"distribution": distribution, "distribution_major_version": major}}
    templar = Templar(loader=LOADER, variables=variables)
    return templar.template(VARS[name])


def test_default_daemon_json():
    assert render("docker_engine__daemon_config") == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "live-restore": True,
        "userland-proxy": False,
        "icc": False,
        "no-new-privileges": True,
    }


def test_hardened_daemon_defaults_can_be_turned_off():
    cfg = render("docker_engine__daemon_config", docker_engine_userland_proxy=True, docker_engine_icc=True,
                 docker_engine_no_new_privileges=False)
    assert (cfg["userland-proxy"], cfg["icc"], cfg["no-new-privileges"]) == (True, True, False)


def test_syslog_ships_tagged_lines_to_the_collector():
    cfg = render("docker_engine__daemon_config", docker_engine_log_driver="syslog",
                 docker_engine_log_syslog_address="udp://192.0.2.20:514")
    # the tag is Docker's own template, written literally (Jinja must not have evaluated it)
    assert cfg["log-opts"] == {"syslog-address": "udp://192.0.2.20:514", "syslog-format": "rfc5424micro",
                               "tag": "{{.Name}}"}
    local = render("docker_engine__daemon_config", docker_engine_log_driver="syslog")
    assert "syslog-address" not in local["log-opts"]


def test_daemon_json_with_every_option():
    cfg = render(
        "docker_engine__daemon_config",
        docker_engine_daemon_data_root="/srv/docker",
        docker_engine_default_address_pools=[{"base": "172.30.0.0/16", "size": 24}],
        docker_engine_userland_proxy=False,
        docker_engine_live_restore=False,
        docker_engine_daemon_options={"live-restore": True, "metrics-addr": "127.0.0.1:9323"},
    )
    assert cfg["data-root"] == "/srv/docker"
    assert cfg["default-address-pools"] == [{"base": "172.30.0.0/16", "size": 24}]
    assert cfg["userland-proxy"] is False
    assert cfg["live-restore"] is True  # docker_engine_daemon_options wins
    assert cfg["metrics-addr"] == "127.0.0.1:9323"


def test_live_restore_is_off_on_swarm_nodes_by_default():
    hosts = ["m1.example.test", "w1.example.test", "solo.example.test"]
    groups = {"all": hosts, "swarm_managers": hosts[:1], "swarm_workers": hosts[1:2]}
    seen = {h: render("docker_engine__daemon_config", inventory_hostname=h, groups=groups)["live-restore"]
            for h in hosts}
    assert seen == {"m1.example.test": False, "w1.example.test": False, "solo.example.test": True}
    # Groups of other names, through the swarm role's variables.
    groups = {"all": hosts, "cluster_a": hosts[2:]}
    cfg = render("docker_engine__daemon_config", inventory_hostname="solo.example.test", groups=groups,
                 swarm_managers_group="cluster_a")
    assert cfg["live-restore"] is False
    # Said outright in the inventory, it wins (docker_engine's assert then refuses it on a swarm node).
    cfg = render("docker_engine__daemon_config", inventory_hostname="m1.example.test",
                 groups={"swarm_managers": ["m1.example.test"]}, docker_engine_live_restore=True)
    assert cfg["live-restore"] is True


def test_log_opts_only_for_drivers_that_take_them():
    cfg = render("docker_engine__daemon_config", docker_engine_log_driver="journald")
    assert "log-opts" not in cfg
    cfg = render("docker_engine__daemon_config", docker_engine_log_driver="local", docker_engine_log_max_file=5)
    assert cfg["log-opts"] == {"max-size": "10m", "max-file": "5"}


# --- the CLI and Compose packages, from what the host's apt offers (filter docker_engine_packages) -----------------
# apt-cache policy docker.io docker-cli docker-compose-v2 docker-compose, in the shape measured on the real hosts
# (2026-12); a name apt does not know is not printed at all. The archive line names the mirror of this machine's own
# apt sources (the filter reads only the Installed/Candidate lines).
def _archive(suite: str) -> str:
    apt_sources = importlib.import_module("tests.images.apt_sources")
    try:
        return apt_sources.mirrors_for(suite)[0]
    except SystemExit:
        return "file:/var/lib/apt/offline"


def apt_policy(suite: str | None, packages: dict[str, tuple[str | None, str]]) -> str:
    """{package: (installed or None, candidate)} -> apt-cache policy's text; SUITE None: apt has no package lists,
    so it knows only what dpkg has installed."""
    lines = []
    for name, (installed, candidate) in packages.items():
        lines += [f"{name}:", f"  Installed: {installed or '(none)'}", f"  Candidate: {candidate}", "  Version table:"]
        mark, priority = (" ***", 100 if suite is None else 500) if installed else ("    ", 500)
        lines.append(f"{mark} {candidate} {priority}")
        if suite is not None:
            lines.append(f"        500 {_archive(suite)} {suite}/main amd64 Packages")
        if installed:
            lines.append("        100 /var/lib/dpkg/status")
    return "\n".join(lines) + "\n"


DEBIAN13_ENGINE = "26.1.5+dfsg1-9+deb13u1+b1"
BOOKWORM = apt_policy("bookworm", {"docker.io": ("20.10.24+dfsg1-1+deb12u1+b6", "20.10.24+dfsg1-1+deb12u1+b6"),
                                   "docker-compose": (None, "1.29.2-3")})
# Debian 13 right after docker.io was installed: the CLI and Compose v2 are packages of their own, not installed yet.
TRIXIE_FRESH = apt_policy("trixie", {"docker.io": (DEBIAN13_ENGINE, DEBIAN13_ENGINE),
                                     "docker-cli": (None, DEBIAN13_ENGINE), "docker-compose": (None, "2.26.1-4")})
# A converged Debian 13 host whose package lists were cleaned: apt knows only what dpkg has installed.
TRIXIE_NO_LISTS = apt_policy(None, {"docker.io": (DEBIAN13_ENGINE, DEBIAN13_ENGINE),
                                    "docker-cli": (DEBIAN13_ENGINE, DEBIAN13_ENGINE),
                                    "docker-compose": ("2.26.1-4", "2.26.1-4")})
UBUNTU_NOBLE = """docker.io:
  Installed: (none)
  Candidate: 24.0.7-0ubuntu4.1
docker-compose-v2:
  Installed: (none)
  Candidate: 2.27.1+ds1-0ubuntu1~24.04.1
docker-compose:
  Installed: (none)
  Candidate: 1.29.2-6ubuntu1
"""


def test_docker_repository_url_and_key_fingerprint():
    facts = {"distribution": "Ubuntu", "distribution_major_version": "24"}
    for url in ("https://download.docker.com/linux", "https://download.docker.com/linux/"):
        templar = Templar(loader=LOADER, variables={**DEFAULTS, **VARS, "docker_engine_repo_url": url,
                                                    "ansible_facts": facts})
        assert templar.template(VARS["docker_engine__repo_base"]) == "https://download.docker.com/linux/ubuntu"
    assert render("docker_engine__repo_key_expected") == "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
    assert render("docker_engine__repo_key_expected",
                  docker_engine_repo_key_fingerprint="9dc8 5822 9fc7 dd38 854a  e2d8 8d81 803c 0ebf cd88") \
        == "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
    assert render("docker_engine__repo_key_expected", docker_engine_repo_key_fingerprint="0EBFCD88") == ""


@pytest.mark.parametrize(("method", "companions"), [
    ("auto", ["containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]),
    ("package", ["containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]),
    ("copy", ["containerd.io", "docker-buildx-plugin"]),
    ("none", ["containerd.io", "docker-buildx-plugin"]),
])
def test_docker_repository_packages_follow_the_compose_method(method, companions):
    kw = {"docker_engine_source": "docker", "docker_engine_compose_method": method}
    assert render("docker_engine__docker_companions", **kw) == companions
    assert render("docker_engine__docker_set", **kw) == ["docker-ce", "docker-ce-cli", *companions]
    plan = {"names": ["docker-ce=5:27.3.1-1~debian.12~bookworm", "docker-ce-cli=5:27.3.1-1~debian.12~bookworm",
                      *companions]}
    assert render("docker_engine__install_names", docker_engine__docker_plan=plan, **kw) == [
        *plan["names"], "iptables", "ca-certificates", "python3-docker"]


def test_install_missing_is_what_dpkg_does_not_list_plus_the_docker_plan():
    """apt runs only for this list; check mode where apt cannot answer (no package lists) predicts it."""
    def dpkg(*lines):
        return {"stdout": "".join(f"{line} \n" for line in lines), "rc": 0}

    installed = dpkg("iptables ii", "ca-certificates ii", "python3-docker ii")
    converged = {"missing": [], "changing": False}
    assert render("docker_engine__install_missing", docker_engine_source="docker",
                  docker_engine__dpkg_other=installed, docker_engine__docker_plan=converged) == []
    # The pin moved: the engine packages would change; a companion that is not there would be installed.
    moved = {"missing": ["docker-compose-plugin"], "changing": True}
    assert render("docker_engine__install_missing", docker_engine_source="docker",
                  docker_engine__dpkg_other=installed, docker_engine__docker_plan=moved) == [
        "docker-compose-plugin", "docker-ce", "docker-ce-cli"]
    # Debian's packages: the ones dpkg does not list installed (rc status, or unknown: no line at all) are installed;
    # a held package counts as installed.
    debian = dpkg("docker.io rc", "iptables ii", "ca-certificates hi", "python3-docker ii")
    assert render("docker_engine__install_missing", docker_engine__dpkg_other=debian) == ["docker.io", "xz-utils"]
    assert render("docker_engine__install_missing",
                  docker_engine__dpkg_other=dpkg("docker.io ii", "iptables ii", "ca-certificates ii", "xz-utils ii",
                                                 "python3-docker ii")) == []
    assert render("docker_engine__other_packages", docker_engine_python_sdk=False,
                  docker_engine_extra_packages=["jq"]) == ["docker.io", "iptables", "ca-certificates", "xz-utils", "jq"]


def packages(policy, **kw):
    from ansible_collections.selfhosted.platform.plugins.filter.docker_engine import docker_engine_packages

    return docker_engine_packages(policy, **kw)


def test_apt_policy_is_parsed_and_none_is_none():
    from ansible_collections.selfhosted.platform.plugins.filter.docker_engine import parse_apt_policy, upstream_major

    assert parse_apt_policy(TRIXIE_FRESH) == {
        "docker.io": {"installed": "26.1.5+dfsg1-9+deb13u1+b1", "candidate": "26.1.5+dfsg1-9+deb13u1+b1"},
        "docker-cli": {"installed": None, "candidate": "26.1.5+dfsg1-9+deb13u1+b1"},
        "docker-compose": {"installed": None, "candidate": "2.26.1-4"}}
    assert parse_apt_policy("") == {}
    assert [upstream_major(v) for v in ("2.26.1-4", "1:2.3-1", "1.29.2-3", None, "")] == [2, 2, 1, None, None]


def test_debian_13_gets_the_cli_package_and_compose_from_docker_compose():
    """Debian 13's docker.io has no docker CLI (main: the first converge failed at `docker load`, no such file)."""
    plan = packages(TRIXIE_FRESH, compose_fallback="copy", cli_present=False)
    assert plan["cli_package"] == "docker-cli" and plan["cli_known"]
    assert (plan["compose_method"], plan["compose_package"], plan["compose_version"]) == (
        "package", "docker-compose", "2.26.1-4")
    assert plan["compose_known"]
    # converged: the CLI is there, nothing to install for it
    assert packages(TRIXIE_FRESH, cli_present=True)["cli_package"] is None


def test_debian_12_keeps_the_cli_in_docker_io_and_compose_v1_is_not_taken():
    plan = packages(BOOKWORM, cli_present=True)
    assert plan["cli_package"] is None and plan["compose_method"] == "pip" and plan["compose_package"] is None
    assert "docker-compose 1.29.2-3" in plan["reason"]
    assert packages(BOOKWORM, compose_fallback="copy")["compose_method"] == "copy"
    assert packages(BOOKWORM, compose_fallback="none")["compose_method"] == "none"
    # The explicit package method where apt offers no Compose v2: refused, naming what apt offers.
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError, match=r"docker_engine_compose_method: package.*docker-compose 1\.29\.2-3"):
        packages(BOOKWORM, compose_method="package")


def test_ubuntu_prefers_docker_compose_v2():
    plan = packages(UBUNTU_NOBLE, cli_present=False)
    assert (plan["compose_method"], plan["compose_package"]) == ("package", "docker-compose-v2")
    assert plan["cli_package"] is None and plan["cli_known"]  # no docker-cli package: docker.io ships the CLI


def test_docker_repository_is_left_to_its_own_packages():
    plan = packages(TRIXIE_FRESH, source="docker", cli_present=False)
    assert (plan["compose_method"], plan["compose_package"], plan["cli_package"]) == (
        "package", "docker-compose-plugin", None)
    assert packages("", source="docker", compose_method="copy")["compose_method"] == "copy"


def test_without_package_lists_an_installed_package_is_still_known():
    plan = packages(TRIXIE_NO_LISTS, lists_present=False, compose_fallback="copy")
    assert (plan["compose_method"], plan["compose_package"], plan["compose_known"]) == (
        "package", "docker-compose", True)
    assert plan["cli_package"] is None and plan["cli_known"]


def test_a_fresh_host_in_check_mode_cannot_know_yet():
    """No package lists and nothing installed: the fallback stands in, and both outcomes are predicted."""
    plan = packages("", lists_present=False, cli_present=False, compose_fallback="copy")
    assert (plan["compose_method"], plan["compose_known"], plan["cli_known"]) == ("copy", False, False)
    assert plan["cli_package"] is None
    assert packages("", lists_present=False, compose_method="package")["compose_method"] == "package"


@pytest.mark.parametrize("method", ["pip", "copy", "none"])
def test_an_explicit_method_other_than_package_wins(method):
    assert packages(TRIXIE_FRESH, compose_method=method)["compose_method"] == method


def test_bad_arguments_are_refused():
    from ansible.errors import AnsibleFilterError
    for kw in ({"source": "snap"}, {"compose_method": "brew"}, {"compose_fallback": "package"}):
        with pytest.raises(AnsibleFilterError):
            packages("", **kw)


def test_the_role_takes_method_and_package_from_the_plan():
    plan = packages(TRIXIE_FRESH)
    assert render("docker_engine__compose_method", docker_engine__plan=plan) == "package"
    assert render("docker_engine__compose_package", docker_engine__plan=plan) == "docker-compose"
