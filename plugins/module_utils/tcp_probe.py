# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the tcp_probe module: TCP connection attempts to many ports of one address at once, each
classified the way a port scanner would:

  open        the three-way handshake completed (something listens and the firewall lets it through)
  closed      refused: the host answered with a reset (nothing listens, or a REJECT rule)
  filtered    no answer within the timeout (a DROP rule, UFW's default for incoming connections)
  unreachable the network said no route (ICMP host/network unreachable)
  error       anything else (name resolution, ...), with the error text

The probes run in parallel threads, so N filtered ports cost one timeout, not N.

The result lists the ports per state under ``open``, ``closed``, ``filtered``, ``no_route`` (state ``unreachable``)
and ``errors``. Never ``unreachable``: Ansible reserves that result key (it would turn the list into a bool, warn on
every run, and take a non-empty list for an unreachable host); tests/unit/test_tcp_probe.py checks the result
against Ansible's reserved keys.
"""

from __future__ import annotations

import errno
import socket
import time
from concurrent.futures import ThreadPoolExecutor

UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN)


def probe_one(host, port, timeout, connect=socket.create_connection):
    """{port, state, detail, elapsed_ms} for one port."""
    started = time.monotonic()
    state, detail = "open", ""
    try:
        sock = connect((host, port), timeout)
        sock.close()
    except ConnectionRefusedError:
        state = "closed"
    except socket.timeout:  # noqa: UP041 - TimeoutError only from Python 3.10, and hosts run older ones
        state, detail = "filtered", "no answer in %gs" % timeout
    except socket.gaierror as exc:
        state, detail = "error", "cannot resolve %s: %s" % (host, exc.strerror or exc)
    except OSError as exc:
        state = "unreachable" if exc.errno in UNREACHABLE else "error"
        detail = exc.strerror or str(exc)
    return {"port": port, "state": state, "detail": detail,
            "elapsed_ms": round((time.monotonic() - started) * 1000)}


def validate(host, ports, timeout):
    if not host or not str(host).strip():
        raise ValueError("host: must not be empty")
    for port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError("ports: %r is not a TCP port (1-65535)" % (port,))
    if not 0 < timeout <= 60:
        raise ValueError("timeout: must be more than 0 and at most 60 seconds, got %s" % timeout)


def probe(host, ports, timeout=2.0, workers=32, connect=socket.create_connection):
    """The results of probe_one for every distinct port, in ascending port order."""
    wanted = sorted(set(ports))
    if not wanted:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
        return list(pool.map(lambda port: probe_one(host, port, timeout, connect), wanted))


def run(module, connect=socket.create_connection):
    p = module.params
    try:
        ports = [int(x) for x in p["ports"]]
        validate(p["host"], ports, p["timeout"])
    except (TypeError, ValueError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    started = time.monotonic()
    results = probe(p["host"], ports, p["timeout"], p["workers"], connect)
    by_state = {}
    for item in results:
        by_state.setdefault(item["state"], []).append(item["port"])
    module.exit_json(changed=False, host=p["host"], ports=results, open=by_state.get("open", []),
                     closed=by_state.get("closed", []), filtered=by_state.get("filtered", []),
                     no_route=by_state.get("unreachable", []), errors=by_state.get("error", []),
                     elapsed_ms=round((time.monotonic() - started) * 1000))
