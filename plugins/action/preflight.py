# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side preflight of the whole site: every problem of every enabled layer, before any host is touched."""

from __future__ import annotations

import os
import re

from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
UNDEFINED_NAME = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined")


def load_role_options(role, roles_dir=ROLES_DIR):
    """The ``main`` entry point's options of a role of this collection (``meta/argument_specs.yml``)."""
    path = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
    if not os.path.isfile(path):
        raise AnsibleError("preflight: role %s has no meta/argument_specs.yml (%s)" % (role, path))
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    return ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}


def undefined_name(error):
    match = UNDEFINED_NAME.search(str(error))
    return match.group(1) if match else None


def is_empty(value):
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def site_problems(roles, values):
    """Combinations of options of different layers that cannot work together. ``roles``: the enabled layers' roles;
    ``values``: their options (the inventory's value, else the argument spec's default)."""
    problems = []
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
    return problems


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("layers", "secret_pattern"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        layers = self._task.args.get("layers") or []
        pattern = re.compile(self._task.args.get("secret_pattern") or r"^vault_")
        if not isinstance(layers, list):
            return dict(result, failed=True, msg="preflight: layers must be a list")

        problems, checked, deferred = [], [], []
        reported = set()
        site_roles, site_values = set(), {}
        for layer in layers:
            if not isinstance(layer, dict) or not layer.get("name"):
                return dict(result, failed=True, msg="preflight: every layer needs a name")
            if not self._bool(layer.get("enabled", True)):
                continue
            checked.append(layer["name"])
            options = load_role_options(layer["role"]) if layer.get("role") else {}
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
            spec = dict((k, v) for k, v in options.items() if k in values)
            if spec:
                validation = ArgumentSpecValidator(spec).validate(dict((k, values[k]) for k in spec))
                messages = validation.error_messages
                for message in messages:
                    # A list item with suboptions that is no dict fails twice, once without naming the option.
                    if not any(message != other and message in other for other in messages):
                        problems.append("%s: %s" % (layer["name"], message))

        problems.extend(site_problems(site_roles, site_values))
        result.update(changed=False, layers=checked, deferred=sorted(set(deferred)), problems=problems)
        if problems:
            result["failed"] = True
            result["msg"] = "preflight found %d problem(s) - nothing was changed:\n  - %s" % (
                len(problems), "\n  - ".join(problems))
        else:
            result["msg"] = "preflight passed for %s" % ", ".join(checked or ["no enabled layer"])
        return result

    def _bool(self, value):
        from ansible.module_utils.parsing.convert_bool import boolean

        return boolean(self._templar.template(value), strict=False)
