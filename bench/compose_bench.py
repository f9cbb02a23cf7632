"""Benchmark selfhosted.platform.compose_stack against raw Compose and community.docker.docker_compose_v2.

Usage, from the checkout root with the toolchain venv (the real Docker Engine and the shp-test/* images needed):

    .venv/bin/python bench/compose_bench.py [--repeat N] [--deploy-repeat N] [--keep] [--wait-timeout SECONDS]
    (or `make bench`)

    --repeat N        how many times each no-op and check-mode measurement is repeated (default 5)
    --deploy-repeat N rounds of the first-deploy comparison (default 3)
    --keep            leave the stacks running and the temp dir in place (printed at the end); without it
                      everything the benchmark made is removed, also on failure and Ctrl-C
    --wait-timeout S  health wait limit for compose_stack and `docker compose up --wait` (default 120)

One run, on a generated site shaped like seed 003 (7 Compose stacks, 34 services: httpapp with a curl
healthcheck every 2s, redis, postgres with a pg_isready healthcheck, nginx, sleep workers; one network per
stack; every project, container and network named shp-bench-*; project dirs in a temp dir):

1. First deploy, in --deploy-repeat rounds: `docker compose up -d --wait` of the 7 compose files, one after
   the other from one shell (projects shp-bench-raw-*), torn down, and one ansible-playbook run of
   compose_stack over the 7 stacks from empty project dirs (a loop, wait: true; projects shp-bench-*), torn
   down again except in the last round. Which of the two goes first alternates from round to round (raw
   first in the last round). Wall times (median, min) and the ratio ours/raw.
2. No-op converge: compose_stack again over the deployed stacks (every item must be changed=false,
   path fast-noop) vs community.docker.docker_compose_v2 (state present, pull never) over the same project
   dirs and names; the peer deploys once first so its measured runs are real no-ops (changed=0 asserted).
3. The same two no-ops with --check.

Ours and the peer alternate within each repetition, after a floor run: the same 7-item loop with
ansible.builtin.ping (Ansible's own part: playbook start-up and one module dispatch per item). Reported: wall
time of the ansible-playbook process (median, min), the time of the looped task from the ansible.posix.json
callback (the 7 module runs without playbook start-up), the CPU time of the process tree, and peer/ours
ratios, also of the medians minus the floor's (the modules' own cost). Docker CLI calls are counted in one
extra, untimed run of each with a logging `docker` wrapper first on PATH (compose_stack's own cli_calls return
value is cross-checked against it).

A project whose containers are gone but whose network the daemon refuses to remove ("has active endpoints",
a stale endpoint of Docker Engine 20.10 that only a daemon restart clears) is a warning, not a failure.

Every child process runs in its own session and is stopped with its whole process group on a timeout or an
interruption, so no `docker compose up` keeps running while the cleanup removes the projects.

Results: a table on stdout and bench/results/compose_bench.json (git-ignored; partial, with "error", when a
step failed). Exit status 1 when a run failed or a no-op was not a no-op (written to the JSON under
"problems"). The load average is recorded at each step: other work on the machine skews the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "compose_bench.json"
VENV_BIN = ROOT / ".venv" / "bin"
PREFIX = "shp-bench-"
REAL_DOCKER = "/usr/local/bin/docker"
PROJECT_LABEL = "com.docker.compose.project"
PROJECT_FMT = '{{.Label "com.docker.compose.project"}}'  # a docker --format template

IMAGES = {
    "httpapp": "shp-test/httpapp:latest",
    "redis": "shp-test/redis:latest",
    "postgres": "shp-test/postgres:latest",
    "nginx": "shp-test/nginx:latest",
    "sleep": "shp-test/base:bookworm",
}

# Seed 003 shape: 7 stacks, 8+6+5+5+4+3+3 = 34 services. (service name, kind)
STACKS = [
    ("shop", [("proxy", "nginx"), ("web", "httpapp"), ("api", "httpapp"), ("admin", "httpapp"),
              ("cache", "redis"), ("db", "postgres"), ("worker", "sleep"), ("scheduler", "sleep")]),
    ("blog", [("proxy", "nginx"), ("web", "httpapp"), ("api", "httpapp"), ("cache", "redis"),
              ("db", "postgres"), ("worker", "sleep")]),
    ("crm", [("web", "httpapp"), ("api", "httpapp"), ("cache", "redis"), ("db", "postgres"),
             ("worker", "sleep")]),
    ("wiki", [("proxy", "nginx"), ("web", "httpapp"), ("cache", "redis"), ("db", "postgres"),
              ("indexer", "sleep")]),
    ("metrics", [("api", "httpapp"), ("cache", "redis"), ("collector", "sleep"), ("shipper", "sleep")]),
    ("auth", [("web", "httpapp"), ("db", "postgres"), ("mailer", "sleep")]),
    ("status", [("proxy", "nginx"), ("web", "httpapp"), ("probe", "sleep")]),
]


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# the generated site
# ---------------------------------------------------------------------------------------------
def service_definition(kind: str, stack: str, name: str) -> dict:
    svc: dict = {"image": IMAGES[kind], "restart": "unless-stopped", "networks": ["backend"]}
    if kind == "httpapp":
        svc["environment"] = {"PORT": "8080", "APP_NAME": f"{stack}-{name}"}
        svc["healthcheck"] = {"test": ["CMD", "curl", "-fsS", "http://127.0.0.1:8080/health"],
                              "interval": "2s", "timeout": "2s", "retries": 15}
    elif kind == "postgres":
        svc["environment"] = {"POSTGRES_PASSWORD": "bench-only", "POSTGRES_DB": stack}
        svc["healthcheck"] = {"test": ["CMD", "pg_isready", "-U", "postgres", "-h", "127.0.0.1"],
                              "interval": "2s", "timeout": "2s", "retries": 30}
    elif kind == "sleep":
        # sleep as PID 1 ignores SIGTERM; the trap makes `down` quick.
        svc["command"] = ["sh", "-c", "trap 'exit 0' TERM INT; sleep infinity & wait"]
    return svc


def stack_definition(stack: str, services: list[tuple[str, str]]) -> dict:
    return {
        "services": {name: service_definition(kind, stack, name) for name, kind in services},
        "networks": {"backend": {}},
    }


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------
def stop_group(proc: subprocess.Popen) -> None:
    """Terminate a child started in its own session and its process group: SIGTERM first, which
    ansible-playbook passes on to its workers' own process groups (the module and its `docker compose
    up`), SIGKILL when it does not go; nothing keeps creating containers while the benchmark cleans up."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, timeout: float = 600,
        data: str | None = None) -> subprocess.CompletedProcess:
    """Run cmd in its own session (a terminal's Ctrl-C reaches only the benchmark, which stops the
    whole process group on a timeout or an interruption)."""
    with subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except BaseException:
            stop_group(proc)
            raise
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} failed (rc={res.returncode}):\n{(res.stderr or res.stdout)[-4000:]}")
    return res


def docker(*args: str, check: bool = True) -> str:
    return run([REAL_DOCKER, *args], check=check).stdout


def timed(cmd: list[str], **kw) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds (user + system of the whole process tree: every descendant is reaped by
    its parent, so its time lands in RUSAGE_CHILDREN; the daemons' work is not in it) and the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = run(cmd, **kw)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), res


def iso_seconds(start: str, end: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def classify(line: str) -> str:
    """'--host unix:///... compose --ansi never ... up -d' -> 'compose up'; 'image inspect a b' -> 'image inspect'."""
    args = shlex.split(line)
    with_value = {"--host", "-H", "--context", "-c", "--config", "--log-level", "-l", "--ansi", "--progress",
                  "--project-name", "-p", "--project-directory", "--file", "-f", "--env-file", "--profile",
                  "--tlscacert", "--tlscert", "--tlskey"}
    words: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("-"):
            skip = a in with_value
            continue
        words.append(a)
    if not words:
        return "(none)"
    if words[0] in ("compose", "image", "container", "network", "volume") and len(words) > 1:
        return " ".join(words[:2])
    return words[0]


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
def ansible_env(**extra: str) -> dict:
    """The environment of the benchmarks' ansible-playbook runs: the checkout's venv, ansible.cfg and collection
    link, the JSON callback (results are parsed), plus EXTRA."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".build" / "collections"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }, **extra)
    return env


class Findings:
    """What a benchmark run found besides its figures: problems (a check that did not hold: exit status 1) and
    warnings; each printed as it is found."""

    problems: list[str]
    warnings: list[str]

    def warning(self, msg: str) -> None:
        if msg not in self.warnings:
            print("WARNING: " + msg, flush=True)
            self.warnings.append(msg)

    def problem(self, msg: str) -> None:
        print("PROBLEM: " + msg, flush=True)
        self.problems.append(msg)

    def load(self, label: str) -> None:
        raise NotImplementedError

    def finish(self, res: dict, t0: float) -> dict:
        """RES with the findings, the load average at the end, the run's duration (since perf_counter T0) and end."""
        res["problems"] = self.problems
        res["warnings"] = self.warnings
        self.load("end")
        res["duration_s"] = time.perf_counter() - t0
        res["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        return res


class Bench(Findings):
    def __init__(self, repeat: int, wait_timeout: int, keep: bool, deploy_repeat: int = 1):
        self.repeat = repeat
        self.deploy_repeat = deploy_repeat
        self.wait_timeout = wait_timeout
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.projects: set[str] = set()
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.stacks = []
        for name, services in STACKS:
            self.stacks.append({
                "name": name,
                "project": PREFIX + name,
                "raw_project": PREFIX + "raw-" + name,
                "dir": str(self.tmp / "stacks" / name),
                "raw_file": str(self.tmp / "raw" / name / "compose.yaml"),
                "definition": stack_definition(name, services),
                "services": len(services),
            })
        self.vars_file = self.tmp / "vars.json"
        self.wrapper_dir = self.tmp / "bin"
        self.results: dict = {}

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        for s in self.stacks:
            raw = Path(s["raw_file"])
            raw.parent.mkdir(parents=True)
            raw.write_text(json.dumps(s["definition"], indent=2) + "\n")  # JSON is YAML to Compose
        self.vars_file.write_text(json.dumps({
            "ansible_python_interpreter": str(VENV_BIN / "python"),
            "bench_wait_timeout": self.wait_timeout,
            "bench_stacks": [{"project": s["project"], "dir": s["dir"], "definition": s["definition"]}
                             for s in self.stacks],
        }, indent=2))
        self.wrapper_dir.mkdir()
        wrapper = self.wrapper_dir / "docker"
        wrapper.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "$SHP_BENCH_DOCKER_LOG"\nexec {REAL_DOCKER} "$@"\n')
        wrapper.chmod(0o755)

    def machine(self) -> dict:
        version = json.loads(docker("version", "--format", "{{json .}}"))
        cpu = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem_kb = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        ansible_v = run([str(VENV_BIN / "ansible-playbook"), "--version"]).stdout.splitlines()[0]
        peer_manifest = (VENV_BIN.parent / "lib").glob(
            "python*/site-packages/ansible_collections/community/docker/MANIFEST.json")
        peer_version = next((json.loads(p.read_text())["collection_info"]["version"] for p in peer_manifest), None)
        return {
            "nproc": os.cpu_count(),
            "cpu": cpu,
            "mem_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(),
            "docker_server": version["Server"]["Version"],
            "docker_api": version["Server"]["ApiVersion"],
            "docker_client": version["Client"]["Version"],
            "compose": docker("compose", "version", "--short").strip(),
            "ansible": ansible_v,
            "community.docker": peer_version,
            "python": platform.python_version(),
        }

    def preflight(self) -> None:
        missing = [img for img in IMAGES.values()
                   if run([REAL_DOCKER, "image", "inspect", img], check=False).returncode]
        if missing:
            raise BenchError(f"missing local images: {', '.join(missing)} (make images)")
        stale = self.find_projects()
        if stale:
            print(f"removing leftovers of an earlier run: {', '.join(sorted(stale))}", flush=True)
            self.down(stale)

    # -- cleanup ----------------------------------------------------------------------------------
    @staticmethod
    def find_projects() -> set[str]:
        found = set()
        for what in (["ps", "--all"], ["network", "ls"], ["volume", "ls"]):
            out = docker(*what, "--filter", "label=" + PROJECT_LABEL, "--format", PROJECT_FMT, check=False)
            found.update(p for p in out.split() if p.startswith(PREFIX))
        return found

    @staticmethod
    def down_all(projects: list[str]) -> dict[str, str]:
        """`compose down -v` of every project, in parallel (down works from the project name alone);
        {project: error} of the ones that failed."""
        procs = [subprocess.Popen([REAL_DOCKER, "compose", "--project-name", p, "down", "--volumes",
                                   "--remove-orphans", "--timeout", "3"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for p in projects]
        errors = {}
        for p, proc in zip(projects, procs, strict=True):
            err = proc.communicate(timeout=300)[1]
            if proc.returncode:
                errors[p] = err.strip()
        return errors

    def down(self, projects) -> None:
        """Remove the projects; a failure is retried once. A project whose containers are gone but whose
        network the daemon refuses to remove ("has active endpoints": a stale endpoint, a Docker Engine
        bug only a daemon restart clears) is a warning, not a failure: Compose reuses that network."""
        errors = self.down_all(sorted(projects))
        if errors:
            time.sleep(2)
            errors = self.down_all(sorted(errors))
        hard = []
        for p, err in sorted(errors.items()):
            label = "label=" + PROJECT_LABEL + "=" + p
            left = docker("ps", "--all", "--quiet", "--filter", label, check=False).split()
            nets = docker("network", "ls", "--filter", label, "--format", "{{.Name}}", check=False).split()
            if not left and nets and "active endpoints" in err:
                self.warning(f"{p}: the daemon keeps network(s) {', '.join(nets)} with a stale endpoint "
                             "(only a dockerd restart removes it; Compose reuses it)")
            else:
                hard.append(f"{p}: {err[-500:]}")
        if hard:
            raise BenchError("compose down failed: " + "; ".join(hard))

    def cleanup(self) -> None:
        projects = self.projects | self.find_projects()
        try:
            if projects:
                self.down(projects)
        finally:
            # containers, then networks and volumes, outside any project Compose still knows about
            # (belt and braces; a network with containers attached cannot go)
            names = [n for n in docker("ps", "--all", "--format", "{{.Names}}", check=False).split()
                     if n.startswith(PREFIX)]
            if names:
                print(f"removing leftover containers: {', '.join(names)}", flush=True)
                docker("rm", "--force", "--volumes", *names, check=False)
            for kind in ("network", "volume"):
                names = [n for n in docker(kind, "ls", "--format", "{{.Name}}", check=False).split()
                         if n.startswith(PREFIX)]
                if names:
                    docker(kind, "rm", *names, check=False)
            shutil.rmtree(self.tmp, ignore_errors=True)
            left = [n for n in docker("ps", "--all", "--format", "{{.Names}}", check=False).split()
                    if n.startswith(PREFIX)]
            if left:
                raise BenchError(f"containers left behind: {', '.join(left)}")

    # -- measurements -----------------------------------------------------------------------------
    def ansible_env(self, docker_log: Path | None = None) -> dict:
        env = ansible_env()
        if docker_log is not None:
            env["PATH"] = f"{self.wrapper_dir}:{env['PATH']}"
            env["SHP_BENCH_DOCKER_LOG"] = str(docker_log)
        return env

    def playbook(self, name: str, check: bool = False, count_calls: bool = False) -> dict:
        """One ansible-playbook run of bench/playbooks/<name>.yml; wall time, task time and per-item results."""
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", f"@{self.vars_file}",
               str(BENCH / "playbooks" / f"{name}.yml")]
        if check:
            cmd.append("--check")
        log = None
        if count_calls:
            log = self.tmp / f"docker-calls-{name}{'-check' if check else ''}.log"
            log.write_text("")
        wall, cpu, res = timed(cmd, env=self.ansible_env(log), check=False, timeout=900)
        try:
            out = json.loads(res.stdout)
        except ValueError:
            tail = (res.stdout + res.stderr)[-4000:]
            msg = f"{shlex.join(cmd)}: no JSON from ansible-playbook (rc={res.returncode}):\n{tail}"
            raise BenchError(msg) from None
        task = out["plays"][0]["tasks"][0]
        host = task["hosts"]["localhost"]
        items = []
        for r in host.get("results", []):
            items.append({k: r.get(k) for k in ("changed", "failed", "path", "cli_calls", "msg", "waited")}
                         | {"project": (r.get("item") or {}).get("project")})
        stats = out["stats"]["localhost"]
        if res.returncode != 0 or stats["failures"]:
            failed = [i for i in items if i.get("failed")] or [{"msg": host.get("msg")}]
            detail = json.dumps(failed, indent=2)[-4000:]
            raise BenchError(f"{name}{' --check' if check else ''} failed (rc={res.returncode}): {detail}")
        run_result = {
            "wall_s": wall,
            "cpu_s": cpu,
            "task_s": iso_seconds(task["task"]["duration"]["start"], task["task"]["duration"]["end"]),
            "changed": sum(1 for i in items if i["changed"]),
            "items": items,
        }
        if log is not None:
            lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
            kinds: dict[str, int] = {}
            for ln in lines:
                k = classify(ln)
                kinds[k] = kinds.get(k, 0) + 1
            run_result["docker_calls"] = len(lines)
            run_result["docker_calls_by_command"] = dict(sorted(kinds.items()))
        return run_result

    def expect_noop(self, label: str, r: dict, ours: bool) -> None:
        if r["changed"]:
            changed = json.dumps([i for i in r["items"] if i["changed"]])
            self.problem(f"{label}: changed={r['changed']} (expected 0): {changed}")
        if ours:
            want = "check" if "check" in label else "fast-noop"
            odd = [i for i in r["items"] if i["path"] != want]
            if odd:
                self.problem(f"{label}: path is not {want} for {json.dumps(odd)}")

    def verify_running(self, prefix: str) -> dict:
        out = docker("ps", "--all", "--filter", "label=" + PROJECT_LABEL, "--format",
                     PROJECT_FMT + "\t{{.Names}}\t{{.State}}\t{{.Status}}")
        rows = [ln.split("\t") for ln in out.splitlines() if ln.strip()]
        mine = [r for r in rows
                if r[0].startswith(prefix) and (prefix != PREFIX or not r[0].startswith(PREFIX + "raw-"))]
        total = sum(s["services"] for s in self.stacks)
        bad = [r for r in mine if r[2] != "running" or "(unhealthy)" in r[3] or "(health: starting)" in r[3]]
        summary = {"containers": len(mine), "expected": total, "not_ready": [f"{r[1]} {r[3]}" for r in bad]}
        if len(mine) != total or bad:
            self.problem(f"after deploy ({prefix}*): {json.dumps(summary)}")
        return summary

    def raw_deploy(self) -> tuple[float, float, dict]:
        """The 7 `up --wait` one after the other from one shell; wall time, CPU time and seconds per stack."""
        stamps = self.tmp / "raw-up.stamps"
        stamps.unlink(missing_ok=True)
        script = ["set -e"]
        for s in self.stacks:
            script.append(f"date +%s.%N >> {shlex.quote(str(stamps))}")
            script.append(shlex.join([REAL_DOCKER, "compose", "--project-name", s["raw_project"], "--file",
                                      s["raw_file"], "up", "--detach", "--wait", "--wait-timeout",
                                      str(self.wait_timeout), "--pull", "never", "--quiet-pull"]))
        script.append(f"date +%s.%N >> {shlex.quote(str(stamps))}")
        (self.tmp / "raw-up.sh").write_text("\n".join(script) + "\n")
        self.projects.update(s["raw_project"] for s in self.stacks)
        wall, cpu = timed(["sh", str(self.tmp / "raw-up.sh")], timeout=900)[:2]
        t = [float(x) for x in stamps.read_text().split()]
        return wall, cpu, {s["name"]: round(t[i + 1] - t[i], 3) for i, s in enumerate(self.stacks)}

    def first_deploy_raw(self, tag: str) -> tuple[float, float, dict, dict]:
        """One first-deploy round of raw Compose, torn down after: wall, CPU, per stack, readiness."""
        print(f"[1/3] first deploy {tag}: raw docker compose up -d --wait ...", flush=True)
        self.load(f"deploy {tag}, before raw compose")
        raw_s, raw_cpu, raw_per_stack = self.raw_deploy()
        raw_check = self.verify_running(PREFIX + "raw-")
        print(f"      raw compose: {raw_s:.1f}s; tearing down", flush=True)
        self.down([s["raw_project"] for s in self.stacks])
        return raw_s, raw_cpu, raw_per_stack, raw_check

    def first_deploy_ours(self, tag: str, keep: bool) -> tuple[dict, dict]:
        """One first-deploy round of compose_stack from empty project dirs, torn down after unless KEEP
        (the no-op runs converge that deployment): the playbook run and readiness."""
        self.load(f"deploy {tag}, before compose_stack")
        print(f"[1/3] first deploy {tag}: compose_stack (wait: true) ...", flush=True)
        self.reset_project_dirs()
        self.projects.update(s["project"] for s in self.stacks)
        ours = self.playbook("compose_stack")
        ours_check = self.verify_running(PREFIX)
        if ours["changed"] != len(self.stacks):
            self.problem(f"first deploy {tag}: changed={ours['changed']}, expected {len(self.stacks)}")
        odd = [i for i in ours["items"] if i["path"] != "up"]
        if odd:
            self.problem(f"first deploy {tag}: path is not up for {json.dumps(odd)}")
        print(f"      compose_stack: {ours['wall_s']:.1f}s wall, {ours['task_s']:.1f}s task", flush=True)
        if not keep:
            print("      tearing down compose_stack's deployment", flush=True)
            self.down([s["project"] for s in self.stacks])
        return ours, ours_check

    def reset_project_dirs(self) -> None:
        """Remove compose_stack's project dirs, so each of its deploys starts from nothing."""
        for s in self.stacks:
            shutil.rmtree(s["dir"], ignore_errors=True)

    def load(self, label: str) -> None:
        """Record the load average; warn when something else keeps the machine busy."""
        one, five = os.getloadavg()[:2]
        self.results.setdefault("loadavg", {})[label] = [round(one, 2), round(five, 2)]
        if one > 0.5 * (os.cpu_count() or 1):
            print(f"      note: load average {one:.2f} at {label} (other work on this machine skews the figures)",
                  flush=True)

    def execute(self) -> dict:
        t0 = time.perf_counter()
        self.preflight()
        self.prepare()
        res = self.results
        res["machine"] = self.machine()
        res["site"] = {"stacks": len(self.stacks), "services": sum(s["services"] for s in self.stacks),
                       "services_per_stack": {s["name"]: s["services"] for s in self.stacks},
                       "kinds": dict(Counter(kind for _stack, svcs in STACKS for _svc, kind in svcs))}
        res["config"] = {"repeat": self.repeat, "deploy_repeat": self.deploy_repeat,
                         "wait_timeout": self.wait_timeout}
        print(f"site: {res['site']['stacks']} stacks, {res['site']['services']} services "
              f"{res['site']['services_per_stack']}", flush=True)

        # 1. first deploy, in rounds: raw compose, torn down, then compose_stack (torn down too but
        # in the last round, whose deployment the no-op runs converge) --------------------------------
        rounds = []
        for n in range(self.deploy_repeat):
            tag = f"round {n + 1}/{self.deploy_repeat}"
            last = n + 1 == self.deploy_repeat
            # Alternate which goes first, so neither always inherits the other's teardown; the last
            # round runs raw first, so compose_stack's deployment that the no-op runs converge is
            # left with nothing deployed beside it.
            ours_first = n % 2 == 1 and not last
            order = ("ours", "raw") if ours_first else ("raw", "ours")
            steps = {"raw": functools.partial(self.first_deploy_raw, tag),
                     "ours": functools.partial(self.first_deploy_ours, tag, keep=last)}
            got = {who: steps[who]() for who in order}
            raw_s, raw_cpu, raw_per_stack, raw_check = got["raw"]
            ours, ours_check = got["ours"]
            print(f"      round {n + 1}: ratio to raw {ours['wall_s'] / raw_s:.2f} wall, "
                  f"{ours['task_s'] / raw_s:.2f} task", flush=True)
            waited = [i.get("waited") or {} for i in ours["items"]]
            rounds.append({
                "order": list(order),
                "raw_compose_s": raw_s,
                "raw_compose_per_stack_s": raw_per_stack,
                "raw_compose_cpu_s": raw_cpu,
                "compose_stack_wall_s": ours["wall_s"],
                "compose_stack_cpu_s": ours["cpu_s"],
                "compose_stack_task_s": ours["task_s"],
                "ratio_wall": ours["wall_s"] / raw_s,
                "ratio_task": ours["task_s"] / raw_s,
                "compose_stack_cli_calls": sum(i["cli_calls"] or 0 for i in ours["items"]),
                "compose_stack_waited_s": round(sum(w.get("seconds") or 0 for w in waited), 3),
                "compose_stack_wait_events": sorted({w.get("events") or "-" for w in waited}),
                "raw_ready": raw_check,
                "compose_stack_ready": ours_check,
            })
        raws = [r["raw_compose_s"] for r in rounds]
        walls = [r["compose_stack_wall_s"] for r in rounds]
        tasks = [r["compose_stack_task_s"] for r in rounds]
        res["first_deploy"] = {
            "rounds": rounds,
            "raw_compose_median_s": statistics.median(raws),
            "raw_compose_min_s": min(raws),
            "compose_stack_wall_median_s": statistics.median(walls),
            "compose_stack_wall_min_s": min(walls),
            "compose_stack_task_median_s": statistics.median(tasks),
            "compose_stack_task_min_s": min(tasks),
            "ratio_wall_median": statistics.median(walls) / statistics.median(raws),
            "ratio_task_median": statistics.median(tasks) / statistics.median(raws),
            "ratio_wall_min": min(walls) / min(raws),
            "ratio_task_min": min(tasks) / min(raws),
            "raw_compose_cpu_median_s": statistics.median(r["raw_compose_cpu_s"] for r in rounds),
            "compose_stack_cpu_median_s": statistics.median(r["compose_stack_cpu_s"] for r in rounds),
            "ratio_wall_per_round": [r["ratio_wall"] for r in rounds],
            "compose_stack_cli_calls": rounds[-1]["compose_stack_cli_calls"],
        }

        # 2./3. no-op and check-mode no-op -----------------------------------------------------------
        self.load("before no-op runs")
        print("[2/3] counting docker CLI calls (untimed runs with a logging docker wrapper) ...", flush=True)
        calls = {}
        r = self.playbook("compose_stack", count_calls=True)
        self.expect_noop("compose_stack no-op (before the peer ran)", r, ours=True)
        calls["compose_stack"] = r
        r = self.playbook("compose_stack", check=True, count_calls=True)
        self.expect_noop("compose_stack check no-op (before the peer ran)", r, ours=True)
        calls["compose_stack_check"] = r
        print("      peer first run (deploy over the same projects) ...", flush=True)
        peer_first = self.playbook("docker_compose_v2")
        res["peer_first_run"] = {"wall_s": peer_first["wall_s"], "task_s": peer_first["task_s"],
                                 "cpu_s": peer_first["cpu_s"],
                                 "changed": peer_first["changed"]}
        r = self.playbook("docker_compose_v2", count_calls=True)
        self.expect_noop("docker_compose_v2 no-op", r, ours=False)
        calls["docker_compose_v2"] = r
        r = self.playbook("docker_compose_v2", check=True, count_calls=True)
        self.expect_noop("docker_compose_v2 check no-op", r, ours=False)
        calls["docker_compose_v2_check"] = r
        res["cli_calls"] = {}
        for key, r in calls.items():
            entry = {"docker_calls": r["docker_calls"], "per_stack": r["docker_calls"] / len(self.stacks),
                     "by_command": r["docker_calls_by_command"]}
            if key.startswith("compose_stack"):
                entry["module_cli_calls"] = sum(i["cli_calls"] or 0 for i in r["items"])
                if entry["module_cli_calls"] != r["docker_calls"]:
                    self.problem(f"{key}: module reports cli_calls={entry['module_cli_calls']}, "
                                 f"wrapper logged {r['docker_calls']} docker calls")
            res["cli_calls"][key] = entry

        print(f"[3/3] timed no-op runs, {self.repeat} rounds (floor, ours, peer, ours --check, peer --check) ...",
              flush=True)
        runs: dict[str, list[dict]] = {"baseline": [], "compose_stack": [], "docker_compose_v2": [],
                                       "compose_stack_check": [], "docker_compose_v2_check": []}
        for n in range(self.repeat):
            self.load(f"round {n + 1}")
            for key, name, check in (("baseline", "baseline", False),
                                     ("compose_stack", "compose_stack", False),
                                     ("docker_compose_v2", "docker_compose_v2", False),
                                     ("compose_stack_check", "compose_stack", True),
                                     ("docker_compose_v2_check", "docker_compose_v2", True)):
                r = self.playbook(name, check=check)
                self.expect_noop(f"{key.replace('_check', ' check')} round {n + 1}", r,
                                 ours=key.startswith("compose_stack"))
                runs[key].append(r)
            walls = ", ".join(f"{k} {v[-1]['wall_s']:.2f}s" for k, v in runs.items())
            print(f"      round {n + 1}: {walls}", flush=True)
        res["noop"] = {}
        for key, rs in runs.items():
            walls = [r["wall_s"] for r in rs]
            tasks = [r["task_s"] for r in rs]
            cpus = [r["cpu_s"] for r in rs]
            res["noop"][key] = {"wall_s": walls, "task_s": tasks, "cpu_s": cpus, "changed": [r["changed"] for r in rs],
                                "cpu_median_s": statistics.median(cpus),
                                "wall_median_s": statistics.median(walls), "wall_min_s": min(walls),
                                "task_median_s": statistics.median(tasks), "task_min_s": min(tasks),
                                "task_per_stack_median_s": statistics.median(tasks) / len(self.stacks)}
        res["ratios"] = {}
        floor = res["noop"]["baseline"]
        for mode, ours_key, peer_key in (("noop", "compose_stack", "docker_compose_v2"),
                                         ("check", "compose_stack_check", "docker_compose_v2_check")):
            o, p = res["noop"][ours_key], res["noop"][peer_key]
            above = {k: (p[k] - floor[k], o[k] - floor[k]) for k in ("task_median_s", "cpu_median_s")}
            res["ratios"][mode] = {
                # the modules' own cost: each median minus the ping loop's (Ansible's part)
                "peer_over_ours_task_median_above_floor": above["task_median_s"][0] / above["task_median_s"][1],
                "peer_over_ours_cpu_median_above_floor": above["cpu_median_s"][0] / above["cpu_median_s"][1],
                "peer_over_ours_wall_median": p["wall_median_s"] / o["wall_median_s"],
                "peer_over_ours_wall_min": p["wall_min_s"] / o["wall_min_s"],
                "peer_over_ours_task_median": p["task_median_s"] / o["task_median_s"],
                "peer_over_ours_task_min": p["task_min_s"] / o["task_min_s"],
                "peer_over_ours_cpu_median": p["cpu_median_s"] / o["cpu_median_s"],
            }
        return self.finish(res, t0)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def table(res: dict) -> str:
    fd, nz, cc, m = res["first_deploy"], res["noop"], res["cli_calls"], res["machine"]
    lines = [
        f"machine: {m['nproc']} CPUs ({m['cpu']}), Docker {m['docker_server']} (API {m['docker_api']}, "
        f"CLI {m['docker_client']}), Compose {m['compose']}, {m['ansible']}, community.docker {m['community.docker']}",
        f"site: {res['site']['stacks']} stacks, {res['site']['services']} services",
        "",
        f"1. first deploy (7 stacks, health-gated), {len(fd['rounds'])} rounds    median       min   ours/raw",
        f"   raw `docker compose up -d --wait` x7       {fd['raw_compose_median_s']:7.2f}s "
        f"{fd['raw_compose_min_s']:8.2f}s",
        f"   compose_stack playbook (wall)              {fd['compose_stack_wall_median_s']:7.2f}s "
        f"{fd['compose_stack_wall_min_s']:8.2f}s   {fd['ratio_wall_median']:.2f} median, "
        f"{fd['ratio_wall_min']:.2f} min (target <= 1.15)",
        f"   compose_stack task (7 module runs)         {fd['compose_stack_task_median_s']:7.2f}s "
        f"{fd['compose_stack_task_min_s']:8.2f}s   {fd['ratio_task_median']:.2f} median, "
        f"{fd['ratio_task_min']:.2f} min",
        "   per round (first / raw / wall / task): " + "; ".join(
            f"{r['order'][0]} / {r['raw_compose_s']:.1f} / {r['compose_stack_wall_s']:.1f} / "
            f"{r['compose_stack_task_s']:.1f}s" for r in fd["rounds"]),
        "   compose_stack's health waits, summed over the 7 stacks (median): "
        f"{statistics.median(r['compose_stack_waited_s'] for r in fd['rounds']):.2f}s, event stream "
        + ",".join(sorted({e for r in fd["rounds"] for e in r["compose_stack_wait_events"]})),
        f"   CPU time of the process tree, median: raw {fd['raw_compose_cpu_median_s']:.2f}s, "
        f"compose_stack {fd['compose_stack_cpu_median_s']:.2f}s",
        "",
        f"2./3. no-op converge, {res['config']['repeat']} runs each     "
        "wall median  wall min  task median  task min  CPU median  docker calls",
    ]
    for key, label in (("baseline", "floor: ansible.builtin.ping loop"),
                       ("compose_stack", "compose_stack"), ("docker_compose_v2", "docker_compose_v2"),
                       ("compose_stack_check", "compose_stack --check"),
                       ("docker_compose_v2_check", "docker_compose_v2 --check")):
        n = nz[key]
        ncalls = str(cc[key]["docker_calls"]) if key in cc else "0"
        lines.append(f"   {label:<36} {n['wall_median_s']:10.2f}s {n['wall_min_s']:8.2f}s "
                     f"{n['task_median_s']:11.2f}s {n['task_min_s']:8.2f}s {n['cpu_median_s']:10.2f}s "
                     f"{ncalls:>13}")
    for mode in ("noop", "check"):
        r = res["ratios"][mode]
        lines.append(f"   peer/ours {mode:<6} wall median {r['peer_over_ours_wall_median']:.2f}x, "
                     f"wall min {r['peer_over_ours_wall_min']:.2f}x, "
                     f"task median {r['peer_over_ours_task_median']:.2f}x, "
                     f"task min {r['peer_over_ours_task_min']:.2f}x, CPU median {r['peer_over_ours_cpu_median']:.2f}x "
                     "(target >= 3x)")
        lines.append(f"   {'':<16} above the floor: task median {r['peer_over_ours_task_median_above_floor']:.2f}x, "
                     f"CPU median {r['peer_over_ours_cpu_median_above_floor']:.2f}x")
    pf = res["peer_first_run"]
    lines.append(f"   peer first run over compose_stack's deployment: changed={pf['changed']}, {pf['wall_s']:.2f}s")
    lines.append("")
    lines.append("problems: " + ("none" if not res["problems"] else ""))
    lines.extend("   - " + p for p in res["problems"])
    if res.get("warnings"):
        lines.append("warnings:")
        lines.extend("   - " + w for w in res["warnings"])
    return "\n".join(lines)


def run_and_report(bench, results: Path, report, kept=None) -> int:
    """Run BENCH (execute, then cleanup unless KEPT is given), print REPORT(results) and write them to RESULTS
    (partial, with "error", when a step failed); KEPT() says what was left in place. The exit status: 0, 1 when a
    run failed or a check did not hold (bench.problems), 130 when interrupted. Shared by the bench scripts."""
    status = 0
    results.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = bench.execute()
        results.write_text(json.dumps(res, indent=2) + "\n")
        print()
        print(report(res))
        print(f"\nresults: {results.relative_to(ROOT)}")
        status = 1 if res["problems"] else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        partial = dict(bench.results, problems=bench.problems, warnings=bench.warnings, error=str(exc))
        results.write_text(json.dumps(partial, indent=2) + "\n")
        print(f"partial results: {results.relative_to(ROOT)}", file=sys.stderr)
        status = 1
    finally:
        if kept is not None:
            print(kept())
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("cleaning up ...", flush=True)
            try:
                bench.cleanup()
            except (BenchError, subprocess.TimeoutExpired) as exc:
                print(f"cleanup failed: {exc}", file=sys.stderr)
                status = status or 1
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each no-op measurement (default 5)")
    parser.add_argument("--deploy-repeat", type=int, default=3,
                        help="rounds of the first-deploy comparison (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the stacks and the temp dir")
    parser.add_argument("--wait-timeout", type=int, default=120, help="health wait limit in seconds (default 120)")
    args = parser.parse_args()
    if args.repeat < 1 or args.deploy_repeat < 1:
        parser.error("--repeat and --deploy-repeat must be >= 1")
    if not shutil.which(REAL_DOCKER):
        parser.error(f"{REAL_DOCKER} not found")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args.repeat, args.wait_timeout, args.keep, deploy_repeat=args.deploy_repeat)

    def kept() -> str:
        projects = ", ".join(sorted(bench.projects)) or "none"
        return (f"kept: projects {projects}, temp dir {bench.tmp} (clean up: docker compose -p NAME down -v; "
                "rm -rf DIR)")

    return run_and_report(bench, RESULTS, table, kept if args.keep else None)


if __name__ == "__main__":
    sys.exit(main())
