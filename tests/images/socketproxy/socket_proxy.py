"""Stand-in for wollomatic/socket-proxy: its flags turned into an haproxy configuration (Debian's haproxy does the
proxying, streaming included), run in the foreground.

The contract honoured (wollomatic/socket-proxy internal/config/config.go, cmd/socket-proxy/handlehttprequest.go,
README "all parameters and environment variables"):
- flags as Go's flag package reads them (-name=value, -name value, --name; booleans without a value) and their
  SP_* environment twins (a flag wins over its variable): -allowfrom (comma-separated CIDRs or host names, default
  127.0.0.1/32; host names are looked up per request through the container's resolver, never cached longer than a
  second), -listenip (default 127.0.0.1), -proxyport (2375), -socketpath (/var/run/docker.sock), -allow<METHOD> for
  GET HEAD POST PUT PATCH DELETE CONNECT TRACE OPTIONS (repeatable, as from 1.12: any of them matches),
  -allowhealthcheck (HEAD http://127.0.0.1:55555/health, answered from the Docker socket's /_ping; /healthcheck
  is the probe), -watchdoginterval and -stoponwatchdog, -shutdowngracetime, -loglevel, -logjson (accepted, logs
  stay plain text). An unknown flag exits 2, a bad value or regex exits 1, a missing socket exits 2.
- each -allow<METHOD> regex is anchored as "^" + regex + "$" and matched against the decoded URL path (no query
  string); checks in upstream's order: a client not in -allowfrom gets 403, a method without a regex 405, a path
  its regex does not match 403 ("Forbidden" / "Method Not Allowed" as text/plain, as Go's http.Error writes);
  a blocked request is logged at WARN with its reason.
Not offered (exit 1 when set): -proxysocketendpoint, -allowbindmountfrom, -proxycontainername.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS")
BOOLS = {"allowhealthcheck", "stoponwatchdog", "logjson"}
VALUES = {"allowfrom", "listenip", "proxyport", "socketpath", "watchdoginterval", "shutdowngracetime", "loglevel"}
UNSUPPORTED = {"proxysocketendpoint", "proxysocketendpointfilemode", "allowbindmountfrom", "proxycontainername"}
DEFAULTS = {"allowfrom": "127.0.0.1/32", "listenip": "127.0.0.1", "proxyport": "2375",
            "socketpath": "/var/run/docker.sock", "watchdoginterval": "0", "shutdowngracetime": "10",
            "loglevel": "INFO", "allowhealthcheck": False, "stoponwatchdog": False, "logjson": False}
CONF_DIR = "/dev/shm/socket-proxy"  # the root file system may be read-only (read_only: true); /dev/shm never is
# Go RE2 rejects these; Python's re (and haproxy's PCRE) would accept them.
RE2_MISSING = re.compile(r"\(\?(?:[=!]|<[=!]|>|P=)|\\[1-9]")


def fail(msg: str, code: int = 1) -> None:
    print(f'level=ERROR msg="{msg}"', flush=True)
    sys.exit(code)


def truthy(value: str) -> bool | None:
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    return None


def parse(argv: list[str], env: dict[str, str]) -> dict:
    """Go's flag package: flags until the first non-flag argument or "--"; SP_* variables fill what no flag set."""
    opts: dict = dict(DEFAULTS)
    allow: dict[str, list[str]] = {}
    for name in ("allowfrom", "listenip", "proxyport", "socketpath", "watchdoginterval", "shutdowngracetime",
                 "loglevel"):
        if env.get("SP_" + name.upper()):
            opts[name] = env["SP_" + name.upper()]
    for name in BOOLS:
        if "SP_" + name.upper() in env and truthy(env["SP_" + name.upper()]) is not None:
            opts[name] = truthy(env["SP_" + name.upper()])
    from_env = {m: [v for k, v in sorted(env.items()) if v and (k == "SP_ALLOW_" + m or k.startswith(f"SP_ALLOW_{m}_"))]
                for m in METHODS}
    args = list(argv)
    while args:
        arg = args[0]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        args.pop(0)
        body = arg.lstrip("-")
        name, has_value, value = body.partition("=")
        method = name[5:] if name.startswith("allow") and name[5:] in METHODS else None
        if name in UNSUPPORTED:
            fail(f"-{name} is not offered by this stand-in")
        if name in BOOLS:
            if has_value:
                parsed = truthy(value)
                if parsed is None:
                    print(f'invalid boolean value "{value}" for -{name}', file=sys.stderr)
                    sys.exit(2)
                opts[name] = parsed
            else:
                opts[name] = True
            continue
        if name not in VALUES and method is None:
            print(f"flag provided but not defined: -{name}", file=sys.stderr)
            sys.exit(2)
        if not has_value:
            if not args:
                print(f"flag needs an argument: -{name}", file=sys.stderr)
                sys.exit(2)
            value = args.pop(0)
        if method:
            allow.setdefault(method, []).append(value)
        else:
            opts[name] = value
    if args:
        fail(f"unexpected argument {args[0]!r}")
    for method in METHODS:
        if method not in allow and from_env[method]:
            allow[method] = from_env[method]
    opts["allow"] = {m: allow[m] for m in METHODS if m in allow and any(allow[m])}
    return opts


def validate(opts: dict) -> None:
    try:
        port = int(opts["proxyport"])
    except ValueError:
        fail(f'invalid value "{opts["proxyport"]}" for -proxyport')
    if not 1 <= port <= 65535:
        fail("port number has to be between 1 and 65535")
    try:
        ipaddress.ip_address(opts["listenip"])
    except ValueError:
        fail(f'invalid IP "{opts["listenip"]}" for listenip')
    if opts["loglevel"].upper() not in ("DEBUG", "INFO", "WARN", "ERROR"):
        fail(f"invalid log level {opts['loglevel']}: Supported levels are DEBUG, INFO, WARN, ERROR")
    for name in ("watchdoginterval", "shutdowngracetime"):
        if not str(opts[name]).isdigit():
            fail(f'invalid value "{opts[name]}" for -{name}')
    for method, regexes in opts["allow"].items():
        for regex in regexes:
            try:
                re.compile("^" + regex + "$")
            except re.error as exc:
                fail(f'invalid regex "{regex}" for method {method} in command line parameter: {exc}')
            if RE2_MISSING.search(regex):
                fail(f'invalid regex "{regex}" for method {method} in command line parameter: '
                     "invalid or unsupported Perl syntax")


def haproxy_config(opts: dict) -> str:
    """The haproxy configuration; the regex files it names are written by main()."""
    cidrs, hosts = [], []
    for item in (i.strip() for i in opts["allowfrom"].split(",")):
        if not item:
            continue
        try:
            cidrs.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            hosts.append(item)
    debug = opts["loglevel"].upper() == "DEBUG"
    listen = opts["listenip"] if ":" not in opts["listenip"] else f"[{opts['listenip']}]"
    lines = [
        "global",
        "    log stdout format raw local0 info",
        "    maxconn 256",
        "defaults",
        "    mode http",
        "    log global",
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout tunnel 1h",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        "resolvers docker",
        "    parse-resolv-conf",
        "    hold valid 1s",
        "    hold nx 1s",
        "    hold other 1s",
        "    hold refused 1s",
        "    hold timeout 1s",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        "frontend api",
        f"    bind {listen}:{int(opts['proxyport'])}",
        '    log-format "level=%[var(txn.level)] msg=\\"%[var(txn.msg)]\\" reason=\\"%[var(txn.reason)]\\" '
        'method=%HM URL=%{+Q}HU client=%ci:%cp response=%ST"',
        "    http-request set-var(txn.level) str(DEBUG)",
        '    http-request set-var(txn.msg) str("allowed request")',
    ]
    # ACLs of one name are ORed: the client is allowed when any -allowfrom entry matches.
    if cidrs:
        lines.append(f"    acl client_allowed src {' '.join(cidrs)}")
    for n, host in enumerate(hosts):
        lines += [f"    http-request do-resolve(txn.af{n},docker,ipv4) str({host})",
                  f"    acl client_allowed src,strcmp(txn.af{n}) eq 0"]
    if not cidrs and not hosts:
        lines.append("    acl client_allowed always_false")
    configured = " ".join(m for m in METHODS if m in opts["allow"])
    lines.append(f"    acl method_configured method {configured}" if configured
                 else "    acl method_configured always_false")
    for method in opts["allow"]:
        lines += [f"    acl path_{method} path,url_dec -m reg -f {CONF_DIR}/allow-{method}",
                  f"    http-request set-var(txn.path_ok) bool(true) if {{ method {method} }} path_{method}"]
    lines += [
        "    acl path_allowed var(txn.path_ok) -m bool",
        '    http-request set-var(txn.reason) str("forbidden IP") if !client_allowed',
        '    http-request set-var(txn.reason) str("method not allowed") if client_allowed !method_configured',
        '    http-request set-var(txn.reason) str("path not allowed") '
        "if client_allowed method_configured !path_allowed",
        "    acl blocked var(txn.reason) -m found",
        "    http-request set-var(txn.level) str(WARN) if blocked",
        '    http-request set-var(txn.msg) str("blocked request") if blocked',
    ]
    if not debug:
        lines.append("    http-request set-log-level silent if !blocked")
    lines += [
        '    http-request return status 403 content-type "text/plain; charset=utf-8" hdr X-Content-Type-Options '
        'nosniff lf-string "Forbidden\\n" if !client_allowed',
        '    http-request return status 405 content-type "text/plain; charset=utf-8" hdr X-Content-Type-Options '
        'nosniff lf-string "Method Not Allowed\\n" if !method_configured',
        '    http-request return status 403 content-type "text/plain; charset=utf-8" hdr X-Content-Type-Options '
        'nosniff lf-string "Forbidden\\n" if !path_allowed',
        "    default_backend docker",
        "backend docker",
        f"    server docker unix@{opts['socketpath']}",
    ]
    if opts["allowhealthcheck"]:
        lines += [
            "frontend health",
            "    bind 127.0.0.1:55555",
            "    no log",
            "    http-request return status 404 unless { path /health }",
            "    http-request set-method HEAD",
            "    http-request set-path /_ping",
            "    default_backend docker",
        ]
    return "\n".join(lines) + "\n"


def socket_answers(path: str, timeout: float = 5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


def main() -> int:
    opts = parse(sys.argv[1:], dict(os.environ))
    validate(opts)
    print('level=INFO msg="starting socket-proxy" version=stand-in URL=github.com/wollomatic/socket-proxy', flush=True)
    print(f'level=INFO msg="configuration info" socketpath={opts["socketpath"]} '
          f'listenaddress={opts["listenip"]}:{opts["proxyport"]} loglevel={opts["loglevel"].upper()} '
          f'allowfrom=[{opts["allowfrom"]}] shutdowngracetime={opts["shutdowngracetime"]}', flush=True)
    print("Request allowlist:\n   %-8s %s" % ("Method", "Regex"), flush=True)
    for method, regexes in opts["allow"].items():
        for regex in regexes:
            print("   %-8s %s" % (method, "^" + regex + "$"), flush=True)
    if not socket_answers(opts["socketpath"]):
        fail(f"socket not available: {opts['socketpath']}", 2)
    os.makedirs(CONF_DIR, exist_ok=True)
    for method, regexes in opts["allow"].items():
        with open(f"{CONF_DIR}/allow-{method}", "w") as fh:
            fh.write("".join("^" + r + "$\n" for r in regexes))
    cfg = f"{CONF_DIR}/haproxy.cfg"
    with open(cfg, "w") as fh:
        fh.write(haproxy_config(opts))
    check = subprocess.run(["haproxy", "-c", "-q", "-f", cfg], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        fail("haproxy refused the configuration: " + " ".join((check.stdout + check.stderr).split()))
    proxy = subprocess.Popen(["haproxy", "-db", "-f", cfg])
    stopping = threading.Event()
    watchdog_failed = threading.Event()

    def stop(signum, _frame):
        stopping.set()
        print('level=INFO msg="received stop signal - shutting down"', flush=True)
        proxy.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
        deadline = time.monotonic() + int(opts["shutdowngracetime"])
        while proxy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proxy.poll() is None:
            proxy.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print('level=INFO msg="socket-proxy running and listening..."', flush=True)
    interval = int(opts["watchdoginterval"])
    if interval > 0:
        print(f'level=INFO msg="watchdog enabled" interval={interval} stoponwatchdog={opts["stoponwatchdog"]}',
              flush=True)

        def watchdog():
            while not stopping.wait(interval):
                if socket_answers(opts["socketpath"]):
                    continue
                print('level=ERROR msg="watchdog: socket is not available"', flush=True)
                if opts["stoponwatchdog"]:
                    watchdog_failed.set()
                    proxy.terminate()

        threading.Thread(target=watchdog, daemon=True).start()
    else:
        print('level=INFO msg="watchdog disabled"', flush=True)
    code = proxy.wait()
    if watchdog_failed.is_set():
        return 1  # stopped by the watchdog: the restart policy brings the proxy back
    return 0 if stopping.is_set() else (code or 1)


if __name__ == "__main__":
    sys.exit(main())
