#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ufw_rules
short_description: Make UFW's managed allow/limit rules exactly the declared ones, both ways
version_added: 0.1.0
description:
  - Converges the UFW rules this collection manages to O(rules) - adds the missing ones and deletes every managed rule
    that is no longer declared (a narrowed source list, a removed port, a moved SSH port). A rule is managed when its
    UFW comment is O(marker) or starts with O(marker) and a space; rules without that comment, added by hand or by
    other tools, are never touched.
  - The current rules are read from UFW's own rules files (C(user.rules), C(user6.rules)), which UFW keeps whether
    or not it is enabled. Changes are made with the C(ufw) command - new rules first, deletes last, so a port that
    stays declared never closes in between. Rules with O(rules[].first) go before all others (C(ufw prepend)), e.g.
    admin allows that must win over a rate limit on the same port; one found after a limit rule of its port is moved.
  - A rule that an older release wrote with the item's own comment (listed in O(rules[].adopt_comments)) is taken
    over by giving it the marker comment. A rule with the same effect but another comment is left alone.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - UFW (the C(ufw) command) on the managed host; root.
attributes:
  check_mode:
    description: Computes the same plan and runs no C(ufw) command.
    support: full
  diff_mode:
    description: The rule list before and after, as C(ufw show added) lists it.
    support: full
options:
  rules:
    description: The declared rules, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      action:
        description: C(allow) or C(limit) (rate-limited allow).
        type: str
        choices: [allow, limit]
        default: allow
      proto:
        description: Protocol.
        type: str
        choices: [tcp, udp]
        default: tcp
      port:
        description: Port number or C(from:to) range.
        type: str
        required: true
      from:
        description: Source address or CIDR, or C(any).
        type: str
        default: any
      comment:
        description: UFW comment; must be O(marker) or start with O(marker) and a space.
        type: str
      first:
        description: Put the rule before all others (C(ufw prepend)); only for rules with a specific source.
        type: bool
        default: false
      adopt_comments:
        description: Comments under which an older release wrote this rule; such a rule is taken over.
        type: list
        elements: str
        default: []
  ipv6:
    description: UFW manages IPv6 too (C(IPV6=yes)); a rule from C(any) then needs its IPv6 half as well.
    type: bool
    default: true
  marker:
    description: The comment prefix that marks a rule as managed.
    type: str
    default: selfhosted
  rules_dir:
    description: Directory of UFW's C(user.rules) and C(user6.rules).
    type: path
    default: /etc/ufw
"""

EXAMPLES = r"""
- name: SSH from the admin network first, rate-limited SSH, the web ports
  selfhosted.platform.ufw_rules:
    rules:
      - {action: allow, port: "22", from: 198.51.100.0/24, comment: selfhosted admin ssh, first: true}
      - {action: limit, port: "22", comment: selfhosted ssh}
      - {port: "80", comment: selfhosted public}
      - {port: "443", comment: selfhosted public}
"""

RETURN = r"""
added:
  description: Rules added (or in check mode to be added), as C(ufw show added) lists them.
  returned: success
  type: list
  elements: str
  sample: ["ufw allow proto tcp from any to any port 8443 comment 'selfhosted rule'"]
removed:
  description: Managed rules deleted because they are no longer declared.
  returned: success
  type: list
  elements: str
moved:
  description: Rules moved before the others (found after a rate limit on their port).
  returned: success
  type: list
  elements: str
recommented:
  description: Rules whose comment was set to the declared one (including rules taken over from an older release).
  returned: success
  type: list
  elements: str
rules:
  description: All rules in UFW's files after the run (predicted in check mode), unmanaged ones included.
  returned: success
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.ufw_rules import PlanError, desired_rule, plan


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rules=dict(type="list", elements="dict", required=True, options=dict(
                action=dict(type="str", choices=["allow", "limit"], default="allow"),
                proto=dict(type="str", choices=["tcp", "udp"], default="tcp"),
                port=dict(type="str", required=True),
                **{"from": dict(type="str", default="any")},
                comment=dict(type="str"),
                first=dict(type="bool", default=False),
                adopt_comments=dict(type="list", elements="str", default=[]),
            )),
            ipv6=dict(type="bool", default=True),
            marker=dict(type="str", default="selfhosted"),
            rules_dir=dict(type="path", default="/etc/ufw"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        declared = [desired_rule(item, params["marker"]) for item in params["rules"]]
    except PlanError as exc:
        module.fail_json(msg="rules: %s" % exc)
    for rule in declared:
        if rule.first and rule.src == "any":
            module.fail_json(msg="rules: %s has first: true but no source; only rules from a specific source "
                                 "can go first" % rule.text())

    v4 = read(os.path.join(params["rules_dir"], "user.rules"))
    v6 = read(os.path.join(params["rules_dir"], "user6.rules"))
    result_plan = plan(declared, v4, v6, ipv6=params["ipv6"], marker=params["marker"])
    result = dict(
        changed=result_plan.changed,
        added=[r.text() for r in result_plan.prepend + result_plan.add],
        removed=[r.text() for r in result_plan.delete],
        moved=[r.text() for r in result_plan.move],
        recommented=[r.text() for r in result_plan.recomment],
        rules=result_plan.after,
    )
    if module._diff:
        result["diff"] = dict(before="\n".join(result_plan.before) + "\n", after="\n".join(result_plan.after) + "\n",
                              before_header="ufw rules", after_header="ufw rules")
    if module.check_mode or not result_plan.changed:
        module.exit_json(**result)

    ufw = module.get_bin_path("ufw", required=True)
    for argv in result_plan.commands(ufw):
        rc, out, err = module.run_command(argv)
        if rc != 0 or "ERROR" in out:
            module.fail_json(msg="%s failed (rc %d): %s" % (" ".join(argv), rc, (err or out).strip()), **result)
    result["rules"] = plan(declared, read(os.path.join(params["rules_dir"], "user.rules")),
                           read(os.path.join(params["rules_dir"], "user6.rules")),
                           ipv6=params["ipv6"], marker=params["marker"]).before
    module.exit_json(**result)


if __name__ == "__main__":
    main()
