# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter turning the firewall role's options into the UFW rules it declares (for the ufw_rules module)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

MARKER = "selfhosted"


def _is_v6(src):
    return ":" in str(src)


def firewall_ufw_rules(settings):
    """The declared UFW rules, in order: admin SSH allows (first, before any rate limit), SSH from its sources on the
    SSH port and the port Ansible is connected through, the public ports (from the origin sources when set), the
    further rules, the Docker Swarm cluster's ports from the nodes' addresses (``swarm_rules``, on swarm nodes).
    Every comment carries the marker; a further rule's own comment follows it."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("firewall_ufw_rules: expects a dict of the role's settings")
    ipv6 = bool(settings.get("ipv6", True))

    def usable(src):
        return src == "any" or ipv6 or not _is_v6(src)

    ssh_ports = [str(settings["ssh_port"])]
    conn = str(settings.get("connection_port") or "").strip()
    if conn and conn not in ssh_ports:
        ssh_ports.append(conn)
    out = []
    for src in settings.get("admin_sources") or []:
        if usable(src):
            out.append({"action": "allow", "proto": "tcp", "port": ssh_ports[0], "from": str(src),
                        "comment": MARKER + " admin ssh", "first": True})
    action = "limit" if settings.get("ssh_rate_limit", True) else "allow"
    for src in settings.get("ssh_sources") or ["any"]:
        for port in ssh_ports:
            if usable(src):
                out.append({"action": action, "proto": "tcp", "port": port, "from": str(src),
                            "comment": MARKER + " ssh"})
    origins = settings.get("origin_sources") or ["any"]
    for proto in ("tcp", "udp"):
        for port in settings.get("public_%s_ports" % proto) or []:
            for src in origins:
                if usable(src):
                    out.append({"action": "allow", "proto": proto, "port": str(port), "from": str(src),
                                "comment": MARKER + " public"})
    for item in settings.get("rules") or []:
        if not isinstance(item, dict) or "port" not in item:
            raise AnsibleFilterError("firewall_ufw_rules: every firewall_rules item needs a port, got %r" % (item,))
        src = str(item.get("from", "any"))
        if not usable(src):
            continue
        own = item.get("comment")
        out.append({"action": "allow", "proto": str(item.get("proto", "tcp")), "port": str(item["port"]),
                    "from": src, "comment": MARKER + " rule" + (": %s" % own if own else ""),
                    # What releases before the marker comments wrote for this item.
                    "adopt_comments": [str(own)] if own else []})
    # A Docker Swarm node: the cluster's ports from the nodes' addresses only (swarm_firewall_rules).
    for item in settings.get("swarm_rules") or []:
        src = str(item["from"])
        if usable(src):
            out.append({"action": "allow", "proto": str(item["proto"]), "port": str(item["port"]), "from": src,
                        "comment": MARKER + " swarm"})
    return out


class FilterModule:
    def filters(self):
        return {"firewall_ufw_rules": firewall_ufw_rules}
