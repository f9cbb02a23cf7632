"""The preflight's checks as functions (plugins/action/preflight.py) and the role argument specs they read: a misspelt
role variable is named with the closest option, list items are checked key by key with their path, and every
list-of-dict option of every role is typed down to its items, the way the role consumes them."""

from __future__ import annotations

import ast
import re

import pytest
import yaml
from ansible_collections.selfhosted.platform.plugins.action.preflight import (
    check_options,
    load_role_options,
    role_internal_names,
    unknown_variables,
)

from tests.conftest import ROOT

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
# Options whose dict is passed on verbatim (compose keys, daemon.json, environment, URLs keyed by set name): typed as
# dict only, on purpose. Every other dict and every list of dicts has typed `options:`.
FREE_FORM = {
    "app_stack_stacks[].services", "app_stack_stacks[].env", "app_stack_stacks[].volumes",
    "app_stack_stacks[].secrets", "app_stack_stacks[].configs", "authelia_extra_configuration", "backup_env",
    "backup_healthcheck_urls", "docker_engine_daemon_options",
    # Docker labels: keys of the user's choosing, string values (the swarm role checks the values).
    "swarm_node_labels", "swarm_networks[].labels",
}


def problems_of(role: str, values: dict) -> list[str]:
    problems: list[str] = []
    check_options(load_role_options(role), values, "", problems, top=True)
    return problems


def walk(options: dict, prefix: str = ""):
    for name, option in options.items():
        yield prefix + name, option or {}
        if (option or {}).get("options"):
            yield from walk(option["options"], prefix + name + ("[]." if option.get("type") == "list" else "."))


# ---------------------------------------------------------------------------------------------
# Unknown role-prefixed variables
# ---------------------------------------------------------------------------------------------

def test_a_misspelt_role_variable_is_named_with_the_closest_option():
    names = {"firewall_rule": [], "firewall_rules": [], "firewall_ssh_prot": 22, "selfhosted_firewall_enabled": True,
             "ansible_host": "192.0.2.10", "backup_sets": []}
    assert unknown_variables("firewall", names, load_role_options("firewall")) == [
        "firewall_rule is not a variable of role firewall; did you mean firewall_rules?",
        "firewall_ssh_prot is not a variable of role firewall; did you mean firewall_ssh_port?",
    ]


def test_a_role_variable_without_a_close_option_says_where_the_options_are_listed():
    name = "watchtower_abcdefghijklmnopqrstuvwxyz"
    [problem] = unknown_variables("watchtower", {name: 1}, load_role_options("watchtower"))
    assert problem.startswith("watchtower_abcdefghijklmnopqrstuvwxyz is not a variable of role watchtower; ")
    assert "ansible-doc -t role selfhosted.platform.watchtower" in problem


def test_names_the_roles_and_playbooks_set_themselves_are_never_reported():
    # set_fact (data_tier_connections), loop_var (data_tier_instance), task vars (app_stack_item), double underscore
    # (role-internal), a playbook's own input (backup_now_sets of backup_now.yml), and the operator's own names.
    assert "data_tier_connections" in role_internal_names("data_tier")
    assert "data_tier_instance" in role_internal_names("data_tier")
    assert "app_stack_item" in role_internal_names("app_stack")
    assert unknown_variables("data_tier", {"data_tier_connections": {}, "data_tier_instance": {},
                                           "data_tier__r": 1}, load_role_options("data_tier")) == []
    assert unknown_variables("app_stack", {"app_stack_item": {}}, load_role_options("app_stack")) == []
    assert unknown_variables("backup", {"backup_now_sets": "files"}, load_role_options("backup")) == []
    assert unknown_variables("proxy", {"proxy_domain": "example.test"}, load_role_options("proxy"),
                             ignore=["proxy_domain"]) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_option_carries_its_roles_prefix(role):
    # The unknown-variable check relies on it: a role's namespace is `<role>_`.
    assert [n for n in load_role_options(role) if not n.startswith(role + "_")] == []


# ---------------------------------------------------------------------------------------------
# Values checked down to list items, each problem naming its path
# ---------------------------------------------------------------------------------------------

def test_a_wrong_list_item_is_named_by_index_and_key():
    values = {"firewall_rules": [{"port": "22"}, {"port": 80}, {"port": "443", "prot": "tcp"},
                                 {"port": "53", "proto": "icmp"}, {"proto": "udp"}, "8080",
                                 {"port": "1", "docker": "x"}]}
    assert problems_of("firewall", values) == [
        "firewall_rules[2].prot: unsupported parameter; did you mean proto?",
        "firewall_rules[3].proto: must be one of: tcp, udp, got: 'icmp'",
        "firewall_rules[4].port: required, not set",
        "firewall_rules[5]: expected dict, got str",
        "firewall_rules[6].docker: expected bool, got str 'x'",
    ]


def test_backup_sets_and_the_forget_policy_are_typed():
    values = {"backup_sets": [{"name": "db", "databases": "all", "on_calendar": ["02:30"]},
                              {"name": "files", "paths": "/srv", "unreadable": "ignore", "exclude_cache": True}],
              "backup_forget_policy": {"keep_daily": 7, "keep_dialy": 3, "keep_weekly": "four"}}
    assert problems_of("backup", values) == [
        "backup_sets[0].on_calendar: expected str, got list",
        "backup_sets[1].exclude_cache: unsupported parameter; did you mean exclude_caches?",
        "backup_sets[1].paths: expected list of str, got str",
        "backup_sets[1].unreadable: must be one of: warn, fail, got: 'ignore'",
        "backup_forget_policy.keep_dialy: unsupported parameter; did you mean keep_daily?",
        "backup_forget_policy.keep_weekly: expected int, got str 'four'",
    ]


def test_nested_items_of_proxy_routes_and_hosts_and_registry_auths():
    proxy = {"proxy_nginx_routes": [{"path": "/", "upstream": "http://app:80",
                                     "auth": {"users": [{"name": "ops", "pasword": "x"}]}}],
             "proxy_npm_proxy_hosts": [{"domain_names": ["a.example.test"], "forward_host": "app",
                                        "forward_port": "eighty", "ssl_force": True,
                                        "locations": [{"path": "/api", "forward_host": "api"}]}],
             "proxy_npm_access_lists": [{"name": "staff", "clients": [{"address": "192.0.2.0/24",
                                                                       "directive": "permit"}]}],
             "proxy_npm_certificates": [{"domain_names": ["a.example.test"], "wildcard": True}]}
    assert problems_of("proxy", proxy) == [
        "proxy_nginx_routes[0].auth.users[0].pasword: unsupported parameter; did you mean password?",
        "proxy_nginx_routes[0].auth.users[0].password: required, not set",
        "proxy_npm_proxy_hosts[0].ssl_force: unsupported parameter; did you mean ssl_forced?",
        "proxy_npm_proxy_hosts[0].forward_port: expected int, got str 'eighty'",
        "proxy_npm_proxy_hosts[0].locations[0].forward_port: required, not set",
        "proxy_npm_access_lists[0].clients[0].directive: must be one of: allow, deny, got: 'permit'",
        "proxy_npm_certificates[0].wildcard: unsupported parameter; known: certificate, certificate_key, "
        "dns_credentials, dns_provider, domain_names, force, intermediate_certificate, letsencrypt_email, nice_name, "
        "propagation_seconds, provider, state, timeout",
    ]
    assert problems_of("watchtower", {"watchtower_registry_auths": [{"registry": "r.example.test", "user": "u",
                                                                     "password": "p"}]}) == [
        "watchtower_registry_auths[0].user: unsupported parameter; did you mean username?",
        "watchtower_registry_auths[0].username: required, not set",
    ]


def test_a_secret_value_is_never_shown():
    spec = {"token": {"type": "int", "no_log": True}, "level": {"type": "str", "choices": ["a"], "no_log": True}}
    problems: list[str] = []
    check_options(spec, {"token": "s3cr3t-value", "level": "an0ther-s3cret"}, "", problems, top=True)
    assert problems == ["token: expected int, got str (hidden, no_log)",
                        "level: must be one of: a, got: (hidden, no_log)"]
    assert "s3cr3t" not in " ".join(problems)


def test_a_value_only_the_run_knows_is_left_to_the_role():
    # app_stack_stacks uses data_tier_connections (a fact of the data tier layer): the keys are checked as written,
    # templated values are not.
    values = {"app_stack_stacks": [{"name": "app", "services": {"app": {"image": "x"}},
                                    "wait_timeout": "{{ data_tier_connections | length }}",
                                    "env": {"DB": "{{ data_tier_connections.pg.host }}"}, "rollback": "maybe"}]}
    assert problems_of("app_stack", values) == ["app_stack_stacks[0].rollback: expected bool, got str 'maybe'"]


# ---------------------------------------------------------------------------------------------
# The specs themselves
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_every_list_of_dicts_and_dict_option_is_typed_down_to_its_items(role):
    untyped = [path for path, option in walk(load_role_options(role))
               if (option.get("type") == "dict" or option.get("elements") == "dict") and not option.get("options")
               and path not in FREE_FORM]
    assert untyped == [], "give these options `options:` (or list them as free-form here): %s" % untyped


@pytest.mark.parametrize("role", ROLES)
def test_every_default_passes_its_own_spec(role):
    options = load_role_options(role)
    defaults = {name: option["default"] for name, option in options.items()
                if option.get("default") not in (None, [], {}, "")
                and not (isinstance(option["default"], str) and "{{" in option["default"])}
    assert problems_of(role, defaults) == []


def test_backup_databases_take_every_key_of_a_data_tier_instance():
    # backup_databases defaults to data_tier_instances: every key valid there must be valid here, with the same type.
    instance = load_role_options("data_tier")["data_tier_instances"]["options"]
    database = load_role_options("backup")["backup_databases"]["options"]
    assert set(instance) <= set(database), set(instance) - set(database)
    for key, option in instance.items():
        if key != "databases":
            assert database[key].get("type") == option.get("type"), key
    assert {"container", "superuser", "password_file"} <= set(database)


def module_options(module: str) -> dict:
    tree = ast.parse((ROOT / "plugins" / "modules" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)["options"]
    raise AssertionError(module)


def same_types(role_options: dict, doc_options: dict, where: str) -> list[str]:
    out = []
    for key, option in role_options.items():
        if key not in doc_options:
            out.append("%s%s: not an option of the module" % (where, key))
            continue
        doc = doc_options[key]
        for attr in ("type", "elements", "choices"):
            if option.get(attr) != doc.get(attr):
                out.append("%s%s: %s %r, the module says %r" % (where, key, attr, option.get(attr), doc.get(attr)))
        if option.get("options") or doc.get("suboptions"):
            out += same_types(option.get("options") or {}, doc.get("suboptions") or {}, where + key + ".")
    return out


def task_item_keys(task_name: str) -> set[str]:
    tasks = yaml.safe_load((ROOT / "roles" / "proxy" / "tasks" / "npm.yml").read_text())
    task = next(t for t in tasks if t.get("name") == task_name)
    args = next(v for k, v in task.items() if k.startswith("selfhosted.platform."))
    return {k for k, v in args.items() if isinstance(v, str) and re.search(r"\bitem\.%s\b" % re.escape(k), v)}


@pytest.mark.parametrize(("option", "module", "task"), [
    ("proxy_npm_certificates", "npm_certificate", "Declare the certificates"),
    ("proxy_npm_access_lists", "npm_access_list", "Declare the access lists"),
])
def test_npm_items_are_the_keys_the_role_passes_typed_as_the_module_types_them(option, module, task):
    spec = load_role_options("proxy")[option]["options"]
    assert set(spec) == task_item_keys(task)
    assert same_types(spec, module_options(module), option + ".") == []


def test_npm_proxy_hosts_items_are_the_modules_hosts_plus_authelia():
    spec = dict(load_role_options("proxy")["proxy_npm_proxy_hosts"]["options"])
    assert spec.pop("authelia")["type"] == "bool"
    hosts = module_options("npm_proxy_hosts")["hosts"]["suboptions"]
    assert set(spec) == set(hosts)
    assert same_types(spec, hosts, "proxy_npm_proxy_hosts.") == []
