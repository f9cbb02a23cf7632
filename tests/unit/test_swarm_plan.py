"""Unit tests for swarm_stack's pure planner (plugins/module_utils/swarm_plan.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import container_defaults
from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_plan as sp

OPTS = {"endpoint_mode": "auto", "stateful_label": "selfhosted.data", "stateful_label_value": "true"}


def build(definition, ipvs=False, env=None, sources=None, **opts):
    return sp.build_stack("st", definition, dict(OPTS, **opts), ipvs, "test kernel", sources or {}, env or {})


def refused(definition, **kw):
    with pytest.raises(sp.PlanError) as exc:
        build(definition, **kw)
    return exc.value.problems


def one(svc, **kw):
    return build({"services": {"web": svc}}, **kw)


def rows(result):
    return {(r["service"], r["key"]): r["to"] for r in result["translated"]}


# -- translation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("restart", "policy"), [
    ("no", {"condition": "none"}),
    (False, {"condition": "none"}),  # YAML 1.1 reads a bare no as false
    ("always", {"condition": "any"}),
    ("unless-stopped", {"condition": "any"}),
    ("on-failure", {"condition": "on-failure"}),
    ("on-failure:3", {"condition": "on-failure", "max_attempts": 3}),
])
def test_restart_becomes_a_restart_policy(restart, policy):
    res = one({"image": "a:1", "restart": restart})
    svc = res["doc"]["services"]["web"]
    assert "restart" not in svc
    assert svc["deploy"]["restart_policy"] == policy
    assert rows(res)[("web", "restart")].startswith("deploy.restart_policy (restart ")


def test_own_restart_policy_wins_over_restart():
    res = one({"image": "a:1", "restart": "no", "deploy": {"restart_policy": {"condition": "any", "delay": "5s"}}})
    assert res["doc"]["services"]["web"]["deploy"]["restart_policy"] == {"condition": "any", "delay": "5s"}
    assert "deploy.restart_policy is set and wins" in rows(res)[("web", "restart")]


def test_long_depends_on_becomes_a_list():
    res = build({"services": {"web": {"image": "a:1", "depends_on": {"db": {"condition": "service_healthy"}}},
                              "db": {"image": "b:1"}}})
    assert res["doc"]["services"]["web"]["depends_on"] == ["db"]
    assert "service_healthy are not honoured" in rows(res)[("web", "depends_on")]


def test_limits_move_to_deploy_resources():
    res = one({"image": "a:1", "mem_limit": "256m", "cpus": 0.5, "pids_limit": 100, "mem_reservation": "64m"})
    svc = res["doc"]["services"]["web"]
    assert svc["deploy"]["resources"] == {"limits": {"memory": "256m", "cpus": "0.5", "pids": 100},
                                          "reservations": {"memory": "64m"}}
    assert not {"mem_limit", "cpus", "pids_limit", "mem_reservation"} & set(svc)
    assert rows(res)[("web", "pids_limit")] == "deploy.resources.limits.pids"


def test_a_limit_that_conflicts_with_deploy_resources_is_refused():
    problems = refused({"services": {"web": {"image": "a:1", "mem_limit": "256m",
                                             "deploy": {"resources": {"limits": {"memory": "512m"}}}}}})
    assert problems == ["service web: key mem_limit: '256m' conflicts with deploy.resources.limits.memory '512m'"]


def test_hardened_defaults_translate_or_are_refused_by_name():
    """What container_defaults.harden() adds to an app service: limits translate, security_opt and a loopback port
    are refused naming the key, and dropping security_opt is the caller's explicit choice."""
    hardened = container_defaults.harden({"image": "registry.example.test/app:1", "ports": ["8080:80"]}, "app")
    problems = refused({"services": {"app": hardened}})
    assert any(p.startswith("service app: key security_opt: Swarm services ignore security_opt") for p in problems)
    assert any(p.startswith("service app: key ports: ports[0]: a Swarm service publishes on every address")
               and "127.0.0.1" in p for p in problems)
    hardened["ports"] = ["0.0.0.0:8080:80"]
    res = build({"services": {"app": hardened}}, ignore_keys=["security_opt"])
    svc = res["doc"]["services"]["app"]
    assert rows(res)[("app", "security_opt")] == "dropped (ignore_keys)"
    assert svc["cap_drop"] == ["ALL"] and svc["read_only"] is True
    assert svc["deploy"]["resources"]["limits"] == {"pids": 1024, "memory": "1g", "cpus": "1.0"}
    assert {"type": "tmpfs", "target": "/tmp"} in svc["volumes"]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("build", "./api", "Swarm does not build images"),
    ("network_mode", "host", "always join the stack's overlay networks"),
    ("privileged", True, "cannot run privileged"),
    ("devices", ["/dev/fuse"], "cannot map host devices"),
    ("profiles", ["debug"], "has no profiles"),
    ("mem_swappiness", 10, "no swappiness"),
    ("no_such_key", 1, "not a key of the stack file format 3.9"),
])
def test_refusals_name_the_service_and_the_key(key, value, words):
    problems = refused({"services": {"api": {"image": "a:1", key: value}}})
    assert len(problems) == 1
    assert problems[0].startswith("service api: key %s: " % key) and words in problems[0]


def test_build_without_image_is_refused_once():
    assert refused({"services": {"api": {"build": "."}}}) == [
        "service api: key build: " + sp.REFUSED["build"]]


def test_every_problem_is_reported_at_once():
    problems = refused({"services": {"a": {"image": "a:1", "privileged": True},
                                     "b": {"image": "b:1", "pid": "host", "ports": ["127.0.0.1:80:80"]}}})
    assert [p.split(":")[0] for p in problems] == ["service a", "service b", "service b"]


def test_tmpfs_with_uid_options_is_refused_but_size_translates():
    problems = refused({"services": {"web": {"image": "a:1", "tmpfs": ["/run:uid=101,gid=101,mode=0755"]}}})
    assert problems[0].startswith("service web: key tmpfs: the tmpfs option 'uid=101'")
    res = one({"image": "a:1", "tmpfs": "/cache:size=64m"})
    assert res["doc"]["services"]["web"]["volumes"] == [{"type": "tmpfs", "target": "/cache",
                                                         "tmpfs": {"size": 64 * 1024 * 1024}}]


def test_container_name_becomes_an_alias_on_every_network():
    res = build({"services": {"web": {"image": "a:1", "container_name": "shop-web", "networks": ["default", "edge"]}},
                 "networks": {"edge": {"external": True, "name": "edge"}}})
    assert res["doc"]["services"]["web"]["networks"] == {"default": {"aliases": ["shop-web"]},
                                                         "edge": {"aliases": ["shop-web"]}}
    assert "network alias shop-web" in rows(res)[("web", "container_name")]


def test_references_are_refused_in_translated_keys_and_kept_elsewhere():
    problems = refused({"services": {"web": {"image": "a:1", "ports": ["${PORT}:80"], "mem_limit": "${MEM}"}}})
    assert [p.split(":")[1].strip() for p in problems] == ["key mem_limit", "key ports"]
    res = one({"image": "a:${TAG}", "environment": {"A": "${A}"}})
    assert res["doc"]["services"]["web"]["image"] == "a:${TAG}"


def test_interpolation_follows_compose():
    missing = set()
    env = {"A": "1", "E": ""}
    text = "$A ${A} ${B:-dflt} ${E:-empty} ${E-set} ${A:+alt} ${B+x} $$A ${C}"
    assert sp.interpolate_text(text, env, missing) == "1 1 dflt empty  alt  $A "
    assert missing == {"C"}
    with pytest.raises(sp.PlanError) as exc:
        sp.interpolate_text("${B:?give B}", env, set())
    assert "required variable B is not set: give B" in exc.value.problems[0]


# -- ports and endpoint modes ----------------------------------------------------------------------
def test_endpoint_mode_decisions():
    assert sp.decide_endpoint_mode("auto", True, "r")[0] == "vip"
    assert sp.decide_endpoint_mode("auto", False, "r")[0] == "dnsrr"
    assert sp.decide_endpoint_mode("dnsrr", True, "r")[0] == "dnsrr"
    assert sp.decide_endpoint_mode("vip", True, "r")[0] == "vip"
    with pytest.raises(sp.PlanError) as exc:
        sp.decide_endpoint_mode("vip", False, "no /proc/net/ip_vs")
    assert "no IPVS (no /proc/net/ip_vs)" in exc.value.problems[0]


def test_dnsrr_publishes_in_host_mode_and_updates_stop_first():
    res = one({"image": "a:1", "ports": ["0.0.0.0:8080:80", "9000/udp", {"target": 443, "published": "8443"}]})
    svc = res["doc"]["services"]["web"]
    assert svc["deploy"]["endpoint_mode"] == "dnsrr"
    assert svc["ports"] == [{"target": 80, "protocol": "tcp", "published": 8080, "mode": "host"},
                            {"target": 9000, "protocol": "udp", "mode": "host"},
                            {"target": 443, "protocol": "tcp", "published": 8443, "mode": "host"}]
    assert svc["deploy"]["update_config"]["order"] == "stop-first"
    assert "host-mode published ports" in rows(res)[("web", "deploy.update_config.order")]


def test_vip_publishes_on_ingress_and_updates_start_first():
    res = one({"image": "a:1", "ports": ["8080-8081:80-81"]}, ipvs=True)
    svc = res["doc"]["services"]["web"]
    assert svc["deploy"]["endpoint_mode"] == "vip"
    assert [(p["published"], p["target"], p["mode"]) for p in svc["ports"]] == [(8080, 80, "ingress"),
                                                                                (8081, 81, "ingress")]
    assert svc["deploy"]["update_config"]["order"] == "start-first"


def test_ingress_port_on_dnsrr_is_refused():
    problems = refused({"services": {"web": {"image": "a:1", "ports": [{"target": 80, "published": 80,
                                                                       "mode": "ingress"}]}}})
    assert problems == ["service web: key ports: ports[0] asks for ingress mode, which needs endpoint_mode vip"]


# -- update / rollback defaults and placement ------------------------------------------------------
def test_update_defaults_are_health_gated():
    res = one({"image": "a:1", "healthcheck": {"test": ["CMD", "true"], "interval": "5s", "retries": 3,
                                               "start_period": "2s"}}, ipvs=True)
    deploy = res["doc"]["services"]["web"]["deploy"]
    assert deploy["update_config"] == {"parallelism": 1, "failure_action": "rollback", "order": "start-first",
                                       "monitor": "17s"}
    assert deploy["rollback_config"] == {"parallelism": 1, "failure_action": "pause", "order": "start-first",
                                         "monitor": "17s"}
    no_hc = one({"image": "a:1"})["doc"]["services"]["web"]["deploy"]["update_config"]
    assert no_hc["monitor"] == "10s"
    long_hc = one({"image": "a:1", "healthcheck": {"test": "true"}})["doc"]["services"]["web"]["deploy"]
    assert long_hc["update_config"]["monitor"] == "1m"  # Docker's defaults 30s x 3, capped at 60s


def test_option_and_service_values_win_over_the_defaults():
    res = one({"image": "a:1", "deploy": {"update_config": {"order": "stop-first", "delay": "5s"}}},
              update_config={"parallelism": 2, "monitor": "20s"}, rollback_config={"failure_action": "continue"})
    deploy = res["doc"]["services"]["web"]["deploy"]
    assert deploy["update_config"] == {"parallelism": 2, "failure_action": "rollback", "order": "stop-first",
                                       "monitor": "20s", "delay": "5s"}
    assert deploy["rollback_config"]["failure_action"] == "continue"


def test_stateful_services_are_pinned_and_stateless_spread():
    res = build({"services": {"db": {"image": "postgres:16", "volumes": ["pg:/var/lib/postgresql/data"]},
                              "cache": {"image": "registry.example.test/library/redis:7-alpine"},
                              "uploads": {"image": "app:1"}, "web": {"image": "app:1"},
                              "own": {"image": "mariadb:11", "deploy": {"placement": {
                                  "constraints": ["node.hostname==db-1"]}}}},
                "volumes": {"pg": {}}}, stateful_services=["uploads"])
    svcs = res["doc"]["services"]
    for name in ("db", "cache", "uploads"):
        assert svcs[name]["deploy"]["placement"] == {"constraints": ["node.labels.selfhosted.data==true"]}
        assert svcs[name]["deploy"]["update_config"]["order"] == "stop-first"
    assert svcs["own"]["deploy"]["placement"] == {"constraints": ["node.hostname==db-1"]}
    assert svcs["web"]["deploy"]["placement"] == {"preferences": [{"spread": "node.id"}]}
    assert svcs["web"]["deploy"]["update_config"]["order"] == "start-first"


def test_constraint_and_quorum_checks():
    nodes = [{"ID": "a1", "Description": {"Hostname": "n1"}, "Spec": {"Role": "manager", "Labels": {"disk": "ssd"}},
              "ManagerStatus": {"Reachability": "reachable"}},
             {"ID": "b2", "Description": {"Hostname": "n2"}, "Spec": {"Role": "worker", "Labels": {}}}]
    doc = {"services": {"a": {"deploy": {"placement": {"constraints": [
        "node.hostname==n2", "node.labels.disk==ssd", "node.role!=worker", "node.labels.disk==hdd",
        "node.hostname == n3"]}}}}}
    assert sp.constraint_problems(doc, nodes) == [
        "service a: placement constraint node.labels.disk==hdd: no node has the label disk=hdd (nodes: n1, n2)",
        "service a: placement constraint node.hostname == n3: no node has hostname n3 (nodes: n1, n2)"]
    assert sp.quorum_problem(nodes) is None
    managers = [dict(nodes[0], ManagerStatus={"Reachability": r}) for r in ("reachable", "unreachable")]
    assert sp.quorum_problem(managers) == "only 1 of 2 managers are reachable (a quorum needs 2)"


# -- configs and secrets ---------------------------------------------------------------------------
def test_hashed_names_rotate_with_the_content():
    d = {"services": {"web": {"image": "a:1", "configs": ["site"], "secrets": ["db"]}},
         "configs": {"site": {"file": "./site.conf"}}, "secrets": {"db": {"environment": "DB_PW"}}}
    first = build(d, env={"DB_PW": "one"}, sources={"./site.conf": b"a"})
    again = build(d, env={"DB_PW": "one"}, sources={"./site.conf": b"a"})
    changed = build(d, env={"DB_PW": "two"}, sources={"./site.conf": b"b"})
    assert first["configs"]["site"]["name"] == "st_site_" + "ca978112ca1b"  # sha256("a")[:12]
    assert first["configs"] == again["configs"] and first["secrets"] == again["secrets"]
    assert changed["configs"]["site"]["name"] != first["configs"]["site"]["name"]
    assert changed["secrets"]["db"]["name"] != first["secrets"]["db"]["name"]
    assert first["doc"]["secrets"] == {"db": {"external": True, "name": first["secrets"]["db"]["name"]}}
    assert "one" not in repr(first["doc"])
    create, prune = sp.objects_plan(changed["configs"], [first["configs"]["site"]["name"], "st_old_1"],
                                    in_use=["st_old_1"])
    assert create == [changed["configs"]["site"]["name"]] and prune == [first["configs"]["site"]["name"]]


def test_missing_or_undeclared_secrets_are_refused():
    d = {"services": {"web": {"image": "a:1", "secrets": ["db", "nope"], "configs": ["site"]}},
         "configs": {"site": {"file": "./site.conf"}}, "secrets": {"db": {"environment": "DB_PW"}}}
    problems = refused(d, sources={"./site.conf": None})
    assert "service web: key secrets: nope is not declared (top-level secrets of the definition or the module's " \
           "secrets option)" in problems
    assert "config site: its file ./site.conf does not exist" in problems
    assert "secret db: its value, env DB_PW, is missing" in problems
    assert refused({"services": {"web": {"image": "a:1", "secrets": ["k"]}}}, secrets={"k": ""}) == [
        "secret k: the value is missing (is it in the vault?)"]


# -- the comparison --------------------------------------------------------------------------------
def test_env_file_reading_is_literal():
    assert sp.parse_env_file("# c\n A=1\nB='q'\nC\nD=x=y\n") == [("A", "1"), ("B", "'q'"), ("C", None),
                                                                 ("D", "x=y")]
    svc = {"env_file": [".env"], "environment": {"B": "over", "H": None}}
    assert sp.desired_env(svc, {".env": "A=1\nB=2\n"}, {"H": "home"}) == ["A=1", "B=over", "H=home"]
    assert sp.desired_env({"environment": ["X"]}, {}, {}) == ["X"]


def test_units():
    assert sp.duration_seconds("1m30s") == 90 and sp.duration_seconds("500ms") == 0.5
    assert sp.go_duration(90) == "1m30s" and sp.go_duration(0.5) == "500ms" and sp.go_duration(120) == "2m"
    assert sp.memory_bytes("256m") == 256 * 1024 ** 2 and sp.memory_bytes("1GiB") == 1024 ** 3
    assert sp.nano_cpus("0.5") == 500000000
    assert sp.timestamp_seconds("1970-01-01T00:00:01.5Z") == 1.5
    assert sp.timestamp_seconds("1970-01-01T01:00:01+01:00") == 1.0
    assert sp.timestamp_seconds("") is None


def test_plan_actions_and_fields():
    want = {"a": {"image": "x:1", "env": []}, "b": {"image": "y:1", "env": ["A=1"]}}
    have = {"a": {"image": "x:1", "env": []}, "b": {"image": "y:1", "env": ["A=2"]}, "c": {"image": "z"}}
    steps = sp.plan("st", dict(want, d={"image": "d"}), have)
    assert [(s["service"], s["action"], s["fields"]) for s in steps] == [
        ("a", "unchanged", []), ("b", "update", ["env"]), ("c", "remove", []), ("d", "create", [])]
    kept = sp.plan("st", want, have, prune=False)
    assert kept[2]["action"] == "unchanged"


# -- the wait verdict ------------------------------------------------------------------------------
def svc_entry(replicas=1, condition="any", update=None, image="a:2"):
    template = {"ContainerSpec": {"Image": image}, "RestartPolicy": {"Condition": condition}, "ForceUpdate": 0}
    s = {"ID": "s1", "Spec": {"Mode": {"Replicated": {"Replicas": replicas}}, "TaskTemplate": template}}
    if update:
        s["UpdateStatus"] = update
    return s


def task(state, image="a:2", desired="running", when="2026-12-06T10:00:10Z", **extra):
    t = {"ID": "t", "DesiredState": desired, "Spec": {"ContainerSpec": {"Image": image},
                                                      "RestartPolicy": {"Condition": "any"}, "ForceUpdate": 0},
         "Status": dict({"State": state, "Timestamp": when}, **extra)}
    return t


SINCE = sp.timestamp_seconds("2026-12-06T10:00:05Z")


def test_service_state_waits_for_tasks_of_the_new_spec():
    s = svc_entry()
    assert sp.service_state(s, [task("running", image="a:1")], SINCE)["state"] == "pending"
    assert sp.service_state(s, [task("running"), task("running", image="a:1")], SINCE)["state"] == "pending"
    assert sp.service_state(s, [task("running"), task("shutdown", image="a:1", desired="shutdown")],
                            SINCE)["state"] == "converged"
    assert sp.service_state(s, [task("starting")], SINCE)["state"] == "pending"


def test_a_global_service_between_a_failed_task_and_its_replacement_is_not_converged():
    """A crash-looping global router polled while Swarm replaced its failed task (or before it placed one) looked
    converged with 0 of 0 tasks; the wait ended and site.yml reported success with no router running."""
    s = svc_entry()
    s["Spec"]["Mode"] = {"Global": {}}
    assert sp.service_state(s, [], SINCE)["state"] == "pending"
    failed = dict(task("failed", desired="shutdown", Err="task: non-zero exit (1)"), NodeID="n1")
    st = sp.service_state(s, [failed], SINCE)
    assert (st["state"], st["desired"], st["running"]) == ("pending", 1, 0)
    assert st["failing"][0]["error"] == "task: non-zero exit (1)"
    # the replacement runs: converged; a failure older than the deploy is history
    assert sp.service_state(s, [failed, dict(task("running"), NodeID="n1")], SINCE)["state"] == "converged"
    old = dict(task("failed", desired="shutdown", when="2026-12-06T09:00:00Z"), NodeID="n2")
    assert sp.service_state(s, [old, dict(task("running"), NodeID="n1")], SINCE)["state"] == "converged"


def test_service_state_reads_only_recent_update_status():
    old = {"State": "rollback_completed", "StartedAt": "2026-12-06T09:00:00Z"}
    assert sp.service_state(svc_entry(update=old), [task("running")], SINCE)["state"] == "converged"
    new = {"State": "rollback_completed", "StartedAt": "2026-12-06T10:00:06Z"}
    assert sp.service_state(svc_entry(update=new), [task("running")], SINCE)["state"] == "rolled_back"
    # settled only once the previous release runs again
    assert sp.service_state(svc_entry(update=new), [task("starting")], SINCE)["state"] == "rollback"
    updating = dict(new, State="updating")
    assert sp.service_state(svc_entry(update=updating), [task("running")], SINCE)["state"] == "pending"


def test_service_state_lists_recent_failures_only():
    tasks = [task("running"), task("failed", desired="shutdown", Err="task: non-zero exit (1)",
                                   ContainerStatus={"ExitCode": 1}),
             task("failed", desired="shutdown", when="2026-12-06T09:00:00Z", Err="old")]
    st = sp.service_state(svc_entry(), tasks, SINCE)
    assert [f["error"] for f in st["failing"]] == ["task: non-zero exit (1)"]
    assert st["failing"][0]["exit_code"] == 1


def test_one_shot_service_counts_completed_tasks():
    s = svc_entry(condition="none")
    s["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] = "none"
    t = task("complete", desired="shutdown")  # as Docker 20.10 leaves a finished one-shot task
    t["Spec"]["RestartPolicy"]["Condition"] = "none"
    st = sp.service_state(s, [t], SINCE)
    assert st["state"] == "converged" and st["one_shot"] and st["failing"] == []
    s2 = svc_entry()
    assert sp.service_state(s2, [task("complete")], SINCE)["state"] == "pending"


def test_wait_message_names_services_errors_and_logs():
    st = sp.service_state(svc_entry(update={"State": "rollback_completed", "StartedAt": "2026-12-06T10:00:06Z",
                                            "Message": "rollback completed"}),
                          [task("failed", desired="shutdown", Err="unhealthy container"), task("running")], SINCE)
    text = sp.wait_message({"web": st}, 30, 0, {"web": ["line 1"]})
    assert text.startswith("web: rolled_back, 1/1 running, update rollback_completed (rollback completed); tasks: "
                           "task t (a:2): failed unhealthy container")
    assert text.endswith("last 1 log lines of web:\n  line 1")


def test_desired_service_is_stable_under_key_order():
    d = {"services": {"web": {"image": "a:1", "environment": {"B": "2", "A": "1"}, "ports": ["0.0.0.0:80:80"]}}}
    res = build(d)
    doc = sp.add_hash_labels(res["doc"])
    d2 = copy.deepcopy(d)
    d2["services"]["web"] = dict(reversed(list(d2["services"]["web"].items())))
    doc2 = sp.add_hash_labels(build(d2)["doc"])
    objs = {"configs": {}, "secrets": {}}
    a = sp.desired_service("st", "web", doc["services"]["web"], doc, objs, {}, {}, "/x")
    b = sp.desired_service("st", "web", doc2["services"]["web"], doc2, objs, {}, {}, "/x")
    assert a == b


# -- against service specs captured from a real swarm (tests/unit/data/swarm/stack-shop.json) ------------------
CAPTURED = json.loads((Path(__file__).parent / "data" / "swarm" / "stack-shop.json").read_text())


def captured_plan(change=None, services=None):
    """The plan of the captured stack's definition (ARGS, optionally changed) against the captured specs."""
    args = copy.deepcopy(CAPTURED["args"])
    if change:
        change(args)
    opts = dict(OPTS, secrets=args["secrets"], update_config=args.get("update_config"))
    built = sp.build_stack(args["project_name"], args["definition"], opts, False, "captured", {}, args["env"])
    doc = sp.interpolate(sp.add_hash_labels(built["doc"]), dict(args["env"]), set())
    objects = {"configs": built["configs"], "secrets": built["secrets"]}
    desired = {n: sp.desired_service("shop", n, s, doc, objects, {}, args["env"], args["project_dir"])
               for n, s in doc["services"].items()}
    netnames = {n["Id"]: n["Name"] for n in CAPTURED["networks"]}
    current = {sp.stack_service_name("shop", s["Spec"]["Name"]): sp.current_service(s["Spec"], netnames)
               for s in services or CAPTURED["services"]}
    return {s["service"]: s for s in sp.plan("shop", desired, current)}, desired, current


def test_captured_specs_are_what_the_definition_describes():
    plan, desired, current = captured_plan()
    assert {n: s["action"] for n, s in plan.items()} == {"cache": "unchanged", "web": "unchanged"}, \
        {n: sp.field_changes(desired[n], current[n], s["fields"]) for n, s in plan.items()}
    # GET /services answers without the defaults `docker service inspect` inserts (insertDefaults): an unset restart
    # policy or stop grace period is absent, and the comparison reads absence as the default
    specs = {s["Spec"]["Name"]: s["Spec"] for s in CAPTURED["services"]}
    web, cache = specs["shop_web"], specs["shop_cache"]
    assert "RestartPolicy" not in cache["TaskTemplate"]
    assert "StopGracePeriod" not in web["TaskTemplate"]["ContainerSpec"]
    assert current["cache"]["restart_policy"] == {"condition": "any", "delay": sp.DEFAULT_RESTART_DELAY_NS,
                                                  "max_attempts": 0, "window": 0}
    assert web["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "PublishMode": "host", "PublishedPort": 18080,
                                             "TargetPort": 80}]


@pytest.mark.parametrize(("change", "fields"), [
    (lambda a: a["definition"]["services"]["web"].update(image="shp-swarm/web:2"), {"web": ["image", "labels"]}),
    (lambda a: a["definition"]["configs"]["index"].update(content="hello v2\n"), {"web": ["configs"]}),
    (lambda a: a["env"].update(API_TOKEN="other"), {"web": ["env"]}),
    (lambda a: a["secrets"].update(api_key="other"), {"web": ["secrets"]}),
    (lambda a: a["definition"]["services"]["cache"].update(deploy={"replicas": 2}),
     {"cache": ["labels", "replicas"]}),
    (lambda a: a["definition"]["services"]["web"].update(ports=["0.0.0.0:18081:80"]), {"web": ["labels", "ports"]}),
    (lambda a: a["definition"]["services"]["cache"].update(mem_limit="64m"), {"cache": ["labels", "resources"]}),
    (lambda a: a.update(update_config={"monitor": "20s"}),
     {"web": ["labels", "update_config"], "cache": ["labels", "update_config"]}),
])
def test_changes_against_captured_specs_name_their_fields(change, fields):
    plan, _desired, _current = captured_plan(change)
    assert {n: s["fields"] for n, s in plan.items() if s["action"] == "update"} == fields


def test_captured_tasks_converged_and_rolled_back():
    since = sp.timestamp_seconds("2026-12-06T14:50:00Z")
    for svc in CAPTURED["services"]:
        tasks = [t for t in CAPTURED["tasks"] if t["ServiceID"] == svc["ID"]]
        assert sp.service_state(svc, tasks, since)["state"] == "converged", svc["Spec"]["Name"]
    rb = CAPTURED["rolled_back"]
    web = next(s for s in rb["services"] if s["Spec"]["Name"] == "shop_web")
    tasks = [t for t in rb["tasks"] if t["ServiceID"] == web["ID"]]
    st = sp.service_state(web, tasks, sp.timestamp_seconds(rb["since"]))
    assert st["state"] == "rolled_back" and st["running"] == 1
    assert {f["image"] for f in st["failing"]} == {"shp-swarm/web:bad"}
    # the same answer read before the deploy is history, not this deploy's rollback
    assert sp.service_state(web, tasks, sp.timestamp_seconds("2026-12-06T15:00:00Z"))["state"] == "converged"


def test_captured_nodes_quorum_and_placement():
    assert sp.quorum_problem(CAPTURED["nodes"]) is None
    doc = {"services": {"cache": {"deploy": {"placement": {"constraints": ["node.labels.selfhosted.data==true"]}}},
                        "web": {"deploy": {"placement": {"constraints": ["node.hostname==db-9"]}}}}}
    problems = sp.constraint_problems(doc, CAPTURED["nodes"])
    assert len(problems) == 1 and problems[0].startswith("service web: placement constraint node.hostname==db-9")


def test_captured_hardened_service_compares_equal():
    """caps (written CAP_-prefixed and sorted), read_only, tmpfs mounts and the limits of a service with the
    platform's hardened defaults, as Docker 20.10 stored them."""
    args = CAPTURED["hardened"]["args"]
    built = sp.build_stack("hard", args["definition"], dict(OPTS, ignore_keys=args["ignore_keys"]), False, "", {},
                           {})
    doc = sp.interpolate(sp.add_hash_labels(built["doc"]), {}, set())
    want = sp.desired_service("hard", "web", doc["services"]["web"], doc, {"configs": {}, "secrets": {}}, {}, {},
                              args["project_dir"])
    netnames = {n["Id"]: n["Name"] for n in CAPTURED["networks"]}
    have = sp.current_service(CAPTURED["hardened"]["services"][0]["Spec"], netnames)
    assert sp.changed_fields(want, have) == []
    assert have["cap_add"] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"]
    assert have["resources"]["limits"] == {"cpus": 1000000000, "memory": 268435456, "pids": 256}
    assert [m["type"] for m in have["mounts"]] == ["tmpfs", "tmpfs", "tmpfs"] and have["read_only"]


def test_one_shot_services_update_without_rollback():
    """Measured on Docker 20.10: a task that ends during an update counts as a failure of the update, so
    failure_action rollback would undo every release of a one-shot service."""
    res = one({"image": "migrate:1", "restart": "no"})
    assert res["doc"]["services"]["web"]["deploy"]["update_config"]["failure_action"] == "continue"
    assert "one-shot" in rows(res)[("web", "deploy.update_config.failure_action")]
    own = one({"image": "migrate:1", "restart": "on-failure", "deploy": {"update_config": {"failure_action": "pause"}}})
    assert own["doc"]["services"]["web"]["deploy"]["update_config"]["failure_action"] == "pause"
    assert ("web", "deploy.update_config.failure_action") not in rows(own)
