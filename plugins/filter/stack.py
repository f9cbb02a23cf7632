# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn an app-stack declaration from inventory into a compose document."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults

WATCHTOWER_LABEL = "com.centurylinklabs.watchtower.enable"
EXTENSION_KEYS = ("watchtower", "service_defaults")


def _labels_dict(labels):
    if labels is None:
        return {}
    if isinstance(labels, dict):
        return dict(labels)
    out = {}
    for item in labels:
        key, sep, value = str(item).partition("=")
        out[key] = value if sep else ""
    return out


def compose_definition(stack, networks=None, watchtower_label=WATCHTOWER_LABEL, service_defaults=None,
                       defaults_name="app_stack_service_defaults", userns=None):
    """Build the compose document of ``stack`` (a dict with ``services`` and optional ``networks``).

    - ``watchtower: true`` on a service becomes the Watchtower opt-in label (``false`` or absent: no label,
      so a Watchtower started with --label-enable never touches it).
    - Every service that declares no ``networks`` of its own joins the stack's default network plus each
      external network listed in ``stack.networks`` (data tier, proxy); those are declared external.
    - Every service gets the platform's hardened defaults (module_utils/container_defaults.py, profile ``app``
      unless its options name another): SERVICE_DEFAULTS (the role's options, named DEFAULTS_NAME in errors), then
      the stack's ``service_defaults``, then the service's own ``service_defaults`` (an extension key, removed);
      the service's own compose keys always win.
    - With the engine's user-namespace remapping (USERNS, the fact docker_engine__userns), a service that needs the
      host's namespaces (privileged, network_mode host, the Docker socket, ...) gets ``userns_mode: host``.
    """
    if not isinstance(stack, dict) or not isinstance(stack.get("services"), dict) or not stack["services"]:
        raise AnsibleFilterError("compose_definition: the stack needs a non-empty 'services' dict")
    label = "app_stack_stacks[%s]" % stack.get("name", "?")
    try:
        role_opts = container_defaults.check_options(service_defaults, defaults_name)
        stack_opts = container_defaults.check_options(stack.get("service_defaults"), label + ".service_defaults")
    except container_defaults.HardeningError as exc:
        raise AnsibleFilterError("compose_definition: %s" % exc) from exc
    own = list(stack.get("networks") or [])
    external = own + [n for n in (networks or []) if n not in own]
    services = {}
    for name, declared in stack["services"].items():
        if not isinstance(declared, dict):
            raise AnsibleFilterError("compose_definition: service %s must be a dict" % name)
        svc = container_defaults.plain_copy(declared)
        opt_in = svc.pop("watchtower", False)
        if not isinstance(opt_in, bool):
            raise AnsibleFilterError("compose_definition: %s.watchtower must be true or false" % name)
        where = "%s.services.%s" % (label, name)
        try:
            svc_opts = container_defaults.check_options(svc.pop("service_defaults", None), where + ".service_defaults")
            svc = container_defaults.harden(svc, "app", dict(role_opts, **dict(stack_opts, **svc_opts)),
                                            where="%s / %s.service_defaults" % (defaults_name, where), name=where,
                                            userns=userns)
        except container_defaults.HardeningError as exc:
            raise AnsibleFilterError("compose_definition: %s" % exc) from exc
        labels = _labels_dict(svc.get("labels"))
        labels.pop(watchtower_label, None)
        if opt_in:
            labels[watchtower_label] = "true"
        if labels:
            svc["labels"] = labels
        else:
            svc.pop("labels", None)
        if "networks" not in svc and svc.get("network_mode") is None and external:
            svc["networks"] = ["default"] + external
        services[name] = svc
    doc = {"services": services}
    if external:
        doc["networks"] = dict((n, {"external": True, "name": n}) for n in external)
    for key in ("volumes", "secrets", "configs"):
        if stack.get(key):
            doc[key] = container_defaults.plain_copy(stack[key])
    return doc


def watchtower_services(stack, watchtower_label=WATCHTOWER_LABEL):
    """Names of the services of a stack that opted in to Watchtower."""
    return sorted(n for n, s in (stack.get("services") or {}).items() if isinstance(s, dict) and s.get("watchtower"))


class FilterModule:
    def filters(self):
        return {"compose_definition": compose_definition, "watchtower_services": watchtower_services}
