"""Unit tests for swarm_stack's executor (plugins/module_utils/swarm_stack.py) with the Engine API, the docker CLI
and the IPVS probe faked at the boundary (tests/unit/fake_swarm.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_stack as ss
from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import EngineAPI

from tests.unit.fake_swarm import FakeSwarm
from tests.unit.test_compose_stack import Clock

SECRET = "s3cr3t-Value!x"
DB_PASSWORD = "pg-Pa55word-99"


def params(tmp_path, **kw):
    p = {"project_name": "shop", "project_dir": str(tmp_path / "shop"), "definition": definition(),
         "env": {"DB_PASSWORD": DB_PASSWORD}, "env_file_name": ".env", "configs": None,
         "secrets": {"api_key": SECRET}, "state": "present", "endpoint_mode": "auto", "resolve_image": "never",
         "prune": True, "wait": True, "wait_timeout": 30, "update_config": None, "rollback_config": None,
         "stateful_services": [], "stateful_label": "selfhosted.data", "stateful_label_value": "true",
         "ignore_keys": []}
    p.update(kw)
    return p


def definition(web_image="shp-test/nginx:latest", site="server { listen 80; }", extra=None):
    web = {"image": web_image, "ports": ["0.0.0.0:8080:80"], "restart": "always",
           "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "retries": 2},
           "configs": [{"source": "site", "target": "/etc/nginx/conf.d/site.conf"}],
           "secrets": ["api_key"], "environment": {"DATABASE_URL": "postgres://app:${DB_PASSWORD}@db/app"}}
    web.update(extra or {})
    return {"services": {
        "web": web,
        "db": {"image": "shp-test/postgres:latest", "volumes": ["pgdata:/var/lib/postgresql/data"],
               "environment": {"POSTGRES_PASSWORD": "${DB_PASSWORD}"}},
    }, "volumes": {"pgdata": {}}, "configs": {"site": {"content": site}}}


def make(tmp_path, fake, check=False, diff=False, ipvs=False, **kw):
    clock = Clock()
    warnings = []
    stack = ss.SwarmStack(params(tmp_path, **kw), fake.runner, EngineAPI(fake.api), check_mode=check,
                          diff_mode=diff, probe=lambda: (ipvs, "probe says %s" % ipvs), environ={"PATH": "/bin"},
                          sleep=clock.sleep, clock=clock, warn=warnings.append)
    stack.warnings = warnings
    return stack


def swarm():
    return FakeSwarm(hostnames=("node-1", "node-2"), labels={"node-1": {"selfhosted.data": "true"}})


def deploys(fake):
    return [c for c in fake.calls if c[1:3] == ["stack", "deploy"]]


def test_first_deploy_creates_everything_secrets_on_stdin_only(tmp_path):
    fake = swarm()
    res = make(tmp_path, fake).execute()
    assert res["changed"] and res["path"] == "deploy"
    assert {s["service"]: s["action"] for s in res["plan"]} == {"db": "create", "web": "create"}
    assert len(deploys(fake)) == 1
    cmd = deploys(fake)[0]
    assert cmd[-1] == "shop" and "--prune" in cmd and "--with-registry-auth" in cmd
    assert cmd[cmd.index("--resolve-image") + 1] == "never"
    # secrets and env values never on argv, never in the stack file; env reaches the CLI through its environment
    flat = " ".join(" ".join(c) for c in fake.calls)
    assert SECRET not in flat and DB_PASSWORD not in flat
    text = Path(res["stack_file"]).read_text()
    assert SECRET not in text and DB_PASSWORD not in text and "${DB_PASSWORD}" in text
    assert stat.S_IMODE(os.stat(res["stack_file"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "shop" / ".env").st_mode) == 0o600
    assert fake.environs[fake.calls.index(cmd)] == {"DB_PASSWORD": DB_PASSWORD}
    assert SECRET.encode() in fake.data
    names = sorted(fake.objects["secrets"])
    assert len(names) == 1 and names[0].startswith("shop_api_key_") and len(names[0]) == len("shop_api_key_") + 12
    assert res["secrets"]["created"] == names and res["configs"]["created"][0].startswith("shop_site_")
    svc = fake.services["shop_web"]["Spec"]
    assert "DATABASE_URL=postgres://app:%s@db/app" % DB_PASSWORD in svc["TaskTemplate"]["ContainerSpec"]["Env"]
    assert res["endpoint_mode"] == "dnsrr" and "probe says False" in res["endpoint_reason"]
    assert res["services"]["web"]["state"] == "converged"
    # the result masks the secrets it knows
    assert SECRET not in repr(res) and DB_PASSWORD not in repr(res)


def test_second_run_is_a_fast_noop_without_any_cli_process(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    before = len(fake.calls)
    res = make(tmp_path, fake).execute()
    assert not res["changed"], res["plan"]
    assert res["path"] == "fast-noop"
    assert {s["action"] for s in res["plan"]} == {"unchanged"}
    assert len(fake.calls) == before and res["cli_calls"] == 0
    assert res["api_calls"] <= 8


def test_check_diff_on_converged_and_after_a_change(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    res = make(tmp_path, fake, check=True, diff=True).execute()
    assert not res["changed"]
    stack_text = (tmp_path / "shop" / ss.STACK_FILE).read_text()
    calls = len(fake.calls)
    res = make(tmp_path, fake, check=True, diff=True,
               definition=definition(web_image="shp-test/nginx:2", site="server { listen 81; }")).execute()
    assert res["changed"] and res["path"] == "check"
    plan = {s["service"]: s for s in res["plan"]}
    assert plan["db"]["action"] == "unchanged"
    assert plan["web"]["action"] == "update"
    assert {"image", "configs", "labels"} <= set(plan["web"]["fields"])
    assert len(fake.calls) == calls, "check mode ran a docker command"
    assert (tmp_path / "shop" / ss.STACK_FILE).read_text() == stack_text
    after = res["diff"][1]["after"]
    assert "web                      update: image" in after and '"shp-test/nginx:2"' in after
    assert "shp-test/nginx:2" in res["diff"][0]["after"] and "shp-test/nginx:latest" in res["diff"][0]["before"]


def test_env_change_is_an_update_of_the_env_field_masked_in_the_diff(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    res = make(tmp_path, fake, check=True, diff=True, env={"DB_PASSWORD": "new-Pa55word-77"}).execute()
    plan = {s["service"]: s for s in res["plan"]}
    assert plan["db"]["fields"] == ["env"] and plan["web"]["fields"] == ["env"]
    text = repr(res)
    assert DB_PASSWORD not in text and "new-Pa55word-77" not in text and "********" in res["diff"][1]["after"]


def test_config_change_rotates_the_name_and_prunes_the_old_one(tmp_path):
    fake = swarm()
    first = make(tmp_path, fake).execute()
    old = first["configs"]["created"][0]
    res = make(tmp_path, fake, definition=definition(site="server { listen 81; }")).execute()
    new = res["configs"]["created"]
    assert len(new) == 1 and new[0] != old and new[0].startswith("shop_site_")
    assert res["configs"]["pruned"] == [old]
    assert sorted(fake.objects["configs"]) == new
    assert res["secrets"] == {"created": [], "pruned": []}
    plan = {s["service"]: s for s in res["plan"]}
    assert plan["web"]["fields"] == ["configs"]


def test_quorum_loss_is_refused_before_anything_runs(tmp_path):
    fake = swarm()
    fake.quorum = False
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake).execute()
    assert "quorum" in exc.value.msg and "does not have a leader" in exc.value.msg
    # the daemon's message, not the bytes of its JSON body
    assert "GET /nodes: HTTP 503: rpc error: code = Unknown desc = The swarm does not have a leader" in exc.value.msg
    assert fake.calls == [] and not (tmp_path / "shop").exists()


def test_unreachable_managers_are_a_lost_quorum(tmp_path):
    fake = FakeSwarm(hostnames=("m1", "m2", "m3"))
    for n in fake.nodes:
        n["Spec"]["Role"] = "manager"
        n["ManagerStatus"] = {"Reachability": "unreachable"}
    fake.nodes[0]["ManagerStatus"] = {"Reachability": "reachable", "Leader": True}
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition={"services": {"a": {"image": "x:1"}}}, secrets=None).execute()
    assert "only 1 of 3 managers are reachable" in exc.value.msg and fake.calls == []


def test_a_leader_stepping_down_is_met_by_the_quorum_probe_before_anything_is_written(tmp_path):
    """In the seconds after the other managers went away the leader still answers the reads (every manager listed
    reachable), so the checks before the deploy pass, and a write is taken into its log and may be applied later. The
    probe write (a config created and removed through the API) meets that window before the run writes anything, its
    files included: the failure names the lost quorum and says nothing was deployed."""
    fake = swarm()
    make(tmp_path, fake).execute()
    stack_file = (tmp_path / "shop" / "docker-stack.yml").read_text()
    services = {n: s["Version"]["Index"] for n, s in fake.services.items()}
    calls = len(fake.calls)
    fake.leader_lost = True
    for kw in ({"definition": definition(site="server { listen 81; }")}, {"env": {"DB_PASSWORD": "other-Pa55w0rd"}}):
        with pytest.raises(ss.SwarmFailure) as exc:
            make(tmp_path, fake, **kw).execute()
        msg = exc.value.msg
        assert msg.startswith("nothing was deployed: the swarm managers have lost quorum (a test write before the "
                              "first change failed: POST /configs/create: HTTP 500: rpc error: code = Unknown desc = "
                              "raft: failed to process the request: node lost leader status)"), msg
        assert "a config shop_quorum-probe_" in msg and exc.value.result["quorum_lost"] is True, msg
        assert len(fake.calls) == calls and {n: s["Version"]["Index"] for n, s in fake.services.items()} == services
        assert (tmp_path / "shop" / "docker-stack.yml").read_text() == stack_file
    # a no-op needs no probe
    fake.leader_lost = False
    fake.api_requests.clear()
    assert make(tmp_path, fake).execute()["path"] == "fast-noop" and not any("POST" in r for r in fake.api_requests)


def test_absent_probes_before_docker_stack_rm(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    fake.leader_lost = True
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, state="absent").execute()
    assert exc.value.msg.startswith("nothing was removed: the swarm managers have lost quorum (a test write"), (
        exc.value.msg)
    assert not [c for c in fake.calls if c[1:3] == ["stack", "rm"]] and len(fake.services) == 2
    fake.leader_lost = False
    assert make(tmp_path, fake, state="absent").execute()["path"] == "rm" and not fake.services


def test_a_deploy_probes_once_and_leaves_no_probe_behind_and_a_leftover_one_is_pruned(tmp_path):
    fake = swarm()
    res = make(tmp_path, fake).execute()
    probe_id = hashlib.sha256(fake.probes[0].encode()).hexdigest()[:25]
    writes = [r for r in fake.api_requests if not r.startswith("/")]
    assert writes == ["POST /configs/create", "DELETE /configs/%s" % probe_id]
    assert len(fake.probes) == 1 and fake.probes[0].startswith("shop_quorum-probe_")
    assert fake.probes[0] not in fake.objects["configs"] and res["changed"]
    # a probe the managers applied after they came back (its removal never ran) is this stack's unused config
    fake.objects["configs"]["shop_quorum-probe_0123456789ab"] = {
        "ID": "leftover", "Spec": {"Name": "shop_quorum-probe_0123456789ab",
                                   "Labels": {"com.docker.stack.namespace": "shop",
                                              "org.selfhosted.swarm-stack.source": "quorum-probe"}}, "data": "x"}
    res = make(tmp_path, fake).execute()
    assert res["configs"]["pruned"] == ["shop_quorum-probe_0123456789ab"] and res["changed"]
    assert "shop_quorum-probe_0123456789ab" not in fake.objects["configs"] and len(fake.probes) == 1


def test_a_write_refused_after_the_probe_passed_names_the_lost_quorum_and_what_may_still_apply(tmp_path):
    """The leader noticed between the probe and the deploy: docker stack deploy's first write fails with "node lost
    leader status" after the CLI printed the step. Nothing had been deployed; the write may still be applied."""
    fake = swarm()
    make(tmp_path, fake).execute()
    fake.writes_lost = True
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, env={"DB_PASSWORD": "other-Pa55w0rd"}).execute()
    msg = exc.value.msg
    assert msg.startswith("nothing was deployed: the swarm managers have lost quorum (docker stack deploy failed: "
                          "failed to update service shop_db: Error response from daemon: rpc error"), msg
    assert "Swarm may still apply it once the managers are back" in msg and "other-Pa55w0rd" not in msg, msg
    assert exc.value.result["quorum_lost"] is True
    # configs to create: the first create is refused the same way, before the deploy
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=definition(site="server { listen 82; }")).execute()
    assert exc.value.msg.startswith("nothing was deployed: the swarm managers have lost quorum (docker config "
                                    "create shop_site_"), exc.value.msg
    assert len(deploys(fake)) == 2  # the first run's and the refused one: no deploy after the refused create


def test_quorum_lost_during_the_wait_says_the_deploy_went_through(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    fake.quorum_lost_after_deploy = True
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=definition(web_image="shp-test/nginx:2")).execute()
    msg = exc.value.msg
    assert msg.startswith("docker stack deploy, then the swarm managers lost quorum while the run waited"), msg
    assert "does not have a leader" in msg and exc.value.result["quorum_lost"] is True, msg
    assert fake.services["shop_web"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "shp-test/nginx:2"


def test_worker_and_inactive_node_are_refused(tmp_path):
    fake = swarm()
    fake.manager = False
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake).execute()
    assert "worker, not a manager" in exc.value.msg and fake.calls == []
    fake = swarm()
    fake.state = "inactive"
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake).execute()
    assert "not part of an active swarm" in exc.value.msg
    res = make(tmp_path, fake, check=True).execute()
    assert res["changed"] and res["swarm_missing"] and {s["action"] for s in res["plan"]} == {"create"}


def test_missing_secret_value_is_refused_before_anything_runs(tmp_path):
    fake = swarm()
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, secrets={"api_key": None}).execute()
    assert "secret api_key: the value is missing" in exc.value.msg
    assert fake.calls == [] and fake.api_requests == []


def test_unknown_node_in_a_constraint_is_refused_before_anything_runs(tmp_path):
    fake = swarm()
    d = definition(extra={"deploy": {"placement": {"constraints": ["node.hostname==node-9"]}}})
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=d).execute()
    assert "service web: placement constraint node.hostname==node-9: no node has hostname node-9" in exc.value.msg
    assert "node-1, node-2" in exc.value.msg and fake.calls == []


def test_stateful_pin_needs_a_labelled_node(tmp_path):
    fake = FakeSwarm(hostnames=("node-1",))
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake).execute()
    assert "service db: placement constraint node.labels.selfhosted.data==true: no node has the label" in \
        exc.value.msg
    assert fake.calls == []


def test_vip_on_a_kernel_without_ipvs_is_refused_before_anything_runs(tmp_path):
    fake = swarm()
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, endpoint_mode="vip").execute()
    assert "endpoint_mode vip: this node's kernel has no IPVS (probe says False)" in exc.value.msg
    assert fake.calls == [] and fake.api_requests == []
    res = make(tmp_path, fake, endpoint_mode="auto", ipvs=True).execute()
    assert res["endpoint_mode"] == "vip"
    spec = fake.services["shop_web"]["Spec"]
    assert spec["EndpointSpec"]["Mode"] == "vip" and spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "ingress"
    assert spec["UpdateConfig"]["Order"] == "start-first"


def test_build_key_is_refused_naming_the_service(tmp_path):
    fake = swarm()
    d = definition()
    d["services"]["api"] = {"build": "./api", "image": "shop-api:1"}
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=d).execute()
    assert "service api: key build: Swarm does not build images" in exc.value.msg
    assert fake.calls == [] and fake.api_requests == []


def test_bad_release_is_rolled_back_and_reported(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    fake.bad_images.add("shp-test/nginx:bad")
    fake.logs["shop_web"] = "shop_web.1.x@node-1 | healthcheck failed, password %s\n" % DB_PASSWORD
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=definition(web_image="shp-test/nginx:bad")).execute()
    res = exc.value.result
    assert res["rolled_back"] is True and res["rolled_back_services"] == ["web"]
    assert "Swarm rolled back web" in exc.value.msg
    assert "unhealthy container" in exc.value.msg and "healthcheck failed" in exc.value.msg
    assert DB_PASSWORD not in exc.value.msg and "********" in exc.value.msg
    assert fake.services["shop_web"]["Spec"]["Labels"]["com.docker.stack.image"] == "shp-test/nginx:latest"
    # the new config is kept (in use by nothing, but it is the definition's): nothing pruned after a failure
    assert res["configs"]["pruned"] == []


def test_wait_timeout_reports_the_services_and_their_state(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    fake.stuck_images.add("shp-test/nginx:slow")
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=definition(web_image="shp-test/nginx:slow"), wait_timeout=5).execute()
    assert "did not converge within 5s" in exc.value.msg
    assert "web: pending, 0/1 running, update updating" in exc.value.msg
    assert exc.value.result["rolled_back"] is False
    assert exc.value.result["waited"]["polls"] >= 5


def test_one_shot_service_does_not_hang_the_wait(tmp_path):
    fake = swarm()
    d = {"services": {"migrate": {"image": "shop-migrate:1", "restart": "no"}}}
    orig = fake.start_tasks

    def complete(svc, previous=None):
        orig(svc, previous)
        for t in fake.tasks:
            if t["ServiceID"] == svc["ID"] and t["DesiredState"] == "running":
                t["Status"]["State"] = "complete"  # Swarm then shuts a finished one-shot task down
                t["DesiredState"] = "shutdown"

    fake.start_tasks = complete
    res = make(tmp_path, fake, definition=d, secrets=None, env=None).execute()
    assert res["services"]["migrate"]["state"] == "converged"
    assert fake.services["shop_migrate"]["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert res["waited"]["polls"] == 1


def test_unsupported_options_the_cli_ignores_are_warned(tmp_path):
    fake = swarm()
    fake.deploy_stderr = "Ignoring unsupported options: cap_add, cap_drop\n\n"
    stack = make(tmp_path, fake)
    stack.execute()
    assert stack.warnings == ["docker stack deploy: Ignoring unsupported options: cap_add, cap_drop"]


def test_external_local_network_is_refused(tmp_path):
    fake = swarm()
    d = definition()
    d["networks"] = {"proxy": {"external": True, "name": "bridge"}}
    d["services"]["web"]["networks"] = ["default", "proxy"]
    with pytest.raises(ss.SwarmFailure) as exc:
        make(tmp_path, fake, definition=d).execute()
    assert "network proxy: bridge is a local-scoped bridge network" in exc.value.msg and fake.calls == []


def test_absent_removes_the_stack(tmp_path):
    fake = swarm()
    make(tmp_path, fake).execute()
    res = make(tmp_path, fake, state="absent", check=True).execute()
    assert res["changed"] and fake.services
    res = make(tmp_path, fake, state="absent").execute()
    assert res["changed"] and res["path"] == "rm" and not fake.services and not fake.objects["secrets"]
    res = make(tmp_path, fake, state="absent").execute()
    assert not res["changed"]


def test_the_module_does_not_import_compose_stack():
    """Each run of the module imports its module_utils (and Ansible ships them in its payload): swarm_stack takes
    the helpers it shares with compose_stack from stack_common, not compose_stack with its planner and registry
    client."""
    import json
    import subprocess
    import sys

    from tests.conftest import COLLECTIONS

    code = ("import json, sys\n"
            "from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder\n"
            "_AnsibleCollectionFinder(paths=[%r])._install()\n"
            "from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_stack\n"
            "print(json.dumps(sorted(m.rsplit('.', 1)[1] for m in sys.modules\n"
            "                        if '.platform.plugins.module_utils.' in m)))" % str(COLLECTIONS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    loaded = json.loads(out.stdout)
    assert "swarm_stack" in loaded and "stack_common" in loaded
    assert not {"compose_stack", "compose_plan", "compose_registry"} & set(loaded), loaded


def test_stack_file_text_is_the_python_dumpers(tmp_path):
    """render_stack uses libyaml's emitter where PyYAML has it; its text must be the pure-Python emitter's (a file
    written by either is found unchanged by the other, so the no-op stays a no-op)."""
    import yaml
    from ansible_collections.selfhosted.platform.plugins.module_utils import stack_common as sc

    fake = swarm()
    extra = {"command": ["sh", "-c", "echo 'a: b' # x\nexit 0"],
             "labels": {"note": "ünïcode ✓", "empty": "", "yes": "no", "n": "012"}}
    res = make(tmp_path, fake, definition=definition(extra=extra)).execute()
    docs = [yaml.safe_load(Path(res["stack_file"]).read_text())]
    docs += [{"services": {"x": {"environment": {"K": v}, "command": [v]}}}
             for v in ("", "yes", "null", "~", "1e3", "- a", "a: b", "#x", " lead", "trail ", "l1\nl2\n", "l1\nl2",
                       "\n", "a\n\nb\n\n", "tab\there", "  indented\nblock", "${VAR}", "$$x", "*ref", "!tag", "`bt")]
    for doc in docs:
        python = yaml.dump(doc, Dumper=sc._Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                           width=1000)
        assert ss.render_stack(doc).split("\n", 1)[1] == python


def test_ipvs_rule():
    def probe(files):
        return ss.ipvs_support(exists=lambda p: p in files, read=files.get, release="6.1.0-1-amd64")

    assert probe({})[0] is False
    assert "no /proc/net/ip_vs" in probe({})[1]
    assert probe({"/proc/net/ip_vs": ""}) == (True, "/proc/net/ip_vs exists")
    assert probe({"/proc/modules": "nf_nat 1 0\nip_vs 172032 0 - Live\n"})[0]
    assert probe({"/lib/modules/6.1.0-1-amd64/kernel/net/netfilter/ipvs/ip_vs.ko.xz": ""})[0]
    assert probe({"/boot/config-6.1.0-1-amd64": "CONFIG_IP_VS=m\n"})[0]
    assert not probe({"/boot/config-6.1.0-1-amd64": "# CONFIG_IP_VS is not set\n"})[0]
