"""The tags of playbooks/site.yml, as docs/operations.md ("Tags of site.yml") documents them, against the playbook
and the roles' task files: every tag used is documented, every documented tag is used, an alias sits on the same
plays as the tag it stands for, and the roles' own finer tags are reachable through site.yml (the include_role tasks
are tagged ``always``, so their tasks' own tags select them). tests/integration/test_sandbox*.py run each documented
tag alone on a converged sandbox, from the same table (documented_tags)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (?:`([a-z0-9_]+)`)? *\|")


def documented_tags(heading: str = "## Tags of site.yml") -> dict[str, str | None]:
    """{tag: the tag it is an alias of, or None} from the table under HEADING ("## Tags of site.yml")."""
    text = DOC.read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 3)]
    tags = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            tags[m[1]] = m[2]
    return tags


def _task_tags(node, out: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _task_tags(item, out)
    elif isinstance(node, dict):
        tags = node.get("tags")
        if isinstance(tags, str):
            out.add(tags)
        elif isinstance(tags, list):
            out.update(tags)
        for value in node.values():
            _task_tags(value, out)


def playbook_roles(playbook: str) -> set[str]:
    """The collection's roles PLAYBOOK (a file under playbooks/) runs (include_role names and roles: entries, those
    of the playbooks it imports included)."""
    text = (ROOT / "playbooks" / playbook).read_text()
    roles = set(re.findall(r"(?:name|role):\s*selfhosted\.platform\.([a-z_]+)\s*$", text, re.M))
    for imported in re.findall(r"import_playbook:\s*([a-z_]+\.yml)\s*$", text, re.M):
        roles |= playbook_roles(imported)
    return roles


def used_tags(playbook: str = "site.yml") -> dict[str, set[str]]:
    """{file (relative): the tags it uses}, for PLAYBOOK and the task files of every role it runs."""
    files = [ROOT / "playbooks" / playbook,
             *sorted(p for role in playbook_roles(playbook) for p in (ROOT / "roles" / role / "tasks").glob("*.yml"))]
    out = {}
    for path in files:
        tags: set[str] = set()
        _task_tags(yaml.safe_load(path.read_text()), tags)
        out[str(path.relative_to(ROOT))] = tags - {"always"}
    return out


def site_plays(playbook: str = "site.yml") -> list[dict]:
    """The plays of PLAYBOOK, those of the playbooks it imports in their place."""
    plays = []
    for play in yaml.safe_load((ROOT / "playbooks" / playbook).read_text()):
        imported = play.get("ansible.builtin.import_playbook")
        plays.extend(site_plays(imported) if imported else [play])
    return plays


def test_every_tag_in_use_is_documented_and_every_documented_tag_is_used():
    documented = documented_tags()
    assert len(documented) >= 20, documented
    # the swarm role's tags (site.yml runs it on a cluster only) are in the swarm.yml table, checked below
    used = set().union(*used_tags().values()) - set(documented_tags("## Tags of swarm.yml"))
    assert used - set(documented) == set(), f"tags used but not in docs/operations.md: {sorted(used - set(documented))}"
    assert set(documented) - used == set(), f"documented tags nobody uses: {sorted(set(documented) - used)}"


def test_the_swarm_playbooks_own_tags_are_documented_in_their_table():
    """playbooks/swarm.yml runs docker_engine and firewall (their tags are site.yml's) and the swarm role, in the one
    play (playbooks/swarm_cluster.yml) site.yml imports too, for an inventory whose swarm groups have nodes. The swarm
    role's tags have a table of their own, "Tags of swarm.yml": on a single host they select nothing, so the sandbox
    tests, which run every tag of the site table alone, leave them out."""
    assert playbook_roles("swarm.yml") == {"docker_engine", "firewall", "swarm"}
    assert "swarm" in playbook_roles("site.yml")
    site = set(documented_tags())
    own = documented_tags("## Tags of swarm.yml")
    used = set().union(*used_tags("swarm.yml").values()) - site
    assert used == set(own), (sorted(used), sorted(own))
    assert set().union(*used_tags("site.yml").values()) - site == set(own)
    swarm_plays = [p for p in site_plays() if p["name"] == "Docker Swarm"]
    assert swarm_plays == [p for p in site_plays("swarm.yml") if p["name"] == "Docker Swarm"] and len(swarm_plays) == 1


def test_each_alias_is_on_exactly_the_plays_of_its_tag():
    documented = documented_tags()
    for alias, tag in documented.items():
        if tag is None:
            continue
        assert documented[tag] is None, f"{alias} is an alias of an alias"
        for play in site_plays():
            assert (alias in play.get("tags", [])) == (tag in play.get("tags", [])), (alias, play["name"])


def test_the_roles_finer_tags_are_reachable_through_site_yml():
    """A layer play's tags select its role's tasks (`apply`). The include_role task itself is tagged `always` and runs
    when a tag of its layer is asked for (selfhosted__layer_tags: the play's tags and the role's finer ones), so
    `--tags docker_engine_preload` reaches the role's preload tasks, `--skip-tags docker_engine_preload` skips only
    them, and a layer nobody asked for is not entered (its argument validation does not run). On main the include
    carried the layer's tags only, and every finer tag selected nothing."""
    layers = [p for p in site_plays() if p["name"] != "Preflight"]
    assert len(layers) == 9  # the eight layers and the swarm play (swarm_cluster.yml)
    swarm_tags = documented_tags("## Tags of swarm.yml")
    finer = {}
    for path, tags in used_tags().items():
        if path.startswith("roles/"):
            finer.setdefault(path.split("/")[1], set()).update(tags)
    for play in layers:
        task = play["tasks"][-1]
        role = task["ansible.builtin.include_role"]["name"].rsplit(".", 1)[1]
        assert task.get("tags") == ["always"], play["name"]
        assert task["ansible.builtin.include_role"]["apply"]["tags"] == play["tags"], play["name"]
        layer_tags = play["vars"]["selfhosted__layer_tags"]
        assert set(layer_tags) == set(play["tags"]) | finer.get(role, set()), (play["name"], layer_tags)
        assert "ansible_run_tags | intersect(['all', 'tagged'] + selfhosted__layer_tags) | length > 0" in task["when"]
        for tag in finer.get(role, set()) - set(play["tags"]):
            assert tag.startswith(role + "_") and tag in (swarm_tags if role == "swarm" else documented_tags()), (
                role, tag)


def test_app_stack_alone_reads_the_connections_through_the_data_tier_contract():
    """`--tags app_stack` alone failed on main with 'data_tier_connections' is undefined (a fact only the data tier
    layer set). The App stacks play now builds it, when it is missing, with the data tier's connections.yml (the
    layer contract's data_tier_connections filter over the secret files), before the role validates its arguments."""
    play = next(p for p in site_plays() if p["name"] == "App stacks")
    first, role = play["tasks"]
    include = first["ansible.builtin.include_role"]
    # connections.yml on one host, swarm_connections.yml on a swarm node (secrets read from the nodes that keep them)
    assert include["name"] == "selfhosted.platform.data_tier"
    assert include["tasks_from"] == ("{{ 'swarm_connections.yml' if selfhosted__entry == 'swarm' "
                                     "else 'connections.yml' }}")
    assert "data_tier_connections is not defined" in first["when"]
    assert role["ansible.builtin.include_role"]["name"] == "selfhosted.platform.app_stack"
    connections = yaml.safe_load((ROOT / "roles/data_tier/tasks/connections.yml").read_text())
    swarm = yaml.safe_load((ROOT / "roles/data_tier/tasks/swarm_connections.yml").read_text())
    main = yaml.safe_load((ROOT / "roles/data_tier/tasks/main.yml").read_text())
    for tasks in (connections, swarm, main):
        fact = [t for t in tasks if "data_tier_connections" in (t.get("ansible.builtin.set_fact") or {})]
        assert len(fact) == 1 and "selfhosted.platform.data_tier_connections(" in str(fact[0]), tasks


def test_included_task_files_carry_their_tag_to_their_tasks():
    """`include_tasks` with `tags:` tags only the include; `apply` carries the tag to the tasks inside, without it
    `--tags backup_units` ran the include and then skipped every task in it."""
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            include = task.get("ansible.builtin.include_tasks")
            tags = set(task.get("tags") or [])
            role = path.parts[-3]
            finer = {t for t in tags if t.startswith(role + "_")}
            if include is not None and finer:
                assert isinstance(include, dict) and set(include["apply"]["tags"]) >= finer, (path, task["name"])
