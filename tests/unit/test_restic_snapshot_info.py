"""Unit tests for restic_snapshot_info (snapshot_info_action in plugins/module_utils/restic.py), with restic faked
at the process boundary by the scripted FakeRestic of test_restic.py."""

from __future__ import annotations

import json

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import restic as rs

from tests.unit.fake_module import Exit, Fail
from tests.unit.test_restic import PW, FakeRestic, Module, assert_no_secret_on_argv, params

# 2026-11-23T12:00:00Z
NOW = 1795435200.0


def snap(ident, time, tags, paths, host="h1"):
    return {"time": time, "paths": paths, "hostname": host, "tags": tags, "id": ident * 64, "short_id": ident * 8}


SNAPS = [
    snap("a", "2026-11-22T02:31:00Z", ["databases", "db", "amn-db"], ["/postgres/amn-db/globals.sql"]),
    snap("b", "2026-11-23T02:31:10.5Z", ["databases", "db", "amn-db"], ["/postgres/amn-db/marketplace.dump"]),
    snap("c", "2026-11-21T02:35:00Z", ["databases", "db", "shared-mariadb"], ["/mariadb/shared-mariadb/wiki.sql"]),
    snap("d", "2026-11-23T03:00:00+01:00", ["files", "files"], ["/mnt/data/amn/uploads"]),
    snap("e", "2026-11-23T11:00:00Z", ["files", "files"], ["/mnt/data/amn/uploads"], host="other"),
]


def iparams(**kw):
    p = params(tags=[], host=None, paths=[], group_by="host,tags", list_snapshots=True)
    p.update(kw)
    return p


def run_info(p, fake, check_mode=False):
    module = Module(p, check_mode=check_mode)

    def action(module, client):
        return rs.snapshot_info_action(module, client, now=NOW)

    with pytest.raises((Exit, Fail)) as info:
        rs.run_with_client(module, action, runner=fake)
    return info.value.result, isinstance(info.value, Fail)


def listing(snaps=None):
    return FakeRestic(snapshots=(0, json.dumps(SNAPS if snaps is None else snaps) + "\n", ""))


def snapshot_argv(fake):
    return next(argv for argv, _env, _data in fake.calls if "snapshots" in argv)


def test_latest_per_group_with_ages_and_filters_passed_to_restic():
    fake = listing()
    res, failed = run_info(iparams(tags=["databases", "db"], host="h1", group_by="tags"), fake)
    assert not failed, res
    argv = snapshot_argv(fake)
    # read-only: no lock; all the tags in one --tag (restic's AND), the host
    assert "--no-lock" in argv
    assert argv[argv.index("snapshots"):] == ["snapshots", "--json", "--tag", "databases,db", "--host", "h1"]
    assert not res["changed"] and res["count"] == 5 and res["now"] == "2026-11-23T12:00:00Z"
    # snapshots oldest first, each with its age
    assert [s["short_id"] for s in res["snapshots"]] == ["cccccccc", "aaaaaaaa", "dddddddd", "bbbbbbbb", "eeeeeeee"]
    assert res["latest"]["short_id"] == "eeeeeeee" and res["latest"]["age_seconds"] == 3600
    groups = {",".join(g["key"]["tags"]): g for g in res["groups"]}
    assert set(groups) == {"amn-db,databases,db", "databases,db,shared-mariadb", "files,files"}
    amn = groups["amn-db,databases,db"]
    assert amn["count"] == 2 and amn["latest"]["short_id"] == "bbbbbbbb"
    assert amn["latest"]["age_seconds"] == 34130 and amn["latest"]["age_hours"] == 9.48  # 9h 28m 49.5s
    assert groups["databases,db,shared-mariadb"]["latest"]["age_hours"] == 57.42
    # groups by their newest snapshot, newest first
    assert [g["latest"]["short_id"] for g in res["groups"]] == ["eeeeeeee", "bbbbbbbb", "cccccccc"]
    assert res["restic_version"] == "0.14.0"
    assert_no_secret_on_argv(fake, PW)


def test_group_by_host_and_tags_separates_hosts_and_empty_is_one_group():
    res, _failed = run_info(iparams(), listing())
    keys = [(g["key"]["host"], tuple(g["key"]["tags"])) for g in res["groups"]]
    assert ("h1", ("files", "files")) in keys and ("other", ("files", "files")) in keys and len(keys) == 4
    # a time with an offset is compared in UTC: 03:00+01:00 is 02:00Z, 10 hours before NOW
    files_h1 = next(g for g in res["groups"] if g["key"] == {"host": "h1", "tags": ["files", "files"]})
    assert files_h1["latest"]["age_seconds"] == 36000
    res, _failed = run_info(iparams(group_by=""), listing())
    assert len(res["groups"]) == 1 and res["groups"][0]["key"] == {} and res["groups"][0]["count"] == 5
    res, _failed = run_info(iparams(group_by="paths, host"), listing())
    assert res["groups"][0]["key"] == {"host": "other", "paths": ["/mnt/data/amn/uploads"]}


def test_paths_filter_and_list_snapshots_false():
    fake = listing(SNAPS[3:4])
    res, _failed = run_info(iparams(paths=["/mnt/data/amn/uploads"], list_snapshots=False), fake)
    argv = snapshot_argv(fake)
    assert argv[-2:] == ["--path", "/mnt/data/amn/uploads"]
    assert "snapshots" not in res and res["count"] == 1 and res["latest"]["short_id"] == "dddddddd"


def test_no_snapshot_is_not_an_error():
    res, failed = run_info(iparams(tags=["nothing"]), FakeRestic(snapshots=(0, "[]\n", "")))
    assert not failed and res["count"] == 0 and res["latest"] is None and res["groups"] == []


def test_check_mode_lists_the_same():
    fake = listing()
    res, failed = run_info(iparams(), fake, check_mode=True)
    assert not failed and res["count"] == 5 and not res["changed"]


@pytest.mark.parametrize("change,opt", [({"group_by": "host,date"}, "group_by:"),
                                        ({"group_by": "tags,tags"}, "group_by:"),
                                        ({"tags": ["a,b"]}, "tags:"),
                                        ({"paths": ["relative/path"]}, "paths:")])
def test_bad_options_name_the_option_before_listing(change, opt):
    fake = listing()
    res, failed = run_info(iparams(**change), fake)
    assert failed and res["msg"].startswith(opt)
    assert not [argv for argv, _env, _data in fake.calls if "snapshots" in argv]


@pytest.mark.parametrize("stderr,start", [
    ("Fatal: unable to open config file: stat /srv/restic/config: no such file or directory\n"
     "Is there a repository at the following location?\n/srv/restic\n", "repository: there is no restic repository"),
    ("Fatal: wrong password or no key found\n", "password: wrong password"),
])
def test_repository_failures_are_explained(stderr, start):
    res, failed = run_info(iparams(), FakeRestic(snapshots=(1, "", stderr)))
    assert failed and res["msg"].startswith(start)


def test_snapshot_groups_is_pure():
    views = [rs.snapshot_view(s) for s in SNAPS[:3]]
    groups = rs.snapshot_groups(views, ["tags"], NOW)
    assert [g["count"] for g in groups] == [2, 1]
    assert groups[0]["latest"]["id"] == "b" * 64
    assert rs.parse_group_by("tags,host") == ["host", "tags"] and rs.parse_group_by(" ") == []
