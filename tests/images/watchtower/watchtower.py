"""Watchtower stand-in: lists the containers a poll would check, exactly as Watchtower scopes them.

Flags (as Watchtower): --label-enable, --scope NAME, --cleanup, --monitor-only, --run-once,
--interval SECONDS, --schedule CRON (6 fields), --debug, --http-api-update (ignored), and
container names as positional arguments (watch only those). Environment: the WATCHTOWER_* twins
of the flags, WATCHTOWER_NOTIFICATION_URL (reported as set or not, never printed), DOCKER_CONFIG
(the registry credentials file is checked for readability and its registries listed).
"""

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

LABEL = "com.centurylinklabs.watchtower.enable"
SCOPE_LABEL = "com.centurylinklabs.watchtower.scope"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker_get(path):
    conn = UnixHTTPConnection(os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock"))
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit("docker API %s: %s %s" % (path, resp.status, body[:200]))
    return json.loads(body)


def env_flag(name):
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def parse(argv):
    opts = {"label_enable": env_flag("WATCHTOWER_LABEL_ENABLE"), "scope": os.environ.get("WATCHTOWER_SCOPE"),
            "cleanup": env_flag("WATCHTOWER_CLEANUP"), "monitor_only": env_flag("WATCHTOWER_MONITOR_ONLY"),
            "run_once": env_flag("WATCHTOWER_RUN_ONCE"),
            "interval": int(os.environ.get("WATCHTOWER_POLL_INTERVAL", "86400")),
            "schedule": os.environ.get("WATCHTOWER_SCHEDULE"), "names": []}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--label-enable":
            opts["label_enable"] = True
        elif a == "--cleanup":
            opts["cleanup"] = True
        elif a == "--monitor-only":
            opts["monitor_only"] = True
        elif a == "--run-once":
            opts["run_once"] = True
        elif a in ("--debug", "--http-api-update", "--http-api-metrics", "--include-restarting", "--rolling-restart"):
            continue
        elif a == "--scope":
            opts["scope"] = args.pop(0)
        elif a == "--interval":
            opts["interval"] = int(args.pop(0))
        elif a == "--schedule":
            opts["schedule"] = args.pop(0)
        elif a.startswith("-"):
            raise SystemExit("watchtower: unknown flag %s" % a)
        else:
            opts["names"].append(a)
    if opts["schedule"] and len(opts["schedule"].split()) != 6:
        raise SystemExit("watchtower: --schedule takes 6 cron fields (seconds first): %r" % opts["schedule"])
    if opts["schedule"] and os.environ.get("WATCHTOWER_POLL_INTERVAL") is None and "--interval" in argv:
        raise SystemExit("watchtower: --schedule and --interval are mutually exclusive")
    return opts


def watched(opts):
    filters = {"status": ["running", "restarting"]}
    if opts["label_enable"]:
        filters["label"] = ["%s=true" % LABEL]
    query = urllib.parse.urlencode({"filters": json.dumps(filters)})
    out = []
    for c in docker_get("/containers/json?" + query):
        labels = c.get("Labels") or {}
        name = c["Names"][0].lstrip("/")
        if labels.get(LABEL) == "false":
            continue
        if opts["scope"] and labels.get(SCOPE_LABEL) != opts["scope"]:
            continue
        if opts["names"] and name not in opts["names"]:
            continue
        out.append(name)
    return sorted(out)


def main():
    opts = parse(sys.argv[1:])
    cfg = os.path.join(os.environ.get("DOCKER_CONFIG", "/"), "config.json")
    registries = []
    if os.path.exists(cfg):
        with open(cfg) as fh:
            registries = sorted((json.load(fh).get("auths") or {}).keys())
    print("Watchtower stand-in: label_enable=%s scope=%s cleanup=%s monitor_only=%s schedule=%s interval=%s "
          "notifications=%s registries=%s" % (opts["label_enable"], opts["scope"], opts["cleanup"],
                                              opts["monitor_only"], opts["schedule"], opts["interval"],
                                              "set" if os.environ.get("WATCHTOWER_NOTIFICATION_URL") else "none",
                                              ",".join(registries) or "none"), flush=True)
    while True:
        names = watched(opts)
        print("Checking containers: %s" % " ".join(names), flush=True)
        print("Session done Scanned=%d Updated=0 Failed=0" % len(names), flush=True)
        if opts["run_once"]:
            return
        time.sleep(min(opts["interval"], 30) if not opts["schedule"] else 30)


if __name__ == "__main__":
    main()
