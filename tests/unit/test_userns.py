"""Docker's user-namespace remapping (docker_engine_userns_remap, CIS 2.9): the mapping the docker_engine role settles
from /etc/subuid and /etc/subgid (plugins/module_utils/userns.py, filter docker_engine_userns_plan), the one function
every layer shifts owners through (host_uid / host_gid), the tree shift of data written before the remapping
(module userns_shift), the services that keep the host's user namespace (container_defaults.with_userns), and the
daemon.json the role writes."""

from __future__ import annotations

import os
import re
import stat

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.container_defaults import hardened_service
from ansible_collections.selfhosted.platform.plugins.filter.stack import compose_definition
from ansible_collections.selfhosted.platform.plugins.filter.userns import (
    docker_engine_userns_plan,
    host_gid,
    host_uid,
    userns_definition,
)
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults as cd
from ansible_collections.selfhosted.platform.plugins.module_utils import userns

from tests.conftest import ROOT
from tests.unit.fake_module import Exit, Fail, FakeModule
from tests.unit.test_docker_engine_vars import render

ON = docker_engine_userns_plan("default")  # a host without /etc/subuid: dockremap gets 100000:65536


# ---------------------------------------------------------------------------------------------
# the mapping
# ---------------------------------------------------------------------------------------------
def test_off_is_base_zero_and_nothing_to_write():
    for value in ("", None):
        plan = userns.plan(value, "dockremap:100000:65536\n", "")
        assert plan == {"enabled": False, "remap": "", "user": "", "group": "", "uid_base": 0, "gid_base": 0,
                        "size": 0, "subuid_line": "", "subgid_line": ""}


def test_default_on_a_fresh_host_allocates_dockers_own_first_range_in_both_files():
    assert ON == {"enabled": True, "remap": "default", "user": "dockremap", "group": "dockremap",
                  "uid_base": 100000, "gid_base": 100000, "size": 65536,
                  "subuid_line": "dockremap:100000:65536", "subgid_line": "dockremap:100000:65536"}


def test_an_existing_range_is_kept_and_nothing_is_written():
    plan = userns.plan("default", "alice:100000:65536\ndockremap:165536:65536\n", "dockremap:165536:65536\n")
    assert (plan["uid_base"], plan["gid_base"], plan["size"]) == (165536, 165536, 65536)
    assert plan["subuid_line"] == plan["subgid_line"] == ""


def test_a_new_range_avoids_the_taken_ones_with_the_same_start_in_both_files():
    # Users' ranges from useradd (100000, 165536) in subuid; subgid has another range where subuid is free.
    subuid = "alice:100000:65536\nbob:165536:65536\n"
    subgid = "alice:100000:65536\nbob:165536:65536\ncarol:231072:65536\n"
    plan = userns.plan("ops:docker", subuid, subgid)
    assert (plan["user"], plan["group"]) == ("ops", "docker")
    assert plan["uid_base"] == plan["gid_base"] == 296608
    assert plan["subuid_line"] == "ops:296608:65536" and plan["subgid_line"] == "docker:296608:65536"


def test_user_alone_means_the_group_of_the_same_name_as_dockerd_looks_it_up():
    plan = userns.plan("remap", "", "")
    assert (plan["user"], plan["group"]) == ("remap", "remap")


def test_a_missing_group_range_prefers_the_users_start():
    plan = userns.plan("default", "dockremap:200000:65536\n", "")
    assert (plan["uid_base"], plan["gid_base"]) == (200000, 200000)
    assert plan["subuid_line"] == "" and plan["subgid_line"] == "dockremap:200000:65536"


def test_a_larger_range_is_kept_and_comments_and_junk_are_skipped():
    plan = userns.plan("default", "# ranges\n\nbroken line\ndockremap:300000:131072\n", "dockremap:300000:65536\n")
    assert (plan["uid_base"], plan["size"]) == (300000, 65536)


@pytest.mark.parametrize(("value", "match"), [
    ("Dockremap", "not a valid user name"),
    ("1000:1000", "not a valid user name"),
    ("ops:", "not a valid group name"),
    (5, "expected '', 'default' or 'USER"),
])
def test_bad_values_name_the_option(value, match):
    with pytest.raises(AnsibleFilterError, match="docker_engine_userns_remap: .*" + match):
        docker_engine_userns_plan(value)


def test_two_ranges_or_a_short_one_are_refused_naming_the_file():
    with pytest.raises(AnsibleFilterError, match=r"dockremap has 2 ranges in /etc/subuid"):
        docker_engine_userns_plan("default", "dockremap:100000:65536\ndockremap:300000:65536\n", "")
    with pytest.raises(AnsibleFilterError, match=r"range of dockremap in /etc/subgid \(100000:1000\) holds fewer"):
        docker_engine_userns_plan("default", "", "dockremap:100000:1000\n")


# ---------------------------------------------------------------------------------------------
# the owner shift: one function
# ---------------------------------------------------------------------------------------------
def test_host_ids_are_the_base_plus_the_container_id_when_on():
    assert host_uid(999, ON) == 100999
    assert host_uid("1001", ON) == 101001
    assert host_uid("root", ON) == 100000
    assert host_gid(0, ON) == 100000
    split = dict(ON, uid_base=200000, gid_base=300000)
    assert (host_uid(101, split), host_gid(101, split)) == (200101, 300101)


@pytest.mark.parametrize("mapping", [None, {}, userns.plan("")])
def test_host_ids_are_unchanged_when_off_names_included(mapping):
    assert host_uid(999, mapping) == 999
    assert host_uid("root", mapping) == "root"
    assert host_gid("www-data", mapping) == "www-data"


def test_a_name_or_an_id_outside_the_range_fails_naming_where_it_came_from():
    where = r"app_stack_stacks\[amn\].dirs\[uploads\].owner"
    with pytest.raises(AnsibleFilterError, match=where + r": 'www-data' is a name"):
        host_uid("www-data", ON, "app_stack_stacks[amn].dirs[uploads].owner")
    with pytest.raises(AnsibleFilterError, match=r"gid 70000 is outside the ids a remapped container can use"):
        host_gid(70000, ON)
    with pytest.raises(AnsibleFilterError, match="must be the dict docker_engine publishes"):
        host_uid(1, "default")


CONTAINER_IDS = re.compile(r"(data_tier__r\.(uid|gid)|authelia__(uid|gid)\b|watchtower_uid|proxy__nginx_gid\b"
                           r"|hardened_user\)\.(uid|gid))")


def test_no_role_hands_a_container_file_to_an_unshifted_id():
    """Every owner/group a layer gives from a container's uid or gid goes through host_uid/host_gid (or a variable
    made by them); no task writes the container's id as it is, and none adds an offset by itself."""
    offenders = []
    for role in ("data_tier", "app_stack", "authelia", "proxy", "watchtower", "backup"):
        for path in sorted((ROOT / "roles" / role).glob("**/*.yml")):
            lines = path.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                # the value of an owner/group key, folded values included
                if not re.match(r"^\s*-?\s*(owner|group):", line):
                    continue
                value = " ".join([line] + [x for x in lines[number:number + 2] if x.strip().startswith(("{{", "|"))])
                if CONTAINER_IDS.search(value) and not re.search(r"host_(uid|gid)", value):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
                if re.search(r"uid_base|gid_base|\+\s*100000", value):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: offset by hand: {line.strip()}")
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# trees written before the remapping (module userns_shift)
# ---------------------------------------------------------------------------------------------
def make_tree(tmp_path):
    top = tmp_path / "uploads"
    (top / "2026").mkdir(parents=True)
    (top / "2026" / "a.bin").write_bytes(b"a")
    (top / "done.bin").write_bytes(b"d")
    (top / "setgid").mkdir()
    os.chmod(top / "setgid", 0o2775)
    os.symlink("/etc/passwd", top / "link")
    for path in (top, top / "2026", top / "2026" / "a.bin", top / "setgid"):
        os.lchown(path, 1001, 1001)
    os.lchown(top / "done.bin", 101001, 101001)  # already shifted
    os.lchown(top / "link", 0, 0)
    return top


def run_shift(params, check_mode=False, diff=False):
    module = FakeModule(dict({"missing": "skip"}, **params), check_mode=check_mode, diff=diff)
    with pytest.raises((Exit, Fail)) as caught:
        userns.run_shift(module)
    return caught.value.result, isinstance(caught.value, Fail)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_shift_moves_unshifted_owners_once_and_keeps_modes_and_symlink_targets(tmp_path):
    top = make_tree(tmp_path)
    passwd_owner = os.stat("/etc/passwd").st_uid
    check, failed = run_shift({"paths": [str(top)], "mapping": ON}, check_mode=True, diff=True)
    assert not failed and check["changed"] and check["shifted_count"] == 5
    assert f"{top}/2026/a.bin 1001:1001 -> 101001:101001" in check["shifted"]
    assert os.lstat(top / "2026" / "a.bin").st_uid == 1001, "check mode changed an owner"
    assert "a.bin 1001:1001" in check["diff"]["before"] and "a.bin 101001:101001" in check["diff"]["after"]

    done, failed = run_shift({"paths": [str(top), str(tmp_path / "gone")], "mapping": ON})
    assert not failed and done["changed"] and done["missing"] == [str(tmp_path / "gone")]
    owners = {p.name: (os.lstat(p).st_uid, os.lstat(p).st_gid) for p in [top, *top.rglob("*")]}
    assert owners == {"uploads": (101001, 101001), "2026": (101001, 101001), "a.bin": (101001, 101001),
                      "done.bin": (101001, 101001), "setgid": (101001, 101001), "link": (100000, 100000)}
    assert stat.S_IMODE(os.lstat(top / "setgid").st_mode) == 0o2775  # chown cleared set-gid: put back
    assert os.stat("/etc/passwd").st_uid == passwd_owner  # the link's target was not followed

    again, _failed = run_shift({"paths": [str(top)], "mapping": ON})
    assert not again["changed"] and again["shifted_count"] == 0


def test_shift_does_nothing_when_off_and_fails_on_a_missing_path_when_asked(tmp_path):
    result, failed = run_shift({"paths": [str(tmp_path)], "mapping": userns.plan("")})
    assert not failed and not result["changed"]
    result, failed = run_shift({"paths": [str(tmp_path / "gone")], "mapping": ON, "missing": "fail"})
    assert failed and result["msg"] == f"paths: {tmp_path / 'gone'} does not exist"
    result, failed = run_shift({"paths": ["relative"], "mapping": ON})
    assert failed and "not an absolute path" in result["msg"]


def test_shift_plan_leaves_ids_in_or_above_the_range():
    entries = [("/a", 0, 0), ("/b", 65535, 65535), ("/c", 100999, 100999), ("/d", 70000, 5)]
    assert userns.shift_plan(entries, ON) == [("/a", (0, 0), (100000, 100000)),
                                              ("/b", (65535, 65535), (165535, 165535)),
                                              ("/d", (70000, 5), (70000, 100005))]


# ---------------------------------------------------------------------------------------------
# containers that need the host's namespaces
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("service", [
    {"image": "x", "privileged": True},
    {"image": "x", "network_mode": "host"},
    {"image": "x", "pid": "host"},
    {"image": "x", "ipc": "host"},
    {"image": "x", "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"]},
    {"image": "x", "volumes": [{"type": "bind", "source": "/run/docker.sock", "target": "/sock"}]},
])
def test_a_service_that_needs_the_hosts_namespaces_keeps_the_hosts_user_namespace(service):
    assert cd.host_namespaces(service)
    assert cd.with_userns(service, ON)["userns_mode"] == "host"
    assert "userns_mode" not in cd.with_userns(service, None)  # remapping off: nothing added
    assert "userns_mode" not in cd.with_userns(service, userns.plan(""))


def test_other_services_stay_remapped_and_an_own_userns_mode_wins():
    plain = {"image": "x", "volumes": ["/mnt/data/a:/data", "cache:/cache"], "network_mode": "bridge"}
    assert cd.host_namespaces(plain) == []
    assert "userns_mode" not in cd.with_userns(plain, ON)
    own = {"image": "x", "privileged": True, "userns_mode": "private"}
    assert cd.with_userns(own, ON)["userns_mode"] == "private"


def test_the_role_filters_apply_it_even_with_the_defaults_off():
    svc = {"image": "nginx:1", "network_mode": "host"}
    assert hardened_service(svc, "nginx", {"enabled": False}, userns=ON)["userns_mode"] == "host"
    assert "userns_mode" not in hardened_service(svc, "nginx", {"enabled": False})
    stack = {"name": "mon", "services": {"agent": {"image": "a:1", "pid": "host"}, "web": {"image": "w:1"}}}
    doc = compose_definition(stack, userns=ON)
    assert doc["services"]["agent"]["userns_mode"] == "host" and "userns_mode" not in doc["services"]["web"]
    proxy = {"services": {"socket-proxy": {"image": "p", "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"]},
                          "watchtower": {"image": "w"}}, "networks": {"socket-proxy": {"internal": True}}}
    out = userns_definition(proxy, ON)
    assert out["services"]["socket-proxy"]["userns_mode"] == "host"
    assert "userns_mode" not in out["services"]["watchtower"]
    assert out["networks"] == proxy["networks"] and "userns_mode" not in proxy["services"]["socket-proxy"]
    assert userns_definition(proxy, None) == proxy


# ---------------------------------------------------------------------------------------------
# daemon.json
# ---------------------------------------------------------------------------------------------
def test_daemon_json_gets_userns_remap_only_when_asked():
    assert "userns-remap" not in render("docker_engine__daemon_config")
    assert render("docker_engine__daemon_config", docker_engine_userns_remap="default")["userns-remap"] == "default"
    assert render("docker_engine__daemon_config",
                  docker_engine_userns_remap=" ops:docker ")["userns-remap"] == "ops:docker"
