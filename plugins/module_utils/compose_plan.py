# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decision logic for compose_stack: given what Compose would run (per-service config
hashes and image ids) and what runs now (containers with their compose labels), decide per
service what ``docker compose up`` is going to do. No I/O here: unit-tested directly."""

from __future__ import annotations

NOOP = "none"
CREATE = "create"
RECREATE = "recreate"
START = "start"
SCALE = "scale"
REMOVE = "remove"
STOP = "stop"
SKIP = "skip"

CHANGING = (CREATE, RECREATE, START, SCALE, REMOVE, STOP)


def replicas_of(service):
    """Replica count Compose will run for a service of the resolved model."""
    deploy = service.get("deploy") or {}
    if deploy.get("replicas") is not None:
        return int(deploy["replicas"])
    if service.get("scale") is not None:
        return int(service["scale"])
    return 1


def has_healthcheck(service):
    """Whether a service of the resolved model has an enabled healthcheck (the slim model of the
    resolution cache stores the answer itself)."""
    hc = service.get("healthcheck")
    if isinstance(hc, bool):
        return hc
    hc = hc or {}
    return bool(hc.get("test")) and not hc.get("disable", False) and hc.get("test") != ["NONE"]


def service_image(name, service, project=None):
    """The image reference Compose runs a service from: its ``image``, else, for a service that builds,
    the name Compose tags the build with (``<project>-<service>``). None without either."""
    if service.get("image"):
        return service["image"]
    if service.get("build") and project:
        return "%s-%s" % (project, name)
    return None


def service_images(resolved, project=None):
    """{service: image reference} of every service that has one (see service_image())."""
    out = {}
    for name, svc in (resolved.get("services") or {}).items():
        ref = service_image(name, svc, project)
        if ref:
            out[name] = ref
    return out


def build_targets(resolved, selected=None):
    """Services with a build section that ``docker compose build`` builds: all of them, or those among
    the ``services`` selection."""
    return sorted(name for name, svc in (resolved.get("services") or {}).items()
                  if svc.get("build") and (not selected or name in selected))


def built_report(targets, images, before, after):
    """What a build did, per built service: {service, image, image_id_before, image_id, changed}."""
    out = []
    for name in targets:
        ref = images.get(name)
        old, new = before.get(ref), after.get(ref)
        out.append({"service": name, "image": ref, "image_id_before": old, "image_id": new,
                    "changed": new != old})
    return out


def desired_services(resolved, hashes, image_ids, project=None):
    """Summarise the resolved model: {service: {hash, image, image_id, replicas, build, healthcheck}}.
    With ``project``, a service that builds and names no image is known by the tag Compose builds."""
    out = {}
    for name, svc in (resolved.get("services") or {}).items():
        image = service_image(name, svc, project)
        out[name] = {
            "hash": hashes.get(name),
            "image": image,
            "image_id": image_ids.get(image) if image else None,
            "replicas": replicas_of(svc),
            "build": bool(svc.get("build")),
            "healthcheck": has_healthcheck(svc),
        }
    return out


def plan(desired, containers, recreate="auto", remove_orphans=False, services=None):
    """Return a list of {service, action, reasons} sorted by service name.

    desired    -- output of desired_services()
    containers -- docker ps rows (dicts with service, config_hash, image_id, state, oneoff)
    recreate   -- auto | always | never
    services   -- optional subset to act on; others are reported as 'skip'
    """
    by_service = {}
    for c in containers:
        if c.get("oneoff"):
            continue
        by_service.setdefault(c.get("service"), []).append(c)

    selected = set(services) if services else None
    result = []
    for name in sorted(desired):
        want = desired[name]
        have = by_service.get(name, [])
        if selected is not None and name not in selected:
            result.append({"service": name, "action": SKIP, "reasons": ["not in services"]})
            continue
        if want["replicas"] == 0:
            running = [c for c in have if c.get("state") == "running"]
            if running:
                result.append({"service": name, "action": STOP, "reasons": ["scaled to 0"]})
            else:
                result.append({"service": name, "action": NOOP, "reasons": []})
            continue
        if not have:
            reasons = ["no container"]
            if not want["image_id"] and not want["build"]:
                reasons.append("image %s not present: it will be pulled" % want["image"])
            result.append({"service": name, "action": CREATE, "reasons": reasons})
            continue
        reasons = []
        if recreate == "always":
            reasons.append("recreate=always")
        else:
            if any(c.get("config_hash") != want["hash"] for c in have):
                reasons.append("configuration changed")
            if want["image_id"] and any(c.get("image_id") and c.get("image_id") != want["image_id"] for c in have):
                reasons.append("image %s now points to %s" % (want["image"], want["image_id"][:19]))
            if not want["image_id"] and not want["build"]:
                reasons.append("image %s not present: it will be pulled" % want["image"])
        if reasons and recreate != "never":
            result.append({"service": name, "action": RECREATE, "reasons": reasons})
            continue
        if len(have) != want["replicas"]:
            result.append({"service": name, "action": SCALE,
                           "reasons": ["%d container(s), want %d" % (len(have), want["replicas"])]})
            continue
        stopped = [c for c in have if c.get("state") in ("exited", "created", "dead", "paused")]
        if stopped:
            result.append({"service": name, "action": START,
                           "reasons": ["%s is %s" % (c.get("name"), c.get("state")) for c in stopped]})
            continue
        note = ["differs but recreate=never: %s" % ", ".join(reasons)] if reasons else []
        result.append({"service": name, "action": NOOP, "reasons": note})

    for name in sorted(set(by_service) - set(desired)):
        if selected is not None:
            continue
        if remove_orphans:
            result.append({"service": name, "action": REMOVE, "reasons": ["orphan: not in the definition"]})
        else:
            result.append({"service": name, "action": NOOP,
                           "reasons": ["orphan: not in the definition (remove_orphans=false)"]})
    return result


def is_changing(steps):
    return any(s["action"] in CHANGING for s in steps)


def plan_text(steps):
    """Human-readable plan for diff mode."""
    lines = []
    for s in steps:
        if s["action"] in (NOOP, SKIP) and not s["reasons"]:
            lines.append("  %-24s %s" % (s["service"], s["action"]))
        else:
            lines.append("  %-24s %-9s %s" % (s["service"], s["action"], "; ".join(s["reasons"])))
    return "\n".join(lines) + "\n"


def wait_verdict(targets, containers, desired):
    """Judge one poll of a health-gated deploy.

    Returns (done, failing): done when every target service has its replicas running (for at
    least a second since their last start) and, where it has a healthcheck, healthy. ``failing``
    lists {service, container, state, health[, note]} rows that are not there yet (used for the
    timeout report).
    """
    failing = []
    by_service = {}
    for c in containers:
        if not c.get("oneoff"):
            by_service.setdefault(c.get("service"), []).append(c)
    for name in targets:
        want = desired.get(name)
        if want is None or want["replicas"] == 0:
            continue
        have = by_service.get(name, [])
        if len(have) < want["replicas"]:
            failing.append({"service": name, "container": None, "state": "missing", "health": None})
            continue
        for c in have:
            ok = c.get("state") == "running" and (not want["healthcheck"] or c.get("health") == "healthy")
            if not ok:
                failing.append({"service": name, "container": c.get("name"), "state": c.get("state"),
                                "health": c.get("health")})
            elif just_started(c):
                failing.append({"service": name, "container": c.get("name"), "state": c.get("state"),
                                "health": c.get("health"), "note": "up less than a second"})
    return not failing, failing


def just_started(container):
    """Running for less than a second, by the daemon's own clock (its Status text says "Up Less
    than a second"). A container counts as up only once it has stayed up a full second since its
    last (re)start, so a crash-looping container caught between two restarts does not pass, even
    though its state reads "running"."""
    return "less than a second" in (container.get("status") or "").lower()


def hopeless(failing, restart_policies):
    """A container that exited and will not be restarted by Docker cannot become healthy:
    stop waiting early. ``restart_policies`` maps container name -> policy name."""
    for f in failing:
        if f["state"] in ("exited", "dead") and restart_policies.get(f["container"], "no") in ("no", ""):
            return True
    return False


GONE = ("exited", "dead", "restarting")


def wait_failure_message(failing, details, timeout, seconds, early):
    """The message of a failed health-gated wait. ``failing`` are wait_verdict() rows, ``details`` what
    failure_details() found per service (exit codes, log tails), ``early`` whether the wait gave up before
    its timeout because a container exited for good (hopeless()). A container that exited says so, with
    its exit code and the last lines of its log, instead of "not healthy"."""
    by_container = {}
    for rows in (details or {}).values():
        for row in rows:
            if row.get("container"):
                by_container[row["container"]] = row
    parts, logs = [], []
    for f in failing:
        row = by_container.get(f["container"] or "", {})
        name = f["container"] or f["service"]
        if f["state"] in GONE and row.get("exit_code") is not None:
            verb = "exited" if f["state"] != "restarting" else "keeps exiting"
            parts.append("%s: container %s %s with code %s" % (f["service"], name, verb, row["exit_code"]))
            if row.get("log"):
                logs.append("last %d log lines of %s:\n%s" % (len(row["log"]), name,
                                                              "\n".join("  " + ln for ln in row["log"])))
            elif "log" in row:
                logs.append("%s logged nothing" % name)
        else:
            parts.append("%s (%s%s%s)" % (name, f["state"], ", " + f["health"] if f["health"] else "",
                                          ", " + f["note"] if f.get("note") else ""))
    if early:
        head = "a container exited during the wait (after %.1fs) and will not be restarted" % seconds
    else:
        head = "services not healthy within %ss" % timeout
    return "%s: %s%s" % (head, "; ".join(parts), "".join("\n" + t for t in logs))


def images_in_use(desired, containers):
    """{service: {image, image_id}}: the image reference and id each service runs from (its containers'),
    or, for a service without a container, the reference it would run and its local id (None when
    absent)."""
    out = {}
    for c in containers:
        if c.get("oneoff") or c.get("service") in out:
            continue
        want = (desired or {}).get(c.get("service")) or {}
        out[c["service"]] = {"image": want.get("image") or c.get("image"), "image_id": c.get("image_id") or None}
    for name, want in (desired or {}).items():
        if name not in out and want.get("image"):
            out[name] = {"image": want["image"], "image_id": want.get("image_id")}
    return out


def running_images(containers):
    """{service: image id} of the project's containers (the first of each service), as a rollback point
    records them."""
    images = {}
    for c in containers:
        if not c.get("oneoff") and c.get("image_id"):
            images.setdefault(c["service"], c["image_id"])
    return images


def rollback_point_stale(point, containers, restart_on_files):
    """Why a recorded rollback point no longer describes a healthy project that runs unchanged (a no-op
    run): the images it runs are not the recorded ones (Watchtower or a hand-run ``up`` replaced them),
    or restart_on files are configured that the point did not save. [] when it is current."""
    if point is None:
        return ["no rollback point"]
    reasons = []
    recorded = point.get("images") or {}
    now = running_images(containers)
    moved = sorted(s for s in set(recorded) | set(now) if recorded.get(s) != now.get(s))
    if moved:
        reasons.append("images of %s changed since the point was recorded" % ", ".join(moved))
    saved = {f["path"] for f in point.get("files") or [] if f.get("restart_on")}
    missing = sorted(set(restart_on_files) - saved)
    if missing:
        reasons.append("restart_on files not saved: %s" % ", ".join(missing))
    return reasons


def rollback_pins(recorded, images, now_ids, existing):
    """Which services a rollback pins to their recorded image id: (pins, fallbacks).

    recorded -- {service: image id} of the rollback point
    images   -- {service: image reference} of the restored definition
    now_ids  -- {image reference: local id} now
    existing -- {recorded image id: id or None}: whether each recorded id still exists locally

    A service whose reference now points elsewhere is pinned to its recorded id ({service: {image: id}}),
    unless that image is gone (deleted, e.g. by Watchtower's --cleanup): then it runs from the reference as
    it is now, and ``fallbacks`` lists {service, image, image_id, current} for the message."""
    pins, fallbacks = {}, []
    for svc, rec in sorted((recorded or {}).items()):
        ref = (images or {}).get(svc)
        if not ref or not rec or now_ids.get(ref) == rec:
            continue
        if existing.get(rec):
            pins[svc] = {"image": rec}
        else:
            fallbacks.append({"service": svc, "image": ref, "image_id": rec, "current": now_ids.get(ref)})
    return pins, fallbacks
