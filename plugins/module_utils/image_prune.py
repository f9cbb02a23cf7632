# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the image_prune module: image hygiene on demand through the Docker Engine API.

Three kinds of garbage, each with Docker's own semantics (the same requests ``docker image prune``,
``docker image prune -a --filter until=`` and ``docker builder prune --filter until=`` send):

  dangling    untagged top-level images no container uses (superseded builds and pulls)
  unused      tagged images no container (running or stopped) uses, created more than ``unused_until`` ago
  build cache BuildKit cache records not in use, last used (or created) more than ``builder_until`` ago

Before anything is removed the candidates are listed from the same API (images, containers, build
cache), so check mode reports exactly what would go and how much space it holds; a real run then lets
the daemon prune and reports what it says it removed and reclaimed.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import time
from urllib.parse import urlencode

from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import (
    EngineAPIError,
    engine_socket,
    unix_socket_transport,
)

DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class PruneError(Exception):
    """A failure with a message naming the option or the request that failed."""


def parse_duration(text, option):
    """Seconds of a Go-style duration as Docker's ``until`` filter takes it (``168h``, ``90m``, ``1h30m``)."""
    match = DURATION_RE.match((text or "").strip())
    if not (text or "").strip() or not match or not any(match.groups()):
        raise PruneError("%s: %r is not a duration like 168h, 90m or 1h30m" % (option, text))
    hours, minutes, seconds = (int(x or 0) for x in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def human_size(num):
    """Bytes the way the docker CLI prints them (decimal units: 1.5MB, 0B)."""
    num = float(num or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(num) < 1000 or unit == "TB":
            text = ("%.0f" % num) if unit == "B" else ("%.3g" % num)
            return text + unit
        num /= 1000.0
    return "%dB" % num  # pragma: no cover


def rfc3339_seconds(value):
    """Seconds since the epoch of an RFC 3339 time as the Engine API prints it (any fraction, Z or offset)."""
    match = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", value or "")
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


def image_view(img, now, unique=None):
    """An image as the module reports it; SIZE is what removing it frees (its size less the layers it shares with
    other images, from UNIQUE: {id: bytes} of GET /system/df), else its whole size."""
    tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
    created = int(img.get("Created") or 0)
    size = (unique or {}).get(img.get("Id"), int(img.get("Size") or 0))
    return {"id": img.get("Id") or "", "short_id": (img.get("Id") or "").split(":")[-1][:12], "tags": tags,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "age_hours": round((now - created) / 3600.0, 1), "size": size, "size_human": human_size(size)}


def unique_sizes(df_images):
    """{image id: bytes only it holds} from the Images of GET /system/df (Size less SharedSize)."""
    out = {}
    for img in df_images or []:
        shared = img.get("SharedSize")
        size, shared = int(img.get("Size") or 0), int(shared if shared is not None else -1)
        if shared >= 0:
            out[img.get("Id")] = max(size - shared, 0)
    return out


def plan(images, dangling_ids, containers, build_cache, now, dangling=True, unused_until=None, builder_until=None,
         unique=None):
    """What a prune would remove. IMAGES: GET /images/json; DANGLING_IDS: the ids of GET /images/json with the
    dangling filter; CONTAINERS: GET /containers/json?all=1; BUILD_CACHE: the BuildCache of GET /system/df (None
    when the daemon reports none); UNIQUE: unique_sizes of its Images. Ages are seconds (None: that kind is not
    pruned). Pure."""
    used = {c.get("ImageID") for c in containers or []}
    out = {"dangling": [], "unused": [], "build_cache": []}
    for img in images:
        if img.get("Id") in used:
            continue
        if img.get("Id") in dangling_ids:
            if dangling:
                out["dangling"].append(image_view(img, now, unique))
        elif unused_until is not None and int(img.get("Created") or 0) < now - unused_until:
            out["unused"].append(image_view(img, now, unique))
    if builder_until is not None:
        for rec in build_cache or []:
            if rec.get("InUse"):
                continue
            last = rfc3339_seconds(rec.get("LastUsedAt") or "") or rfc3339_seconds(rec.get("CreatedAt") or "")
            if last is not None and last < now - builder_until:
                out["build_cache"].append({"id": rec.get("ID"), "type": rec.get("Type"),
                                           "size": int(rec.get("Size") or 0), "shared": bool(rec.get("Shared")),
                                           "last_used": rec.get("LastUsedAt")})
    return out


class Engine:
    """The Engine API requests this module makes. ``transport(method, path) -> (status, body)`` is the one
    boundary with the daemon (a unix socket in the module, a fake in unit tests)."""

    def __init__(self, transport):
        self.transport = transport

    def call(self, method, path, params=None):
        if params:
            path += "?" + urlencode(params)
        status, body = self.transport(method, path)
        if status != 200:
            text = (body or b"").decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
            with contextlib.suppress(ValueError, AttributeError):
                text = json.loads(text).get("message") or text
            raise PruneError("%s %s: HTTP %s: %s" % (method, path.split("?")[0], status, text.strip()[:300]))
        try:
            return json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        except ValueError as exc:
            raise PruneError("%s %s: not JSON: %s" % (method, path.split("?")[0], exc)) from exc

    def images(self, dangling=None):
        params = {"filters": json.dumps({"dangling": ["true"]})} if dangling else None
        return self.call("GET", "/images/json", params) or []

    def containers(self):
        return self.call("GET", "/containers/json", {"all": "1"}) or []

    def disk_usage(self):
        return self.call("GET", "/system/df") or {}

    def prune_images(self, filters):
        return self.call("POST", "/images/prune", {"filters": json.dumps(filters)}) or {}

    def prune_build_cache(self, filters):
        return self.call("POST", "/build/prune", {"filters": json.dumps(filters)}) or {}


def prune(engine, check_mode, dangling=True, unused_until="", builder_until="", now=None):
    """Plan and (unless CHECK_MODE) prune. Returns the module's result."""
    unused_s = parse_duration(unused_until, "unused_until") if unused_until else None
    builder_s = parse_duration(builder_until, "builder_until") if builder_until else None
    now = time.time() if now is None else now
    images = engine.images()
    dangling_ids = {img.get("Id") for img in engine.images(dangling=True)}
    usage = engine.disk_usage()
    todo = plan(images, dangling_ids, engine.containers(), usage.get("BuildCache"), now, dangling, unused_s,
                builder_s, unique_sizes(usage.get("Images")))
    estimate = sum(x["size"] for kind in ("dangling", "unused") for x in todo[kind]) + \
        sum(x["size"] for x in todo["build_cache"] if not x["shared"])
    result = {"changed": any(todo.values()), "candidates": todo, "space_estimate": estimate,
              "space_estimate_human": human_size(estimate), "removed_images": [], "build_cache_removed": 0,
              "space_reclaimed": 0, "space_reclaimed_human": "0B"}
    if check_mode:
        return result
    reclaimed, deleted, caches = 0, [], 0
    if dangling:
        answer = engine.prune_images({"dangling": ["true"]})
        reclaimed += int(answer.get("SpaceReclaimed") or 0)
        deleted += answer.get("ImagesDeleted") or []
    if unused_s is not None:
        answer = engine.prune_images({"dangling": ["false"], "until": [unused_until]})
        reclaimed += int(answer.get("SpaceReclaimed") or 0)
        deleted += answer.get("ImagesDeleted") or []
    if builder_s is not None:
        answer = engine.prune_build_cache({"until": [builder_until]})
        reclaimed += int(answer.get("SpaceReclaimed") or 0)
        caches = len(answer.get("CachesDeleted") or [])
    before = {img.get("Id"): img for img in images}
    after = {img.get("Id") for img in engine.images()}
    removed = [image_view(img, now, unique_sizes(usage.get("Images"))) for ident, img in before.items()
               if ident not in after]
    untagged = [d["Untagged"] for d in deleted if d.get("Untagged")]
    result.update(changed=bool(removed or untagged or caches or reclaimed), removed_images=removed,
                  untagged=untagged, build_cache_removed=caches, space_reclaimed=reclaimed,
                  space_reclaimed_human=human_size(reclaimed))
    return result


def run(module, transport=None):
    p = module.params
    if transport is None:
        path = engine_socket(os.environ)
        if path is None:
            module.fail_json(msg="the Docker daemon's unix socket was not found (DOCKER_HOST, a docker context other "
                                 "than default, or no daemon): image_prune talks to the local daemon only",
                             changed=False)
        transport = unix_socket_transport(path, timeout=p["timeout"])
    try:
        result = prune(Engine(transport), module.check_mode, p["dangling"], p["unused_until"] or "",
                       p["builder_until"] or "")
    except PruneError as exc:
        module.fail_json(msg=str(exc), changed=False)
    except EngineAPIError as exc:  # the daemon went away
        module.fail_json(msg="Docker Engine API: %s" % exc, changed=False)
    module.exit_json(**result)
