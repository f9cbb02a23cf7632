# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planner for the UFW rules the firewall role manages (no I/O: the module reads the rules files and runs ufw).

A rule is *managed* when UFW stores it with a comment that is the marker (``selfhosted``) or starts with the marker
and a space, and it has the simple shape the role writes (``<allow|limit> proto <tcp|udp> from <src> to any port
<port>``, incoming, no interface, no application profile). Every managed rule that is not declared any more is
deleted; every other rule (added by hand, by another tool, or with another shape) is left alone. The current rules
come from UFW's own files (``user.rules``/``user6.rules``, the ``### tuple ###`` lines UFW keeps there), which UFW
writes whether or not it is enabled - unlike ``ufw status``, which needs an active firewall.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

MARKER = "selfhosted"
ANY_SOURCES = ("0.0.0.0/0", "::/0")
ACTIONS = ("allow", "limit")
PROTOS = ("tcp", "udp")
TUPLE = re.compile(r"^### tuple ### (.*)$")
PORT = re.compile(r"^([0-9]{1,5})(?::([0-9]{1,5}))?$")


class PlanError(ValueError):
    """A declared rule the planner cannot express (names the rule and the cause)."""


def is_marked(comment: str, marker: str = MARKER) -> bool:
    return comment == marker or comment.startswith(marker + " ")


def normalize_source(src) -> str:
    """``any`` or the address/network as UFW writes it (host addresses without a prefix, networks normalised)."""
    text = str(src).strip()
    if text.lower() in ("any", "") or text in ANY_SOURCES:
        return "any"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise PlanError("source %r is not an IP address or CIDR" % text) from exc
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def normalize_port(port) -> str:
    text = str(port).strip()
    match = PORT.match(text)
    if not match or not all(1 <= int(p) <= 65535 for p in match.groups() if p is not None):
        raise PlanError("port %r is not a port (1-65535) or a from:to range" % text)
    if match.group(2) is not None and int(match.group(2)) < int(match.group(1)):
        raise PlanError("port range %r ends before it starts" % text)
    # As UFW writes it (no leading zeros), so the comparison with its files is exact.
    return ":".join(str(int(p)) for p in match.groups() if p is not None)


@dataclass(frozen=True)
class Rule:
    action: str
    proto: str
    port: str
    src: str
    comment: str = ""
    first: bool = False
    adopt_comments: tuple = field(default=(), compare=False)

    @property
    def key(self) -> tuple:
        return (self.action, self.proto, self.port, self.src)

    def families(self, ipv6: bool) -> frozenset:
        if self.src == "any":
            return frozenset((4, 6) if ipv6 else (4,))
        return frozenset((6,) if ":" in self.src else (4,))

    def spec(self) -> list:
        """ufw's arguments after the verb (``allow``/``limit``), without the comment."""
        return ["proto", self.proto, "from", self.src, "to", "any", "port", self.port]

    def add_argv(self, ufw: str = "ufw", prepend: bool = False) -> list:
        argv = [ufw] + (["prepend"] if prepend else []) + [self.action] + self.spec()
        return argv + (["comment", self.comment] if self.comment else [])

    def delete_argv(self, ufw: str = "ufw") -> list:
        return [ufw, "delete", self.action] + self.spec()

    def text(self) -> str:
        out = "ufw %s %s" % (self.action, " ".join(self.spec()))
        return out + (" comment '%s'" % self.comment if self.comment else "")


def desired_rule(item: dict, marker: str = MARKER) -> Rule:
    """A declared rule from the module's ``rules`` option (validated; the comment must carry the marker)."""
    action = str(item.get("action") or "allow")
    proto = str(item.get("proto") or "tcp")
    comment = str(item.get("comment") or marker)
    if action not in ACTIONS:
        raise PlanError("rule %r: action must be one of %s" % (item, ", ".join(ACTIONS)))
    if proto not in PROTOS:
        raise PlanError("rule %r: proto must be one of %s" % (item, ", ".join(PROTOS)))
    if not is_marked(comment, marker):
        raise PlanError("rule %r: the comment must be %r or start with %r, which marks the rule as managed"
                        % (item, marker, marker + " "))
    if "'" in comment or "\n" in comment:
        raise PlanError("rule %r: the comment must not contain quotes or newlines" % (item,))
    try:
        return Rule(action, proto, normalize_port(item.get("port")), normalize_source(item.get("from", "any")),
                    comment, bool(item.get("first", False)),
                    tuple(str(c) for c in item.get("adopt_comments") or ()))
    except PlanError as exc:
        raise PlanError("rule %r: %s" % (item, exc)) from exc


@dataclass
class Current:
    """One ``### tuple ###`` line: ``rule`` is set when it has the simple shape the planner can manage."""

    family: int
    raw: str
    rule: Rule | None
    comment: str


def decode_comment(hexed: str) -> str:
    try:
        return bytes.fromhex(hexed).decode("utf-8", "replace")
    except ValueError:
        return hexed


def parse_rules_file(text: str, family: int) -> list:
    """The rules of one of UFW's ``user.rules`` (family 4) or ``user6.rules`` (family 6), in file order."""
    out = []
    for line in text.splitlines():
        match = TUPLE.match(line.strip())
        if not match:
            continue
        fields = match.group(1).split()
        comment = ""
        if fields and fields[-1].startswith("comment="):
            comment = decode_comment(fields.pop()[len("comment="):])
        rule = None
        if len(fields) == 7:
            action, proto, dport, dst, sport, src, direction = fields
            if (action in ACTIONS and proto in PROTOS and dst in ANY_SOURCES and sport == "any"
                    and direction == "in" and PORT.match(dport)):
                src = "any" if src in ANY_SOURCES else src
                rule = Rule(action, proto, dport, src, comment)
        out.append(Current(family, match.group(1), rule, comment))
    return out


def show_line(cur: Current) -> str:
    if cur.rule is not None:
        return cur.rule.text()
    return "(v%d) %s" % (cur.family, cur.raw)


@dataclass
class Plan:
    add: list = field(default_factory=list)        # Rules to append, in declared order
    prepend: list = field(default_factory=list)    # Rules to put first, in declared order
    delete: list = field(default_factory=list)     # managed Rules no longer declared
    move: list = field(default_factory=list)       # declared ``first`` Rules found after a limit rule of their port
    recomment: list = field(default_factory=list)  # Rules whose stored comment differs (re-added: UFW updates it)
    before: list = field(default_factory=list)
    after: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.add or self.prepend or self.delete or self.move or self.recomment)

    def commands(self, ufw: str = "ufw") -> list:
        """argv lists in a safe order: moved rules out, then everything new in (prepends last-first so they end up
        in declared order), comment updates, and only then the deletes, so a port that stays open never closes."""
        cmds = [r.delete_argv(ufw) for r in self.move]
        cmds += [r.add_argv(ufw, prepend=True) for r in reversed(self.move + self.prepend)]
        cmds += [r.add_argv(ufw) for r in self.add]
        cmds += [r.add_argv(ufw) for r in self.recomment]  # UFW updates the comment of an existing rule in place
        cmds += [r.delete_argv(ufw) for r in self.delete]
        return cmds


def plan(declared: list, v4_text: str, v6_text: str, ipv6: bool = True, marker: str = MARKER) -> Plan:
    """Compare the declared rules (Rule objects, in order) with UFW's files and say what to add, move, re-comment
    and delete."""
    current = parse_rules_file(v4_text, 4) + parse_rules_file(v6_text, 6)
    result = Plan(before=[show_line(c) for c in current])

    wanted, seen = [], set()
    for rule in declared:
        if rule.key not in seen:
            seen.add(rule.key)
            wanted.append(rule)

    managed = [c for c in current if c.rule is not None and is_marked(c.comment, marker)]
    others = [c for c in current if c.rule is not None and not is_marked(c.comment, marker)]
    fams = {}
    for cur in managed:
        fams.setdefault(cur.rule.key, set()).add(cur.family)
    comments = {}
    for cur in managed:
        comments.setdefault(cur.rule.key, cur.comment)
    unmanaged = {}
    for cur in others:
        unmanaged.setdefault(cur.rule.key, cur.comment)

    # A rule that must come first (admin allows) is out of place when a limit rule on its port precedes it.
    misplaced = set()
    for family in (4, 6):
        limited = set()
        for cur in current:
            if cur.family != family or cur.rule is None:
                continue
            if cur.rule.action == "limit":
                limited.add((cur.rule.proto, cur.rule.port))
            elif (cur.rule.proto, cur.rule.port) in limited:
                misplaced.add(cur.rule.key)

    deleted_keys, moved_keys = set(), set()
    for rule in wanted:
        if rule.key in fams:
            if rule.first and rule.key in misplaced:
                result.move.append(rule)
                moved_keys.add(rule.key)
            elif not rule.families(ipv6) <= fams[rule.key]:
                (result.prepend if rule.first else result.add).append(rule)
            elif comments[rule.key] != rule.comment:
                result.recomment.append(rule)
        elif rule.key in unmanaged:
            # Written by an older release of the role with the item's own comment: take it over. Any other rule
            # with the same effect was made by someone else and is left as it is (it already does what is declared).
            if unmanaged[rule.key] in rule.adopt_comments:
                result.recomment.append(rule)
        else:
            (result.prepend if rule.first else result.add).append(rule)
    wanted_keys = {r.key for r in wanted}
    for cur in managed:
        if cur.rule.key not in wanted_keys and cur.rule.key not in deleted_keys:
            deleted_keys.add(cur.rule.key)
            result.delete.append(cur.rule)

    # The rule list afterwards, as `ufw show added` would list it (roughly: UFW keeps one list per family).
    gone = deleted_keys | moved_keys
    recommented = {r.key: r for r in result.recomment}
    kept = []
    for cur in current:
        if cur.rule is not None and cur.rule.key in gone and is_marked(cur.comment, marker):
            continue
        if cur.rule is not None and cur.rule.key in recommented:
            kept.append(recommented[cur.rule.key].text())
        else:
            kept.append(show_line(cur))
    first = [r.text() for r in result.move + result.prepend]
    after = first + kept + [r.text() for r in result.add]
    result.after = list(dict.fromkeys(after))
    result.before = list(dict.fromkeys(result.before))
    return result
