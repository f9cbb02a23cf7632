"""The docker_engine role's derived variables (vars/main.yml), rendered with Ansible's own
templating for several inputs: the daemon.json document and the Compose install method."""

from __future__ import annotations

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
    variables = {**DEFAULTS, **VARS, **overrides,
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


def test_log_opts_only_for_drivers_that_take_them():
    cfg = render("docker_engine__daemon_config", docker_engine_log_driver="journald")
    assert "log-opts" not in cfg
    cfg = render("docker_engine__daemon_config", docker_engine_log_driver="local", docker_engine_log_max_file=5)
    assert cfg["log-opts"] == {"max-size": "10m", "max-file": "5"}


@pytest.mark.parametrize(
    ("distribution", "major", "source", "method", "package"),
    [
        ("Debian", "12", "debian", "pip", "docker-compose"),
        ("Debian", "13", "debian", "package", "docker-compose"),
        ("Ubuntu", "24", "debian", "package", "docker-compose-v2"),
        ("Ubuntu", "20", "debian", "pip", "docker-compose-v2"),
        ("Debian", "12", "docker", "package", "docker-compose-plugin"),
    ],
)
def test_compose_auto_method(distribution, major, source, method, package):
    kw = {"docker_engine_source": source}
    assert render("docker_engine__compose_method", distribution, major, **kw) == method
    assert render("docker_engine__compose_package", distribution, major, **kw) == package


def test_explicit_compose_method_wins():
    assert render("docker_engine__compose_method", docker_engine_compose_method="copy") == "copy"


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


def test_check_mode_without_answers_predicts_only_what_is_missing():
    """Check mode where apt cannot answer (no package lists): dpkg's view decides what the run would install."""
    def dpkg(pkg, abbrev):
        return {"item": pkg, "stdout": f"{pkg} {abbrev}" if abbrev else "", "rc": 0 if abbrev else 1}

    installed = {"results": [dpkg("iptables", "ii"), dpkg("ca-certificates", "ii"), dpkg("python3-docker", "ii")]}
    converged = {"missing": [], "changing": False}
    assert render("docker_engine__install_missing", docker_engine_source="docker",
                  docker_engine__dpkg_other=installed, docker_engine__docker_plan=converged) == []
    # The pin moved: the engine packages would change; a companion that is not there would be installed.
    moved = {"missing": ["docker-compose-plugin"], "changing": True}
    assert render("docker_engine__install_missing", docker_engine_source="docker",
                  docker_engine__dpkg_other=installed, docker_engine__docker_plan=moved) == [
        "docker-compose-plugin", "docker-ce", "docker-ce-cli"]
    # Debian's packages: the one dpkg does not list (rc status or unknown) is what the run installs.
    debian = {"results": [dpkg("docker.io", "rc"), dpkg("iptables", "ii"), dpkg("ca-certificates", "hi"),
                          dpkg("xz-utils", None), dpkg("python3-docker", "ii")]}
    assert render("docker_engine__install_missing", docker_engine__dpkg_other=debian) == ["docker.io", "xz-utils"]
