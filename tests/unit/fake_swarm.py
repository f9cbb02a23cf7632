"""A fake of one Docker Swarm manager at swarm_stack's two boundaries: the Engine API (``api(method, path)``, the
transport compose_cli.EngineAPI takes) and the docker CLI (``runner(args, data, environ)``).

``docker stack deploy`` reads the stack file the module wrote, interpolates it from the environment the module
gave the process (as the real CLI does) and turns each service into an Engine API service spec shaped like the
ones captured from Docker 20.10 (tests/unit/data/swarm/*.json): labels, ContainerSpec, Resources, RestartPolicy,
Placement, Networks (by id), EndpointSpec, Update/RollbackConfig. An unchanged spec is left alone, a changed one
gets a new version, new tasks and an UpdateStatus; an image listed in ``bad_images`` never becomes healthy, so
its update fails and is rolled back (UpdateStatus rollback_completed, the previous spec restored) as Swarm does
with failure_action rollback. Failure modes of the real manager it reproduces: a worker node (ControlAvailable
false), an inactive swarm, a manager without quorum (GET /nodes answers 503 with the daemon's message), a leader that is
stepping down because the other managers went away (``leader_lost``: the reads still answer and list every manager
reachable, every write fails with swarmkit's "node lost leader status", ``docker stack deploy`` after printing the step
it tried; ``writes_lost``: the same for the CLI's writes only, after the module's quorum probe passed;
``quorum_lost_after_deploy``: the deploy went through, then the reads answer 503), a config or secret name
that exists already (``docker secret create`` fails), removal of a secret in use.
"""

from __future__ import annotations

import copy
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import yaml
from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_plan as sp

T0 = "2026-12-06T10:00:00.000000000Z"
NO_LEADER = (b'{"message":"rpc error: code = Unknown desc = The swarm does not have a leader. '
             b"It's possible that too few managers are online. Make sure more than half of the "
             b'managers are online."}')
RAFT_LOST_LEADER = "rpc error: code = Unknown desc = raft: failed to process the request: node lost leader status"
LOST_LEADER = "Error response from daemon: " + RAFT_LOST_LEADER  # the CLI's wording of the daemon's error


def ts(seconds):
    return "2026-12-06T10:%02d:%02d.%09dZ" % (seconds // 60 % 60, seconds % 60, 0)


class FakeSwarm:
    def __init__(self, hostnames=("node-1",), labels=None):
        self.now = 100  # daemon clock, seconds after 10:00
        self.calls: list[list[str]] = []
        self.api_requests: list[str] = []
        self.environs: list[dict] = []
        self.data: list[bytes] = []
        self.state = "active"
        self.manager = True
        self.quorum = True
        self.leader_lost = False  # reads answer, every write (API and CLI) fails with "node lost leader status"
        self.writes_lost = False  # the same for the CLI's writes only: the leader noticed after the quorum probe
        self.quorum_lost_after_deploy = False
        self.probes: list[str] = []  # the quorum probes' config names
        self.nodes = [{"ID": "n%d" % i, "Description": {"Hostname": h, "Engine": {"Labels": {}}},
                       "Spec": {"Role": "manager" if i == 0 else "worker", "Labels": dict((labels or {}).get(h, {}))},
                       "ManagerStatus": {"Reachability": "reachable", "Leader": True} if i == 0 else None}
                      for i, h in enumerate(hostnames)]
        self.networks = [{"Id": "ingressid", "Name": "ingress", "Scope": "swarm", "Driver": "overlay"},
                         {"Id": "bridgeid", "Name": "bridge", "Scope": "local", "Driver": "bridge"}]
        self.services: dict[str, dict] = {}  # full name -> service
        self.tasks: list[dict] = []
        self.objects = {"configs": {}, "secrets": {}}  # name -> {"ID", "Spec": {"Name", "Labels"}, "data"}
        self.bad_images: set[str] = set()
        self.stuck_images: set[str] = set()  # tasks never start (no rollback, the wait times out)
        self.logs: dict[str, str] = {}
        self.deploy_stderr = ""

    # -- the Engine API ------------------------------------------------------------------------
    def api(self, method, path, headers=None, body=None):
        self.api_requests.append(path if method == "GET" else "%s %s" % (method, path))
        url = urlsplit(path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        filters = json.loads(q.get("filters") or "{}")
        p = url.path
        if method != "GET":
            return self.api_write(method, p, json.loads(body) if body else None)
        if p == "/info":
            return self.ok({"SystemTime": ts(self.now), "Swarm": {
                "LocalNodeState": self.state, "ControlAvailable": self.manager and self.state == "active",
                "NodeID": "n0"}})
        if p == "/nodes":
            if not self.manager:
                return 503, b'{"message":"This node is not a swarm manager."}'
            if not self.quorum:
                return 503, NO_LEADER
            return self.ok(self.nodes)
        if p in ("/services", "/tasks") and not self.quorum:
            return 503, NO_LEADER
        if p == "/services":
            return self.ok([s for s in self.services.values() if self.match(s["Spec"]["Labels"], filters)])
        if p == "/tasks":
            ids = set(filters.get("service") or [])
            return self.ok([t for t in self.tasks if not ids or t["ServiceID"] in ids])
        if p == "/networks":
            return self.ok(self.networks)
        if p in ("/configs", "/secrets"):
            kind = p[1:]
            return self.ok([{"ID": o["ID"], "Spec": o["Spec"]} for o in self.objects[kind].values()
                            if self.match(o["Spec"]["Labels"], filters)])
        return 404, b'{"message":"page not found"}'

    def api_write(self, method, p, doc):
        """POST /configs/create and DELETE /configs/{id}: what swarm_stack's quorum probe writes."""
        if self.leader_lost:
            return 500, json.dumps({"message": RAFT_LOST_LEADER}).encode()
        if not self.quorum:
            return 503, NO_LEADER
        if method == "POST" and p == "/configs/create":
            name = doc["Name"]
            if name in self.objects["configs"]:
                return 409, b'{"message":"rpc error: code = AlreadyExists desc = config %s already exists"}' % (
                    name.encode())
            oid = hashlib.sha256(name.encode()).hexdigest()[:25]
            self.objects["configs"][name] = {"ID": oid, "Spec": {"Name": name, "Labels": doc.get("Labels") or {}},
                                             "data": doc.get("Data")}
            self.probes.append(name)
            return 201, json.dumps({"ID": oid}).encode()
        if method == "DELETE" and p.startswith("/configs/"):
            oid = p.rsplit("/", 1)[1]
            for name, obj in list(self.objects["configs"].items()):
                if obj["ID"] == oid:
                    del self.objects["configs"][name]
                    return 204, b""
            return 404, b'{"message":"config %s not found"}' % oid.encode()
        return 404, b'{"message":"page not found"}'

    @staticmethod
    def ok(value):
        return 200, json.dumps(value).encode()

    @staticmethod
    def match(labels, filters):
        for f in filters.get("label") or []:
            key, sep, value = f.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
        return True

    # -- the docker CLI ------------------------------------------------------------------------
    def runner(self, args, data=None, environ=None):
        self.calls.append(list(args))
        self.environs.append(dict(environ or {}))
        a = args[1:]
        writes = (["config", "create"], ["secret", "create"], ["config", "rm"], ["secret", "rm"], ["stack", "rm"])
        if (self.leader_lost or self.writes_lost) and a[:2] in writes:
            return 1, "", LOST_LEADER
        if a[:2] in (["config", "create"], ["secret", "create"]):
            kind = a[0] + "s"
            labels = dict(x.split("=", 1) for x in [a[i + 1] for i, v in enumerate(a) if v == "--label"])
            name = a[-2]
            assert a[-1] == "-", "content must come on stdin"
            if name in self.objects[kind]:
                return 1, "", "Error response from daemon: rpc error: code = AlreadyExists desc = %s %s already " \
                              "exists" % (a[0], name)
            self.data.append(data)
            self.objects[kind][name] = {"ID": hashlib.sha256(name.encode()).hexdigest()[:25],
                                        "Spec": {"Name": name, "Labels": labels}, "data": data}
            return 0, self.objects[kind][name]["ID"] + "\n", ""
        if a[:2] in (["config", "rm"], ["secret", "rm"]):
            kind, name = a[0] + "s", a[2]
            key = "ConfigName" if kind == "configs" else "SecretName"
            for s in self.services.values():
                refs = s["Spec"]["TaskTemplate"]["ContainerSpec"].get(kind.capitalize()) or []
                if any(r[key] == name for r in refs):
                    return 1, "", "Error response from daemon: rpc error: code = InvalidArgument desc = %s '%s' " \
                                  "is in use by the following service: %s" % (a[0], name, s["Spec"]["Name"])
            self.objects[kind].pop(name, None)
            return 0, name + "\n", ""
        if a[:2] == ["stack", "deploy"]:
            return self.deploy(a, environ or {})
        if a[:2] == ["stack", "rm"]:
            stack = a[2]
            for name in [n for n in self.services if n.startswith(stack + "_")]:
                del self.services[name]
            for kind in self.objects:
                for name in [n for n, o in self.objects[kind].items()
                             if o["Spec"]["Labels"].get(sp.NAMESPACE_LABEL) == stack]:
                    del self.objects[kind][name]
            return 0, "Removing stack\n", ""
        if a[:2] == ["service", "logs"]:  # a service name or a task id
            target = a[-1]
            for t in self.tasks:
                if t["ID"] == target:
                    target = next(n for n, s in self.services.items() if s["ID"] == t["ServiceID"])
            return 0, self.logs.get(target, ""), ""
        return 127, "", "fake: unknown command %s" % args

    def deploy(self, a, environ):
        self.now += 5
        path = a[a.index("--compose-file") + 1]
        stack = a[-1]
        with open(path) as fh:
            doc = yaml.safe_load(fh)
        doc = sp.interpolate(doc, environ, set())
        for kind in ("configs", "secrets"):
            for spec in (doc.get(kind) or {}).values():
                if spec.get("external") and spec["name"] not in self.objects[kind]:
                    return 1, "", "service: %s not found" % spec["name"]
        wanted = {}
        for name, svc in doc["services"].items():
            wanted["%s_%s" % (stack, name)] = self.spec_of(stack, name, svc, doc)
        if self.leader_lost or self.writes_lost:  # the CLI prints the step, then the write fails
            full = sorted(wanted)[0]
            old = self.services.get(full)
            if old is None:
                return 1, "Creating service %s\n" % full, "failed to create service %s: %s" % (full, LOST_LEADER)
            return 1, "Updating service %s (id: %s)\n" % (full, old["ID"]), "failed to update service %s: %s" % (
                full, LOST_LEADER)
        if "--prune" in a:
            for full in [n for n in self.services if n.startswith(stack + "_") and n not in wanted]:
                del self.services[full]
        for full, spec in wanted.items():
            old = self.services.get(full)
            if old is None:
                sid = hashlib.sha256(full.encode()).hexdigest()[:25]
                self.services[full] = {"ID": sid, "Version": {"Index": 1}, "Spec": spec}
                self.start_tasks(self.services[full])
                continue
            if json.dumps(old["Spec"], sort_keys=True) == json.dumps(spec, sort_keys=True):
                continue
            template_changed = json.dumps(old["Spec"]["TaskTemplate"], sort_keys=True) != json.dumps(
                spec["TaskTemplate"], sort_keys=True)
            old["PreviousSpec"], old["Spec"] = old["Spec"], spec
            old["Version"]["Index"] += 1
            if template_changed:
                self.update(old)
        if self.quorum_lost_after_deploy:
            self.quorum = False
        return 0, "Creating service x\n", self.deploy_stderr

    def start_tasks(self, svc, previous=None):
        spec = svc["Spec"]
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        replicas = (spec["Mode"].get("Replicated") or {}).get("Replicas", 1)
        for t in self.tasks:
            if t["ServiceID"] == svc["ID"] and t["DesiredState"] == "running":
                t["DesiredState"] = "shutdown"
                t["Status"] = {"State": "shutdown", "Timestamp": ts(self.now)}
        for slot in range(1, replicas + 1):
            state = "running"
            status = {"State": state, "Timestamp": ts(self.now), "Message": "started"}
            if image in self.bad_images:
                status = {"State": "failed", "Timestamp": ts(self.now), "Message": "started",
                          "Err": "task: non-zero exit (1): dockerexec: unhealthy container",
                          "ContainerStatus": {"ExitCode": 1}}
            elif image in self.stuck_images:
                status = {"State": "preparing", "Timestamp": ts(self.now), "Message": "preparing"}
            self.tasks.append({"ID": "t%d" % len(self.tasks), "ServiceID": svc["ID"], "Slot": slot, "NodeID": "n0",
                               "DesiredState": "running", "Spec": copy.deepcopy(spec["TaskTemplate"]),
                               "Status": status})

    def update(self, svc):
        image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        started = ts(self.now)
        if image in self.bad_images and svc["Spec"].get("UpdateConfig", {}).get("FailureAction") == "rollback":
            self.start_tasks(svc)
            for t in self.tasks:
                if t["ServiceID"] == svc["ID"] and t["Status"]["State"] == "failed":
                    t["DesiredState"] = "shutdown"
            svc["Spec"], svc["PreviousSpec"] = svc["PreviousSpec"], svc["Spec"]
            svc["Version"]["Index"] += 1
            self.start_tasks(svc)
            svc["UpdateStatus"] = {"State": "rollback_completed", "StartedAt": started, "CompletedAt": started,
                                   "Message": "rollback completed"}
            return
        self.start_tasks(svc)
        if image in self.stuck_images:
            svc["UpdateStatus"] = {"State": "updating", "StartedAt": started, "Message": "update in progress"}
        else:
            svc["UpdateStatus"] = {"State": "completed", "StartedAt": started, "CompletedAt": started,
                                   "Message": "update completed"}

    def spec_of(self, stack, name, svc, doc):
        """What docker stack deploy 20.10 writes for one service (the shape of the captured specs)."""
        n = sp.desired_service(stack, name, svc, doc, {"configs": {}, "secrets": {}}, self.env_files(svc), {}, "/")
        ids = {net["Name"]: net["Id"] for net in self.networks}
        for net in n["networks"]:
            if net["name"] not in ids:
                self.networks.append({"Id": "id-" + net["name"], "Name": net["name"], "Scope": "swarm",
                                      "Driver": "overlay"})
                ids[net["name"]] = "id-" + net["name"]
        cs = {"Image": n["image"], "Labels": n["container_labels"], "Privileges": {"CredentialSpec": None,
                                                                                   "SELinuxContext": None},
              "Isolation": "default"}
        if n["env"]:
            cs["Env"] = n["env"]
        if n["args"]:
            cs["Args"] = n["args"]
        if n["healthcheck"]:
            h = n["healthcheck"]
            cs["Healthcheck"] = {"Test": h["test"], "Interval": h.get("interval", 0), "Timeout": h.get("timeout", 0),
                                 "Retries": h.get("retries", 0), "StartPeriod": h.get("start_period", 0)}
        if n["mounts"]:
            cs["Mounts"] = [{"Type": m["type"], "Source": m["source"], "Target": m["target"],
                             **({"ReadOnly": True} if m["read_only"] else {})} for m in n["mounts"]]
        for kind, key in (("configs", "ConfigName"), ("secrets", "SecretName")):
            refs = []
            for r in sp._as_list(svc.get(kind)):
                source = r if isinstance(r, str) else r["source"]
                target = source if isinstance(r, str) else r.get("target") or source
                real = doc[kind][source]["name"]
                obj = self.objects[kind].get(real) or {"ID": "missing"}
                refs.append({"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 292},
                             key[:-4] + "ID": obj["ID"], key: real})
            if refs:
                cs[kind.capitalize()] = sorted(refs, key=lambda r: r[key])
        res = n["resources"]
        task = {"ContainerSpec": cs, "Resources": {
            "Limits": {k2: v for k2, v in (("NanoCPUs", res["limits"]["cpus"]),
                                           ("MemoryBytes", res["limits"]["memory"]),
                                           ("Pids", res["limits"]["pids"])) if v},
            "Reservations": {}}, "Placement": {}, "Networks": [
                {"Target": ids[net["name"]], "Aliases": net["aliases"]} for net in n["networks"]],
            "ForceUpdate": 0, "Runtime": "container"}
        if n["restart_policy"]:
            rp = n["restart_policy"]
            task["RestartPolicy"] = {"Condition": rp["condition"], "MaxAttempts": rp["max_attempts"]}
        if n["placement"]["constraints"]:
            task["Placement"]["Constraints"] = n["placement"]["constraints"]
        if n["placement"]["preferences"]:
            task["Placement"]["Preferences"] = [{"Spread": {"SpreadDescriptor": d}}
                                                for d in n["placement"]["preferences"]]

        def upd(u):
            return {"Parallelism": u["parallelism"], "FailureAction": u["failure_action"], "Monitor": u["monitor"],
                    "MaxFailureRatio": u["max_failure_ratio"], "Order": u["order"]}

        return {"Name": "%s_%s" % (stack, name), "Labels": n["labels"], "TaskTemplate": task,
                "Mode": {"Replicated": {"Replicas": n["replicas"]}} if n["mode"] == "replicated" else {"Global": {}},
                "UpdateConfig": upd(n["update_config"]), "RollbackConfig": upd(n["rollback_config"]),
                "EndpointSpec": {"Mode": n["endpoint_mode"], "Ports": [
                    {"Protocol": p["protocol"], "TargetPort": p["target"], "PublishedPort": p["published"],
                     "PublishMode": p["mode"]} for p in n["ports"]]}}

    def env_files(self, svc):
        out = {}
        for path in sp._as_list(svc.get("env_file")):
            with open(path if path.startswith("/") else self.project_dir + "/" + path) as fh:
                out[path] = fh.read()
        return out

    project_dir = "/"
