# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side preflight of the whole site: every problem of every enabled layer, before any host is touched."""

from __future__ import annotations

import contextlib
import difflib
import functools
import glob
import os
import re

from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.selfhosted.platform.plugins.module_utils.docker_cis import AuditError, check_waivers
from ansible_collections.selfhosted.platform.plugins.module_utils.nginx_router import problems as router_problems
from ansible_collections.selfhosted.platform.plugins.module_utils.socket_proxy import METHODS, named_problems
from ansible_collections.selfhosted.platform.plugins.module_utils.swarm_site import SiteError, is_cluster, site_plan

# The watchtower role's socket proxy allowlists (a bad regex would stop the proxy at start).
WATCHTOWER_ALLOWLISTS = ("watchtower_socket_proxy_allow", "watchtower_socket_proxy_allow_update",
                         "watchtower_socket_proxy_allow_cleanup", "watchtower_socket_proxy_allow_extra")

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

COLLECTION_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES_DIR = os.path.join(COLLECTION_DIR, "roles")
PLAYBOOKS_DIR = os.path.join(COLLECTION_DIR, "playbooks")
UNDEFINED_NAME = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined")
# A variable a playbook reads optionally: `name | default(...)`.
OPTIONAL_READ = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*default\b")
# The keys of an option that decide which values it accepts (ArgumentSpecValidator's vocabulary).
VALUE_KEYS = ("type", "elements", "choices")
TEMPLATE_MARK = re.compile(r"{{|{%")
TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict", type(None): "null"}
# What the Swarm site plan reads of the instances and stacks (swarm_site.site_plan): only these keys are templated, so
# a stack whose env needs a fact of a later layer (data_tier_connections) is still placed and checked.
SWARM_KEYS = {"data_tier_instances": ("name", "node", "publish_loopback", "networks"),
              "app_stack_stacks": ("name", "state", "node", "dirs", "files", "networks")}


def load_role_options(role, roles_dir=ROLES_DIR):
    """The ``main`` entry point's options of a role of this collection (``meta/argument_specs.yml``)."""
    path = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
    if not os.path.isfile(path):
        raise AnsibleError("preflight: role %s has no meta/argument_specs.yml (%s)" % (role, path))
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    return ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}


class _VaultLoader(yaml.SafeLoader if yaml else object):
    """Reads task files whatever tags they carry (``!vault``, ``!unsafe``): only their keys matter here."""


if yaml:
    _VaultLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _names_set(node, out):
    """Names a task list sets: ``register``, ``set_fact`` keys, ``vars`` keys, ``loop_control.loop_var``."""
    if isinstance(node, list):
        for item in node:
            _names_set(item, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "register" and isinstance(value, str):
                out.add(value)
            elif key in ("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact") and isinstance(value, dict):
                out.update(k for k in value if k != "cacheable")
            elif key == "vars" and isinstance(value, dict):
                out.update(value)
            elif key == "loop_control" and isinstance(value, dict) and isinstance(value.get("loop_var"), str):
                out.add(value["loop_var"])
            _names_set(value, out)


def _load_yaml(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_VaultLoader)  # a SafeLoader subclass
    except (OSError, yaml.YAMLError):
        return None


@functools.cache
def role_internal_names(role, roles_dir=ROLES_DIR):
    """Variables the role sets itself (``vars/main.yml``, ``register``, ``set_fact``, task ``vars``, loop
    variables): never the inventory's business, so never reported as unknown."""
    out = set()
    data = _load_yaml(os.path.join(roles_dir, role, "vars", "main.yml"))
    if isinstance(data, dict):
        out.update(data)
    for sub in ("tasks", "handlers"):
        for path in sorted(glob.glob(os.path.join(roles_dir, role, sub, "**", "*.y*ml"), recursive=True)):
            _names_set(_load_yaml(path), out)
    return frozenset(out)


@functools.cache
def playbook_names(playbooks_dir=PLAYBOOKS_DIR):
    """Variables the collection's playbooks set or read optionally (e.g. ``backup_now_sets`` of backup_now.yml): an
    inventory may hold them for those playbooks."""
    out = set()
    for path in sorted(glob.glob(os.path.join(playbooks_dir, "**", "*.y*ml"), recursive=True)):
        _names_set(_load_yaml(path), out)
        try:
            with open(path, encoding="utf-8") as handle:
                out.update(OPTIONAL_READ.findall(handle.read()))
        except OSError:
            pass
    return frozenset(out)


def unknown_variables(role, names, options, ignore=(), roles_dir=ROLES_DIR, playbooks_dir=PLAYBOOKS_DIR):
    """A problem for each of NAMES that carries ROLE's prefix but is none of its OPTIONS, with the closest option.
    Role-internal names (a double underscore, or set by the role itself), the names the collection's playbooks use
    and IGNORE are left alone."""
    prefix = role + "_"
    known = set(options) | role_internal_names(role, roles_dir) | playbook_names(playbooks_dir) | set(ignore or ())
    problems = []
    for name in sorted(n for n in names if isinstance(n, str) and n.startswith(prefix)):
        if name in known or "__" in name:
            continue
        close = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
        hint = ("did you mean %s?" % close[0]) if close else (
            "its variables are listed by ansible-doc -t role selfhosted.platform.%s" % role)
        problems.append("%s is not a variable of role %s; %s" % (name, role, hint))
    return problems


# --------------------------------------------------------------------------------------------------
# Values against the argument spec, down to list items: each problem names the path (rules[2].proto)
# --------------------------------------------------------------------------------------------------

def _type_name(value):
    # bool before int: True is an int too.
    return next((name for kind, name in TYPE_NAMES.items() if isinstance(value, kind)), type(value).__name__)


def _wanted(option):
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        return "list of %s" % option["elements"]
    return kind


def _shown(value, option):
    return "(hidden, no_log)" if option.get("no_log") else repr(value)


def check_value(option, value, path, problems):
    """Check VALUE against OPTION (an argument spec entry); append problems naming PATH. Containers are strict (a
    list must be a list, a dict a dict, a string no container), scalars are converted as Ansible converts them."""
    if value is None:
        return
    kind = option.get("type", "str")
    if isinstance(value, str) and kind not in ("str", "raw") and TEMPLATE_MARK.search(value):
        return  # a value only the run can know (it uses facts a later layer sets); the role checks it then
    if (kind == "list" and not isinstance(value, list)) or (kind == "dict" and not isinstance(value, dict)) or (
            kind in ("str", "path", "int", "float", "bool", "bytes", "bits") and isinstance(value, (list, dict))):
        problems.append("%s: expected %s, got %s" % (path, _wanted(option), _type_name(value)))
        return
    if kind == "list":
        element = dict((k, v) for k, v in option.items() if k in ("choices", "options", "no_log"))
        element["type"] = option.get("elements") or "raw"
        for index, item in enumerate(value):
            check_value(element, item, "%s[%d]" % (path, index), problems)
        return
    flat = dict((k, v) for k, v in option.items() if k in VALUE_KEYS)
    result = ArgumentSpecValidator({"value": flat}).validate({"value": value})
    if result.error_messages:
        if option.get("choices") is not None and not any("unable to convert" in m for m in result.error_messages):
            problems.append("%s: must be one of: %s, got: %s" % (
                path, ", ".join(str(c) for c in option["choices"]), _shown(value, option)))
        else:
            problems.append("%s: expected %s, got %s %s" % (path, kind, _type_name(value), _shown(value, option)))
        return
    if kind == "dict" and option.get("options"):
        check_options(option["options"], value, path + ".", problems)


def check_options(options, params, prefix, problems, top=False):
    """Check the dict PARAMS against OPTIONS: unknown keys (with the closest known one), missing required keys, and
    each value. PREFIX (``firewall_rules[2].``) starts every problem; TOP is the role level, where every name was
    picked by its spec and the role's defaults supply what is missing."""
    known = {}
    for name, option in options.items():
        known[name] = name
        for alias in (option or {}).get("aliases") or []:
            known[alias] = name
    if not top:
        for key in sorted(k for k in params if k not in known):
            close = [k for k in sorted(known) if k.lower() == str(key).lower()] or \
                difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            problems.append("%s%s: unsupported parameter; %s" % (
                prefix, key, ("did you mean %s?" % close[0]) if close else "known: %s" % ", ".join(sorted(options))))
        present = set(known[k] for k in params if k in known)
        for name, option in options.items():
            if (option or {}).get("required") and name not in present:
                problems.append("%s%s: required, not set" % (prefix, name))
    for key, value in params.items():
        if key in known:
            check_value(options[known[key]] or {}, value, prefix + str(key), problems)


def undefined_name(error):
    match = UNDEFINED_NAME.search(str(error))
    return match.group(1) if match else None


def is_empty(value):
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def site_problems(roles, values):
    """Combinations of options of different layers that cannot work together, and values a type cannot describe (the
    socket proxy's regexes). ``roles``: the enabled layers' roles; ``values``: their options (the inventory's value,
    else the argument spec's default)."""
    problems = []
    if "watchtower" in roles:
        # Their shape and method names are the argument spec's business (checked above); here the regexes.
        problems.extend(named_problems([
            (name, dict((k, v) for k, v in values[name].items() if k in METHODS and isinstance(v, list)))
            for name in WATCHTOWER_ALLOWLISTS if isinstance(values.get(name), dict)]))
    if ("firewall" in roles and "proxy" in roles and values.get("proxy_mode", "nginx") == "nginx"
            and boolean(values.get("proxy_nginx_real_ip_enabled"), strict=False)
            and boolean(values.get("firewall_fail2ban_enabled", True), strict=False)
            and values.get("firewall_fail2ban_proxy_logs")):
        problems.append(
            "firewall_fail2ban_proxy_logs: cannot be used with proxy_nginx_real_ip_enabled - behind a CDN the proxy "
            "logs the visitor's address (from %s), but visitors never connect to this host, the CDN does, so the "
            "jail's bans in INPUT/DOCKER-USER block nothing while the origin stays open to everyone. Remove the "
            "proxy jails (firewall_fail2ban_proxy_logs: []) and restrict the origin to the CDN with "
            "firewall_origin_sources (e.g. [cloudflare]); banning at the CDN is not offered"
            % values.get("proxy_nginx_real_ip_header", "CF-Connecting-IP"))
    if "proxy" in roles and values.get("proxy_mode", "nginx") == "nginx":
        # The router's routes, name-based sites and their certificates (what its role asserts before it writes).
        # A router with no route at all is left to the role: the preflight never required routes.
        problems.extend(router_problems(values.get("proxy_nginx_routes"), values.get("proxy_nginx_sites"),
                                        values.get("proxy_nginx_ports"), require_routes=False))
    return problems


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("layers", "secret_pattern", "ignore_vars"))

    def _waiver_problems(self, task_vars):
        """selfhosted_security_waivers as verify.yml's security section will read them: each {item, target,
        reason} with a reason and an item the audit evaluates."""
        if "selfhosted_security_waivers" not in task_vars:
            return []
        try:
            waivers = self._templar.template(task_vars["selfhosted_security_waivers"])
        except AnsibleError as exc:
            return ["selfhosted_security_waivers: cannot be templated: %s" % str(exc).splitlines()[0]]
        if not isinstance(waivers, list):
            kind = "a string" if isinstance(waivers, str) else "a dict" if isinstance(waivers, dict) else "%r" % waivers
            return ["selfhosted_security_waivers: expected a list of {item, target, reason}, got %s" % kind]
        try:
            check_waivers(waivers)
        except AuditError as exc:
            return ["selfhosted_security_waivers: %s" % str(exc).replace("waivers[", "item [", 1)]
        return []

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        layers = self._task.args.get("layers") or []
        pattern = re.compile(self._task.args.get("secret_pattern") or r"^vault_")
        ignore = self._task.args.get("ignore_vars") or []
        if not isinstance(layers, list):
            return dict(result, failed=True, msg="preflight: layers must be a list")
        if isinstance(ignore, str) or not isinstance(ignore, list):
            return dict(result, failed=True, msg="preflight: ignore_vars must be a list of variable names")

        problems, checked, deferred, notes = [], [], [], []
        reported = set()
        site_roles, site_values = set(), {}
        for layer in layers:
            if not isinstance(layer, dict) or not layer.get("name"):
                return dict(result, failed=True, msg="preflight: every layer needs a name")
            if not self._bool(layer.get("enabled", True)):
                continue
            checked.append(layer["name"])
            options = load_role_options(layer["role"]) if layer.get("role") else {}
            if layer.get("role"):
                # A misspelt variable would otherwise be ignored silently and the role's default used instead.
                unknown = unknown_variables(layer["role"], task_vars, options, ignore)
                problems.extend(unknown)
                if unknown:
                    notes = ["A variable of your own that carries a role's prefix: list it in "
                             "selfhosted_preflight_ignore_vars."]
            values = {}
            names = list(options) + [n for n in layer.get("required") or [] if n not in options]
            for name in names:
                if name not in task_vars:
                    continue
                try:
                    values[name] = self._templar.template(task_vars[name])
                except AnsibleUndefinedVariable as exc:
                    missing = undefined_name(exc)
                    if missing and pattern.search(missing):
                        reported.add(name)
                        problems.append("%s: %s is undefined - is the vault loaded (--ask-vault-pass, "
                                        "--vault-password-file) and does it define it?" % (name, missing))
                    else:
                        # A value that uses facts a layer sets later (e.g. data_tier_connections) is checked when
                        # that layer runs; its role's argument spec validates it then.
                        deferred.append(name)
                except AnsibleError as exc:
                    problems.append("%s: cannot be templated: %s" % (name, str(exc).splitlines()[0]))
            for name in layer.get("required") or []:
                if name in deferred or name in reported:
                    continue
                if name not in values or is_empty(values[name]):
                    problems.append("%s: required when %s is enabled, but %s" % (
                        name, layer["name"], "not set" if name not in task_vars else "empty"))
            if layer.get("role"):
                site_roles.add(layer["role"])
                for name, option in options.items():
                    site_values[name] = values[name] if name in values else (option or {}).get("default")
            # Each value against the role's argument spec, list items and their keys included. A deferred value is
            # checked as written: its keys and every item that needs no later fact.
            check_options(options, dict((k, v) for k, v in values.items() if k in options), "", problems, top=True)
            raw = dict((k, task_vars[k]) for k in deferred if k in options and k not in values)
            with contextlib.suppress(AnsibleError):  # else the role's own argument spec validates it when it runs
                check_options(options, raw, "", problems, top=True)

        problems.extend(site_problems(site_roles, site_values))
        problems.extend(self._waiver_problems(task_vars))
        swarm_notes = []
        try:
            plan = self._swarm_plan(task_vars, site_roles, site_values, set(deferred))
        except (AnsibleError, SiteError) as exc:
            plan = {"problems": ["swarm: the site cannot be planned: %s" % str(exc).splitlines()[0]], "notes": []}
        if plan:
            problems.extend(plan["problems"])
            swarm_notes = plan["notes"]
            result["swarm"] = dict((k, plan[k]) for k in ("deployer", "placement", "stack_nodes", "data_nodes")
                                   if k in plan)
        result.update(changed=False, layers=checked, deferred=sorted(set(deferred)), problems=problems)
        if problems:
            result["failed"] = True
            result["msg"] = "preflight found %d problem(s) - nothing was changed:\n  - %s%s" % (
                len(problems), "\n  - ".join(problems), "".join("\n" + note for note in notes))
        else:
            result["msg"] = "preflight passed for %s" % ", ".join(checked or ["no enabled layer"])
            if swarm_notes:
                result["msg"] += "; on the swarm: " + "; ".join(swarm_notes)
        return result

    def _swarm_view(self, task_vars, name, site_values, deferred):
        """NAME (data_tier_instances or app_stack_stacks) with only the keys the Swarm plan reads templated."""
        if name not in deferred and site_values.get(name) is not None:
            return site_values[name]
        raw = task_vars.get(name)
        if raw is None:
            return []
        if isinstance(raw, str):
            raw = self._templar.template(raw)
        items = []
        for raw_item in raw or []:
            item = self._templar.template(raw_item) if isinstance(raw_item, str) else raw_item
            if isinstance(item, dict):
                item = dict((k, self._templar.template(item[k])) for k in SWARM_KEYS[name] if k in item)
            items.append(item)
        return items

    def _swarm_plan(self, task_vars, site_roles, site_values, deferred):
        """The Docker Swarm site plan (docs/swarm-site.md) when the inventory's swarm groups have nodes: its problems
        stop the run before any host is touched, like every other problem found here."""
        groups = task_vars.get("groups") or {}
        mg = self._templar.template(task_vars.get("swarm_managers_group")) or None
        wg = self._templar.template(task_vars.get("swarm_workers_group")) or None
        if not is_cluster(groups, mg, wg):
            return None
        hostvars = task_vars.get("hostvars") or {}
        labels = {}
        for host in (groups.get(mg or "swarm_managers") or []) + (groups.get(wg or "swarm_workers") or []):
            hv = hostvars.get(host) or {}
            labels[host] = self._templar.template(hv.get("swarm_node_labels")) or {}
        return site_plan(groups, labels, self._swarm_view(task_vars, "data_tier_instances", site_values, deferred),
                         self._swarm_view(task_vars, "app_stack_stacks", site_values, deferred),
                         self._templar.template(task_vars.get("swarm_networks")) or [], sorted(site_roles), mg, wg,
                         shared_network=site_values.get("data_tier_shared_network") or "data-shared",
                         proxy_networks=site_values.get("proxy_nginx_networks") or [],
                         proxy_mode=site_values.get("proxy_mode") or "nginx")

    def _bool(self, value):
        return boolean(self._templar.template(value), strict=False)
