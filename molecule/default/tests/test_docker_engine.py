"""Verify role docker_engine on the converged server (testinfra, over the molecule inventory)."""

import json

import pytest

EXPECTED_DAEMON = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "5m", "max-file": "2"},
    "live-restore": True,
    "userland-proxy": False,
    "icc": False,
    "no-new-privileges": True,
    "default-address-pools": [{"base": "172.31.0.0/16", "size": 24}],
    "max-concurrent-downloads": 4,
}


def test_docker_service_running_and_enabled(host):
    svc = host.service("docker")
    assert svc.is_running
    assert svc.is_enabled


def test_daemon_json_holds_what_was_asked(host):
    f = host.file("/etc/docker/daemon.json")
    assert f.user == "root"
    assert f.mode == 0o644
    assert json.loads(f.content_string) == EXPECTED_DAEMON


def test_daemon_applies_the_config(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True
    # userland-proxy false (the role's default): no docker-proxy process even with a published port (checked below).


def test_compose_v2_plugin_works(host):
    out = host.check_output("docker compose version --short")
    major, minor = (int(x) for x in out.lstrip("v").split(".")[:2])
    assert (major, minor) >= (2, 20)


def test_preloaded_image_present_and_staging_cleaned(host):
    assert host.run("docker image inspect shp-test/base:bookworm").rc == 0
    assert not host.file("/var/cache/selfhosted/images/base.tar").exists


@pytest.fixture
def compose_project(host):
    host.run("mkdir -p /tmp/shp-mol-project")
    host.run(
        "printf '%s\\n' 'services:' '  sleeper:' '    image: shp-test/base:bookworm'"
        " '    command: [sleep, infinity]' '    ports: [\"127.0.0.1:18080:8080\"]'"
        " > /tmp/shp-mol-project/compose.yaml"
    )
    yield "/tmp/shp-mol-project"
    host.run("docker compose --project-directory /tmp/shp-mol-project -p shp-mol down -t 0")
    host.run("rm -rf /tmp/shp-mol-project")


def test_compose_runs_a_project_with_rotated_logs_and_pool_addresses(host, compose_project):
    up = host.run(f"docker compose --project-directory {compose_project} -p shp-mol up -d")
    assert up.rc == 0, up.stderr
    rows = [json.loads(x) for x in host.check_output(
        f"docker compose --project-directory {compose_project} -p shp-mol ps --format json").splitlines()]
    assert [r["State"] for r in rows] == ["running"]
    cid = rows[0]["ID"]
    log_cfg = json.loads(host.check_output(f"docker inspect --format '{{{{json .HostConfig.LogConfig}}}}' {cid}"))
    assert log_cfg == {"Type": "json-file", "Config": {"max-file": "2", "max-size": "5m"}}
    net = json.loads(host.check_output("docker network inspect shp-mol_default --format '{{json .IPAM.Config}}'"))
    assert net[0]["Subnet"].startswith("172.31.")
    assert host.run("pgrep -x docker-proxy").rc != 0
    # the daemon's no-new-privileges default reaches a container that did not ask for it
    status = host.check_output(f"docker exec {cid} cat /proc/1/status")
    assert "NoNewPrivs:\t1" in status


def test_data_root_and_docker_group(host):
    d = host.file("/mnt/data")
    assert d.is_directory and d.user == "root" and d.mode == 0o755
    assert "docker" in host.user("deploy").groups
