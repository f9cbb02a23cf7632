"""Unit tests for image_prune (plugins/module_utils/image_prune.py), with the Docker daemon faked at the Engine
API boundary: a fake that keeps images, containers and build cache and prunes them with Docker's rules (dangling
images not used by any container; with dangling=false every unused image created before `until`; build cache not
in use and last used before `until`)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import image_prune as ip

from tests.unit.fake_module import Exit, Fail, FakeModule

NOW = time.time()
HOUR = 3600


def img(ident, tags, age_hours, size):
    return {"Id": "sha256:" + ident * 64, "RepoTags": tags, "Created": int(NOW - age_hours * HOUR), "Size": size}


def stamp(age_hours):
    return time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime(NOW - age_hours * HOUR))


class FakeDaemon:
    def __init__(self):
        self.images = [
            img("a", ["shp-test/postgres:latest"], 900, 400_000_000),  # old, used by a running container
            img("b", ["shp-test/redis:latest"], 900, 90_000_000),      # old, used by a stopped container
            img("c", ["<none>:<none>"], 2, 50_000_000),                # dangling, young
            img("d", [], 500, 30_000_000),                             # dangling, old
            img("e", ["app:1.0", "app:previous"], 200, 120_000_000),   # unused, older than 168h
            img("f", ["app:1.1"], 20, 121_000_000),                    # unused, young
            img("g", ["<none>:<none>"], 300, 10_000_000),              # untagged but used by a container
        ]
        self.containers = [{"Id": "c1", "ImageID": "sha256:" + "a" * 64, "State": "running"},
                           {"Id": "c2", "ImageID": "sha256:" + "b" * 64, "State": "exited"},
                           {"Id": "c3", "ImageID": "sha256:" + "g" * 64, "State": "exited"}]
        self.cache = [
            {"ID": "k1", "Type": "regular", "Size": 5_000_000, "InUse": False, "Shared": False,
             "CreatedAt": stamp(200), "LastUsedAt": stamp(100)},
            {"ID": "k2", "Type": "regular", "Size": 7_000_000, "InUse": False, "Shared": False,
             "CreatedAt": stamp(200), "LastUsedAt": stamp(10)},
            {"ID": "k3", "Type": "source.local", "Size": 1_000_000, "InUse": True, "Shared": False,
             "CreatedAt": stamp(500), "LastUsedAt": None},
            {"ID": "k4", "Type": "regular", "Size": 3_000_000, "InUse": False, "Shared": True,
             "CreatedAt": stamp(80), "LastUsedAt": None},
        ]
        self.requests = []

    def used(self):
        return {c["ImageID"] for c in self.containers}

    @staticmethod
    def dangling(image):
        return not [t for t in image["RepoTags"] if t != "<none>:<none>"]

    def __call__(self, method, path):
        self.requests.append((method, path))
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        filters = json.loads(query.get("filters", "{}"))
        if (method, url.path) == ("GET", "/images/json"):
            out = [i for i in self.images if not filters.get("dangling") or self.dangling(i)]
            return 200, json.dumps(out).encode()
        if (method, url.path) == ("GET", "/containers/json"):
            return 200, json.dumps(self.containers).encode()
        if (method, url.path) == ("GET", "/system/df"):
            # every image shares 10 MB of base layers with the others (the dangling "c" only 2 MB)
            df_images = [dict(i, SharedSize=2_000_000 if i["Id"][7] == "c" else 10_000_000) for i in self.images]
            return 200, json.dumps({"Images": df_images, "BuildCache": self.cache}).encode()
        if (method, url.path) == ("POST", "/images/prune"):
            only_dangling = filters.get("dangling") == ["true"]
            until = ip.parse_duration(filters["until"][0], "until") if filters.get("until") else None
            gone = [i for i in self.images if i["Id"] not in self.used()
                    and (self.dangling(i) if only_dangling else True)
                    and (until is None or i["Created"] < time.time() - until)]
            self.images = [i for i in self.images if i not in gone]
            deleted = [{"Untagged": t} for i in gone for t in i["RepoTags"] if t != "<none>:<none>"]
            deleted += [{"Deleted": i["Id"]} for i in gone]
            return 200, json.dumps({"ImagesDeleted": deleted or None,
                                    "SpaceReclaimed": sum(i["Size"] for i in gone)}).encode()
        if (method, url.path) == ("POST", "/build/prune"):
            until = ip.parse_duration(filters["until"][0], "until")
            gone = [c for c in self.cache if not c["InUse"]
                    and ip.rfc3339_seconds(c["LastUsedAt"] or c["CreatedAt"]) < time.time() - until]
            self.cache = [c for c in self.cache if c not in gone]
            return 200, json.dumps({"CachesDeleted": [c["ID"] for c in gone] or None,
                                    "SpaceReclaimed": sum(c["Size"] for c in gone)}).encode()
        return 404, b'{"message": "page not found"}'


def run(daemon, check_mode=False, **params):
    p = {"dangling": True, "unused_until": "168h", "builder_until": "72h", "timeout": 300}
    p.update(params)
    module = FakeModule(p, check_mode=check_mode)
    with pytest.raises((Exit, Fail)) as info:
        ip.run(module, transport=daemon)
    return info.value.result, isinstance(info.value, Fail)


def short(ident):
    return ident * 12


def test_check_mode_lists_exactly_what_would_go_and_removes_nothing():
    daemon = FakeDaemon()
    res, failed = run(daemon, check_mode=True)
    assert not failed and res["changed"]
    c = res["candidates"]
    assert [x["short_id"] for x in c["dangling"]] == [short("c"), short("d")]
    assert [x["short_id"] for x in c["unused"]] == [short("e")]
    assert c["unused"][0]["tags"] == ["app:1.0", "app:previous"]
    assert [x["id"] for x in c["build_cache"]] == ["k1", "k4"]
    # what each image holds alone (its size less the shared layers); the shared cache record frees nothing by itself
    assert [x["size"] for x in c["dangling"] + c["unused"]] == [48_000_000, 20_000_000, 110_000_000]
    assert c["unused"][0]["size_human"] == "110MB"
    assert res["space_estimate"] == 48_000_000 + 20_000_000 + 110_000_000 + 5_000_000
    assert res["space_estimate_human"] == "183MB" and res["space_reclaimed"] == 0
    assert not [r for r in daemon.requests if r[0] == "POST"] and len(daemon.images) == 7


def test_prune_removes_what_was_listed_and_reports_the_space():
    daemon = FakeDaemon()
    res, failed = run(daemon)
    assert not failed and res["changed"]
    assert sorted(x["short_id"] for x in res["removed_images"]) == [short("c"), short("d"), short("e")]
    assert sorted(res["untagged"]) == ["app:1.0", "app:previous"]
    assert res["build_cache_removed"] == 2
    assert res["space_reclaimed"] == 50_000_000 + 30_000_000 + 120_000_000 + 5_000_000 + 3_000_000
    assert res["space_reclaimed_human"] == "208MB"
    # in use (running or stopped) and young images stay
    assert sorted(i["Id"][7] for i in daemon.images) == ["a", "b", "f", "g"]
    posts = [p for m, p in daemon.requests if m == "POST"]
    assert [urlsplit(p).path for p in posts] == ["/images/prune", "/images/prune", "/build/prune"]
    assert json.loads(parse_qs(urlsplit(posts[1]).query)["filters"][0]) == {"dangling": ["false"], "until": ["168h"]}
    # a second run has nothing left to do
    again, _failed = run(daemon)
    assert not again["changed"] and again["space_reclaimed"] == 0 and again["removed_images"] == []


def test_only_dangling_when_the_ages_are_empty():
    daemon = FakeDaemon()
    res, _failed = run(daemon, unused_until="", builder_until="")
    assert sorted(x["short_id"] for x in res["removed_images"]) == [short("c"), short("d")]
    assert not [p for m, p in daemon.requests if "/build/" in p]
    assert len(daemon.cache) == 4


def test_nothing_to_do_is_no_change():
    daemon = FakeDaemon()
    daemon.images = daemon.images[:2]
    daemon.cache = []
    res, _failed = run(daemon, check_mode=True)
    assert not res["changed"] and res["candidates"] == {"dangling": [], "unused": [], "build_cache": []}
    res, _failed = run(daemon)
    assert not res["changed"]


@pytest.mark.parametrize("params,start", [({"unused_until": "7d"}, "unused_until:"),
                                          ({"builder_until": "soon"}, "builder_until:"),
                                          ({"unused_until": "h"}, "unused_until:")])
def test_bad_durations_name_the_option_before_any_request(params, start):
    daemon = FakeDaemon()
    res, failed = run(daemon, **params)
    assert failed and res["msg"].startswith(start) and daemon.requests == []


def test_a_daemon_error_is_reported():
    def broken(method, path):
        return 500, b'{"message": "a prune operation is already running"}'

    res, failed = run(broken)
    assert failed and "HTTP 500: a prune operation is already running" in res["msg"]


def test_durations_sizes_and_times():
    assert ip.parse_duration("168h", "x") == 604800 and ip.parse_duration("1h30m", "x") == 5400
    assert ip.parse_duration("45s", "x") == 45
    assert [ip.human_size(n) for n in (0, 999, 1000, 1_234_567, 74_231_808, 2_000_000_000)] == \
        ["0B", "999B", "1kB", "1.23MB", "74.2MB", "2GB"]
    assert ip.rfc3339_seconds("1970-01-01T01:00:00.5+01:00") == 0
    assert ip.rfc3339_seconds("") is None
