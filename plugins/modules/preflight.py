#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight
short_description: Check every enabled layer's variables on the controller before any host is touched
version_added: 0.2.0
description:
  - Runs on the controller (an action plugin; nothing is sent to the host). For each enabled layer it templates every
    variable the layer's role declares in C(meta/argument_specs.yml) and validates it against that spec, checks the
    variables the layer needs to be non-empty, and reports every problem at once, naming the variable and the cause.
  - A variable whose value refers to an undefined variable matching O(secret_pattern) (by default C(vault_*)) is
    reported as a missing secret (the vault is not loaded or lacks it). A value that refers to other undefined
    variables, for example facts a layer sets later such as C(data_tier_connections), is deferred and returned in
    RV(deferred); the role validates it when it runs.
  - >-
    Values are checked down to list items and their keys (the roles' argument specs type every list of dicts with
    C(options)), and each problem names its path with the list index, for example
    C(firewall_rules[2].prot: unsupported parameter; did you mean proto?) or
    C(backup_sets[0].on_calendar: expected str, got list). Containers are checked strictly (a list must be a list, a
    dict a dict, a string no container); scalars are converted as Ansible converts them. The value of a C(no_log)
    option is never shown. A deferred value is checked as written: its keys, and every value that needs no later fact.
  - >-
    A host variable that carries the prefix of an enabled layer's role (C(firewall_), C(backup_), C(proxy_), ...) but
    is none of that role's options is reported with the closest option, for example
    C(firewall_rule is not a variable of role firewall; did you mean firewall_rules?) - a misspelt variable would
    otherwise be ignored and the role's default used. Not reported are names with a double underscore (role-internal),
    names the role sets itself (C(vars/main.yml), C(register), C(set_fact), task C(vars), loop variables, for example
    C(data_tier_connections)), names the collection's other playbooks set or read (C(backup_now_sets)), the names of
    O(ignore_vars), and every variable of a disabled layer.
  - Used as the first play of C(playbooks/site.yml), so a run without the vault, or with a misspelt option, stops
    before the Docker Engine, the firewall or any stack is touched; no host is contacted.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
attributes:
  check_mode:
    description: Changes nothing in any mode.
    support: full
  diff_mode:
    description: No diff; nothing changes.
    support: none
options:
  layers:
    description: The layers to check, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The layer's name in messages (usually its enable switch).
        type: str
        required: true
      role:
        description: Role of this collection whose C(main) argument spec validates the layer's variables.
        type: str
      enabled:
        description: Disabled layers are skipped.
        type: bool
        default: true
      required:
        description: Variables that must be set and not empty when the layer is enabled (secrets, repositories).
        type: list
        elements: str
        default: []
  secret_pattern:
    description: Regular expression for names of variables that only a vault provides.
    type: str
    default: "^vault_"
  ignore_vars:
    description:
      - Variables of your own that carry a role's prefix and are not reported as unknown (C(site.yml) passes
        C(selfhosted_preflight_ignore_vars)).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Check the variables of every enabled layer
  selfhosted.platform.preflight:
    layers:
      - name: selfhosted_backup_enabled
        role: backup
        enabled: "{{ selfhosted_backup_enabled | default(true) }}"
        required: [backup_password, backup_repository]
      - name: selfhosted_proxy_enabled
        role: proxy
        required: "{{ ['proxy_npm_admin_password'] if proxy_mode | default('nginx') == 'npm' else [] }}"
    # proxy_domain is the inventory's own helper variable, not an option of the proxy role.
    ignore_vars: [proxy_domain]
"""

RETURN = r"""
layers:
  description: Names of the enabled layers that were checked.
  returned: always
  type: list
  elements: str
deferred:
  description: Variables whose value needs facts set by a later layer; their role validates them when it runs.
  returned: always
  type: list
  elements: str
problems:
  description: Every problem found, each naming the variable and the cause. The task fails when it is not empty.
  returned: always
  type: list
  elements: str
"""
