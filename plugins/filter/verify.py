# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters behind playbooks/verify.yml: what the inventory declares, compared with what a live host has.

Every check becomes a row ``{section, item, expected, actual, ok}``; ``verify_report`` prints the rows as an
aligned text table. The playbook gathers the facts (``docker inspect`` of the Compose containers, a TCP probe
from the controller, restic's snapshot list, ...) and these filters decide, so the decisions are unit-tested.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier
from ansible_collections.selfhosted.platform.plugins.module_utils.restic import stored_paths

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_ONEOFF = "com.docker.compose.oneoff"


def row(section, item, expected, actual, ok):
    return {"section": section, "item": item, "expected": expected, "actual": actual, "ok": bool(ok)}


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------

def _has_healthcheck(svc):
    check = svc.get("healthcheck")
    if not isinstance(check, dict) or check.get("disable"):
        return False
    test = check.get("test")
    return not (isinstance(test, list) and test[:1] == ["NONE"])


def _replicas(svc):
    deploy = svc.get("deploy") if isinstance(svc.get("deploy"), dict) else {}
    value = deploy.get("replicas", svc.get("scale", 1))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _service_specs(services):
    """{name: {replicas, healthcheck}} of compose services; services behind a profile are not started by
    default and are left out (their containers are neither required nor reported)."""
    out = {}
    for name, declared in (services or {}).items():
        svc = declared if isinstance(declared, dict) else {}
        if svc.get("profiles"):
            continue
        out[str(name)] = {"replicas": _replicas(svc), "healthcheck": _has_healthcheck(svc)}
    return out


def verify_expected_projects(layers):
    """The Compose projects the inventory declares, each ``{project, layer, present, services, optional}``.

    LAYERS: ``data_tier`` (data_tier_instances), ``app_stacks`` (app_stack_stacks), ``proxy`` ({project,
    service} or none), ``watchtower`` ({project, services: {name: {healthcheck}}} or none) and ``extra``
    ([{project, services, layer}] where services is a list of names or a compose services dict). Layers switched off
    are passed empty."""
    if not isinstance(layers, dict):
        raise AnsibleFilterError("verify_expected_projects: expects a dict of layers")
    out = []
    for inst in layers.get("data_tier") or []:
        if not isinstance(inst, dict) or not inst.get("name") or not inst.get("engine"):
            raise AnsibleFilterError("verify_expected_projects: data_tier items need name and engine")
        out.append({"project": inst["name"], "layer": "data_tier", "present": True, "optional": [],
                    "services": {inst["engine"]: {"replicas": 1, "healthcheck": True}}})
    for stack in layers.get("app_stacks") or []:
        if not isinstance(stack, dict) or not stack.get("name"):
            raise AnsibleFilterError("verify_expected_projects: app_stacks items need a name")
        present = stack.get("state", "present") != "absent"
        services = stack.get("services") or {}
        out.append({"project": stack["name"], "layer": "app_stack", "present": present,
                    "services": _service_specs(services) if present else {},
                    "optional": sorted(n for n, s in services.items() if isinstance(s, dict) and s.get("profiles"))})
    for layer in ("proxy", "watchtower"):
        spec = layers.get(layer)
        if spec:
            # One service ({project, service, healthcheck}) or several ({project, services: {name: {healthcheck}}}).
            services = spec.get("services") or {spec["service"]: {"healthcheck": spec.get("healthcheck")}}
            out.append({"project": spec["project"], "layer": layer, "present": True, "optional": [],
                        "services": dict((str(name), {"replicas": 1, "healthcheck": bool((s or {}).get("healthcheck"))})
                                         for name, s in services.items())})
    for spec in layers.get("extra") or []:
        services = spec.get("services") or []
        specs = _service_specs(services) if isinstance(services, dict) else \
            {str(n): {"replicas": 1, "healthcheck": False} for n in services}
        out.append({"project": spec["project"], "layer": spec.get("layer", "extra"), "present": True,
                    "services": specs, "optional": []})
    return out


def _container_state(c):
    state = c.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    return (state.get("Status") or "unknown"), health


def _describe(c):
    status, health = _container_state(c)
    name = (c.get("Name") or "").lstrip("/")
    return "%s %s%s" % (name, status, " (%s)" % health if health else "")


def verify_container_rows(expected, containers):
    """Rows for every declared service (a running container per replica, healthy where it has a healthcheck)
    and for every container of a declared project that no declared service explains. CONTAINERS: ``docker
    inspect`` output of the host's Compose containers."""
    by_project = {}
    for c in containers or []:
        labels = (c.get("Config") or {}).get("Labels") or {}
        by_project.setdefault(labels.get(LABEL_PROJECT), []).append(c)
    rows = []
    for proj in expected:
        mine = sorted(by_project.get(proj["project"], []), key=lambda c: c.get("Name") or "")
        if not proj["present"]:
            rows.append(row("containers", proj["project"], "removed (state: absent)",
                            ", ".join(_describe(c) for c in mine) or "none", not mine))
            continue
        seen = set()
        for service, spec in sorted(proj["services"].items()):
            cons = [c for c in mine if ((c.get("Config") or {}).get("Labels") or {}).get(LABEL_SERVICE) == service
                    and ((c.get("Config") or {}).get("Labels") or {}).get(LABEL_ONEOFF, "False") != "True"]
            seen.update(id(c) for c in cons)
            good = []
            for c in cons:
                status, health = _container_state(c)
                if status == "running" and (health or "none") in (("healthy",) if spec["healthcheck"]
                                                                  else ("none", "healthy")):
                    good.append(c)
            want = "%d running%s" % (spec["replicas"], ", healthy" if spec["healthcheck"] else "")
            actual = ", ".join(_describe(c) for c in cons) or "no container"
            rows.append(row("containers", "%s/%s" % (proj["project"], service), want, actual,
                            len(good) == len(cons) == spec["replicas"]))
        for c in mine:
            labels = (c.get("Config") or {}).get("Labels") or {}
            if id(c) in seen or labels.get(LABEL_SERVICE) in proj["optional"]:
                continue
            rows.append(row("containers", "%s/%s" % (proj["project"], labels.get(LABEL_SERVICE) or "?"),
                            "not declared", "extra: " + _describe(c), False))
    return rows


def verify_published_ports(containers):
    """[{port, ip, container}] for every TCP port a container publishes on the host, ascending by port."""
    out = []
    for c in containers or []:
        ports = ((c.get("NetworkSettings") or {}).get("Ports")) or {}
        for spec, bindings in ports.items():
            if not spec.endswith("/tcp"):
                continue
            for b in bindings or []:
                try:
                    port = int(b.get("HostPort") or 0)
                except (TypeError, ValueError):
                    continue
                if port:
                    item = {"port": port, "ip": b.get("HostIp") or "0.0.0.0",
                            "container": (c.get("Name") or "").lstrip("/")}
                    if item not in out:
                        out.append(item)
    return sorted(out, key=lambda x: (x["port"], x["ip"], x["container"]))


# ---------------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------------

def verify_port_rows(probe, must_open, must_close, published=None, address=""):
    """Rows comparing a tcp_probe result (from the controller) with the ports that must answer (MUST_OPEN) and
    those that must not (MUST_CLOSE; PUBLISHED, from verify_published_ports, names who publishes them)."""
    if not isinstance(probe, dict) or probe.get("failed"):
        msg = (probe or {}).get("msg", "no result") if isinstance(probe, dict) else "no result"
        return [row("ports", "probe of %s" % address, "answers", "probe failed: %s" % msg, False)]
    states = {int(p["port"]): p for p in probe.get("ports") or []}
    who = {}
    for item in published or []:
        who.setdefault(int(item["port"]), []).append("%s on %s" % (item["container"], item["ip"]))
    rows = []
    opened = sorted({int(p) for p in must_open})
    for port in opened:
        got = states.get(port, {"state": "not probed", "detail": ""})
        rows.append(row("ports", "tcp/%d" % port, "open", _port_text(got), got["state"] == "open"))
    for port in sorted({int(p) for p in must_close} - set(opened)):
        got = states.get(port, {"state": "not probed", "detail": ""})
        note = (" [published by %s]" % ", ".join(who[port])) if port in who else ""
        rows.append(row("ports", "tcp/%d" % port, "closed or filtered", _port_text(got) + note,
                        got["state"] in ("closed", "filtered")))
    return rows


def _port_text(got):
    # "filtered" says it all (no answer within the timeout); other states carry their cause
    return got["state"] + (" (%s)" % got["detail"] if got.get("detail") and got["state"] != "filtered" else "")


# ---------------------------------------------------------------------------------------------
# backups
# ---------------------------------------------------------------------------------------------

def dump_files(instance):
    """The files the backup role's runner (roles/backup/files/selfhosted_backup.py) saves for one database
    instance of its config, as the snapshots store them (the data tier's layer contract); an instance that declares
    no databases dumps whatever it finds, so only its fixed files are known."""
    engine = instance.get("engine")
    if engine not in data_tier.ENGINES:
        return []
    return ["/" + f for f in data_tier.dump_files(engine, instance["name"], instance.get("databases") or [])]


def verify_backup_rows(config, info, max_age_hours):
    """Rows with the age of the newest snapshots of every series the backup role writes: for each database instance
    of each set (tags <set tags> + db + <instance>) the stalest of its dumps' newest snapshots (so one dump that
    keeps failing is seen even when the instance's other dumps succeed), and each set's paths (tags <set tags> +
    files). CONFIG: the role's config.json; INFO: a restic_snapshot_info result over the host's snapshots grouped
    by host, tags and paths."""
    max_age = float(max_age_hours)
    want = "newest <= %gh" % max_age
    if not isinstance(info, dict) or info.get("failed"):
        msg = info.get("msg", "no result") if isinstance(info, dict) else "no result"
        return [row("backup", "repository", "readable", "failed: %s" % msg, False)]
    groups = info.get("groups") or []

    def newest(needed, path=None):
        # A dump is stored under its name or, by restic 0.18.0, under its flat name (restic.stored_paths).
        wanted = None if path is None else [[x] for x in stored_paths(path)]
        found = [g["latest"] for g in groups if set(needed) <= set((g.get("key") or {}).get("tags") or [])
                 and (wanted is None or (g.get("key") or {}).get("paths") in wanted)]
        return min(found, key=lambda s: s["age_seconds"]) if found else None

    def describe(snap):
        return "%.1fh (%s, %s)" % (snap["age_hours"], snap["short_id"], snap["time"][:19] + "Z")

    rows = []
    for name, bset in sorted(((config or {}).get("sets") or {}).items()):
        tags = list(bset.get("tags") or [name])
        for inst in bset.get("databases") or []:
            needed = tags + ["db", inst["name"]]
            item = "%s/%s" % (name, inst["name"])
            files = dump_files(inst)
            latest = {path: newest(needed, path) for path in files}
            missing = [path for path, snap in latest.items() if snap is None]
            if not files:
                snap = newest(needed)
                latest, missing = ({"any": snap}, []) if snap else ({}, ["any dump"])
            if missing:
                rows.append(row("backup", item, want, "no snapshot of %s" % ", ".join(missing), False))
                continue
            path, stalest = max(latest.items(), key=lambda kv: kv[1]["age_seconds"])
            actual = describe(stalest) + ("" if len(latest) == 1 else " oldest of %d: %s" % (
                len(latest), path.rsplit("/", 1)[-1]))
            rows.append(row("backup", item, want, actual, stalest["age_hours"] <= max_age))
        if bset.get("paths"):
            snap = newest(tags + ["files"])
            item = "%s: %s" % (name, ", ".join(bset["paths"]))
            rows.append(row("backup", item, want, describe(snap) if snap else "no snapshot",
                            bool(snap) and snap["age_hours"] <= max_age))
    return rows


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def verify_security_rows(audit):
    """Rows of the security section from a docker_security_audit result: one per CIS item, RESULT PASS, WARN
    (a failure: the failing containers/settings/files named with what was found) or WAIVED (each waived target with
    its reason), and an UNUSED row (not a failure) for each waiver that matched nothing."""
    if not isinstance(audit, dict) or not isinstance(audit.get("checks"), list):
        raise AnsibleFilterError("verify_security_rows: expects the result of docker_security_audit")
    rows = []
    for check in audit["checks"]:
        targets = check.get("targets") or []
        status = check.get("status")
        if status == "WARN":
            actual = "; ".join("%s: %s" % (t["target"], t["detail"]) for t in targets if t["status"] == "WARN")
        elif status == "WAIVED":
            actual = "; ".join("%s waived: %s" % (t["target"], t.get("reason", "")) for t in targets
                               if t["status"] == "WAIVED")
        elif len(targets) == 1:
            actual = targets[0]["detail"]
        else:
            actual = "%d containers" % len(targets) if check.get("section") == 5 else "%d targets" % len(targets)
        item = "CIS %s %s" % (check["id"], check.get("title", ""))
        rows.append(dict(row("security", item.strip(), "PASS", actual, status != "WARN"), result=status))
    for waiver in audit.get("unused_waivers") or []:
        rows.append(dict(row("security", "waiver %s %s" % (waiver["item"], waiver["target"]),
                             "matches a WARN", "matches nothing: remove it (%s)" % waiver["reason"], True),
                         result="UNUSED"))
    return rows


def verify_report(rows, width=70):
    """An aligned text table of ROWS (SECTION, ITEM, EXPECTED, ACTUAL, RESULT) with a closing count; cells longer
    than WIDTH are cut with an ellipsis."""
    def cut(text):
        text = " ".join(str(text).split())
        return text if len(text) <= width else text[:width - 3] + "..."

    header = ("SECTION", "ITEM", "EXPECTED", "ACTUAL", "RESULT")
    table = [header] + [(cut(r["section"]), cut(r["item"]), cut(r["expected"]), cut(r["actual"]),
                         r.get("result") or ("OK" if r["ok"] else "FAIL")) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in rows if not r["ok"]]
    lines.append("")
    lines.append("%d checks, %d OK, %d FAIL" % (len(rows), len(rows) - len(failed), len(failed)))
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {
            "verify_expected_projects": verify_expected_projects,
            "verify_container_rows": verify_container_rows,
            "verify_published_ports": verify_published_ports,
            "verify_port_rows": verify_port_rows,
            "verify_backup_rows": verify_backup_rows,
            "verify_security_rows": verify_security_rows,
            "verify_report": verify_report,
        }
