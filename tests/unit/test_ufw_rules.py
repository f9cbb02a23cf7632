"""Unit tests for the UFW rules planner (plugins/module_utils/ufw_rules.py) and the filter that turns the firewall
role's options into declared rules (plugins/filter/firewall.py). The rules files are in the format UFW 0.36 writes
(captured from Debian 12's ufw: `### tuple ###` lines, comments hex-encoded)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.firewall import firewall_ufw_rules
from ansible_collections.selfhosted.platform.plugins.module_utils import ufw_rules as ur


def hexed(text: str) -> str:
    return text.encode().hex()


def tuple_line(action, proto, port, src, comment=None, family=4):
    any_ = "0.0.0.0/0" if family == 4 else "::/0"
    src = any_ if src == "any" else src
    line = f"### tuple ### {action} {proto} {port} {any_} any {src} in"
    return line + (f" comment={hexed(comment)}" if comment is not None else "")


def files(*rules):
    """(action, proto, port, src, comment) -> (user.rules, user6.rules) as UFW writes a rule from any to both."""
    v4, v6 = [], []
    for action, proto, port, src, comment in rules:
        if src == "any" or ":" not in src:
            v4.append(tuple_line(action, proto, port, src, comment, 4))
        if src == "any" or ":" in src:
            v6.append(tuple_line(action, proto, port, src, comment, 6))
    header = "*filter\n:ufw-user-input - [0:0]\n### RULES ###\n\n"
    return header + "\n".join(v4) + "\n### END RULES ###\n", header + "\n".join(v6) + "\n### END RULES ###\n"


def declared(settings):
    return [ur.desired_rule(item) for item in firewall_ufw_rules(settings)]


WIDE = {"ssh_port": 22, "connection_port": "22", "ssh_sources": [], "admin_sources": ["198.51.100.7"],
        "ssh_rate_limit": True, "public_tcp_ports": [80, 443], "public_udp_ports": [],
        "rules": [{"port": 8083, "comment": "app"}, {"port": "9000:9010", "proto": "udp", "from": "192.0.2.0/24"}]}
CONVERGED = files(("allow", "tcp", "22", "198.51.100.7", "selfhosted admin ssh"),
                  ("limit", "tcp", "22", "any", "selfhosted ssh"),
                  ("allow", "tcp", "80", "any", "selfhosted public"),
                  ("allow", "tcp", "443", "any", "selfhosted public"),
                  ("allow", "tcp", "8083", "any", "selfhosted rule: app"),
                  ("allow", "udp", "9000:9010", "192.0.2.0/24", "selfhosted rule"))


def test_a_fresh_host_gets_every_rule_admin_first():
    p = ur.plan(declared(WIDE), "", "")
    assert [r.port for r in p.prepend] == ["22"] and p.prepend[0].src == "198.51.100.7"
    assert [(r.action, r.port, r.src) for r in p.add] == [
        ("limit", "22", "any"), ("allow", "80", "any"), ("allow", "443", "any"), ("allow", "8083", "any"),
        ("allow", "9000:9010", "192.0.2.0/24")]
    assert not p.delete and p.changed
    cmds = p.commands("ufw")
    assert cmds[0] == ["ufw", "prepend", "allow", "proto", "tcp", "from", "198.51.100.7", "to", "any", "port", "22",
                       "comment", "selfhosted admin ssh"]
    assert cmds[1][:3] == ["ufw", "limit", "proto"]


def test_the_converged_host_is_a_noop():
    p = ur.plan(declared(WIDE), *CONVERGED)
    assert not p.changed and p.commands() == []
    assert p.before == p.after


def test_narrowing_removes_what_is_no_longer_declared_and_keeps_hand_rules():
    v4, v6 = CONVERGED
    v4 = v4.replace("### END RULES ###", tuple_line("allow", "tcp", "9300", "any") + "\n"
                    + tuple_line("allow", "tcp", "5432", "10.0.0.0/8", "db by hand") + "\n### END RULES ###")
    narrow = dict(WIDE, ssh_sources=["203.0.113.0/24"], rules=[{"port": 8083, "comment": "app"}])
    p = ur.plan(declared(narrow), v4, v6)
    gone = sorted((r.action, r.port, r.src) for r in p.delete)
    assert gone == [("allow", "9000:9010", "192.0.2.0/24"), ("limit", "22", "any")]
    assert [(r.action, r.port, r.src) for r in p.add] == [("limit", "22", "203.0.113.0/24")]
    cmds = p.commands("ufw")
    # New rules go in before the old ones go out: SSH is never without a rule.
    assert cmds.index(["ufw", "limit", "proto", "tcp", "from", "203.0.113.0/24", "to", "any", "port", "22",
                       "comment", "selfhosted ssh"]) < cmds.index(
        ["ufw", "delete", "limit", "proto", "tcp", "from", "any", "to", "any", "port", "22"])
    # Rules without the marker are never deleted.
    assert not any("9300" in c or "5432" in c for cmd in cmds for c in cmd)
    assert "ufw allow proto tcp from any to any port 9300" in p.after


def test_moving_the_ssh_port_keeps_the_connected_port_until_the_next_run():
    moved = dict(WIDE, ssh_port=2222, connection_port="22")
    p = ur.plan(declared(moved), *CONVERGED)
    new = {(r.action, r.port, r.src) for r in p.add + p.prepend}
    assert new == {("limit", "2222", "any"), ("allow", "2222", "198.51.100.7")}
    # The session's port 22 stays (rate-limited); the admin allow is on the SSH port only.
    assert [(r.action, r.port, r.src) for r in p.delete] == [("allow", "22", "198.51.100.7")]
    # Next run, connected through 2222: port 22 goes.
    after = files(("allow", "tcp", "2222", "198.51.100.7", "selfhosted admin ssh"),
                  ("limit", "tcp", "2222", "any", "selfhosted ssh"), ("limit", "tcp", "22", "any", "selfhosted ssh"))
    p2 = ur.plan(declared(dict(WIDE, ssh_port=2222, connection_port="2222", public_tcp_ports=[], rules=[])), *after)
    assert [(r.action, r.port) for r in p2.delete] == [("limit", "22")] and not p2.add


def test_a_user_comment_does_not_make_a_rule_unmanaged():
    rules = declared(dict(WIDE, rules=[{"port": 8083, "comment": "selfhosted is not here; just the app"}]))
    assert rules[-1].comment == "selfhosted rule: selfhosted is not here; just the app"
    # And the comment of a declared rule is the marker plus the user's text, whatever that text is.
    assert all(ur.is_marked(r.comment) for r in declared(dict(WIDE, rules=[{"port": 1, "comment": "db"}])))


def test_a_rule_an_older_release_wrote_with_the_items_comment_is_taken_over():
    old = files(("allow", "tcp", "22", "198.51.100.7", "selfhosted admin ssh"),
                ("limit", "tcp", "22", "any", "selfhosted ssh"), ("allow", "tcp", "80", "any", "selfhosted public"),
                ("allow", "tcp", "443", "any", "selfhosted public"), ("allow", "tcp", "8083", "any", "app"),
                ("allow", "udp", "9000:9010", "192.0.2.0/24", "selfhosted rule"))
    p = ur.plan(declared(WIDE), *old)
    assert [r.text() for r in p.recomment] == ["ufw allow proto tcp from any to any port 8083 comment "
                                               "'selfhosted rule: app'"]
    assert p.commands("ufw") == [["ufw", "allow", "proto", "tcp", "from", "any", "to", "any", "port", "8083",
                                  "comment", "selfhosted rule: app"]]
    # The same rule with a comment the role never wrote was made by someone else: left alone, not duplicated.
    other = (old[0].replace(hexed("app"), hexed("by hand")), old[1].replace(hexed("app"), hexed("by hand")))
    assert not ur.plan(declared(WIDE), *other).changed


def test_an_admin_rule_behind_the_rate_limit_is_moved_first():
    behind = files(("limit", "tcp", "22", "any", "selfhosted ssh"),
                   ("allow", "tcp", "22", "198.51.100.7", "selfhosted admin ssh"),
                   ("allow", "tcp", "80", "any", "selfhosted public"),
                   ("allow", "tcp", "443", "any", "selfhosted public"),
                   ("allow", "tcp", "8083", "any", "selfhosted rule: app"),
                   ("allow", "udp", "9000:9010", "192.0.2.0/24", "selfhosted rule"))
    p = ur.plan(declared(WIDE), *behind)
    assert [r.src for r in p.move] == ["198.51.100.7"]
    assert p.commands("ufw")[:2] == [
        ["ufw", "delete", "allow", "proto", "tcp", "from", "198.51.100.7", "to", "any", "port", "22"],
        ["ufw", "prepend", "allow", "proto", "tcp", "from", "198.51.100.7", "to", "any", "port", "22", "comment",
         "selfhosted admin ssh"]]
    assert p.after[0].startswith("ufw allow proto tcp from 198.51.100.7")


def test_ipv6_half_missing_is_added_and_ipv6_sources_skipped_without_ipv6():
    v4_only = (CONVERGED[0], "")
    p = ur.plan(declared(WIDE), *v4_only, ipv6=True)
    assert {r.port for r in p.add} == {"22", "80", "443", "8083"}
    assert not ur.plan(declared(WIDE), *v4_only, ipv6=False).changed
    rules = firewall_ufw_rules(dict(WIDE, ipv6=False, admin_sources=["2001:db8::1", "198.51.100.7"]))
    assert [r["from"] for r in rules if r["comment"] == "selfhosted admin ssh"] == ["198.51.100.7"]


def test_origin_sources_restrict_the_public_ports():
    rules = firewall_ufw_rules(dict(WIDE, origin_sources=["203.0.113.0/24", "2001:db8::/32"]))
    public = [(r["port"], r["from"]) for r in rules if r["comment"] == "selfhosted public"]
    assert public == [("80", "203.0.113.0/24"), ("80", "2001:db8::/32"), ("443", "203.0.113.0/24"),
                      ("443", "2001:db8::/32")]
    p = ur.plan([ur.desired_rule(r) for r in rules], *CONVERGED)
    assert {(r.port, r.src) for r in p.delete} == {("80", "any"), ("443", "any")}


def test_sources_are_normalised_as_ufw_writes_them():
    assert ur.normalize_source("10.1.2.3/16") == "10.1.0.0/16"
    assert ur.normalize_source("10.1.2.3/32") == "10.1.2.3"
    assert ur.normalize_source("0.0.0.0/0") == "any"
    assert ur.normalize_source("2001:DB8:0::1/128") == "2001:db8::1"
    assert ur.normalize_port("08083") == "8083" and ur.normalize_port(" 9000:09010") == "9000:9010"


@pytest.mark.parametrize("item, cause", [
    ({"port": "22", "comment": "ssh"}, "must be 'selfhosted' or start with 'selfhosted '"),
    ({"port": "70000", "comment": "selfhosted x"}, "not a port"),
    ({"port": "90:80", "comment": "selfhosted x"}, "ends before it starts"),
    ({"port": "22", "from": "example.org", "comment": "selfhosted x"}, "not an IP address or CIDR"),
    ({"port": "22", "proto": "icmp", "comment": "selfhosted x"}, "proto must be one of tcp, udp"),
    ({"port": "22", "comment": "selfhosted it's"}, "must not contain quotes"),
])
def test_bad_rules_are_refused_naming_the_cause(item, cause):
    with pytest.raises(ur.PlanError, match=cause.replace("(", r"\(")):
        ur.desired_rule(item)


def test_rules_of_other_shapes_are_never_managed():
    v4 = "\n".join([
        f"### tuple ### allow any 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in comment={hexed('selfhosted app')}",
        f"### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in_eth1 comment={hexed('selfhosted iface')}",
        f"### tuple ### deny tcp 25 0.0.0.0/0 any 0.0.0.0/0 in comment={hexed('selfhosted deny')}",
        f"### tuple ### allow tcp 81 0.0.0.0/0 any 0.0.0.0/0 in comment={hexed('selfhostedness')}",
    ])
    p = ur.plan([], v4, "")
    assert not p.changed and len(p.after) == 4


def test_the_filter_refuses_a_rule_without_a_port():
    with pytest.raises(AnsibleFilterError, match="needs a port"):
        firewall_ufw_rules(dict(WIDE, rules=[{"proto": "tcp"}]))
