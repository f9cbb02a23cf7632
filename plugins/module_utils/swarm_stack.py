# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The executor of the swarm_stack module: read the swarm through the Engine API, plan with swarm_plan, and act
with the docker CLI (``docker stack deploy``, ``docker secret/config create`` with the content on stdin).

Everything outside goes through three boundaries: ``api`` (compose_cli.EngineAPI over the manager's unix socket),
``runner(args, data=None, environ=None) -> (rc, out, err)`` for the docker CLI, and ``probe`` (IPVS detection,
reading /proc and /lib/modules). Unit tests fake all three (tests/unit/test_swarm_stack.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time

from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_plan as sp
from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import (
    EngineAPI,
    EngineAPIError,
    engine_socket,
    unix_socket_transport,
)
from ansible_collections.selfhosted.platform.plugins.module_utils.stack_common import (
    HAS_YAML,
    MASK,
    _FastDumper,
    atomic_write,
    mask_text,
    mask_value,
    read_text,
    yaml,
)

STACK_FILE = "docker-stack.yml"
# The wait's poll: a GET /services and a GET /tasks on the manager's socket, a few milliseconds each (compose_stack
# polls the API as often). A rolling update ends when Swarm marks it completed; a shorter poll notices that sooner.
WAIT_INTERVAL = 0.25
LOG_TAIL = 20
UNSUPPORTED = re.compile(r"Ignoring (unsupported|deprecated) options?: ([^\n]+)")
# What the daemon answers when the managers have no quorum: swarmkit's raft errors (a leader that steps down while a
# write waits: "raft: failed to process the request: node lost leader status"; "raft: no elected cluster leader") and
# the daemon's own "The swarm does not have a leader". A write in the seconds after the managers went away, before the
# leader notices, fails with the first one: the reads before the deploy still answered, from a leader that had not yet
# stepped down.
REGAIN = "make more than half of the managers reachable again, then rerun"
QUORUM_LOST = re.compile(r"raft: failed to process the request|no elected cluster leader|does not have a leader|"
                         r"lost leader status", re.IGNORECASE)


class SwarmFailure(Exception):
    def __init__(self, msg, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def render_stack(doc):
    header = "# Managed by selfhosted.platform.swarm_stack; local edits are overwritten.\n"
    if HAS_YAML:
        return header + yaml.dump(doc, Dumper=_FastDumper, sort_keys=False, default_flow_style=False,
                                  allow_unicode=True, width=1000)
    return sp.render_yaml_free(doc)


def render_env(env):
    """The env file docker stack deploy reads (KEY=value taken literally, see swarm_plan.parse_env_file)."""
    lines = ["# Managed by selfhosted.platform.swarm_stack (mode 0600); local edits are overwritten."]
    for key in sorted(env):
        lines.append("%s=%s" % (key, env[key]))
    return "\n".join(lines) + "\n"


def ipvs_support(exists=os.path.exists, read=read_text, release=None):
    """Whether the kernel of the node this runs on has IPVS (Swarm's VIPs and ingress routing mesh need it), and
    why. The rule: /proc/net/ip_vs exists (the module is loaded or built in), or ip_vs is listed in /proc/modules,
    or the kernel's modules.builtin names it, or its module file exists under /lib/modules/<release> (the kernel
    loads it on first use), or /boot/config-<release> sets CONFIG_IP_VS. Nothing of that: no IPVS."""
    release = release or os.uname().release
    if exists("/proc/net/ip_vs"):
        return True, "/proc/net/ip_vs exists"
    if re.search(r"^ip_vs\s", read("/proc/modules") or "", re.MULTILINE):
        return True, "ip_vs is loaded (/proc/modules)"
    base = "/lib/modules/%s" % release
    if "/ip_vs.ko" in (read(base + "/modules.builtin") or ""):
        return True, "ip_vs is built into kernel %s" % release
    for ext in ("", ".xz", ".zst", ".gz"):
        if exists("%s/kernel/net/netfilter/ipvs/ip_vs.ko%s" % (base, ext)):
            return True, "kernel %s has the ip_vs module" % release
    if re.search(r"^CONFIG_IP_VS=[ym]", read("/boot/config-%s" % release) or "", re.MULTILINE):
        return True, "/boot/config-%s sets CONFIG_IP_VS" % release
    return False, ("no /proc/net/ip_vs, ip_vs not in /proc/modules, no ip_vs module or CONFIG_IP_VS for kernel %s"
                   % release)


class SwarmStack:
    """One swarm_stack invocation."""

    def __init__(self, params, runner, api, check_mode=False, diff_mode=False, probe=None, environ=None,
                 sleep=time.sleep, clock=time.monotonic, warn=None):
        self.p = params
        self.runner = runner
        self.api = api
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.probe = probe or ipvs_support
        self.environ = dict(os.environ if environ is None else environ)
        self.sleep = sleep
        self.clock = clock
        self.warn = warn or (lambda msg: None)
        self.stack = params["project_name"]
        self.project_dir = os.path.abspath(params["project_dir"])
        self.stack_file = os.path.join(self.project_dir, STACK_FILE)
        self.env_path = os.path.join(self.project_dir, params.get("env_file_name") or ".env")
        self.env = {str(k): "" if v is None else str(v) for k, v in (params.get("env") or {}).items()}
        self.cli_calls = 0
        self.deploys = 0
        self.writes = []  # the swarm writes this run made, in order (what a failure part-way has already changed)
        self.wanted = {"configs": set(), "secrets": set()}
        # What is masked: every env value, every secret, and the values of the env file being replaced (a secret
        # that changes stays masked on the before side of a diff).
        previous = [v for _k, v in sp.parse_env_file(read_text(self.env_path)) if v] if params.get("env") else []
        self.secrets = sorted({v for v in self.env.values() if v} | set(previous) |
                              {str(v) for v in (params.get("secrets") or {}).values() if v not in (None, "")},
                              key=lambda v: (-len(v), v))
        self.result = {"changed": False, "stack": self.stack, "project_dir": self.project_dir,
                       "stack_file": self.stack_file, "rolled_back": False, "rolled_back_services": [],
                       "plan": [], "translated": [], "services": {}, "path": None,
                       "configs": {"created": [], "pruned": []}, "secrets": {"created": [], "pruned": []}}

    # -- plumbing -------------------------------------------------------------------------------
    def masked(self, value):
        return mask_value(value, self.secrets)

    def docker(self, args, data=None, environ=None, check=True, what=None, write=False):
        """Run the docker CLI. WRITE: the call changes the swarm (recorded in self.writes when it succeeds; when it
        fails because the managers have no quorum, the failure says so and what this run had already changed)."""
        self.cli_calls += 1
        what = what or "docker " + " ".join(args[:3])
        rc, out, err = self.runner(["docker", *args], data=data, environ=environ)
        text = mask_text((err or out or "").strip(), self.secrets)
        if rc != 0 and write and QUORUM_LOST.search(text):
            # docker stack deploy prints each step before it makes it (Creating network, Updating service): the
            # steps before the refused one went through
            started = [ln.strip() for ln in (out or "").splitlines() if ln.strip()] if err else []
            raise self.quorum_lost(what, text, started[:-1])
        if check and rc != 0:
            raise SwarmFailure("%s failed (rc=%s): %s" % (what, rc, text))
        if rc == 0 and write:
            self.writes.append(what)
        return rc, out, err

    def quorum_probe(self, nothing="nothing was deployed"):
        """Prove the managers can commit a write now, before this run writes anything (its files included): create a
        small config labelled as this stack's and remove it again, through the Engine API (a few milliseconds).

        Why: for some seconds after more than half of the managers went away without closing their connections (a
        partition, a frozen host), the leader has not noticed. It still answers the reads, lists every manager
        reachable, and takes writes into its log, where they wait until it steps down ("node lost leader status").
        Such a write is not refused: it may still be applied when the managers return, so a deploy in that window
        could change the stack later, after this run reported a failure. The probe meets that window instead, and
        what it may leave behind is only itself - a config of this stack that no service uses, which the next run's
        prune removes."""
        name = "%s_quorum-probe_%s" % (self.stack, os.urandom(6).hex())
        doc = {"Name": name, "Labels": {sp.NAMESPACE_LABEL: self.stack, sp.OBJECT_LABEL: "quorum-probe"},
               "Data": base64.b64encode(b"selfhosted.platform.swarm_stack quorum probe\n").decode("ascii")}
        try:
            _status, created = self.api.send("POST", "/configs/create", doc, allow=(201,))
            self.api.send("DELETE", "/configs/%s" % ((created or {}).get("ID") or name), allow=(200, 204, 404))
        except EngineAPIError as exc:
            if QUORUM_LOST.search(str(exc)):
                raise SwarmFailure("%s: the swarm managers have lost quorum (a test write before the first change "
                                   "failed: %s); %s (a config %s may appear once they are back: the next run removes "
                                   "it)" % (nothing, exc, REGAIN, name), quorum_lost=True) from exc
            raise SwarmFailure("%s: the test write before the first change failed: %s" % (nothing, exc)) from exc

    def quorum_lost(self, what, text, started=()):
        """The failure of a write refused because the managers have no quorum. Without quorum no write can succeed,
        so when it is this run's first write, nothing was deployed."""
        done = list(self.writes) + ["%s: %s" % (what, step) for step in started]
        done = "nothing was deployed" if not done else "this run had already done: %s" % "; ".join(done)
        pending = (" (the leader stepped down with that write pending: Swarm may still apply it once the managers are "
                   "back; the rerun compares with what Swarm has then)" if "lost leader status" in text else "")
        return SwarmFailure("%s: the swarm managers have lost quorum (%s failed: %s)%s; %s" % (
            done, what, text, pending, REGAIN), quorum_lost=True)

    def get(self, path, params=None, allow=(200,)):
        return self.api.get(path, params, allow=allow)[1]

    def label_filter(self, *labels):
        return {"filters": json.dumps({"label": list(labels)})}

    # -- reads ----------------------------------------------------------------------------------
    def swarm_info(self):
        """/info; fails unless this node is an active manager."""
        info = self.get("/info") or {}
        swarm = info.get("Swarm") or {}
        state = swarm.get("LocalNodeState") or "inactive"
        if state != "active":
            return info, "this node is not part of an active swarm (LocalNodeState %s): run the swarm role first" % (
                state)
        if not swarm.get("ControlAvailable"):
            return info, ("this node is a swarm worker, not a manager: docker stack deploy runs on a manager "
                          "(delegate the task to one)")
        return info, None

    def nodes(self):
        try:
            return self.get("/nodes"), None
        except EngineAPIError as exc:
            return [], "the swarm managers cannot answer, quorum is probably lost (%s)" % exc

    def services(self):
        return self.get("/services", self.label_filter("%s=%s" % (sp.NAMESPACE_LABEL, self.stack))) or []

    def tasks(self, service_ids):
        if not service_ids:
            return []
        return self.get("/tasks", {"filters": json.dumps({"service": list(service_ids)})}) or []

    def objects(self, kind):
        """This stack's configs or secrets that the module created (its label), {name: id}."""
        rows = self.get("/%s" % kind, self.label_filter("%s=%s" % (sp.NAMESPACE_LABEL, self.stack), sp.OBJECT_LABEL))
        return {(r.get("Spec") or {}).get("Name"): r.get("ID") for r in rows or []}

    def source_files(self, definition):
        """{path as declared: bytes or None} of the file sources of the definition's configs and secrets."""
        out = {}
        for kind in ("configs", "secrets"):
            for spec in (definition.get(kind) or {}).values():
                path = (spec or {}).get("file")
                if path and path not in out:
                    full = path if os.path.isabs(path) else os.path.join(self.project_dir, path)
                    try:
                        with open(full, "rb") as fh:
                            out[path] = fh.read()
                    except OSError:
                        out[path] = None
        return out

    def env_files(self, doc, env_text):
        """{path as declared: text} of the services' env files; the managed one as it is about to be written."""
        out = {}
        for svc in doc["services"].values():
            for path in sp._as_list(svc.get("env_file")):
                full = os.path.normpath(path if os.path.isabs(path) else os.path.join(self.project_dir, path))
                if env_text is not None and full == os.path.normpath(self.env_path):
                    out[path] = env_text
                else:
                    text = read_text(full)
                    if text is None:
                        raise SwarmFailure("service env_file %s does not exist (%s)" % (path, full))
                    out[path] = text
        return out

    # -- the run --------------------------------------------------------------------------------
    def options(self):
        p = self.p
        return {"endpoint_mode": p.get("endpoint_mode") or "auto", "ignore_keys": p.get("ignore_keys") or [],
                "stateful_services": p.get("stateful_services") or [],
                "stateful_label": p.get("stateful_label"), "stateful_label_value": p.get("stateful_label_value"),
                "update_config": p.get("update_config") or {}, "rollback_config": p.get("rollback_config") or {},
                "configs": p.get("configs") or {}, "secrets": p.get("secrets") or {}}

    def execute(self):
        try:
            if self.p.get("state", "present") == "absent":
                self.absent()
            else:
                self.present()
        except SwarmFailure as exc:
            exc.msg, exc.result = self.masked(exc.msg), self.masked(dict(self.result, **exc.result))
            exc.result.update(cli_calls=self.cli_calls, api_calls=self.api.calls)
            raise
        self.result.update(cli_calls=self.cli_calls, api_calls=self.api.calls)
        return self.masked(self.result)

    def present(self):
        p = self.p
        definition = p.get("definition") or {}
        bad_env = sorted(k for k, v in self.env.items() if "\n" in v or "\r" in v)
        if bad_env:
            raise SwarmFailure("env %s: a value with a line break cannot be written to the env file docker stack "
                               "deploy reads; give it as a secret" % ", ".join(bad_env))
        ipvs, ipvs_reason = self.probe()
        self.result["ipvs"] = ipvs
        try:
            built = sp.build_stack(self.stack, definition, self.options(), ipvs, ipvs_reason,
                                   self.source_files(definition), self.env)
        except sp.PlanError as exc:
            raise SwarmFailure("the definition cannot be deployed as a stack: %s" % "; ".join(exc.problems),
                               problems=exc.problems) from exc
        contents = {o["content"].decode("utf-8", "replace") for o in built["secrets"].values() if o["content"]}
        self.secrets = sorted(set(self.secrets) | {c for c in contents if c}, key=lambda v: (-len(v), v))
        self.result.update(translated=built["translated"], endpoint_mode=built["endpoint_mode"],
                           endpoint_reason=built["endpoint_reason"])
        doc = sp.add_hash_labels(built["doc"])
        environ = dict(self.environ, **self.env)
        missing = set()
        try:
            doc_i = sp.interpolate(doc, environ, missing)
        except sp.PlanError as exc:
            raise SwarmFailure("; ".join(exc.problems)) from exc
        for name in sorted(missing):
            self.warn("variable %s is not set: docker stack deploy uses an empty string" % name)
        env_text = render_env(self.env) if p.get("env") is not None else None
        objects = {"configs": built["configs"], "secrets": built["secrets"]}
        self.wanted = {kind: {o["name"] for o in objects[kind].values()} for kind in objects}
        env_files = self.env_files(doc_i, env_text)
        desired = {name: sp.desired_service(self.stack, name, svc, doc_i, objects, env_files, environ,
                                            self.project_dir)
                   for name, svc in doc_i["services"].items()}

        # the swarm: an active manager with quorum, nodes that can take the placement
        info, problem = self.swarm_info()
        if problem:
            if self.check_mode and ((info.get("Swarm") or {}).get("LocalNodeState") or "inactive") == "inactive":
                self.warn("check mode: %s; every service is predicted as created" % problem)
                self.result["plan"] = [{"service": n, "action": sp.CREATE, "fields": []} for n in sorted(desired)]
                self.result.update(changed=True, path="check", swarm_missing=True)
                return
            raise SwarmFailure(problem)
        nodes, problem = self.nodes()
        problem = problem or sp.quorum_problem(nodes)
        if problem:
            raise SwarmFailure("nothing was deployed: %s" % problem)
        problems = sp.constraint_problems(doc_i, nodes)
        networks = self.get("/networks") or []
        problems += self.network_problems(doc_i, networks)
        if problems:
            raise SwarmFailure("nothing was deployed: %s" % "; ".join(problems), problems=problems)

        # compare
        netnames = {n.get("Id"): n.get("Name") for n in networks}
        services = self.services()
        current = {sp.stack_service_name(self.stack, (s.get("Spec") or {}).get("Name") or ""):
                   sp.current_service(s.get("Spec") or {}, netnames) for s in services}
        steps = sp.plan(self.stack, desired, current, prune=p.get("prune", True))
        self.result["plan"] = steps
        existing = {kind: self.objects(kind) for kind in ("configs", "secrets")}
        in_use = self.in_use(services)
        creates, prunes = {}, {}
        for kind in ("configs", "secrets"):
            creates[kind], prunes[kind] = sp.objects_plan(objects[kind], existing[kind], in_use[kind])
        text = render_stack(doc)
        before = read_text(self.stack_file)
        before_env = read_text(self.env_path) if env_text is not None else None
        files_changed = [f for f, old, new in ((self.stack_file, before, text), (self.env_path, before_env, env_text))
                         if new is not None and old != new]
        self.result["files_changed"] = files_changed
        changing = sp.is_changing(steps) or any(creates.values())
        if self.diff_mode:
            self.add_diff(before, text, steps, desired, current)
        self.result["services"] = {s["service"]: {"action": s["action"], "fields": s["fields"]} for s in steps}
        for kind in ("configs", "secrets"):
            self.result[kind] = {"created": creates[kind], "pruned": prunes[kind]}
        if not changing and not files_changed and not any(prunes.values()):
            self.result.update(path="fast-noop")
            self.summarise(services)
            return
        self.result["changed"] = True
        if self.check_mode:
            self.result["path"] = "check"
            return
        if changing:
            self.quorum_probe()
        self.write_files(text, env_text)
        if not changing:
            self.result["path"] = "files-only" if files_changed else "prune"
            self.prune(existing)
            return
        for kind in ("configs", "secrets"):
            by_name = {o["name"]: (src, o) for src, o in objects[kind].items()}
            for name in creates[kind]:
                src, obj = by_name[name]
                self.docker([kind[:-1], "create", "--label", "%s=%s" % (sp.NAMESPACE_LABEL, self.stack),
                             "--label", "%s=%s" % (sp.OBJECT_LABEL, src), name, "-"], data=obj["content"],
                            what="docker %s create %s" % (kind[:-1], name), write=True)
        since = sp.timestamp_seconds(info.get("SystemTime"))
        args = ["stack", "deploy", "--compose-file", self.stack_file, "--with-registry-auth",
                "--resolve-image", p.get("resolve_image") or "always"]
        if p.get("prune", True):
            args.append("--prune")
        self.deploys += 1
        _rc, out, err = self.docker(args + [self.stack], environ=self.env, what="docker stack deploy", write=True)
        for m in UNSUPPORTED.finditer((err or "") + (out or "")):
            self.warn("docker stack deploy: Ignoring %s options: %s" % (m.group(1), m.group(2)))
        self.result["path"] = "deploy"
        if p.get("wait", True):
            self.wait(since)
        else:
            self.summarise(self.services())
        self.prune()

    def network_problems(self, doc, networks):
        by_name = {n.get("Name"): n for n in networks}
        out = []
        for name, spec in sorted((doc.get("networks") or {}).items()):
            if not (spec or {}).get("external"):
                continue
            real = sp._scoped(self.stack, name, spec)
            net = by_name.get(real)
            if net is None:
                out.append("network %s: external network %s does not exist (create it as an overlay network)" % (
                    name, real))
            elif net.get("Scope") != "swarm":
                out.append("network %s: %s is a %s-scoped %s network; a stack needs a swarm-scoped (overlay) network"
                           % (name, real, net.get("Scope"), net.get("Driver")))
        return out

    def in_use(self, services):
        used = {"configs": set(), "secrets": set()}
        for s in services:
            cs = ((s.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
            used["configs"] |= {r.get("ConfigName") for r in cs.get("Configs") or []}
            used["secrets"] |= {r.get("SecretName") for r in cs.get("Secrets") or []}
        return used

    def write_files(self, text, env_text):
        if not os.path.isdir(self.project_dir):
            os.makedirs(self.project_dir, mode=0o700)
        if env_text is not None:
            atomic_write(self.env_path, env_text, 0o600)
        atomic_write(self.stack_file, text, 0o600)

    def prune(self, existing=None):
        """Remove this stack's hashed configs and secrets that neither the definition nor a service uses."""
        services = self.services()
        in_use = self.in_use(services)
        for kind in ("configs", "secrets"):
            have = existing[kind] if existing else self.objects(kind)
            wanted = self.wanted[kind]
            pruned = []
            for name in sorted(set(have) - wanted - in_use[kind]):
                rc, out, err = self.docker([kind[:-1], "rm", name], check=False, write=True)
                if rc == 0:
                    pruned.append(name)
                else:
                    self.warn("could not remove %s %s: %s" % (kind[:-1], name, (err or out).strip()))
            self.result[kind]["pruned"] = pruned

    def summarise(self, services, states=None):
        for s in services:
            name = sp.stack_service_name(self.stack, (s.get("Spec") or {}).get("Name") or "")
            row = self.result["services"].setdefault(name, {"action": sp.UNCHANGED, "fields": []})
            row["image"] = ((s.get("Spec") or {}).get("Labels") or {}).get(sp.IMAGE_LABEL)
            row["update_state"] = (s.get("UpdateStatus") or {}).get("State")
            if states and name in states:
                st = states[name]
                row.update(running=st["running"], desired=st["desired"], state=st["state"])

    def wait(self, since):
        """Until every service of the stack has converged (swarm_plan.service_state), or one is rolled back or
        paused and the others have settled, or the timeout."""
        start = self.clock()
        deadline = start + (self.p.get("wait_timeout") or 300)
        polls = 0
        notes = {}  # service -> the update status messages seen (the reason of a rollback shows only while it runs)
        while True:
            polls += 1
            try:
                services = self.services()
                tasks = self.tasks([s.get("ID") for s in services])
            except EngineAPIError as exc:
                if QUORUM_LOST.search(str(exc)):
                    raise SwarmFailure("%s, then the swarm managers lost quorum while the run waited for the services "
                                       "to converge (%s); %s" % ("; ".join(self.writes), exc, REGAIN),
                                       quorum_lost=True) from exc
                raise
            states = {}
            for s in services:
                name = sp.stack_service_name(self.stack, (s.get("Spec") or {}).get("Name") or "")
                mine = [t for t in tasks if t.get("ServiceID") == s.get("ID")]
                states[name] = sp.service_state(s, mine, since)
                seen = notes.setdefault(name, [])
                if states[name]["note"] and states[name]["note"] not in seen:
                    seen.append(states[name]["note"])
                states[name]["notes"] = seen
            settled = all(st["state"] in ("converged", "rolled_back", "paused") for st in states.values())
            now = self.clock()
            if settled or now >= deadline:
                break
            self.sleep(WAIT_INTERVAL)
        self.result["waited"] = {"seconds": round(self.clock() - start, 2), "polls": polls}
        self.summarise(services, states)
        bad = {n: st for n, st in states.items() if st["state"] != "converged"}
        if not bad:
            return
        rolled = sorted(n for n, st in bad.items() if st["state"] in ("rolled_back", "rollback"))
        logs = {n: self.log_tail(n, st["failing"]) for n, st in sorted(bad.items())}
        keys = ("state", "running", "desired", "update_state", "failing", "notes")
        self.result["failed_services"] = {n: {k: st[k] for k in keys} for n, st in bad.items()}
        self.result["rolled_back"] = bool(rolled)
        self.result["rolled_back_services"] = rolled
        head = ("the update failed and Swarm rolled back %s" % ", ".join(rolled) if rolled else
                "services did not converge within %ss" % self.p.get("wait_timeout") if not settled else
                "services did not converge")
        raise SwarmFailure("%s: %s" % (head, sp.wait_message(states, self.p.get("wait_timeout"), 0, logs)))

    def log_tail(self, name, failing=()):
        """The last lines the failing release logged: its latest failing task's (``docker service logs`` takes a task
        id), else the service's."""
        target = failing[0]["task"] if failing and failing[0].get("task") else "%s_%s" % (self.stack, name)
        rc, out, err = self.docker(["service", "logs", "--tail", str(LOG_TAIL), "--no-trunc", target], check=False)
        if rc != 0:
            return ["(docker service logs failed: %s)" % (err or out).strip()]
        lines = [ln for ln in ((out or "") + (err or "")).splitlines() if ln.strip()]
        return [mask_text(ln, self.secrets) for ln in lines[-LOG_TAIL:]]

    def add_diff(self, before, after, steps, desired, current):
        diffs = [{"before_header": "%s (before)" % self.stack_file, "after_header": "%s (after)" % self.stack_file,
                  "before": mask_text(before or "", self.secrets), "after": mask_text(after, self.secrets)}]
        before_plan, after_plan = [], []
        for s in steps:
            if s["action"] == sp.UPDATE:
                changes = sp.field_changes(desired[s["service"]], current[s["service"]], s["fields"])
                for field, ch in changes.items():
                    before_plan.append("%s.%s: %s" % (s["service"], field, json.dumps(ch["before"], sort_keys=True)))
                    after_plan.append("%s.%s: %s" % (s["service"], field, json.dumps(ch["after"], sort_keys=True)))
        diffs.append({"before_header": "services (Swarm now)", "after_header": "plan",
                      "before": mask_text("\n".join(before_plan) + ("\n" if before_plan else ""), self.secrets),
                      "after": mask_text(sp.plan_text(steps) + "\n".join(after_plan) + ("\n" if after_plan else ""),
                                         self.secrets)})
        self.result["diff"] = diffs

    def absent(self):
        info, problem = self.swarm_info()
        if problem:
            if ((info.get("Swarm") or {}).get("LocalNodeState") or "inactive") == "inactive":
                self.result["path"] = "absent"
                return
            raise SwarmFailure(problem)
        services = self.services()
        objs = {kind: self.objects(kind) for kind in ("configs", "secrets")}
        self.result["plan"] = [{"service": sp.stack_service_name(self.stack, (s.get("Spec") or {}).get("Name")),
                                "action": sp.REMOVE, "fields": []} for s in services]
        if not services and not any(objs.values()):
            self.result["path"] = "absent"
            return
        self.result["changed"] = True
        for kind in ("configs", "secrets"):
            self.result[kind]["pruned"] = sorted(objs[kind])
        if self.check_mode:
            self.result["path"] = "check"
            return
        self.quorum_probe("nothing was removed")
        self.docker(["stack", "rm", self.stack], what="docker stack rm", write=True)
        self.result["path"] = "rm"


def run(module):
    """Entry point of the swarm_stack module."""

    def runner(args, data=None, environ=None):
        if isinstance(data, bytes):
            rc, out, err = module.run_command(args, data=data, binary_data=True, check_rc=False,
                                              environ_update=environ or {})
        else:
            rc, out, err = module.run_command(args, data=data, binary_data=False, check_rc=False,
                                              environ_update=environ or {})
        return rc, out, err

    socket_path = engine_socket(os.environ)
    if not socket_path:
        module.fail_json(msg="swarm_stack reads the swarm through the Docker Engine API's unix socket "
                             "(DOCKER_HOST=unix://... or /var/run/docker.sock), and there is none here")
    api = EngineAPI(unix_socket_transport(socket_path))
    stack = SwarmStack(module.params, runner, api, check_mode=module.check_mode, diff_mode=module._diff,
                       warn=lambda msg: module.warn(mask_text(msg, stack.secrets)))
    try:
        result = stack.execute()
    except SwarmFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    except EngineAPIError as exc:
        module.fail_json(msg=stack.masked("Docker Engine API: %s" % exc), **stack.masked(stack.result))
    module.exit_json(**result)


__all__ = ["MASK", "SwarmFailure", "SwarmStack", "ipvs_support", "run"]
