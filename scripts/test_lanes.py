"""The full test run (`make test`, CI) as parallel lanes of pytest, ending in one summary line.

Most of the run's wall time is spent waiting - on a sandbox server's apt and health gates, on containers that start, on
dockerd inside throwaway servers - while the machine's cores sit idle (a serial run used about a quarter of two cores).
The sandbox servers' tests, the molecule scenario, the swarm cluster and the other tests that run throwaway servers
form four lanes (SERVER_LANES); lint, sanity, unit and the other integration tests the fifth. Each lane is its own
pytest session (session fixtures, the sandboxes' background converges in tests/integration/conftest.py and their
clean-up stay per session); nothing is shared between lanes but the Docker Engine and the test images, and every test
prefixes its resources' names, so lanes do not collide.

Output: every line of a lane is printed as it comes, prefixed with the lane's name, and kept in
tests/output/lane-<name>.log; tests/output/junit-<name>.xml per lane and tests/output/junit.xml merged. At the end:
a line per lane, under it a line per failed test (its id and the first line of its message, so that a log's tail
names what failed), and last the merged summary in pytest's format (`N failed, N passed, N skipped in Ts`); the exit
code is non-zero when any lane failed or ran no test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "output"

# The lanes that bring up whole servers: the sandbox modules (their first converges start in the background as soon
# as the lane has collected them, so each lane begins with something else that overlaps them) and the other tests
# that run throwaway servers of their own. Lane "main": everything else, static checks first.
SERVER_LANES: dict[str, list[str]] = {
    "servers": [
        "tests/integration/test_firewall_ssh.py",
        "tests/integration/test_sandbox.py",
    ],
    "servers2": [
        "tests/integration/test_firewall_rules.py",
        "tests/integration/test_docker_repo.py",
        "tests/integration/test_sandbox_okt.py",
    ],
    # The molecule scenario and the amn site on Debian 13: the sandbox's first converge starts in the background when
    # the lane has collected it and overlaps the molecule scenario.
    "servers3": [
        "tests/molecule",
        "tests/integration/test_sandbox_trixie.py",
    ],
    # Docker Swarm: swarm_stack on a one-node swarm overlaps the first converge of the 3-node cluster (started in the
    # background when the lane has collected the module), then the cluster and the nmt site on it.
    "swarm": [
        "tests/integration/test_swarm_stack.py",
        "tests/integration/test_swarm_cluster.py",
    ],
}
LANES: dict[str, list[str]] = {
    **SERVER_LANES,
    "main": ["tests/lint", "tests/unit", "tests/integration",
             *(f"--ignore={path}" for paths in SERVER_LANES.values() for path in paths
               if path.startswith("tests/integration/"))],
}
PYTEST = ["-m", "pytest", "-p", "no:cacheprovider", "--durations=15"]


def count(junit: Path) -> dict[str, int]:
    """passed/failed/error/skipped of one junit file (pytest's junitxml: one <testcase> per test)."""
    totals = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    if not junit.exists():
        return totals
    for case in ET.parse(junit).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if "failure" in tags:
            totals["failed"] += 1
        elif "error" in tags:
            totals["error"] += 1
        elif "skipped" in tags:
            totals["skipped"] += 1
        else:
            totals["passed"] += 1
    return totals


def failures(junit: Path, width: int = 300) -> list[str]:
    """One line per failed or erroring test of a junit file: its node id and the first line of pytest's message, cut
    to `width` characters. The run's output is long and lanes interleave, so a CI log's tail may hold no more than
    the summary: these lines put what failed, and why, next to it."""
    if not junit.exists():
        return []
    lines = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for child in case:
            if child.tag not in ("failure", "error"):
                continue
            node = "::".join(filter(None, (case.get("classname"), case.get("name"))))
            message = (child.get("message") or child.text or "").strip().splitlines()
            first = message[0] if message else ""
            kind = "FAILED" if child.tag == "failure" else "ERROR"
            lines.append(f"{kind} {node} - {first[:width]}")
    return lines


def merge_junit(parts: list[Path], dest: Path) -> None:
    merged = ET.Element("testsuites")
    for part in parts:
        if part.exists():
            root = ET.parse(part).getroot()
            merged.extend(root.iter("testsuite") if root.tag == "testsuites" else [root])
    ET.ElementTree(merged).write(dest, encoding="utf-8", xml_declaration=True)


def summary_line(totals: dict[str, int], seconds: float) -> str:
    """pytest's own wording and order: failed, passed, skipped, errors."""
    parts = [f"{totals['failed']} failed"] if totals["failed"] else []
    parts.append(f"{totals['passed']} passed")
    if totals["skipped"]:
        parts.append(f"{totals['skipped']} skipped")
    if totals["error"]:
        parts.append(f"{totals['error']} error" + ("s" if totals["error"] > 1 else ""))
    return f"{', '.join(parts)} in {seconds:.2f}s"


def pump(name: str, proc: subprocess.Popen, log: Path, lock: threading.Lock) -> None:
    width = max(map(len, LANES))
    with log.open("w") as handle:
        for line in proc.stdout:
            handle.write(line)
            with lock:
                sys.stdout.write(f"[{name:<{width}}] {line}")
                sys.stdout.flush()


def run(lanes: dict[str, list[str]]) -> int:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen] = {}
    pumps: list[threading.Thread] = []
    took: dict[str, float] = {}
    for name, args in lanes.items():
        junit = OUTPUT / f"junit-{name}.xml"
        junit.unlink(missing_ok=True)
        env = dict(os.environ, SHP_TEST_LANE=name, PYTHONUNBUFFERED="1")
        # stdin: a /dev/null of the lane's own - O_NONBLOCK, which a child such as ssh may set on its stdin and
        # ansible-core refuses, is a flag of the open file description, so lanes must not share one.
        proc = subprocess.Popen([sys.executable, *PYTEST, f"--junitxml={junit}", *args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)
        procs[name] = proc
        thread = threading.Thread(target=pump, args=(name, proc, OUTPUT / f"lane-{name}.log", lock), daemon=True)
        thread.start()
        pumps.append(thread)

    interrupted: list[int] = []

    def stop(signum, _frame):
        # pytest cleans up (sandbox servers, registries) and prints its failures on KeyboardInterrupt: pass the
        # interrupt on and keep waiting for the lanes to end; a second signal kills them.
        interrupted.append(signum)
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT if len(interrupted) == 1 else signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes: dict[str, int] = {}
    pending = dict(procs)
    while pending:
        for name, proc in list(pending.items()):
            if proc.poll() is not None:
                codes[name] = proc.returncode
                took[name] = time.monotonic() - start
                del pending[name]
        time.sleep(0.5)
    for thread in pumps:
        thread.join()
    elapsed = time.monotonic() - start

    parts = [OUTPUT / f"junit-{name}.xml" for name in lanes]
    merge_junit(parts, OUTPUT / "junit.xml")
    totals = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    print()
    for name in lanes:
        lane = count(OUTPUT / f"junit-{name}.xml")
        for key in totals:
            totals[key] += lane[key]
        # pytest exits 5 when it selected no test: that is a failure of the run, not a pass.
        verdict = "ok" if codes[name] == 0 else f"FAILED (pytest exit {codes[name]})"
        print(f"lane {name}: {summary_line(lane, took[name])} - {verdict}")
        for failed in failures(OUTPUT / f"junit-{name}.xml"):
            print(f"  {failed}")
    line = summary_line(totals, elapsed)
    print(f"{'=' * 20} {line} ({len(lanes)} lanes in parallel) {'=' * 20}")
    if interrupted:
        return 128 + interrupted[0]
    return 0 if all(code == 0 for code in codes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the lanes and their pytest arguments")
    args = parser.parse_args(argv)
    if args.list:
        for name, lane_args in LANES.items():
            print(f"{name}: {' '.join(lane_args)}")
        return 0
    return run(LANES)


if __name__ == "__main__":
    sys.exit(main())
