"""Benchmark selfhosted.platform.swarm_stack against community.docker.docker_stack and raw `docker stack deploy`.

Usage, from the checkout root with the toolchain venv (the real Docker Engine and the shp-test/* images needed):

    nice -n 10 .venv/bin/python bench/swarm_bench.py [--repeat N] [--update-repeat N] [--keep] [--wait-timeout S]
    (or `make bench-swarm`)

    --repeat N         rounds of the no-op measurements (default 5)
    --update-repeat N  rounds of the rolling-update comparison (default 5)
    --raw-poll S       the raw wait loop's sleep between polls (default 1.0; swarm_stack's wait polls the Engine
                       API every 0.25 s)
    --keep             leave the throwaway server (and the temp dir with its SSH key and inventory) in place;
                       without it both are removed, also on failure and Ctrl-C
    --wait-timeout S   wait limit of swarm_stack and of the raw wait loop (default 300)
    --only noop|update the first deploy, then only the no-op (2., 3.) or only the update comparison (4.)

The swarm is a single-node one inside ONE throwaway sandbox server (tests/tools/sandbox.py: systemd, real sshd;
container shp-bench-swarm-<random>): Debian's docker.io 20.10 installed in it with apt, the stand-in images exported
into it, `docker swarm init` there - never on the host's own dockerd. The benchmark also installs what
community.docker.docker_stack needs on the target, as a user would: the docker CLI (docker.io) and the Python
libraries jsondiff and PyYAML (Debian's python3-jsondiff, python3-yaml). Both modules run as real Ansible tasks
over SSH on the manager.

The site is compose_bench.py's (seed 003's shape): 7 stacks, 34 services (httpapp with a curl healthcheck every 2s,
redis, postgres with pg_isready, nginx, sleep workers), one network per stack (an overlay network on Swarm). This
machine's kernel has no IPVS, so swarm_stack picks endpoint_mode dnsrr (BRIEF section 6); nothing publishes a port.

1. First deploy: swarm_stack over the 7 stacks (wait: true), then the peer once over the stack files swarm_stack
   wrote (they must agree: changed=0 expected). Recorded, not compared.
2. Docker CLI calls of each no-op, counted on the server in one extra, untimed run of each with a logging `docker`
   wrapper first on PATH (swarm_stack's own cli_calls return value is cross-checked against it).
3. No-op converge, --repeat rounds: the floor (the same 7-item loop with ansible.builtin.ping: playbook start-up
   and one module dispatch per item over SSH), swarm_stack (every item changed=false, path fast-noop) and
   docker_stack (every item changed=false), ours and the peer alternating which goes first. Reported: wall time of
   the ansible-playbook process, the looped task's time (ansible.posix.json callback), CPU time of the controller's
   process tree, and the ratio (peer - floor) / (ours - floor). The CPU time of the server's cgroup (sshd, the
   modules, dockerd with its work for the stacks' healthchecks; not the stacks' containers) is in the JSON only.
   Then the same three no-ops without the controller: the AnsiballZ payloads of one run of each, kept on the server
   (ANSIBLE_KEEP_REMOTE_FILES), run again there by python3, one after the other, timed on the server (wall and CPU
   of the module processes and their children) - the modules' own cost without Ansible's controller, which is
   niced and shares the machine.
4. Rolling update of one service (shop's web, an env var RELEASE changed; httpapp with a healthcheck, so Swarm's
   update waits for the new task to be healthy and then the monitor window, 30 s here), --update-repeat rounds,
   alternating which goes first:
   - ours: swarm_stack over the shop stack (one item, wait: true: until the service runs the new spec, as many
     replicas as it wants, and no update runs);
   - raw: over SSH, `docker stack deploy` of the same stack file (as swarm_stack wrote it, only RELEASE changed,
     same flags) and a shell loop polling `docker service inspect` / `docker service ls` every --raw-poll seconds
     until the service's update state is `completed` (a newer update than before the deploy) and its replicas
     are all running.
   Reported: ours wall / raw wall (both from the controller) and ours task / raw on the server (deploy + wait,
   timed inside the shell, no SSH connect). Every round checks that the service runs the new RELEASE.

Results: a table on stdout and bench/results/swarm_bench.json (git-ignored; partial, with "error", when a step
failed). Exit status 1 when a run failed or a no-op was not a no-op ("problems" in the JSON). The load average is
recorded at each step: other work on the machine skews the figures (the server's processes are not niced).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from compose_bench import (
    IMAGES,
    STACKS,
    BenchError,
    Findings,
    ansible_env,
    classify,
    iso_seconds,
    run,
    run_and_report,
    stack_definition,
    timed,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "swarm_bench.json"
VENV_BIN = ROOT / ".venv" / "bin"
SANDBOX = ROOT / "tests" / "tools" / "sandbox.py"
SERVER_IMAGE = "shp-test/server:latest"
PREFIX = "shp-bench-swarm-"
SANDBOX_LABEL = "org.selfhosted.sandbox"
HOST = "manager"
STACK_DIR = "/opt/stacks"
UPDATE_STACK, UPDATE_SERVICE = "shop", "web"
CALL_LOG = "/root/bench-docker-calls.log"
WRAPPER = f"""#!/bin/sh
printf '%s\\n' "$*" >> {CALL_LOG}
exec /usr/bin/docker "$@"
"""

# The raw comparison, run with `sh -s` over SSH: the deploy and the wait loop a user would write. The arguments
# are the stack file, the stack, the service, the poll interval and the timeout; the two times printed are the
# server's clock before the deploy and after the wait.
RAW_UPDATE = r"""set -eu
file=$1; stack=$2; svc=$3; poll=$4; timeout=$5
fmt='{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.StartedAt}}{{end}}'
state() { docker service inspect --format "$fmt" "$svc"; }
before=$(state)
t0=$(date +%s.%N)
docker stack deploy --compose-file "$file" --with-registry-auth --resolve-image never --prune "$stack" >/dev/null
polls=0
while :; do
  polls=$((polls + 1))
  st=$(state)
  reps=$(docker service ls --filter "name=$svc" --format '{{.Replicas}}')
  if [ "${st%% *}" = completed ] && [ "$st" != "$before" ] && [ "${reps%%/*}" = "${reps#*/}" ]; then
    break
  fi
  if [ $(($(date +%s) - ${t0%.*})) -gt "$timeout" ]; then
    echo "timeout: update state '$st', replicas $reps" >&2; exit 1
  fi
  sleep "$poll"
done
t1=$(date +%s.%N)
echo "$t0 $t1 $polls"
"""

# The modules without Ansible's controller: the AnsiballZ payloads one playbook run of each left on the server
# (ANSIBLE_KEEP_REMOTE_FILES; the module arguments are inside them) run again by the server's python3, one after the
# other, timed on the server. argv: {name: [payload, ...]} and the order, as JSON. Prints
# {name: {seconds, cpu_s (the module processes and their children, e.g. the docker CLI), changed, failed}}.
ON_SERVER = r"""
import json, resource, subprocess, sys, time
files, order = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name in order:
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    changed = failed = 0
    for path in files[name]:
        p = subprocess.run([sys.executable, path], capture_output=True, text=True)
        try:
            r = json.loads(p.stdout[p.stdout.index("{"):])
        except ValueError:
            r = {"failed": True}
        changed += bool(r.get("changed"))
        failed += bool(r.get("failed")) or p.returncode != 0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out[name] = {"seconds": time.perf_counter() - t0, "changed": changed, "failed": failed,
                 "cpu_s": ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime}
print(json.dumps(out))
"""


class SwarmBench(Findings):
    def __init__(self, repeat: int, update_repeat: int, wait_timeout: int, keep: bool, *, raw_poll: float = 1.0,
                 only: str | None = None):
        self.repeat = repeat
        self.only = only
        self.update_repeat = update_repeat
        self.wait_timeout = wait_timeout
        self.keep = keep
        self.raw_poll = raw_poll
        self.tmp = Path(tempfile.mkdtemp(prefix="shp-bench-"))
        self.name = PREFIX + secrets.token_hex(3)
        self.state = self.tmp / "server"
        self.port = 0
        self.created = False
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.results: dict = {}
        self.cgroup: Path | None = None
        self.stacks = [{"name": name, "project": name, "dir": f"{STACK_DIR}/{name}",
                        "definition": stack_definition(name, services), "services": len(services)}
                       for name, services in STACKS]
        target = next(s for s in self.stacks if s["name"] == UPDATE_STACK)
        target["definition"]["services"][UPDATE_SERVICE]["environment"]["RELEASE"] = "initial"
        self.inventory = self.tmp / "inventory.yml"
        self.runs = 0

    # -- the server ---------------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 900) -> str:
        """Run SCRIPT with bash on the server (docker exec, not timed); its stdout."""
        return run(["docker", "exec", "-i", self.name, "bash", "-euo", "pipefail", "-s"], data=script,
                   timeout=timeout).stdout

    def put(self, path: str, text: str, mode: str = "600") -> None:
        run(["docker", "exec", "-i", self.name, "sh", "-c",
             f"mkdir -p {shlex.quote(os.path.dirname(path))} && cat > {shlex.quote(path)} && "
             f"chmod {mode} {shlex.quote(path)}"], data=text)

    def ssh(self) -> list[str]:
        return ["ssh", "-i", str(self.state / "id_ed25519"), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                "root@127.0.0.1"]

    @staticmethod
    def leftovers() -> list[str]:
        out = run(["docker", "ps", "--all", "--filter", f"label={SANDBOX_LABEL}=1", "--format", "{{.Names}}"],
                  check=False).stdout
        return [n for n in out.split() if n.startswith(PREFIX)]

    def preflight(self) -> None:
        missing = [img for img in [*IMAGES.values(), SERVER_IMAGE]
                   if run(["docker", "image", "inspect", img], check=False).returncode]
        if missing:
            raise BenchError(f"missing local images: {', '.join(missing)} (make images)")
        for old in self.leftovers():
            print(f"removing the server of an earlier run: {old}", flush=True)
            self.destroy(old)

    def create_server(self) -> dict:
        started = time.perf_counter()
        self.created = True
        run(["python3", str(SANDBOX), "create", "--name", self.name, "--state-dir", str(self.state)], timeout=300)
        self.port = int((self.state / "ssh_port").read_text())
        times = {"server": time.perf_counter() - started}
        t = time.perf_counter()
        self.sh("export DEBIAN_FRONTEND=noninteractive; apt-get update -qq;"
                " apt-get install -y -qq --no-install-recommends docker.io python3-jsondiff python3-yaml >/dev/null;"
                " systemctl is-active docker >/dev/null || systemctl start docker")
        times["apt-get install docker.io python3-jsondiff python3-yaml"] = time.perf_counter() - t
        t = time.perf_counter()
        images = sorted(set(IMAGES.values()))
        with subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE) as save:
            load = subprocess.run(["docker", "exec", "-i", self.name, "docker", "load", "-q"], stdin=save.stdout,
                                  capture_output=True, text=True, timeout=900, check=False)
            save.wait(timeout=900)
        if load.returncode or save.returncode:
            raise BenchError(f"loading the images into {self.name} failed: {load.stderr.strip()}")
        times["images loaded"] = time.perf_counter() - t
        self.sh("""
addr=$(getent hosts "$(hostname)" | awk '{print $1; exit}')
docker swarm init --advertise-addr "$addr" >/dev/null
docker node update --label-add selfhosted.data=true "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
""")
        self.inventory.write_text(
            f"all:\n  hosts:\n    {HOST}:\n"
            f"      ansible_host: 127.0.0.1\n      ansible_port: {self.port}\n      ansible_user: root\n"
            "      ansible_python_interpreter: /usr/bin/python3\n"
            f"      ansible_ssh_private_key_file: {self.state / 'id_ed25519'}\n"
            f"      ansible_ssh_common_args: -o UserKnownHostsFile={self.state / 'known_hosts'}"
            " -o StrictHostKeyChecking=yes\n")
        cid = run(["docker", "inspect", "--format", "{{.Id}}", self.name]).stdout.strip()
        for path in (Path("/sys/fs/cgroup/cpuacct/docker") / cid / "cpuacct.usage",
                     Path("/sys/fs/cgroup/system.slice") / f"docker-{cid}.scope" / "cpu.stat"):
            if path.exists():
                self.cgroup = path
                break
        times["total"] = time.perf_counter() - started
        return {k: round(v, 2) for k, v in times.items()}

    def server_cpu(self) -> float | None:
        """CPU seconds the server's cgroup has used (its sshd, the modules, dockerd and containerd; the stacks'
        containers have cgroups of their own outside it), or None where it cannot be read."""
        if self.cgroup is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            text = self.cgroup.read_text()
            if self.cgroup.name == "cpuacct.usage":
                return int(text) / 1e9
            for line in text.splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return None

    @staticmethod
    def destroy(name: str) -> None:
        run(["python3", str(SANDBOX), "destroy", "--name", name, "--state-dir", "/nonexistent"], timeout=300)

    def machine(self) -> dict:
        def server(cmd: str) -> str:
            return self.sh(cmd).strip()

        peer = next((json.loads(p.read_text())["collection_info"]["version"] for p in (VENV_BIN.parent / "lib").glob(
            "python*/site-packages/ansible_collections/community/docker/MANIFEST.json")), None)
        cpu = ""
        with contextlib.suppress(OSError):
            cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                        if ln.startswith("model name")), "")
        return {
            "nproc": os.cpu_count(),
            "cpu": cpu,
            "kernel": os.uname().release,
            "server_docker": server("docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'"),
            "server_python": server("python3 --version"),
            "server_jsondiff": server("dpkg-query -W -f '${Version}' python3-jsondiff"),
            "ansible": run([str(VENV_BIN / "ansible-playbook"), "--version"]).stdout.splitlines()[0],
            "community.docker": peer,
        }

    # -- ansible ------------------------------------------------------------------------------------
    def ansible_env(self) -> dict:
        return ansible_env(ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.tmp / "cp"))

    def vars_file(self, stacks: list[dict]) -> Path:
        self.runs += 1
        path = self.tmp / f"vars-{self.runs}.json"
        path.write_text(json.dumps({
            "bench_wait_timeout": self.wait_timeout,
            "bench_stacks": [{"project": s["project"], "dir": s["dir"], "definition": s["definition"]}
                             for s in stacks],
        }, indent=2))
        return path

    def playbook(self, name: str, stacks: list[dict] | None = None, env: dict | None = None) -> dict:
        """One ansible-playbook run of bench/playbooks/<name>.yml on the manager: wall time, task time, CPU
        times (controller, server) and per-item results."""
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), "-e",
               f"@{self.vars_file(self.stacks if stacks is None else stacks)}",
               str(BENCH / "playbooks" / f"{name}.yml")]
        cpu0 = self.server_cpu()
        wall, cpu, res = timed(cmd, env=self.ansible_env() | (env or {}), check=False, timeout=1800)
        cpu1 = self.server_cpu()
        try:
            out = json.loads(res.stdout)
        except ValueError:
            tail = (res.stdout + res.stderr)[-4000:]
            raise BenchError(f"{shlex.join(cmd)}: no JSON from ansible-playbook (rc={res.returncode}):\n{tail}") \
                from None
        task = out["plays"][0]["tasks"][0]
        host = task["hosts"][HOST]
        items = []
        for r in host.get("results", []):
            items.append({k: r.get(k) for k in ("changed", "failed", "path", "cli_calls", "api_calls", "msg",
                                                "waited")}
                         | {"project": (r.get("item") or {}).get("project"),
                            "plan": [p for p in r.get("plan") or [] if p.get("action") != "unchanged"]})
        stats = out["stats"][HOST]
        if res.returncode != 0 or stats["failures"] or stats.get("unreachable"):
            failed = [i for i in items if i.get("failed")] or [{"msg": host.get("msg")}]
            raise BenchError(f"{name} failed (rc={res.returncode}): {json.dumps(failed, indent=2)[-4000:]}")
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "task_s": iso_seconds(task["task"]["duration"]["start"], task["task"]["duration"]["end"]),
            "changed": sum(1 for i in items if i["changed"]),
            "items": items,
        }

    def count_calls(self, name: str) -> dict:
        """One untimed run with the logging docker wrapper on the server: docker processes started, by command."""
        self.sh(f"rm -f {CALL_LOG}; cat > /usr/local/bin/docker <<'EOF'\n{WRAPPER}EOF\nchmod 755 /usr/local/bin/docker")
        try:
            r = self.playbook(name)
            lines = [ln for ln in self.sh(f"cat {CALL_LOG} 2>/dev/null || true").splitlines() if ln.strip()]
        finally:
            self.sh(f"rm -f /usr/local/bin/docker {CALL_LOG}")
        kinds: dict[str, int] = {}
        for ln in lines:
            k = classify(ln)
            if k in ("stack", "service", "config", "secret", "node"):  # with the subcommand: 'stack deploy'
                words = ln.split()
                k = " ".join(words[words.index(k):words.index(k) + 2])
            kinds[k] = kinds.get(k, 0) + 1
        r["docker_calls"] = len(lines)
        r["docker_calls_by_command"] = dict(sorted(kinds.items()))
        return r

    def module_times(self) -> dict:
        """The 7 module runs of each (ping, swarm_stack, docker_stack) on the server, without the controller."""
        files = {}
        for name in ("swarm_baseline", "swarm_stack", "docker_stack"):
            remote = f"/root/bench-kept/{name}"
            self.sh(f"rm -rf {remote}")
            self.playbook(name, env={"ANSIBLE_PIPELINING": "False", "ANSIBLE_KEEP_REMOTE_FILES": "1",
                                     "ANSIBLE_REMOTE_TMP": remote})
            files[name] = self.sh(f"ls {remote}/*/AnsiballZ_*.py").split()
            if len(files[name]) != len(self.stacks):
                raise BenchError(f"{name}: {len(files[name])} module payloads kept, expected {len(self.stacks)}")
        self.put("/root/bench-modules.py", ON_SERVER)
        runs: dict[str, list[dict]] = {k: [] for k in files}
        for n in range(self.repeat):
            order = ["swarm_baseline", "swarm_stack", "docker_stack"]
            if n % 2:
                order[1:] = order[:0:-1]
            got = json.loads(self.sh(f"python3 /root/bench-modules.py {shlex.quote(json.dumps(files))} "
                                     f"{shlex.quote(json.dumps(order))}"))
            for name, r in got.items():
                runs[name].append(r)
                if r["failed"] or r["changed"]:
                    self.problem(f"{name} on the server, round {n + 1}: changed={r['changed']}, failed={r['failed']}")
            print("      round {}: {}".format(n + 1, ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in got.items())),
                  flush=True)
        out: dict = {}
        for name, rs in runs.items():
            secs, cpus = [r["seconds"] for r in rs], [r["cpu_s"] for r in rs]
            out["floor" if name == "swarm_baseline" else name] = {
                "seconds": secs, "cpu_s": cpus, "median_s": statistics.median(secs), "min_s": min(secs),
                "cpu_median_s": statistics.median(cpus)}
        f, o, p = out["floor"], out["swarm_stack"], out["docker_stack"]
        out["ratios"] = {
            "peer_over_ours_median_above_floor": (p["median_s"] - f["median_s"]) / (o["median_s"] - f["median_s"]),
            "peer_over_ours_cpu_median_above_floor":
                (p["cpu_median_s"] - f["cpu_median_s"]) / (o["cpu_median_s"] - f["cpu_median_s"]),
            "peer_over_ours_median": p["median_s"] / o["median_s"],
        }
        self.sh("rm -rf /root/bench-kept /root/bench-modules.py")
        return out

    # -- checks -------------------------------------------------------------------------------------
    def expect_noop(self, label: str, r: dict, ours: bool) -> None:
        if r["changed"]:
            changed = json.dumps([i for i in r["items"] if i["changed"]])[-2000:]
            self.problem(f"{label}: changed={r['changed']} (expected 0): {changed}")
        if ours:
            odd = [i for i in r["items"] if i["path"] != "fast-noop"]
            if odd:
                self.problem(f"{label}: path is not fast-noop for {json.dumps(odd)[-2000:]}")

    def services(self) -> list[dict]:
        out = self.sh("docker service ls --format '{{json .}}'")
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def verify_running(self, label: str) -> dict:
        rows = self.services()
        total = sum(s["services"] for s in self.stacks)
        bad = [f"{r['Name']} {r['Replicas']}" for r in rows
               if r["Replicas"].split()[0].split("/")[0] != r["Replicas"].split()[0].split("/")[1]]
        summary = {"services": len(rows), "expected": total, "not_running": bad}
        if len(rows) != total or bad:
            self.problem(f"{label}: {json.dumps(summary)}")
        return summary

    def release_of(self) -> str:
        env = json.loads(self.sh(f"docker service inspect {UPDATE_STACK}_{UPDATE_SERVICE} "
                                 "--format '{{json .Spec.TaskTemplate.ContainerSpec.Env}}'"))
        return next((e.split("=", 1)[1] for e in env or [] if e.startswith("RELEASE=")), "")

    def check_update(self, label: str, release: str) -> None:
        got = self.release_of()
        running = self.sh(f"docker service ps {UPDATE_STACK}_{UPDATE_SERVICE} --filter desired-state=running "
                          "--format '{{.CurrentState}}'").split("\n")
        state = self.sh(f"docker service inspect {UPDATE_STACK}_{UPDATE_SERVICE} "
                        "--format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}'").strip()
        if got != release or state != "completed" or not all(s.startswith("Running") for s in running if s):
            self.problem(f"{label}: RELEASE={got!r} (want {release!r}), update state {state!r}, tasks {running}")

    # -- the update comparison ----------------------------------------------------------------------
    def update_ours(self, release: str) -> dict:
        stack = copy.deepcopy(next(s for s in self.stacks if s["name"] == UPDATE_STACK))
        stack["definition"]["services"][UPDATE_SERVICE]["environment"]["RELEASE"] = release
        r = self.playbook("swarm_stack", [stack])
        item = r["items"][0]
        plan = {p["service"]: p["action"] for p in item["plan"]}
        if item["path"] != "deploy" or plan != {UPDATE_SERVICE: "update"}:
            self.problem(f"ours {release}: path {item['path']}, plan {item['plan']} (want one update of "
                         f"{UPDATE_SERVICE})")
        self.check_update(f"ours {release}", release)
        return r

    def update_raw(self, release: str) -> dict:
        """The stack file swarm_stack wrote, with only RELEASE changed (prepared before the clock starts)."""
        doc = yaml.safe_load(self.sh(f"cat {STACK_DIR}/{UPDATE_STACK}/docker-stack.yml"))
        doc["services"][UPDATE_SERVICE]["environment"]["RELEASE"] = release
        path = f"/root/raw/{UPDATE_STACK}.yml"
        self.put(path, yaml.safe_dump(doc, sort_keys=False))
        cmd = [*self.ssh(), "sh", "-s", "--", path, UPDATE_STACK, f"{UPDATE_STACK}_{UPDATE_SERVICE}",
               str(self.raw_poll), str(self.wait_timeout)]
        cpu0 = self.server_cpu()
        wall, cpu, res = timed(cmd, data=RAW_UPDATE, timeout=self.wait_timeout + 120)
        cpu1 = self.server_cpu()
        t0, t1, polls = res.stdout.split()
        self.check_update(f"raw {release}", release)
        return {"wall_s": wall, "cpu_s": cpu, "server_s": float(t1) - float(t0), "polls": int(polls),
                "server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}

    # -- the run ------------------------------------------------------------------------------------
    def load(self, label: str) -> None:
        one, five = os.getloadavg()[:2]
        self.results.setdefault("loadavg", {})[label] = [round(one, 2), round(five, 2)]
        print(f"      load average {one:.2f} / {five:.2f} at {label}", flush=True)

    @staticmethod
    def summary(rs: list[dict], keys=("wall_s", "task_s", "cpu_s", "server_cpu_s")) -> dict:
        out: dict = {}
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                out[k] = vals
                out[k.removesuffix("_s") + "_median_s"] = statistics.median(vals)
                out[k.removesuffix("_s") + "_min_s"] = min(vals)
        return out

    def execute(self) -> dict:
        t0 = time.perf_counter()
        res = self.results
        res["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        res["config"] = {"repeat": self.repeat, "update_repeat": self.update_repeat,
                         "wait_timeout": self.wait_timeout, "raw_poll_s": self.raw_poll,
                         "niceness": os.nice(0), "only": self.only}
        self.preflight()
        self.load("start")
        print(f"[setup] throwaway server {self.name}: docker.io, python3-jsondiff, images, swarm init ...",
              flush=True)
        res["setup_s"] = self.create_server()
        res["machine"] = self.machine()
        res["site"] = {"stacks": len(self.stacks), "services": sum(s["services"] for s in self.stacks),
                       "update": f"{UPDATE_STACK}_{UPDATE_SERVICE}"}
        print(f"      setup {res['setup_s']}", flush=True)

        # 1. first deploy ------------------------------------------------------------------------------
        self.load("before the first deploy")
        print("[1/4] first deploy: swarm_stack over the 7 stacks (wait: true) ...", flush=True)
        first = self.playbook("swarm_stack")
        res["first_deploy"] = {k: first[k] for k in ("wall_s", "task_s", "cpu_s", "server_cpu_s", "changed")}
        res["first_deploy"]["waited_s"] = round(sum((i.get("waited") or {}).get("seconds") or 0
                                                    for i in first["items"]), 2)
        if first["changed"] != len(self.stacks):
            self.problem(f"first deploy: changed={first['changed']}, expected {len(self.stacks)}")
        res["first_deploy"]["running"] = self.verify_running("after the first deploy")
        res["update_monitor"] = self.sh(f"docker service inspect {UPDATE_STACK}_{UPDATE_SERVICE} "
                                        "--format '{{.Spec.UpdateConfig.Monitor}} {{.Spec.UpdateConfig.Order}}'")\
            .strip()
        print(f"      {first['wall_s']:.1f}s; the peer over the same stack files ...", flush=True)
        peer_first = self.playbook("docker_stack")
        res["peer_first_run"] = {k: peer_first[k] for k in ("wall_s", "task_s", "changed")}
        if peer_first["changed"]:
            self.warning(f"docker_stack's first run over swarm_stack's deployment: changed={peer_first['changed']}")

        if self.only != "update":
            self.noop_phase(res)
        if self.only != "noop":
            self.update_phase(res)
        return self.finish(res, t0)

    def noop_phase(self, res: dict) -> None:
        # 2. docker calls ------------------------------------------------------------------------------
        print("[2/4] counting docker CLI calls on the server (untimed runs with a logging wrapper) ...", flush=True)
        res["cli_calls"] = {}
        for name in ("swarm_stack", "docker_stack"):
            r = self.count_calls(name)
            self.expect_noop(f"{name} no-op (counting run)", r, ours=name == "swarm_stack")
            entry = {"docker_calls": r["docker_calls"], "per_stack": r["docker_calls"] / len(self.stacks),
                     "by_command": r["docker_calls_by_command"]}
            if name == "swarm_stack":
                entry["module_cli_calls"] = sum(i["cli_calls"] or 0 for i in r["items"])
                entry["engine_api_requests"] = sum(i["api_calls"] or 0 for i in r["items"])
                if entry["module_cli_calls"] != r["docker_calls"]:
                    self.problem(f"swarm_stack: module reports cli_calls={entry['module_cli_calls']}, the wrapper "
                                 f"logged {r['docker_calls']}")
            res["cli_calls"][name] = entry

        # 3. no-op rounds ------------------------------------------------------------------------------
        self.load("before the no-op rounds")
        print(f"[3/4] no-op converge, {self.repeat} rounds (floor, then ours and the peer alternating) ...",
              flush=True)
        runs: dict[str, list[dict]] = {"floor": [], "swarm_stack": [], "docker_stack": []}
        for n in range(self.repeat):
            self.load(f"no-op round {n + 1}")
            order = ("swarm_stack", "docker_stack") if n % 2 == 0 else ("docker_stack", "swarm_stack")
            for key in ("floor", *order):
                r = self.playbook("swarm_baseline" if key == "floor" else key)
                if key != "floor":
                    self.expect_noop(f"{key} no-op round {n + 1}", r, ours=key == "swarm_stack")
                runs[key].append(r)
            print("      round {}: {}".format(n + 1, ", ".join(
                f"{k} {v[-1]['wall_s']:.2f}s wall / {v[-1]['task_s']:.2f}s task" for k, v in runs.items())),
                flush=True)
        res["noop"] = {k: self.summary(rs) for k, rs in runs.items()}
        floor, o, p = res["noop"]["floor"], res["noop"]["swarm_stack"], res["noop"]["docker_stack"]
        ratios = {}
        for k in ("task_median_s", "wall_median_s", "cpu_median_s"):
            name = "peer_over_ours_" + k.removesuffix("_s")
            if k in o and k in p and k in floor and o[k] - floor[k] > 0:
                ratios[name + "_above_floor"] = (p[k] - floor[k]) / (o[k] - floor[k])
            if k in o and k in p and o[k] > 0:
                ratios[name] = p[k] / o[k]
        res["noop"]["ratios"] = ratios
        self.load("before the modules on the server")
        print(f"[3b/4] the same no-ops without the controller: the kept module payloads run on the server, "
              f"{self.repeat} rounds ...", flush=True)
        res["noop_on_server"] = self.module_times()

    def update_phase(self, res: dict) -> None:
        # 4. rolling update ------------------------------------------------------------------------------
        print(f"[4/4] rolling update of {UPDATE_STACK}_{UPDATE_SERVICE}, {self.update_repeat} rounds "
              "(ours and raw alternating which goes first) ...", flush=True)
        rounds = []
        for n in range(self.update_repeat):
            self.load(f"update round {n + 1}")
            order = ("ours", "raw") if n % 2 == 0 else ("raw", "ours")
            got = {}
            for who in order:
                release = f"{who}-{n + 1}"
                got[who] = self.update_ours(release) if who == "ours" else self.update_raw(release)
            ours, raw = got["ours"], got["raw"]
            waited = ours["items"][0].get("waited") or {}
            rounds.append({"order": list(order), "raw_wall_s": raw["wall_s"], "raw_server_s": raw["server_s"],
                           "raw_polls": raw["polls"], "raw_server_cpu_s": raw["server_cpu_s"],
                           "ours_wall_s": ours["wall_s"], "ours_task_s": ours["task_s"],
                           "ours_waited_s": waited.get("seconds"), "ours_polls": waited.get("polls"),
                           "ours_server_cpu_s": ours["server_cpu_s"],
                           "ratio_wall": ours["wall_s"] / raw["wall_s"],
                           "ratio_task_to_server": ours["task_s"] / raw["server_s"]})
            print(f"      round {n + 1}: ours {ours['wall_s']:.2f}s wall / {ours['task_s']:.2f}s task "
                  f"(waited {waited.get('seconds')}s), raw {raw['wall_s']:.2f}s wall / {raw['server_s']:.2f}s on "
                  f"the server; ratios {rounds[-1]['ratio_wall']:.3f} / {rounds[-1]['ratio_task_to_server']:.3f}",
                  flush=True)

        def med(key: str) -> float:
            return statistics.median(r[key] for r in rounds)

        res["update"] = {
            "rounds": rounds,
            **{f"{k}_median": med(k) for k in ("raw_wall_s", "raw_server_s", "ours_wall_s", "ours_task_s",
                                               "ours_waited_s", "ratio_wall", "ratio_task_to_server")},
            "ratio_wall_of_medians": med("ours_wall_s") / med("raw_wall_s"),
            "ratio_task_to_server_of_medians": med("ours_task_s") / med("raw_server_s"),
        }

    def cleanup(self) -> None:
        try:
            if self.created:
                self.destroy(self.name)
        finally:
            with contextlib.suppress(OSError):
                for cp in (self.tmp / "cp").glob("*"):  # stop the SSH control masters of the removed server
                    subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={cp}", "x"], capture_output=True,
                                   timeout=10, check=False)
            shutil.rmtree(self.tmp, ignore_errors=True)
        left = self.leftovers()
        if self.name in left:
            raise BenchError(f"server left behind: {self.name}")


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def table(res: dict) -> str:
    m = res["machine"]
    loads = res.get("loadavg", {})
    lines = [
        f"machine: {m['nproc']} CPUs ({m['cpu']}), server: Docker {m['server_docker']}, {m['server_python']}, "
        f"python3-jsondiff {m['server_jsondiff']}; {m['ansible']}, community.docker {m['community.docker']}",
        f"site: {res['site']['stacks']} stacks, {res['site']['services']} services on a single-node swarm; "
        f"niceness {res['config']['niceness']}; load average (1 min) "
        f"{min(v[0] for v in loads.values()):.1f}-{max(v[0] for v in loads.values()):.1f}",
        f"first deploy (swarm_stack, 7 stacks, waited): {res['first_deploy']['wall_s']:.1f}s; the peer's first run "
        f"over it: changed={res['peer_first_run']['changed']}",
    ]
    if "noop" in res:
        lines += noop_table(res)
    if "update" in res:
        lines += update_table(res)
    lines += ["", "problems: " + ("none" if not res["problems"] else "")]
    lines.extend("   - " + p for p in res["problems"])
    if res.get("warnings"):
        lines.append("warnings:")
        lines.extend("   - " + w for w in res["warnings"])
    return "\n".join(lines)


def noop_table(res: dict) -> list[str]:
    nz, cc = res["noop"], res["cli_calls"]
    lines = [
        "",
        f"no-op converge, {res['config']['repeat']} rounds        wall median  wall min  task median  task min"
        "  CPU median  docker calls",
    ]
    for key, label in (("floor", "floor: ansible.builtin.ping loop"), ("swarm_stack", "swarm_stack"),
                       ("docker_stack", "docker_stack")):
        n = nz[key]
        calls = str(cc[key]["docker_calls"]) if key in cc else "0"
        lines.append(f"   {label:<33} {n['wall_median_s']:10.2f}s {n['wall_min_s']:8.2f}s {n['task_median_s']:11.2f}s "
                     f"{n['task_min_s']:8.2f}s {n['cpu_median_s']:10.2f}s {calls:>13}")
    r = nz["ratios"]
    lines.append(f"   (peer - floor) / (ours - floor): task median "
                 f"{r.get('peer_over_ours_task_median_above_floor', float('nan')):.2f}x, wall median "
                 f"{r.get('peer_over_ours_wall_median_above_floor', float('nan')):.2f}x, controller CPU "
                 f"{r.get('peer_over_ours_cpu_median_above_floor', float('nan')):.2f}x (target >= 3x)")
    lines.append(f"   peer / ours, whole: task median {r.get('peer_over_ours_task_median', float('nan')):.2f}x, "
                 f"wall median {r.get('peer_over_ours_wall_median', float('nan')):.2f}x")
    ns = res["noop_on_server"]
    lines.append("   the 7 module runs on the server, without the controller (kept AnsiballZ payloads), median / "
                 "CPU median: " + ", ".join(f"{k} {ns[k]['median_s']:.2f}s / {ns[k]['cpu_median_s']:.2f}s"
                                            for k in ("floor", "swarm_stack", "docker_stack")))
    lines.append(f"      (peer - floor) / (ours - floor): {ns['ratios']['peer_over_ours_median_above_floor']:.2f}x, "
                 f"CPU {ns['ratios']['peer_over_ours_cpu_median_above_floor']:.2f}x; whole: "
                 f"{ns['ratios']['peer_over_ours_median']:.2f}x (target >= 3x)")
    return lines


def update_table(res: dict) -> list[str]:
    up = res["update"]
    return [
        "",
        f"rolling update of {res['site']['update']} (monitor, order: {res['update_monitor']}), "
        f"{len(up['rounds'])} rounds, medians:",
        f"   raw: docker stack deploy + wait loop (poll {res['config']['raw_poll_s']}s): "
        f"{up['raw_wall_s_median']:.2f}s over SSH, {up['raw_server_s_median']:.2f}s on the server",
        f"   swarm_stack (wait: true): {up['ours_wall_s_median']:.2f}s ansible-playbook, "
        f"{up['ours_task_s_median']:.2f}s task, of which waited {up['ours_waited_s_median']:.2f}s",
        f"   ours / raw: wall {up['ratio_wall_median']:.3f} (median of rounds), task / on the server "
        f"{up['ratio_task_to_server_median']:.3f} (target <= 1)",
        "   per round (first: ours wall / raw wall, ours task / raw server): " + "; ".join(
            f"{r['order'][0]}: {r['ours_wall_s']:.1f}/{r['raw_wall_s']:.1f}, {r['ours_task_s']:.1f}/"
            f"{r['raw_server_s']:.1f}" for r in up["rounds"]),
        "   swarm_stack's wait: polls per round " + ",".join(str(r.get("ours_polls")) for r in up["rounds"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the no-op measurements (default 5)")
    parser.add_argument("--update-repeat", type=int, default=5, help="rounds of the update comparison (default 5)")
    parser.add_argument("--raw-poll", type=float, default=1.0,
                        help="the raw wait loop's sleep between polls, seconds (default 1.0)")
    parser.add_argument("--keep", action="store_true", help="keep the server and the temp dir")
    parser.add_argument("--wait-timeout", type=int, default=300, help="wait limit in seconds (default 300)")
    parser.add_argument("--only", choices=("noop", "update"), help="run only the no-op or the update comparison")
    args = parser.parse_args()
    if args.repeat < 1 or args.update_repeat < 1 or args.raw_poll <= 0:
        parser.error("--repeat and --update-repeat must be >= 1, --raw-poll > 0")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = SwarmBench(args.repeat, args.update_repeat, args.wait_timeout, args.keep, raw_poll=args.raw_poll,
                       only=args.only)

    def kept() -> str:
        return (f"kept: server {bench.name}, temp dir {bench.tmp} (inventory.yml, SSH key); remove with "
                f"python3 tests/tools/sandbox.py destroy --name {bench.name} && rm -rf {bench.tmp}")

    return run_and_report(bench, RESULTS, table, kept if args.keep else None)


if __name__ == "__main__":
    sys.exit(main())
