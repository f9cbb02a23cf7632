"""Watchtower stand-in: scopes, pulls and updates containers the way Watchtower (nicholas-fedor/watchtower, the
maintained containrrr fork) does, through the Docker Engine API only - DOCKER_HOST (tcp://proxy:2375, as behind a
socket proxy, or unix://PATH) or /var/run/docker.sock - and only with the calls the real one makes.

Flags (as Watchtower): --label-enable, --scope NAME, --cleanup, --monitor-only, --run-once, --interval SECONDS,
--schedule CRON (6 fields, seconds first), --host/-H URL, --stop-timeout DURATION, --include-stopped,
--include-restarting, --revive-stopped, --remove-volumes, --no-pull, --debug, --http-api-update,
--http-api-metrics and --rolling-restart (accepted, no effect), and container names as positional arguments
(watch only those). Environment: the WATCHTOWER_* twins of the flags, DOCKER_HOST, DOCKER_API_VERSION,
WATCHTOWER_NOTIFICATION_URL (reported as set or not, never printed), DOCKER_CONFIG (registry credentials, sent
as X-Registry-Auth with the pull).

A session, call by call (pkg/container/client.go, container_source.go, container_target.go, image.go):
  HEAD /_ping (GET /_ping when HEAD is not answered 200) - API version negotiation, then /v<version>/... paths;
  GET /info once (runtime detection);
  GET /containers/json?filters={"status":["running"]}, then for each container GET /containers/{id}/json and
  GET /images/{image id}/json, then the filters (names, --label-enable: the enable label set, a container whose
  enable label is false never, --scope);
  per container in scope: POST /images/create?fromImage=&tag= (the stream read to its end), GET /images/{name}/json;
  when the image id differs and not --monitor-only: POST /containers/{id}/stop?t=, DELETE /containers/{id}?force=1,
  POST /containers/create (no name; the config with the image's defaults subtracted, the host config, the first
  network on API < 1.44 or all of them), POST /containers/{new}/rename?name=, POST /networks/{net}/connect for the
  other networks on API < 1.44, POST /containers/{new}/start (when the old one ran, or --revive-stopped);
  with --cleanup: GET /containers/json?all=1 (an image still used is kept), DELETE /images/{old id}?force=1.
What it leaves out: the registry HEAD digest check before the pull (the real one asks the registry directly and
pulls only when the digest differs; it falls back to the pull this stand-in always does), notifications, lifecycle
hooks, self-update, dependency ordering. Unlike the real one it also checks once right after it starts (the real
one waits for the first scheduled run), so its first "Checking containers" line comes at start.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse
from datetime import datetime, timedelta

LABEL = "com.centurylinklabs.watchtower.enable"
SCOPE_LABEL = "com.centurylinklabs.watchtower.scope"
CLIENT_MAX_API = (1, 51)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class ApiError(Exception):
    def __init__(self, method, path, status, body):
        super().__init__("%s %s: %s %s" % (method, path, status, body[:300].decode(errors="replace").strip()))
        self.status = status


class Docker:
    """The Engine API at DOCKER_HOST: unix://PATH or tcp://HOST:PORT (plain HTTP, as to a socket proxy)."""

    def __init__(self, host):
        self.host = host or "unix:///var/run/docker.sock"
        self.prefix = ""
        parsed = urllib.parse.urlparse(self.host)
        if parsed.scheme == "unix":
            self.connect = lambda timeout: UnixHTTPConnection(parsed.path, timeout)
        elif parsed.scheme in ("tcp", "http"):
            self.connect = lambda timeout: http.client.HTTPConnection(parsed.hostname, parsed.port or 2375,
                                                                      timeout=timeout)
        else:
            raise SystemExit("watchtower: unsupported DOCKER_HOST %r" % self.host)

    def call(self, method, path, query=None, body=None, headers=None, timeout=120, versioned=True, ok=(200,)):
        url = (self.prefix if versioned else "") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        conn = self.connect(timeout)
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status not in ok:
            raise ApiError(method, url, resp.status, raw)
        return resp, raw

    def json(self, method, path, **kw):
        _resp, raw = self.call(method, path, **kw)
        return json.loads(raw) if raw.strip() else None

    def negotiate(self):
        """moby's Ping: HEAD /_ping, GET /_ping when HEAD is not answered 200; the lower of the server's
        API-Version and the client's maximum (or DOCKER_API_VERSION) prefixes every later path."""
        try:
            resp, _raw = self.call("HEAD", "/_ping", versioned=False)
        except ApiError:
            resp, _raw = self.call("GET", "/_ping", versioned=False)
        fixed = os.environ.get("DOCKER_API_VERSION")
        server = tuple(int(x) for x in (resp.getheader("API-Version") or "1.24").split("."))
        version = fixed or "%d.%d" % min(server, CLIENT_MAX_API)
        self.version = tuple(int(x) for x in version.split("."))
        self.prefix = "/v" + version


def env_flag(name):
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def duration(text):
    """Go durations as Watchtower takes them (10s, 1m30s, 500ms); a bare number is seconds."""
    if text.isdigit():
        return int(text)
    total, num, i = 0.0, "", 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    while i < len(text):
        if text[i].isdigit() or text[i] == ".":
            num += text[i]
            i += 1
            continue
        unit = "ms" if text[i:i + 2] == "ms" else text[i]
        if unit not in units or not num:
            raise SystemExit("watchtower: invalid duration %r" % text)
        total += float(num) * units[unit]
        num, i = "", i + len(unit)
    return int(total)


def parse(argv):
    opts = {"label_enable": env_flag("WATCHTOWER_LABEL_ENABLE"), "scope": os.environ.get("WATCHTOWER_SCOPE"),
            "cleanup": env_flag("WATCHTOWER_CLEANUP"), "monitor_only": env_flag("WATCHTOWER_MONITOR_ONLY"),
            "run_once": env_flag("WATCHTOWER_RUN_ONCE"), "no_pull": env_flag("WATCHTOWER_NO_PULL"),
            "include_stopped": env_flag("WATCHTOWER_INCLUDE_STOPPED"),
            "include_restarting": env_flag("WATCHTOWER_INCLUDE_RESTARTING"),
            "revive_stopped": env_flag("WATCHTOWER_REVIVE_STOPPED"),
            "remove_volumes": env_flag("WATCHTOWER_REMOVE_VOLUMES"),
            "interval": int(os.environ.get("WATCHTOWER_POLL_INTERVAL", "86400")),
            "schedule": os.environ.get("WATCHTOWER_SCHEDULE"),
            "stop_timeout": duration(os.environ.get("WATCHTOWER_TIMEOUT", "10s")),
            "host": os.environ.get("DOCKER_HOST"), "names": []}
    switches = {"--label-enable": "label_enable", "--cleanup": "cleanup", "--monitor-only": "monitor_only",
                "--run-once": "run_once", "--no-pull": "no_pull", "--include-stopped": "include_stopped",
                "--include-restarting": "include_restarting", "--revive-stopped": "revive_stopped",
                "--remove-volumes": "remove_volumes"}
    args = list(argv)
    while args:
        a = args.pop(0)
        flag, eq, inline = a.partition("=")
        if a in switches:
            opts[switches[a]] = True
        elif a in ("--debug", "--http-api-update", "--http-api-metrics", "--rolling-restart"):
            continue
        elif flag in ("--scope", "--interval", "--schedule", "--host", "-H", "--stop-timeout"):
            value = inline if eq else args.pop(0)
            if flag == "--scope":
                opts["scope"] = value
            elif flag == "--interval":
                opts["interval"] = int(value)
            elif flag == "--schedule":
                opts["schedule"] = value
            elif flag == "--stop-timeout":
                opts["stop_timeout"] = duration(value)
            else:
                opts["host"] = value
        elif a.startswith("-"):
            raise SystemExit("watchtower: unknown flag %s" % a)
        else:
            opts["names"].append(a)
    if opts["schedule"] and len(opts["schedule"].split()) != 6:
        raise SystemExit("watchtower: --schedule takes 6 cron fields (seconds first): %r" % opts["schedule"])
    if opts["schedule"] and os.environ.get("WATCHTOWER_POLL_INTERVAL") is None and "--interval" in argv:
        raise SystemExit("watchtower: --schedule and --interval are mutually exclusive")
    return opts


# --- cron (robfig/cron with seconds, as Watchtower's --schedule) ----------------------------------------------------

def cron_field(text, low, high):
    values = set()
    for part in text.split(","):
        rng, _slash, step = part.partition("/")
        if rng in ("*", "?"):
            start, end = low, high
        elif "-" in rng:
            start, end = (int(x) for x in rng.split("-", 1))
        else:
            start = end = int(rng)
            if step:
                end = high
        values.update(range(start, end + 1, int(step) if step else 1))
    return values


def next_run(schedule, now):
    sec, minute, hour, dom, month, dow = schedule.split()
    fields = (cron_field(sec, 0, 59), cron_field(minute, 0, 59), cron_field(hour, 0, 23), cron_field(dom, 1, 31),
              cron_field(month, 1, 12), {d % 7 for d in cron_field(dow, 0, 7)})
    t = now.replace(microsecond=0) + timedelta(seconds=1)
    for _step in range(366 * 24 * 3600):
        if (t.month in fields[4] and t.day in fields[3] and (t.isoweekday() % 7) in fields[5]
                and t.hour in fields[2] and t.minute in fields[1] and t.second in fields[0]):
            return t
        if t.month not in fields[4] or t.day not in fields[3] or (t.isoweekday() % 7) not in fields[5]:
            t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        elif t.hour not in fields[2]:
            t = (t + timedelta(hours=1)).replace(minute=0, second=0)
        elif t.minute not in fields[1]:
            t = (t + timedelta(minutes=1)).replace(second=0)
        else:
            t += timedelta(seconds=1)
    raise SystemExit("watchtower: --schedule %r never fires" % schedule)


# --- what a session does ---------------------------------------------------------------------------------------------

def registry_auth(image):
    """X-Registry-Auth for IMAGE's registry from $DOCKER_CONFIG/config.json (auths), as Watchtower's
    registry.GetPullOptions encodes it; "" when there is none."""
    first = image.split("/", 1)[0]
    host = first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
    cfg = os.path.join(os.environ.get("DOCKER_CONFIG", "/"), "config.json")
    try:
        with open(cfg) as fh:
            auths = json.load(fh).get("auths") or {}
    except (OSError, ValueError):
        return ""
    entry = auths.get(host) or (auths.get("https://index.docker.io/v1/") if host == "docker.io" else None)
    if not entry or not entry.get("auth"):
        return ""
    user, _colon, password = base64.b64decode(entry["auth"]).decode().partition(":")
    doc = json.dumps({"username": user, "password": password, "serveraddress": host}).encode()
    return base64.urlsafe_b64encode(doc).decode()


def split_ref(image):
    """(repository, tag) of an image reference, as moby's ImagePull puts them in fromImage and tag."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


def container_name(info):
    return info["Name"].lstrip("/")


def watched(dk, opts):
    statuses = ["running"] + (["created", "exited"] if opts["include_stopped"] else []) + (
        ["restarting"] if opts["include_restarting"] else [])
    listed = dk.json("GET", "/containers/json", query={"filters": json.dumps({"status": statuses})})
    out = []
    for c in listed:
        try:
            info = dk.json("GET", "/containers/%s/json" % c["Id"])
        except ApiError as exc:
            if exc.status == 404:  # gone between the list and the inspect
                continue
            raise
        try:
            image = dk.json("GET", "/images/%s/json" % info["Image"])
        except ApiError:
            image = None
        labels = info["Config"].get("Labels") or {}
        name = container_name(info)
        enabled = labels.get(LABEL)
        if opts["names"] and name not in opts["names"]:
            continue
        if opts["label_enable"] and enabled is None:
            continue
        if (enabled or "").lower() == "false":
            continue
        if opts["scope"] and labels.get(SCOPE_LABEL) != opts["scope"]:
            continue
        out.append((info, image))
    return sorted(out, key=lambda pair: container_name(pair[0]))


def subtract_list(values, image_values):
    if values is None:
        return None
    return [v for v in values if v not in (image_values or [])]


def create_config(info, image):
    """GetCreateConfig: the container's config without what it took from its image, so the new image's defaults
    apply; the image reference as the container named it."""
    config = json.loads(json.dumps(info["Config"]))
    host_config = info["HostConfig"]
    image_config = (image or {}).get("Config") or {}
    if image:
        if config.get("WorkingDir") == image_config.get("WorkingDir"):
            config["WorkingDir"] = ""
        if config.get("User") == image_config.get("User"):
            config["User"] = ""
        if str(host_config.get("NetworkMode", "")).startswith("container:") or host_config.get("UTSMode"):
            config["Hostname"] = ""
        if (config.get("Entrypoint") or []) == (image_config.get("Entrypoint") or []):
            config["Entrypoint"] = None
            if (config.get("Cmd") or []) == (image_config.get("Cmd") or []):
                config["Cmd"] = None
        hc, ihc = config.get("Healthcheck"), image_config.get("Healthcheck")
        if hc and ihc:
            if (hc.get("Test") or []) == (ihc.get("Test") or []):
                hc["Test"] = None
            for key in ("Retries", "Interval", "Timeout", "StartPeriod"):
                if hc.get(key) == ihc.get(key):
                    hc[key] = 0
        config["Env"] = subtract_list(config.get("Env"), image_config.get("Env"))
        config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items()
                            if (image_config.get("Labels") or {}).get(k) != v}
        config["Volumes"] = {k: v for k, v in (config.get("Volumes") or {}).items()
                             if k not in (image_config.get("Volumes") or {})}
        exposed = {k: v for k, v in (config.get("ExposedPorts") or {}).items()
                   if k not in (image_config.get("ExposedPorts") or {})}
        for port in host_config.get("PortBindings") or {}:
            exposed[port] = {}
        config["ExposedPorts"] = exposed
    image_name = config.get("Image") or ""
    config["Image"] = image_name if ":" in image_name else image_name + ":latest"
    return config


def create_host_config(info):
    host_config = json.loads(json.dumps(info["HostConfig"]))
    links = []
    for link in host_config.get("Links") or []:
        name, colon, alias = link.partition(":")
        if colon:
            links.append("%s:%s" % (name.lstrip("/"), alias))
    host_config["Links"] = links or None
    return host_config


def endpoints(info):
    """The container's networks as create/connect endpoint settings: its configuration (aliases without the old
    container's short id, IPAM config, links, driver options), not its runtime state."""
    short = info["Id"][:12]
    out = {}
    if str(info["HostConfig"].get("NetworkMode", "")) in ("host", "none") or \
            str(info["HostConfig"].get("NetworkMode", "")).startswith("container:"):
        return out
    for name, ep in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
        out[name] = {"IPAMConfig": ep.get("IPAMConfig"), "Links": ep.get("Links"),
                     "Aliases": [a for a in ep.get("Aliases") or [] if a != short] or None,
                     "DriverOpts": ep.get("DriverOpts")}
    return out


def recreate(dk, opts, info, image):
    """Stop and remove the old container, create the new one from the same configuration, name it, attach its
    networks, start it; returns the new id."""
    old_id, name = info["Id"], container_name(info)
    running = (info.get("State") or {}).get("Running", False)
    if running:
        timeout = info["Config"].get("StopTimeout")
        timeout = timeout if timeout is not None and timeout >= 0 else opts["stop_timeout"]
        query = {"t": str(timeout)}
        signal = (info["Config"].get("Labels") or {}).get("com.centurylinklabs.watchtower.stop-signal") or \
            info["Config"].get("StopSignal") or "SIGTERM"
        if dk.version >= (1, 42):
            query["signal"] = signal
        print("Stopping container %s (%s) with %s" % (name, old_id[:12], signal), flush=True)
        dk.call("POST", "/containers/%s/stop" % old_id, query=query, timeout=timeout + 60, ok=(204, 304))
    if not info["HostConfig"].get("AutoRemove"):
        dk.call("DELETE", "/containers/%s" % old_id,
                query={"force": "1", "v": "1" if opts["remove_volumes"] else "0"}, ok=(204, 404))
    networks = endpoints(info)
    first = dict(list(networks.items())[:1]) if dk.version < (1, 44) and len(networks) > 1 else networks
    body = dict(create_config(info, image), HostConfig=create_host_config(info),
                NetworkingConfig={"EndpointsConfig": first})
    print("Creating %s" % name, flush=True)
    created = dk.json("POST", "/containers/create", body=body, ok=(201,))
    new_id = created["Id"]
    dk.call("POST", "/containers/%s/rename" % new_id, query={"name": name}, ok=(204,))
    for net, ep in networks.items():
        if net not in first:
            dk.call("POST", "/networks/%s/connect" % net, body={"Container": new_id, "EndpointConfig": ep}, ok=(200,))
    if running or opts["revive_stopped"]:
        dk.call("POST", "/containers/%s/start" % new_id, ok=(204, 304))
    return new_id


def update(dk, opts, info, image):
    """Pull the container's image and recreate the container when the image changed: 'updated', 'fresh' or
    'stale' (monitor-only)."""
    name = container_name(info)
    ref = create_config(info, image)["Image"]
    if ref.startswith("sha256:") or "@sha256:" in ref:
        print("Skipping %s: pinned to a digest" % name, flush=True)
        return "fresh"
    if not opts["no_pull"]:
        repo, tag = split_ref(ref)
        auth = registry_auth(ref)
        _resp, raw = dk.call("POST", "/images/create", query={"fromImage": repo, "tag": tag},
                             headers={"X-Registry-Auth": auth} if auth else None, timeout=1800)
        for line in raw.splitlines():
            msg = json.loads(line) if line.strip() else {}
            if msg.get("error"):
                raise RuntimeError("pulling %s: %s" % (ref, msg["error"]))
    latest = dk.json("GET", "/images/%s/json" % ref)
    if latest["Id"] == info["Image"]:
        print("No new images found for %s" % name, flush=True)
        return "fresh"
    print("Found new %s image (%s)" % (ref, latest["Id"].split(":")[-1][:12]), flush=True)
    if opts["monitor_only"]:
        return "stale"
    new_id = recreate(dk, opts, info, image)
    print("Updated %s (%s -> %s)" % (name, info["Id"][:12], new_id[:12]), flush=True)
    return "updated"


def cleanup(dk, image_ids):
    """--cleanup: remove the replaced images, unless a container still uses one (the fork's in-use check)."""
    if not image_ids:
        return
    used = {(c.get("ImageID"), c.get("State")) for c in dk.json("GET", "/containers/json", query={"all": "1"})}
    for image_id in sorted(image_ids):
        if any(i == image_id and s in ("running", "restarting", "paused", "created") for i, s in used):
            print("Image %s is still in use, not removed" % image_id.split(":")[-1][:12], flush=True)
            continue
        print("Removing image %s" % image_id.split(":")[-1][:12], flush=True)
        dk.call("DELETE", "/images/%s" % image_id, query={"force": "1"}, ok=(200, 404))


def session(dk, opts):
    pairs = watched(dk, opts)
    print("Checking containers: %s" % " ".join(container_name(i) for i, _img in pairs), flush=True)
    updated = failed = 0
    replaced = set()
    for info, image in pairs:
        try:
            result = update(dk, opts, info, image)
        except (ApiError, RuntimeError, OSError, ValueError, KeyError) as exc:
            failed += 1
            print("Unable to update container %s: %s" % (container_name(info), exc), flush=True)
            continue
        if result == "updated":
            updated += 1
            replaced.add(info["Image"])
    if opts["cleanup"] and not opts["monitor_only"]:
        try:
            cleanup(dk, replaced)
        except (ApiError, OSError) as exc:
            print("Cleanup failed: %s" % exc, flush=True)
    print("Session done Scanned=%d Updated=%d Failed=%d" % (len(pairs), updated, failed), flush=True)


def main():
    # Upstream's --health-check (cmd/root.go): the image's HEALTHCHECK runs `watchtower --health-check`, which exits 0
    # at once; passed to the main process (PID 1) it is a mistake and watchtower exits with an error.
    if "--health-check" in sys.argv[1:]:
        if os.getpid() == 1:
            time.sleep(1)
            raise SystemExit("The health check flag should never be passed to the main watchtower container process")
        raise SystemExit(0)
    opts = parse(sys.argv[1:])
    cfg = os.path.join(os.environ.get("DOCKER_CONFIG", "/"), "config.json")
    registries = []
    if os.path.exists(cfg):
        with open(cfg) as fh:
            registries = sorted((json.load(fh).get("auths") or {}).keys())
    dk = Docker(opts["host"])
    print("Watchtower stand-in: label_enable=%s scope=%s cleanup=%s monitor_only=%s schedule=%s interval=%s "
          "notifications=%s registries=%s docker_host=%s" % (
              opts["label_enable"], opts["scope"], opts["cleanup"], opts["monitor_only"], opts["schedule"],
              opts["interval"], "set" if os.environ.get("WATCHTOWER_NOTIFICATION_URL") else "none",
              ",".join(registries) or "none", dk.host), flush=True)
    while True:
        try:
            if not dk.prefix:
                dk.negotiate()
                dk.json("GET", "/info")
            session(dk, opts)
        except (ApiError, OSError) as exc:
            print("Docker API unavailable: %s" % exc, flush=True)
            if opts["run_once"]:
                sys.exit(1)
        if opts["run_once"]:
            return
        if opts["schedule"]:
            now = datetime.now()
            time.sleep(max(1.0, (next_run(opts["schedule"], now) - now).total_seconds()))
        else:
            time.sleep(opts["interval"])


if __name__ == "__main__":
    main()
