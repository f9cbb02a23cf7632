"""The hardened container defaults (plugins/module_utils/container_defaults.py) and the filters that apply them
(hardened_service, hardened_user, compose_definition): what each profile adds, how a service's own keys and the
option layers win, and bad input failing with the option's name."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.container_defaults import hardened_service, hardened_user
from ansible_collections.selfhosted.platform.plugins.filter.stack import compose_definition
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults as cd

ROOT = Path(__file__).resolve().parents[2]
NNP = "no-new-privileges:true"


# ---------------------------------------------------------------------------------------------
# profiles
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("image", "user"), [
    ("postgres:16", "999:999"),              # official Debian-based
    ("postgis/postgis:16-3.4-alpine", "70:70"),
    ("postgres:16-alpine", "70:70"),
    ("bitnami/postgresql:16", "1001:0"),
])
def test_postgres_starts_as_the_contracts_owner_with_no_capability_and_an_owned_socket_dir(image, user):
    svc = cd.harden({"image": image}, "postgres")
    uid, gid = user.split(":")
    assert svc["user"] == user
    assert svc["cap_drop"] == ["ALL"] and "cap_add" not in svc
    assert svc["security_opt"] == [NNP]
    assert svc["read_only"] is True
    if uid == "1001" and gid == "0":
        assert svc["tmpfs"][0] == "/var/run/postgresql:uid=1001,gid=0,mode=0755"
    else:
        assert svc["tmpfs"] == [f"/var/run/postgresql:uid={uid},gid={gid},mode=0755", "/tmp"]
    # memory and CPU are the data tier's own (data_tier_memory/cpus): the profile adds none
    assert svc["deploy"] == {"resources": {"limits": {"pids": 512}}}


def test_the_callers_user_wins_over_the_image_family_and_the_options_over_the_caller():
    assert cd.harden({"image": "redis:8-alpine"}, "redis")["user"] == "999:1000"
    assert cd.harden({"image": "redis:8-alpine"}, "redis", user="4242:4242")["user"] == "4242:4242"
    assert cd.harden({"image": "redis:8-alpine"}, "redis", {"user": "7:7"}, user="4242:4242")["user"] == "7:7"


@pytest.mark.parametrize(("profile", "image", "caps"), [
    ("postgres", "postgres:16", ["CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"]),
    ("mariadb", "mariadb:11", ["DAC_OVERRIDE", "SETGID", "SETUID"]),
    ("redis", "redis:8-alpine", ["DAC_OVERRIDE", "SETGID", "SETUID"]),
    ("mongodb", "mongo:8.0", ["CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"]),
    ("nginx", "nginx:1.27-alpine", ["CHOWN", "DAC_OVERRIDE", "NET_BIND_SERVICE", "SETGID", "SETUID"]),
    ("authelia", "authelia/authelia:4.38", ["SETGID"]),
])
def test_started_as_root_each_image_family_gets_exactly_its_entrypoints_capabilities(profile, image, caps):
    svc = cd.harden({"image": image}, profile, {"non_root": False})
    assert "user" not in svc
    assert svc["cap_drop"] == ["ALL"] and svc["cap_add"] == caps
    # the tmpfs then keeps Docker's default owner (root) and mode (1777); the entrypoint takes it over
    assert all(":" not in entry for entry in svc["tmpfs"])


def test_a_service_that_names_root_itself_gets_the_root_capabilities():
    svc = cd.harden({"image": "mariadb:11", "user": "0:0"}, "mariadb")
    assert svc["user"] == "0:0" and svc["cap_add"] == ["DAC_OVERRIDE", "SETGID", "SETUID"]
    svc = cd.harden({"image": "mariadb:11", "user": "mysql"}, "mariadb")  # a name: its own user, no uid known
    assert "cap_add" not in svc and svc["tmpfs"] == ["/run/mysqld", "/tmp"]


def test_nginx_runs_as_its_worker_user_with_owned_tmpfs_and_keeps_its_public_ports():
    svc = cd.harden({"image": "nginx:1.27-alpine", "ports": ["80:80", "443:443"]}, "nginx")
    assert svc["user"] == "101:101" and "cap_add" not in svc
    assert svc["tmpfs"] == ["/run:uid=101,gid=101,mode=0755", "/var/cache/nginx:uid=101,gid=101,mode=0755", "/tmp"]
    assert svc["ports"] == ["80:80", "443:443"]
    assert svc["deploy"]["resources"]["limits"] == {"pids": 256, "memory": "256m", "cpus": "1.0"}
    # behind a tunnel the router can be told to bind loopback
    assert cd.harden({"image": "nginx", "ports": ["80:80"]}, "nginx", {"loopback_ports": True})["ports"] == [
        "127.0.0.1:80:80"]


def test_npm_keeps_a_writable_root_filesystem_and_root_with_its_init_capabilities():
    svc = cd.harden({"image": "jc21/nginx-proxy-manager:2", "ports": ["80:80", "127.0.0.1:81:81"]}, "npm")
    assert "read_only" not in svc and "tmpfs" not in svc and "user" not in svc
    assert svc["cap_add"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert svc["security_opt"] == [NNP] and svc["deploy"]["resources"]["limits"]["pids"] == 512
    assert svc["ports"] == ["80:80", "127.0.0.1:81:81"]
    # read_only asked for explicitly by the options still cannot apply to NPM: nothing is added
    assert "read_only" not in cd.harden({"image": "npm"}, "npm", {"read_only": True})


def test_authelia_starts_as_its_own_uid():
    svc = cd.harden({"image": "authelia/authelia:4.38"}, "authelia")
    assert svc["user"] == "8091:8091" and "cap_add" not in svc
    assert svc["tmpfs"] == ["/tmp"] and svc["read_only"] is True
    assert hardened_user(svc) == {"uid": 8091, "gid": 8091}
    assert hardened_user(cd.harden({"image": "a"}, "authelia", {"non_root": False})) == {}


def test_app_defaults():
    svc = cd.harden({"image": "registry.example.test/app:1", "ports": ["8080:80"]}, "app")
    assert svc == {"image": "registry.example.test/app:1", "ports": ["127.0.0.1:8080:80"], "security_opt": [NNP],
                   "cap_drop": ["ALL"], "read_only": True, "tmpfs": ["/tmp"],
                   "deploy": {"resources": {"limits": {"pids": 1024, "memory": "1g", "cpus": "1.0"}}}}


# ---------------------------------------------------------------------------------------------
# a service's own keys win; lists are merged
# ---------------------------------------------------------------------------------------------
def test_own_keys_win_and_lists_merge():
    own = {"image": "x", "read_only": False, "tmpfs": "/run", "user": "1000:1000", "cap_add": ["net_bind_service"],
           "security_opt": ["apparmor=docker-default"], "pids_limit": 64, "mem_limit": "2g", "cpus": 2}
    svc = cd.harden(own, "app")
    assert svc["read_only"] is False and svc["tmpfs"] == "/run"  # as declared: no default tmpfs on a writable root
    assert svc["user"] == "1000:1000"
    assert svc["cap_drop"] == ["ALL"] and svc["cap_add"] == ["NET_BIND_SERVICE"]
    assert svc["security_opt"] == ["apparmor=docker-default", NNP]
    assert svc["pids_limit"] == 64 and svc["mem_limit"] == "2g" and svc["cpus"] == 2
    assert "deploy" not in svc


def test_own_no_new_privileges_entry_cap_drop_and_tmpfs_path_win():
    svc = cd.harden({"image": "x", "security_opt": ["no-new-privileges=false"], "cap_drop": ["NET_RAW"],
                     "cap_add": ["CAP_SYS_TIME"], "tmpfs": ["/tmp:exec,size=64m"]}, "app")
    assert svc["security_opt"] == ["no-new-privileges=false"]
    assert svc["cap_drop"] == ["NET_RAW"] and svc["cap_add"] == ["CAP_SYS_TIME"]  # left as declared
    assert svc["tmpfs"] == ["/tmp:exec,size=64m"]
    svc = cd.harden({"image": "postgres:16", "tmpfs": ["/var/run/postgresql:size=1m", "/scratch"]}, "postgres")
    assert svc["tmpfs"] == ["/tmp", "/var/run/postgresql:size=1m", "/scratch"]


def test_limits_are_added_in_the_style_the_service_uses():
    # top-level keys only: Compose refuses a deploy.resources.limits beside a top-level cpus or pids_limit
    svc = cd.harden({"image": "x", "cpus": 0.5}, "app")
    assert (svc["cpus"], svc["mem_limit"], svc["pids_limit"]) == (0.5, "1g", 1024) and "deploy" not in svc
    svc = cd.harden({"image": "x", "pids_limit": 10}, "app", {"cpus": "", "memory": "256m"})
    assert (svc["pids_limit"], svc["mem_limit"]) == (10, "256m") and "cpus" not in svc and "deploy" not in svc


def test_deploy_limits_count_as_the_services_own_and_partial_ones_are_completed():
    svc = cd.harden({"image": "x", "deploy": {"resources": {"limits": {"memory": "3g", "pids": 50}},
                                              "replicas": 1}}, "app")
    assert svc["deploy"] == {"resources": {"limits": {"memory": "3g", "pids": 50, "cpus": "1.0"}}, "replicas": 1}
    assert "pids_limit" not in svc


@pytest.mark.parametrize(("entry", "bound"), [
    ("8080:80", "127.0.0.1:8080:80"),
    ("8080:80/udp", "127.0.0.1:8080:80/udp"),
    ("8000-8010:8000-8010", "127.0.0.1:8000-8010:8000-8010"),
    ("80", "127.0.0.1::80"),
    (9000, "127.0.0.1::9000"),
    ("${WEB_PORT}:80", "127.0.0.1:${WEB_PORT}:80"),
    ("0.0.0.0:8080:80", "0.0.0.0:8080:80"),       # declared public by the inventory
    ("192.0.2.10:8080:80", "192.0.2.10:8080:80"),
    ("[::1]:8080:80", "[::1]:8080:80"),
    ({"target": 80, "published": 8080}, {"target": 80, "published": 8080, "host_ip": "127.0.0.1"}),
    ({"target": 80, "published": 8080, "host_ip": "0.0.0.0"}, {"target": 80, "published": 8080, "host_ip": "0.0.0.0"}),
])
def test_ports_without_an_address_are_bound_to_loopback(entry, bound):
    assert cd.harden({"image": "x", "ports": [entry]}, "app")["ports"] == [bound]
    assert cd.harden({"image": "x", "ports": [entry]}, "app", {"loopback_ports": False})["ports"] == [entry]


def test_host_network_ports_are_left_alone_and_the_input_is_not_changed():
    svc = {"image": "x", "network_mode": "host", "ports": ["80:80"], "cap_add": ["net_admin"]}
    before = copy.deepcopy(svc)
    out = cd.harden(svc, "app")
    assert out["ports"] == ["80:80"]
    assert svc == before


# ---------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------
def test_every_default_turns_off_on_its_own():
    base = {"image": "postgres:16", "ports": ["5432:5432"]}
    full = cd.harden(base, "postgres")
    assert cd.harden(base, "postgres", {"enabled": False}) == base
    assert "security_opt" not in cd.harden(base, "postgres", {"no_new_privileges": False})
    off = cd.harden(base, "postgres", {"drop_capabilities": False})
    assert "cap_drop" not in off and "cap_add" not in off
    off = cd.harden(base, "postgres", {"read_only": False})
    assert "read_only" not in off and "tmpfs" not in off
    assert "user" not in cd.harden(base, "postgres", {"non_root": False})
    assert cd.harden(base, "postgres", {"loopback_ports": False})["ports"] == ["5432:5432"]
    assert full["ports"] == ["127.0.0.1:5432:5432"]
    assert "deploy" not in cd.harden(base, "postgres", {"pids_limit": 0})
    assert cd.harden(base, "postgres", {"pids_limit": 100})["deploy"]["resources"]["limits"] == {"pids": 100}
    app = cd.harden({"image": "x"}, "app", {"memory": "", "cpus": ""})
    assert app["deploy"] == {"resources": {"limits": {"pids": 1024}}}
    assert cd.harden({"image": "x"}, "app", {"memory": "2g", "cpus": 2})["deploy"]["resources"]["limits"] == {
        "pids": 1024, "memory": "2g", "cpus": "2"}
    # an option left None means "the profile's value"
    assert cd.harden(base, "postgres", {"pids_limit": None, "read_only": None}) == full


@pytest.mark.parametrize(("options", "message"), [
    ({"read_onyl": True}, "app_stack_service_defaults.read_onyl: unknown option (did you mean read_only?)"),
    ({"read_only": "yes"}, "app_stack_service_defaults.read_only: expected true or false, got 'yes'"),
    ({"pids_limit": -1}, "app_stack_service_defaults.pids_limit: expected a whole number >= 0"),
    ({"pids_limit": "many"}, "app_stack_service_defaults.pids_limit: expected a whole number >= 0"),
    ({"pids_limit": True}, "app_stack_service_defaults.pids_limit: expected a whole number >= 0"),
    ({"memory": "lots"}, "app_stack_service_defaults.memory: expected a size such as 512m or 2g"),
    ({"cpus": "0"}, "app_stack_service_defaults.cpus: expected a number of CPUs > 0"),
    ({"cpus": "two"}, "app_stack_service_defaults.cpus: expected a number of CPUs > 0"),
    ({"user": ["999"]}, "app_stack_service_defaults.user: expected a user such as '999:999'"),
    ({"profile": "postgresql"}, "app_stack_service_defaults.profile: unknown profile 'postgresql' (did you mean "
                                "postgres?)"),
    (["read_only"], "app_stack_service_defaults: expected a dict of options"),
])
def test_bad_options_name_the_option(options, message):
    with pytest.raises(cd.HardeningError) as err:
        cd.harden({"image": "x"}, "app", options, where="app_stack_service_defaults")
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(("service", "message"), [
    ({"image": "x", "cap_add": ["NET BIND"]}, "web.cap_add: 'NET BIND' is not a capability name"),
    ({"image": "x", "cap_add": {"NET_ADMIN": True}}, "web.cap_add: expected capability names (a list)"),
    ({"image": "x", "ports": [["8080", "80"]]}, "web.ports[0]: expected a port mapping"),
    ({"image": "x", "security_opt": 7}, "web.security_opt: expected security options (a list)"),
    ("image: x", "web: a service must be a dict"),
])
def test_bad_service_keys_name_the_service_and_the_key(service, message):
    with pytest.raises(cd.HardeningError) as err:
        cd.harden(service, "app", name="web")
    assert str(err.value).startswith(message), str(err.value)


def test_unknown_profile_is_refused():
    with pytest.raises(cd.HardeningError, match=r"profile: unknown profile 'ngnix' \(did you mean nginx\?\)"):
        cd.harden({"image": "x"}, "ngnix")


# ---------------------------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------------------------
def test_hardened_service_filter_names_the_role_variable():
    svc = hardened_service({"image": "postgres:16"}, "postgres", {}, "data_tier_service_defaults", "70:70")
    assert svc["user"] == "70:70"
    with pytest.raises(AnsibleFilterError, match=r"^hardened_service: data_tier_service_defaults.pid_limit: "
                                                 r"unknown option \(did you mean pids_limit\?\)"):
        hardened_service({"image": "postgres:16"}, "postgres", {"pid_limit": 1}, "data_tier_service_defaults")


def test_compose_definition_layers_role_stack_and_service_options_and_own_keys_win():
    stack = {"name": "shop", "service_defaults": {"memory": "2g"}, "services": {
        "web": {"image": "shop/web:1", "ports": ["8080:80"]},
        "legacy": {"image": "shop/legacy:1", "read_only": False, "cap_add": ["NET_BIND_SERVICE"],
                   "security_opt": ["label=disable"], "service_defaults": {"pids_limit": 0, "cpus": "2.0"}},
        "db": {"image": "postgres:16-alpine", "service_defaults": {"profile": "postgres"}},
        "raw": {"image": "x", "service_defaults": {"enabled": False}},
    }}
    doc = compose_definition(stack, service_defaults={"pids_limit": 300, "cpus": "0.5"})
    web, legacy, db, raw = (doc["services"][n] for n in ("web", "legacy", "db", "raw"))
    assert web["deploy"]["resources"]["limits"] == {"pids": 300, "memory": "2g", "cpus": "0.5"}
    assert web["read_only"] is True and web["ports"] == ["127.0.0.1:8080:80"]
    assert legacy["read_only"] is False and "tmpfs" not in legacy
    assert legacy["cap_drop"] == ["ALL"] and legacy["cap_add"] == ["NET_BIND_SERVICE"]
    assert legacy["security_opt"] == ["label=disable", NNP]
    assert legacy["deploy"]["resources"]["limits"] == {"memory": "2g", "cpus": "2.0"}  # pids_limit 0: none
    assert "service_defaults" not in legacy
    assert db["user"] == "70:70" and db["tmpfs"][0] == "/var/run/postgresql:uid=70,gid=70,mode=0755"
    assert raw == {"image": "x"}
    assert stack["services"]["legacy"]["service_defaults"] == {"pids_limit": 0, "cpus": "2.0"}  # input untouched


@pytest.mark.parametrize(("stack", "kwargs", "message"), [
    ({"name": "shop", "services": {"web": {"image": "x", "service_defaults": {"readonly": False}}}}, {},
     "app_stack_stacks[shop].services.web.service_defaults.readonly: unknown option (did you mean read_only?)"),
    ({"name": "shop", "service_defaults": {"pids_limit": "x"}, "services": {"web": {"image": "x"}}}, {},
     "app_stack_stacks[shop].service_defaults.pids_limit: expected a whole number"),
    ({"name": "shop", "services": {"web": {"image": "x"}}}, {"service_defaults": {"non_root": 1}},
     "app_stack_service_defaults.non_root: expected true or false, got 1"),
    ({"name": "shop", "services": {"web": {"image": "x", "cap_add": ["bad cap"]}}}, {},
     "app_stack_stacks[shop].services.web.cap_add: 'bad cap' is not a capability name"),
])
def test_compose_definition_errors_name_the_stack_service_and_option(stack, kwargs, message):
    with pytest.raises(AnsibleFilterError) as err:
        compose_definition(stack, **kwargs)
    assert str(err.value).startswith("compose_definition: " + message), str(err.value)


# ---------------------------------------------------------------------------------------------
# documentation
# ---------------------------------------------------------------------------------------------
def test_docs_security_lists_every_profiles_capabilities_and_tmpfs():
    """docs/security.md's table is the users' view of PROFILES: it must say what the code does."""
    text = (ROOT / "docs" / "security.md").read_text()
    table = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)`[^|]*\|.*$", text, re.MULTILINE)}
    assert set(cd.PROFILES) <= set(table), sorted(set(cd.PROFILES) - set(table))
    for name, prof in cd.PROFILES.items():
        row = table[name]
        for cap in prof["caps_root"]:
            assert cap in row, (name, cap)
        for path in prof["tmpfs"]:
            assert f"`{path}`" in row, (name, path)
        assert str(prof["pids_limit"]) in row, name


# ---------------------------------------------------------------------------------------------
# the repository's inventories
# ---------------------------------------------------------------------------------------------
def _inventory_vars(inventory: Path) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # vault-encrypted values (okt's vault.yml, value by value) are not needed here
    Loader.add_constructor("!vault", lambda loader, node: "<vaulted>")
    out: dict = {}
    for path in sorted((inventory / "group_vars" / "all").glob("*.yml")):
        text = path.read_text()
        if text.startswith("$ANSIBLE_VAULT"):
            continue
        out.update(yaml.load(text, Loader=Loader) or {})  # a SafeLoader subclass
    return out


@pytest.mark.parametrize("inventory", sorted(p.name for p in (ROOT / "inventories").iterdir() if p.is_dir()))
def test_every_inventorys_services_take_the_defaults(inventory):
    """Each stack and data tier instance of the repository's inventories renders with the hardened defaults: every
    option they set is valid, and each service gets the defaults it does not turn off."""
    found = _inventory_vars(ROOT / "inventories" / inventory)
    for stack in found.get("app_stack_stacks") or []:
        doc = compose_definition(stack, service_defaults=found.get("app_stack_service_defaults"))
        for name, svc in doc["services"].items():
            assert "security_opt" in svc and "deploy" in svc, (inventory, stack["name"], name)
    for inst in found.get("data_tier_instances") or []:
        opts = dict(found.get("data_tier_service_defaults") or {}, **(inst.get("service_defaults") or {}))
        image = inst.get("image") or (found.get("data_tier_images") or {}).get(inst["engine"]) or inst["engine"]
        svc = cd.harden({"image": image}, inst["engine"], opts)
        assert svc["read_only"] is True and svc["user"], (inventory, inst["name"])


def test_a_lazy_container_is_copied_plain_without_a_deep_copy_and_left_untouched():
    """Roles hand the filter Ansible's lazily templated containers (dict subclasses whose deep copy re-wraps every
    level): the result is plain dicts and lists, built without deep-copying them, and the input keeps its values."""

    class Lazy(dict):
        def __deepcopy__(self, memo):
            raise AssertionError("deep-copied")

    caps = ["CHOWN"]
    service = Lazy({"image": "shp-test/httpapp:latest", "cap_add": caps, "environment": Lazy({"A": "1"})})
    out = cd.harden(service, "app")
    assert not isinstance(out, Lazy) and not isinstance(out["environment"], Lazy)
    assert out["environment"] == {"A": "1"}
    out["cap_add"].append("SETUID")
    assert caps == ["CHOWN"]
