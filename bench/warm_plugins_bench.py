"""Benchmark the warm_plugins callback: the controller's CPU time of a playbook whose tasks template this collection's
filters, with the callback enabled and without it.

Usage, from the checkout root with the toolchain venv (`make setup` done; no server needed, the tasks run on
localhost with the local connection):

    .venv/bin/python bench/warm_plugins_bench.py [--tasks N] [--repeat N]

    --tasks N   tasks in the generated play, each templating two of the collection's filters (default 40)
    --repeat N  runs of each variant, alternating (default 5)

The play is the shape of a role's tasks: `ansible.builtin.debug` whose message templates
`selfhosted.platform.host_uid` and `selfhosted.platform.host_gid`; each task runs in a worker process forked from
ansible-playbook. Reported per variant: median CPU seconds (user + system of ansible-playbook and every worker it
forked, from getrusage of the children) and median wall seconds, and the ratio with/without. The module work of a
debug task is negligible, so the difference is what loading the filter files costs the workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASK = (
    "    - ansible.builtin.debug:\n"
    "        msg: \"{{ ('root' | selfhosted.platform.host_uid({'enabled': false}, 'bench'))"
    " ~ ('root' | selfhosted.platform.host_gid({'enabled': false}, 'bench')) }}\"\n"
)


def configs(tmp: Path) -> dict[bool, Path]:
    """The checkout's ansible.cfg (which enables the callback) and a copy of it without that line."""
    text = (ROOT / "ansible.cfg").read_text()
    assert "callbacks_enabled = selfhosted.platform.warm_plugins" in text, "ansible.cfg does not enable the callback"
    cold = tmp / "ansible.cfg"
    cold.write_text("\n".join(line for line in text.splitlines() if not line.startswith("callbacks_enabled")) + "\n")
    return {True: ROOT / "ansible.cfg", False: cold}


def run(play: Path, config: Path) -> tuple[float, float]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(config),
           "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".build" / "collections")}
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                         capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or "failed=0" not in res.stdout:
        raise SystemExit(f"the play failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shp-bench-warm-") as tmp:
        play = Path(tmp) / "play.yml"
        play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + TASK * args.tasks)
        cfg = configs(Path(tmp))
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        run(play, cfg[True])  # once, unmeasured: the filesystem caches
        for _round in range(args.repeat):
            for warm in (False, True):
                results[warm].append(run(play, cfg[warm]))
    med = {w: (statistics.median(cpu for cpu, _wall in r), statistics.median(wall for _cpu, wall in r))
           for w, r in results.items()}
    print(f"{args.tasks} tasks, {args.repeat} runs each (median)")
    print(f"  without warm_plugins: {med[False][0]:6.2f} s CPU  {med[False][1]:6.2f} s wall")
    print(f"  with warm_plugins:    {med[True][0]:6.2f} s CPU  {med[True][1]:6.2f} s wall")
    print(f"  CPU with/without: {med[True][0] / med[False][0]:.2f}  per task saved: "
          f"{(med[False][0] - med[True][0]) / args.tasks * 1000:.0f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
