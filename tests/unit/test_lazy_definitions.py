"""The filters that copy a role's definitions (compose_definition, swarm_definition) get Ansible's lazily templated
containers. A deep copy of one copies the templar's plugin loaders, and a value templated inside it with a filter
plugin then fails: "The filter plugin 'combine' failed to load: 'dict' object is not callable" (ansible-core 2.21).
Run through Ansible itself, on the controller only. Fails on the base commit (copy.deepcopy)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import explain, run_tool

STACK = {
    "extra": {"A": "1"},
    "stack": {"name": "web", "services": {"app": {
        "image": "registry.example.test/app:1",
        "environment": "{{ {'B': '2'} | combine(extra) }}",
        "labels": "{{ ['x', 'x'] | ansible.builtin.unique | list }}"}}},
}


@pytest.mark.parametrize("expr", [
    "stack | selfhosted.platform.compose_definition",
    "stack | selfhosted.platform.compose_definition | selfhosted.platform.swarm_definition(pin='node-1')",
])
def test_a_value_templated_with_a_filter_plugin_survives_the_definition_filters(tmp_path, expr):
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(STACK))
    res = run_tool(["ansible", "localhost", "-m", "ansible.builtin.debug", "-a", "msg={{ (%s) | to_json }}" % expr,
                    "-e", f"@{extra}"], timeout=120, HOME=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    assert res.returncode == 0, explain(res)
    msg = json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    doc = json.loads(msg) if isinstance(msg, str) else msg
    assert doc["services"]["app"]["environment"] == {"B": "2", "A": "1"}
    assert doc["services"]["app"]["labels"] == {"x": ""}  # a list of labels becomes a mapping
