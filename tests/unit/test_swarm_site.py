"""site.yml on a Docker Swarm cluster: the planning the layers share (plugins/module_utils/swarm_site.py, the
selfhosted.platform.swarm_site_* filters), the data tier contract's Swarm names and the backup runner's task
container. None of it exists on main."""

from __future__ import annotations

import subprocess

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.swarm_site import FilterModule
from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier as dt
from ansible_collections.selfhosted.platform.plugins.module_utils import swarm_site as site

from tests.conftest import ROOT

FILTERS = FilterModule().filters()
CLUSTER = {"all": ["swarm-1", "swarm-2", "swarm-3", "web-9"], "ungrouped": ["web-9"],
           "swarm_managers": ["swarm-1"], "swarm_workers": ["swarm-2", "swarm-3"]}
SINGLE = {"all": ["amn"], "ungrouped": ["amn"]}
LABELS = {"swarm-1": {}, "swarm-2": {"tier": "app"}, "swarm-3": {"tier": "data", "data": "true"}}


# ---------------------------------------------------------------------------------------------
# which hosts run each layer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", sorted(site.LAYER_SCOPE))
def test_an_inventory_without_swarm_nodes_keeps_every_plays_pattern(layer):
    """The single-host converge must not change: each layer play gets exactly the pattern it always had (the swarm
    play none, silently)."""
    for pattern in ("all", "amn", "web:&prod"):
        got = site.layer_hosts(SINGLE, layer, pattern)
        assert got == (["!all"] if layer == "swarm" else pattern)


def test_on_a_cluster_each_layer_runs_on_its_nodes_and_the_other_hosts_as_before():
    hosts = {layer: site.layer_hosts(CLUSTER, layer) for layer in site.LAYER_SCOPE}
    assert hosts == {
        "swarm": ["swarm-1", "swarm-2", "swarm-3"],  # never a host outside the groups
        "data_tier": ["web-9", "swarm-1", "swarm-2", "swarm-3"],
        "backup": ["web-9", "swarm-1", "swarm-2", "swarm-3"],
        "app_stack": ["web-9", "swarm-1"],  # the deployer: swarm_stack runs on a manager
        "watchtower": ["web-9", "swarm-1"],
        "proxy": ["web-9", "swarm-1"],  # every manager
        "authelia": ["web-9"],
    }
    # a pattern of names narrows the cluster's hosts too; nothing left is a pattern matching nothing
    assert site.layer_hosts(CLUSTER, "data_tier", "swarm_workers") == ["swarm-2", "swarm-3"]
    assert site.layer_hosts(CLUSTER, "app_stack", "swarm-2,web-9") == ["web-9"]
    assert site.layer_hosts(CLUSTER, "proxy", "swarm-3") == ["!all"]
    # other group names
    other = {"all": ["a", "b"], "mgr": ["a"], "wrk": ["b"]}
    assert site.layer_hosts(other, "proxy", "all", "mgr", "wrk") == ["a"]
    assert site.layer_hosts(other, "proxy") == "all"


def test_a_pattern_the_cluster_cannot_resolve_is_named():
    with pytest.raises(AnsibleFilterError, match="names of hosts and groups only"):
        FILTERS["swarm_site_hosts"](CLUSTER, "proxy", "all:!swarm-2")
    with pytest.raises(AnsibleFilterError, match="layer 'dns'"):
        FILTERS["swarm_site_hosts"](CLUSTER, "dns")


# ---------------------------------------------------------------------------------------------
# where the data lives, and what stops the run
# ---------------------------------------------------------------------------------------------
INSTANCES = [{"name": "pg", "engine": "postgres", "networks": ["shp-apps"]},
             {"name": "cache", "engine": "redis", "node": "swarm-2", "networks": ["shp-apps"]}]
STACKS = [{"name": "web", "networks": ["shp-apps"], "services": {"app": {}}},
          {"name": "shop", "networks": ["shp-apps"], "dirs": [{"path": "uploads"}], "services": {"app": {}}},
          {"name": "old", "state": "absent", "files": [{"dest": "x"}]}]


def plan(**kw):
    args = {"groups": CLUSTER, "node_labels": LABELS, "instances": INSTANCES, "stacks": STACKS,
            "swarm_networks": [{"name": "shp-apps"}], "layers": ["data_tier", "app_stack", "proxy", "backup"],
            "proxy_networks": ["shp-apps"]}
    args.update(kw)
    return site.site_plan(**args)


def test_instances_and_stack_data_are_pinned_to_their_node_or_the_labelled_one():
    got = plan()
    assert got["problems"] == [] and got["cluster"] is True
    assert got["deployer"] == "swarm-1"
    assert got["placement"] == {"pg": "swarm-3", "cache": "swarm-2"}  # label data=true / its own node
    assert got["stack_nodes"] == {"shop": "swarm-3"}  # only a stack with data directories is pinned
    assert got["data_nodes"] == ["swarm-2", "swarm-3"]
    assert site.site_plan(SINGLE, instances=INSTANCES)["cluster"] is False
    assert site.site_plan(SINGLE, instances=INSTANCES)["problems"] == []


def test_every_problem_is_named_before_anything_is_deployed():
    bad = plan(instances=[{"name": "pg", "engine": "postgres", "node": "swarm-9", "publish_loopback": 15432},
                          {"name": "my", "engine": "mariadb"}],
               stacks=[{"name": "cms", "files": [{"dest": "a.conf"}], "networks": ["web"], "services": {}}],
               node_labels={}, proxy_mode="npm", proxy_networks=["edge"],
               layers=["data_tier", "app_stack", "proxy", "authelia", "watchtower"])
    text = "\n".join(bad["problems"])
    assert "data_tier_instances[pg].node: swarm-9 is not a node of swarm_managers or swarm_workers " \
           "(swarm-1, swarm-2, swarm-3)" in text
    assert "data_tier_instances[pg].publish_loopback" in text
    assert "data_tier_instances[my]: no node given and no node carries the label data=true" in text
    assert "data_tier_instances[pg].networks: the network data-shared is not one of swarm_networks" in text
    assert "app_stack_stacks[cms].files" in text and "app_stack_stacks[cms].networks: the network web" in text
    assert "proxy_mode npm" in text and "proxy_nginx_networks: the network edge" in text
    assert "selfhosted_authelia_enabled" in text
    assert len(bad["problems"]) == 10, bad["problems"]  # both instances name data-shared
    assert bad["notes"] and "Watchtower is not deployed on a swarm" in bad["notes"][0]
    # a layer that is off is not judged
    assert plan(proxy_mode="npm", layers=["data_tier"])["problems"] == []
    assert plan(groups={"all": ["w"], "swarm_workers": ["w"]}, node_labels={"w": {"data": "true"}},
                layers=[])["problems"] == ["swarm: the group swarm_workers has nodes but swarm_managers has none: "
                                           "site.yml on a cluster deploys from a manager"]


def test_the_filter_reads_the_node_labels_from_hostvars():
    hostvars = {h: {"swarm_node_labels": labels} for h, labels in LABELS.items()}
    got = FILTERS["swarm_site_plan"](CLUSTER, hostvars, INSTANCES, [], ["shp-apps"], ["data_tier"])
    assert got["placement"] == {"pg": "swarm-3", "cache": "swarm-2"} and got["problems"] == []


def test_user_namespace_remapping_on_a_swarm_node_is_refused_by_name():
    hostvars = {h: {"swarm_node_labels": labels} for h, labels in LABELS.items()}
    hostvars["swarm-3"]["docker_engine_userns_remap"] = "default"
    hostvars["web-9"] = {"docker_engine_userns_remap": "default"}  # not a node: a single host may remap
    got = FILTERS["swarm_site_plan"](CLUSTER, hostvars, INSTANCES, [], ["shp-apps"], ["data_tier"])
    assert len(got["problems"]) == 1, got["problems"]
    assert got["problems"][0].startswith("docker_engine_userns_remap: set on swarm-3, a node of the swarm"), got
    hostvars["swarm-3"]["docker_engine_userns_remap"] = ""
    assert FILTERS["swarm_site_plan"](CLUSTER, hostvars, INSTANCES, [], ["shp-apps"], ["data_tier"])["problems"] == []


# ---------------------------------------------------------------------------------------------
# the roles' definitions as swarm_stack deploys them
# ---------------------------------------------------------------------------------------------
PG = {"services": {"postgres": {
    "image": "postgres:16", "restart": "unless-stopped", "shm_size": "256m", "user": "999:999",
    "tmpfs": ["/var/run/postgresql:uid=999,gid=999,mode=0755", "/tmp", "/cache:size=64m,uid=1"],
    "volumes": ["/mnt/data/pg:/var/lib/postgresql/data"], "secrets": ["superuser"]}},
    "secrets": {"superuser": {"file": "/etc/selfhosted/secrets/pg/superuser"}},
    "networks": {"shp-apps": {"external": True, "name": "shp-apps"}}}


def test_a_data_tier_definition_is_pinned_and_its_mounts_translated():
    got = FILTERS["swarm_definition"](PG, pin="shp-swarm-3", drop_secrets=["superuser"])
    svc = got["services"]["postgres"]
    assert svc["tmpfs"] == ["/var/run/postgresql", "/tmp", "/cache:size=64m"]
    assert "shm_size" not in svc
    assert svc["volumes"][-1] == {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 256 * 1024 ** 2}}
    assert svc["deploy"]["placement"]["constraints"] == ["node.hostname==shp-swarm-3"]
    assert "secrets" not in got and svc["secrets"] == ["superuser"]
    assert PG["services"]["postgres"]["shm_size"] == "256m"  # the input is left alone
    # twice is the same (a second converge compares equal)
    assert FILTERS["swarm_definition"](got, pin="shp-swarm-3") == got


def test_only_the_services_on_a_stacks_data_are_pinned():
    stack = {"services": {"api": {"image": "a", "volumes": ["/mnt/data/shop/uploads:/up"]},
                          "worker": {"image": "a", "volumes": [
                              {"type": "bind", "source": "/mnt/data/shop/x", "target": "/x"}]},
                          "web": {"image": "a", "volumes": ["/mnt/data/shopping:/s", "cache:/c"]}}}
    got = site.swarm_definition(stack, pin="n3", pin_mounts_under="/mnt/data/shop")
    pinned = {n for n, s in got["services"].items() if s.get("deploy")}
    assert pinned == {"api", "worker"}
    assert site.swarm_definition(stack, pin="n3", pin_services=["web"])["services"]["web"]["deploy"] == {
        "placement": {"constraints": ["node.hostname==n3"]}}


def test_the_router_runs_on_every_manager_with_host_mode_ports():
    ports = ["80:80", "0.0.0.0:443:443/tcp", {"target": 8080, "published": 8080}]
    router = {"services": {"nginx": {"image": "nginx", "ports": ports}}}
    got = site.swarm_definition(router, host_ports=True, global_constraint="node.role==manager")
    svc = got["services"]["nginx"]
    assert svc["ports"] == [{"target": 80, "published": 80, "protocol": "tcp", "mode": "host"},
                            {"target": 443, "published": 443, "protocol": "tcp", "mode": "host"},
                            {"target": 8080, "published": 8080, "mode": "host"}]
    assert svc["deploy"] == {"mode": "global", "placement": {"constraints": ["node.role==manager"]}}
    with pytest.raises(site.SiteError, match=r"bound to 127\.0\.0\.1"):
        site.swarm_definition({"services": {"a": {"ports": ["127.0.0.1:80:80"]}}}, host_ports=True)
    with pytest.raises(AnsibleFilterError, match="not a size"):
        FILTERS["swarm_definition"]({"services": {"a": {"shm_size": "lots"}}})


# ---------------------------------------------------------------------------------------------
# backups on the nodes that hold the data
# ---------------------------------------------------------------------------------------------
def test_each_node_backs_up_its_own_instances_and_the_paths_kept_on_it():
    placement = {"pg": "swarm-3", "cache": "swarm-2", "my": "swarm-3"}
    sets = [{"name": "databases", "databases": "all", "on_calendar": "daily"},
            {"name": "crm", "databases": ["my", "cache"]},
            {"name": "files", "paths": ["/mnt/data/shop/uploads"]},
            {"name": "logs", "paths": ["/var/log/x"], "node": "swarm-1"}]
    on3 = FILTERS["swarm_backup_sets"](sets, placement, "swarm-3", "swarm-3")
    assert on3 == [{"name": "databases", "databases": "all", "on_calendar": "daily"},
                   {"name": "crm", "databases": ["my"]},
                   {"name": "files", "databases": [], "paths": ["/mnt/data/shop/uploads"]}]
    assert FILTERS["swarm_backup_sets"](sets, placement, "swarm-2", "swarm-3") == [
        {"name": "databases", "databases": "all", "on_calendar": "daily"}, {"name": "crm", "databases": ["cache"]}]
    assert FILTERS["swarm_backup_sets"](sets, placement, "swarm-1", "swarm-3") == [
        {"name": "logs", "databases": [], "paths": ["/var/log/x"]}]
    mine = FILTERS["swarm_instances_on_node"](INSTANCES, {"pg": "swarm-3", "cache": "swarm-2"}, "swarm-3")
    assert mine == [dict(INSTANCES[0], swarm=True)]


def test_a_swarm_instance_names_its_service_and_the_runner_dumps_through_its_task():
    record = dt.instance_record({"name": "pg", "engine": "postgres", "swarm": True})
    assert record["swarm_service"] == "pg_postgres"
    assert "swarm_service" not in dt.instance_record({"name": "pg", "engine": "postgres"})  # one host: unchanged
    from tests.unit.test_backup_runner import runner

    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "3f2a9c1b7d4e\n", "")

    got = runner.task_container(dict(record), run=run)
    assert got["container"] == "3f2a9c1b7d4e"
    assert calls == [["docker", "ps", "--quiet", "--filter", "label=com.docker.swarm.service.name=pg_postgres",
                      "--filter", "status=running"]]
    plain = dt.instance_record({"name": "pg", "engine": "postgres"})
    assert runner.task_container(plain, run=run) is plain and len(calls) == 1

    def none(argv, **kw):
        return subprocess.CompletedProcess(argv, 0, "", "")

    with pytest.raises(runner.rs.ResticError, match="no running task of it on this node"):
        runner.task_container(dict(record), run=none)


# ---------------------------------------------------------------------------------------------
# site.yml: bad input stops the run in the preflight, before any node is contacted
# ---------------------------------------------------------------------------------------------
def test_bad_swarm_input_stops_site_yml_before_any_node_is_contacted(tmp_path):
    """The swarm sandbox's inventory (inventories/sandbox-swarm) with an instance pinned to a node that is not in it,
    a stack whose env needs a later layer's fact (data_tier_connections: only the keys the plan reads are templated)
    but sits on a bridge network, and Nginx Proxy Manager: every problem named, no play after the preflight, ssh never
    started."""
    import json

    from tests.conftest import ROOT, explain, run_tool
    from tests.unit.test_preflight import SSH_MARKER

    ssh = tmp_path / "ssh"
    ssh.write_text(SSH_MARKER)
    ssh.chmod(0o755)
    for n, host in enumerate(("swarm-1", "swarm-2", "swarm-3"), start=1):
        (tmp_path / host).mkdir()
        (tmp_path / host / "ssh_port").write_text(f"{2222 + n}\n")
        (tmp_path / host / "address").write_text(f"192.0.2.{10 + n}\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "ansible_ssh_executable": str(ssh),
        "data_tier_instances": [{"name": "swarm-db", "engine": "postgres", "node": "swarm-9",
                                 "databases": [{"name": "shop"}]}],
        "app_stack_stacks": [{"name": "shop", "networks": ["bridge-net"],
                              "env": {"URL": "{{ data_tier_connections['swarm-db'].superuser_password }}"},
                              "services": {"web": {"image": "shp-test/httpapp:latest"}}}],
        "proxy_mode": "npm", "proxy_npm_admin_password": "a-test-password"}))
    res = run_tool(["ansible-playbook", str(ROOT / "playbooks/site.yml"), "-i", str(ROOT / "inventories/sandbox-swarm"),
                    "-e", f"@{extra}"], timeout=300, HOME=str(tmp_path), SHP_SWARM_SANDBOX_STATE=str(tmp_path),
                   ANSIBLE_LOCALHOST_WARNING="false")
    out = res.stdout + res.stderr
    assert res.returncode != 0, explain(res)
    assert "preflight found 3 problem(s) - nothing was changed" in out, explain(res)
    assert "data_tier_instances[swarm-db].node: swarm-9 is not a node of swarm_managers or swarm_workers " \
           "(swarm-1, swarm-2, swarm-3)" in out, explain(res)
    assert "app_stack_stacks[shop].networks: the network bridge-net is not one of swarm_networks" in out
    assert "proxy_mode npm: Nginx Proxy Manager keeps its hosts" in out
    assert "PLAY [Docker Engine]" not in out, explain(res)
    assert not (tmp_path / "ssh-was-called").exists(), (tmp_path / "ssh-was-called").read_text()


def test_the_swarm_sandboxs_site_passes_the_preflight_and_says_watchtower_is_left_out(tmp_path):
    from tests.conftest import ROOT, explain, run_tool

    for n, host in enumerate(("swarm-1", "swarm-2", "swarm-3"), start=1):
        (tmp_path / host).mkdir()
        (tmp_path / host / "ssh_port").write_text(f"{2222 + n}\n")
        (tmp_path / host / "address").write_text(f"192.0.2.{10 + n}\n")
    res = run_tool(["ansible-playbook", str(ROOT / "playbooks/site.yml"), "-i", str(ROOT / "inventories/sandbox-swarm"),
                    "--tags", "preflight", "-v"], timeout=300, HOME=str(tmp_path),
                   SHP_SWARM_SANDBOX_STATE=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="false")
    assert res.returncode == 0, explain(res)
    flat = " ".join(res.stdout.split())
    assert flat.count("on the swarm: Watchtower is not deployed on a swarm: it replaces containers") == 3, flat
    assert flat.count("placement: swarm-db: swarm-3") == 3, flat


def test_a_live_redis_restore_is_refused_on_a_swarm():
    record = dt.instance_record({"name": "cache", "engine": "redis", "swarm": True})
    request = {"kind": "database", "into": "live", "instance": "cache", "confirm": "cache"}
    assert dt.restore_problems(request, record, ["cache"]) == [
        "restore_instance=cache: a live Redis restore restarts the instance's container, which on a Docker Swarm "
        "belongs to Swarm (service cache_redis); not supported on a swarm yet"]
    plain = dt.instance_record({"name": "cache", "engine": "redis"})
    assert dt.restore_problems(request, plain, ["cache"]) == []


def test_a_delegated_task_reaches_the_node_it_is_delegated_to():
    """Connection variables are templated, under delegate_to, with the delegating host's inventory_hostname: each
    node's must name its own files without it (a deploy delegated to the manager reached the worker again)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / "sandbox-swarm")])
    manager = VariableManager(loader=loader, inventory=inventory)
    for name in ("swarm-1", "swarm-2", "swarm-3"):
        variables = manager.get_vars(host=inventory.get_host(name))
        variables["inventory_hostname"] = "swarm-3" if name != "swarm-3" else "swarm-1"  # the delegating host
        templar = Templar(loader, variables=variables)
        node_dir = templar.template(variables["sandbox_node_dir"])
        assert node_dir.endswith(f"/{name}"), (name, node_dir)
