"""Unit tests for the filters behind playbooks/verify.yml (plugins/filter/verify.py): the declared projects, the
container, port and backup rows (fed with the shapes docker inspect, tcp_probe and restic_snapshot_info produce)
and the aligned report."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter import verify as vf


def container(name, project, service, status="running", health=None, ports=None, oneoff=False):
    state = {"Status": status}
    if health:
        state["Health"] = {"Status": health, "Log": []}
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service,
              "com.docker.compose.oneoff": "True" if oneoff else "False"}
    return {"Name": "/" + name, "State": state, "Config": {"Labels": labels},
            "NetworkSettings": {"Ports": ports or {}}}


LAYERS = {
    "data_tier": [{"name": "amn-db", "engine": "postgres"}, {"name": "amn-redis", "engine": "redis"}],
    "app_stacks": [
        {"name": "amn", "services": {
            "backend": {"image": "x", "healthcheck": {"test": ["CMD", "true"]}},
            "worker": {"image": "x", "deploy": {"replicas": 2}},
            "debug": {"image": "x", "profiles": ["debug"]},
            "frontend": {"image": "x", "healthcheck": {"test": ["NONE"]}}}},
        {"name": "old", "state": "absent"},
    ],
    "proxy": {"project": "amn-router", "service": "nginx", "healthcheck": True},
    "watchtower": {"project": "watchtower", "services": {"watchtower": {}, "socket-proxy": {"healthcheck": True}}},
    "extra": [{"project": "authelia", "services": ["authelia"], "layer": "authelia"}],
}


def by_item(rows):
    return {r["item"]: r for r in rows}


def test_expected_projects_from_the_layers():
    projects = {p["project"]: p for p in vf.verify_expected_projects(LAYERS)}
    assert set(projects) == {"amn-db", "amn-redis", "amn", "old", "amn-router", "watchtower", "authelia"}
    assert projects["amn-db"]["services"] == {"postgres": {"replicas": 1, "healthcheck": True}}
    amn = projects["amn"]["services"]
    assert amn["backend"] == {"replicas": 1, "healthcheck": True}
    assert amn["worker"] == {"replicas": 2, "healthcheck": False}
    assert amn["frontend"]["healthcheck"] is False  # test: NONE disables the image's healthcheck
    assert "debug" not in amn and projects["amn"]["optional"] == ["debug"]
    assert not projects["old"]["present"] and projects["old"]["services"] == {}
    assert projects["authelia"]["layer"] == "authelia"
    assert vf.verify_expected_projects({}) == []
    with pytest.raises(AnsibleFilterError):
        vf.verify_expected_projects({"data_tier": [{"name": "x"}]})


def test_container_rows_name_what_is_missing_unhealthy_or_extra():
    expected = vf.verify_expected_projects(LAYERS)
    containers = [
        container("amn-db-postgres-1", "amn-db", "postgres", health="healthy"),
        container("amn-redis-redis-1", "amn-redis", "redis", health="starting"),
        container("amn-backend-1", "amn", "backend", health="healthy"),
        container("amn-worker-1", "amn", "worker"),
        container("amn-worker-2", "amn", "worker", status="exited"),
        container("amn-frontend-1", "amn", "frontend"),
        container("amn-debug-1", "amn", "debug"),                 # a profile's service: neither needed nor extra
        container("amn-backend-run-1", "amn", "backend", oneoff=True),  # docker compose run leftovers are extra
        container("amn-cron-1", "amn", "cron"),                    # a service no longer declared
        container("old-web-1", "old", "web"),                      # a stack that should be gone
        container("amn-router-nginx-1", "amn-router", "nginx", health="healthy"),
        container("watchtower-watchtower-1", "watchtower", "watchtower", health="unhealthy"),
        container("watchtower-socket-proxy-1", "watchtower", "socket-proxy", health="healthy"),
        container("random", "other-project", "x"),                 # not a declared project: not ours to judge
    ]
    rows = vf.verify_container_rows(expected, containers)
    items = by_item([r for r in rows if r["expected"] != "not declared"])
    assert items["amn-db/postgres"]["ok"] and items["amn-db/postgres"]["expected"] == "1 running, healthy"
    assert not items["amn-redis/redis"]["ok"] and "(starting)" in items["amn-redis/redis"]["actual"]
    assert items["amn/backend"]["ok"] and items["amn/frontend"]["ok"]
    assert not items["amn/worker"]["ok"] and items["amn/worker"]["expected"] == "2 running"
    assert items["amn/worker"]["actual"] == "amn-worker-1 running, amn-worker-2 exited"
    # an image healthcheck that fails counts even when the inventory declares none
    assert not items["watchtower/watchtower"]["ok"]
    # Watchtower's project has two services: its socket proxy must be healthy too.
    proxy = items["watchtower/socket-proxy"]
    assert proxy["ok"] and proxy["expected"] == "1 running, healthy"
    assert not items["old"]["ok"] and "old-web-1 running" in items["old"]["actual"]
    assert not items["authelia/authelia"]["ok"] and items["authelia/authelia"]["actual"] == "no container"
    extra = [r for r in rows if r["expected"] == "not declared"]
    assert sorted(r["item"] for r in extra) == ["amn/backend", "amn/cron"]
    assert all(not r["ok"] and r["actual"].startswith("extra: ") for r in extra)
    assert not [r for r in rows if "random" in r["actual"] or "debug" in r["item"]]


def test_published_ports_and_port_rows():
    containers = [
        container("npm-npm-1", "npm", "npm", ports={
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}, {"HostIp": "::", "HostPort": "80"}],
            "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "81"}],
            "443/udp": [{"HostIp": "0.0.0.0", "HostPort": "443"}],
            "9000/tcp": None}),
        container("pg", "db", "postgres", ports={"5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "15432"}]}),
    ]
    published = vf.verify_published_ports(containers)
    assert published == [{"port": 80, "ip": "0.0.0.0", "container": "npm-npm-1"},
                         {"port": 80, "ip": "::", "container": "npm-npm-1"},
                         {"port": 81, "ip": "127.0.0.1", "container": "npm-npm-1"},
                         {"port": 15432, "ip": "0.0.0.0", "container": "pg"}]
    probe = {"ports": [{"port": 22, "state": "open", "detail": ""},
                       {"port": 80, "state": "closed", "detail": ""},
                       {"port": 81, "state": "filtered", "detail": "no answer in 2s"},
                       {"port": 5432, "state": "closed", "detail": ""},
                       {"port": 15432, "state": "open", "detail": ""},
                       {"port": 6379, "state": "unreachable", "detail": "No route to host"}]}
    rows = by_item(vf.verify_port_rows(probe, [22, 80], [81, 5432, 15432, 6379, 80], published, "192.0.2.30"))
    assert rows["tcp/22"]["ok"] and rows["tcp/22"]["expected"] == "open"
    assert not rows["tcp/80"]["ok"] and rows["tcp/80"]["actual"] == "closed"  # must answer, nothing listens
    assert rows["tcp/80"]["expected"] == "open"  # a port in both lists is one that must be open
    assert rows["tcp/81"]["ok"] and rows["tcp/81"]["actual"] == "filtered [published by npm-npm-1 on 127.0.0.1]"
    assert rows["tcp/5432"]["ok"]
    assert not rows["tcp/15432"]["ok"] and "published by pg on 0.0.0.0" in rows["tcp/15432"]["actual"]
    assert not rows["tcp/6379"]["ok"] and rows["tcp/6379"]["actual"] == "unreachable (No route to host)"
    failed = vf.verify_port_rows({"failed": True, "msg": "boom"}, [22], [], [], "192.0.2.30")
    assert len(failed) == 1 and not failed[0]["ok"] and "boom" in failed[0]["actual"]


def group(tags, path, age_hours, short="aaaaaaaa"):
    return {"key": {"host": "h1", "tags": sorted(tags), "paths": [path]}, "count": 3,
            "latest": {"short_id": short, "time": "2026-11-23T02:31:00.123Z", "age_hours": age_hours,
                       "age_seconds": int(age_hours * 3600)}}


CONFIG = {"sets": {
    "databases": {"tags": ["databases"], "paths": [], "databases": [
        {"name": "amn-db", "engine": "postgres", "databases": ["marketplace"]},
        {"name": "wiki-db", "engine": "mariadb", "databases": ["wiki"]},
        {"name": "cache", "engine": "redis", "databases": []},
        {"name": "all-pg", "engine": "postgres", "databases": []},
        {"name": "all-maria", "engine": "mariadb", "databases": []}]},
    "files": {"tags": ["files"], "paths": ["/mnt/data/amn/uploads"], "databases": []},
}}


def test_backup_rows_check_every_dump_of_every_instance():
    info = {"groups": [
        group(["databases", "db", "amn-db"], "/postgres/amn-db/globals.sql", 3.0, "g1"),
        group(["databases", "db", "amn-db"], "/postgres/amn-db/marketplace.dump", 30.5, "m1"),  # failing for a day
        group(["databases", "db", "wiki-db"], "/mariadb/wiki-db/wiki.sql", 2.0),
        group(["databases", "db", "all-pg"], "/postgres/all-pg/globals.sql", 1.0),
        group(["databases", "db", "all-maria"], "/mariadb/all-maria/anything.sql", 1.5),
        group(["files", "files"], "/mnt/data/amn/uploads", 4.2, "f1"),
        group(["other", "db", "cache"], "/redis/cache/dump.rdb", 1.0),  # another set's tags: not this one
    ]}
    rows = by_item(vf.verify_backup_rows(CONFIG, info, 26))
    amn = rows["databases/amn-db"]
    assert not amn["ok"] and amn["actual"].startswith("30.5h (m1, 2026-11-23T02:31:00Z)")
    assert "marketplace.dump" in amn["actual"]
    assert amn["expected"] == "newest <= 26h"
    assert rows["databases/wiki-db"]["ok"]
    assert not rows["databases/cache"]["ok"] and rows["databases/cache"]["actual"] == \
        "no snapshot of /redis/cache/dump.rdb"
    assert rows["databases/all-pg"]["ok"]  # declares no databases: its globals are the known dump
    assert rows["databases/all-maria"]["ok"]  # no fixed file: any of its dumps
    files = rows["files: /mnt/data/amn/uploads"]
    assert files["ok"] and files["actual"].startswith("4.2h (f1")
    assert len(rows) == 6
    rows = by_item(vf.verify_backup_rows(CONFIG, info, 48))
    assert rows["databases/amn-db"]["ok"]
    failed = vf.verify_backup_rows(CONFIG, {"failed": True, "msg": "password: wrong password"}, 26)
    assert failed == [{"section": "backup", "item": "repository", "expected": "readable",
                       "actual": "failed: password: wrong password", "ok": False}]


def test_backup_rows_find_dumps_restic_0_18_0_saved_under_their_flat_names():
    """Debian 13's restic 0.18.0 saves postgres/amn-db/x.dump as postgres%2Famn-db%2Fx.dump (restic issue 5324); a
    host upgraded from Debian 12 has both, and the newest of either counts."""
    info = {"groups": [
        group(["databases", "db", "amn-db"], "/postgres/amn-db/globals.sql", 50.0, "old"),
        group(["databases", "db", "amn-db"], "/postgres%2Famn-db%2Fglobals.sql", 2.0, "new"),
        group(["databases", "db", "amn-db"], "/postgres%2Famn-db%2Fmarketplace.dump", 3.0, "m2"),
    ]}
    config = {"sets": {"databases": {"tags": ["databases"], "paths": [], "databases": [
        {"name": "amn-db", "engine": "postgres", "databases": ["marketplace"]}]}}}
    rows = by_item(vf.verify_backup_rows(config, info, 26))
    assert rows["databases/amn-db"]["ok"], rows
    assert rows["databases/amn-db"]["actual"].startswith("3.0h (m2"), rows


def test_dump_files_match_the_backup_runner():
    from tests.unit.test_backup_runner import runner  # the backup role's host-side runner, which writes the dumps

    for inst in CONFIG["sets"]["databases"]["databases"]:
        if not inst["databases"] and inst["engine"] in ("postgres", "mariadb"):
            continue
        full = dict(inst, container="c", password_file=None)
        written = sorted("/" + job[3] for job in runner.dump_jobs(full))
        assert written == sorted(vf.dump_files(inst)), inst


def test_report_is_an_aligned_table_with_a_count():
    rows = [vf.row("containers", "amn/backend", "1 running, healthy", "amn-backend-1 running (healthy)", True),
            vf.row("ports", "tcp/5432", "closed or filtered", "open " + "x" * 100, False)]
    text = vf.verify_report(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["SECTION", "ITEM", "EXPECTED", "ACTUAL", "RESULT"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    # every column starts at the same offset on every line
    starts = [lines[0].index(h) for h in ("ITEM", "EXPECTED", "ACTUAL", "RESULT")]
    assert [lines[2].index(x) for x in ("amn/backend", "1 running", "amn-backend-1", "OK")] == starts
    assert [lines[3].index(x) for x in ("tcp/5432", "closed or", "open x", "FAIL")] == starts
    cell = lines[3][starts[2]:starts[3]].rstrip()
    assert len(cell) == 70 and cell.endswith("x...")
    assert lines[-1] == "2 checks, 1 OK, 1 FAIL"
    assert vf.verify_report([]).splitlines()[-1] == "0 checks, 0 OK, 0 FAIL"


def test_security_rows_name_what_fails_what_is_waived_and_stale_waivers():
    audit = {"checks": [
        {"id": "2.16", "section": 2, "title": "The userland proxy is disabled", "status": "PASS",
         "targets": [{"target": "userland-proxy", "status": "PASS", "detail": "userland-proxy: false"}]},
        {"id": "5.13", "section": 5, "title": "The root filesystem is mounted read-only", "status": "WARN",
         "targets": [{"target": "db-postgres-1", "status": "PASS", "detail": "read-only root filesystem"},
                     {"target": "shp-handmade", "status": "WARN", "detail": "writable root filesystem"}]},
        {"id": "5.8", "section": 5, "title": "Privileged ports are not mapped", "status": "WAIVED",
         "targets": [{"target": "router-router-1", "status": "WAIVED", "detail": "privileged host ports: 80->80/tcp",
                      "reason": "the public router"}]},
        {"id": "5.29", "section": 5, "title": "The PIDs cgroup limit is used", "status": "PASS",
         "targets": [{"target": "a", "status": "PASS", "detail": "pids limit: 64"},
                     {"target": "b", "status": "PASS", "detail": "pids limit: 64"}]}],
        "unused_waivers": [{"item": "5.14", "target": "old-*", "reason": "gone"}]}
    rows = vf.verify_security_rows(audit)
    assert [(r["item"], r["actual"], r["ok"], r["result"]) for r in rows] == [
        ("CIS 2.16 The userland proxy is disabled", "userland-proxy: false", True, "PASS"),
        ("CIS 5.13 The root filesystem is mounted read-only", "shp-handmade: writable root filesystem", False, "WARN"),
        ("CIS 5.8 Privileged ports are not mapped", "router-router-1 waived: the public router", True, "WAIVED"),
        ("CIS 5.29 The PIDs cgroup limit is used", "2 containers", True, "PASS"),
        ("waiver 5.14 old-*", "matches nothing: remove it (gone)", True, "UNUSED")]
    text = vf.verify_report(rows)
    assert "WAIVED" in text and "WARN" in text and text.splitlines()[-1] == "5 checks, 4 OK, 1 FAIL"
    with pytest.raises(AnsibleFilterError, match="docker_security_audit"):
        vf.verify_security_rows({"changed": False})
