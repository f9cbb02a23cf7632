"""Unit tests for tcp_probe (plugins/module_utils/tcp_probe.py): real connections to sockets this test opens on
loopback for open and closed; the network's other answers (a DROP, no route) faked at socket.create_connection."""

from __future__ import annotations

import errno
import socket
import time

import pytest
import yaml
from ansible_collections.selfhosted.platform.plugins.module_utils import tcp_probe as tp

from tests.conftest import ROOT
from tests.unit.fake_module import Exit, Fail, FakeModule


@pytest.fixture
def ports():
    """(a listening port, a port nothing listens on) on 127.0.0.1."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    closed_port = spare.getsockname()[1]
    spare.close()
    yield listening.getsockname()[1], closed_port
    listening.close()


def run(params, connect=socket.create_connection):
    module = FakeModule(dict({"timeout": 2.0, "workers": 32}, **params))
    with pytest.raises((Exit, Fail)) as info:
        tp.run(module, connect=connect)
    return info.value.result, isinstance(info.value, Fail)


def test_open_and_closed_on_real_sockets(ports):
    open_port, closed_port = ports
    res, failed = run({"host": "127.0.0.1", "ports": [closed_port, open_port, open_port]})
    assert not failed and not res["changed"]
    assert res["open"] == [open_port] and res["closed"] == [closed_port] and res["filtered"] == []
    assert [r["port"] for r in res["ports"]] == sorted({open_port, closed_port})
    assert {r["port"]: r["state"] for r in res["ports"]} == {open_port: "open", closed_port: "closed"}


def fake_network(answers):
    """socket.create_connection answering per port: an exception to raise or a delay before a timeout."""
    def connect(address, timeout):
        answer = answers[address[1]]
        if answer == "drop":
            time.sleep(timeout)
            raise TimeoutError("timed out")
        if isinstance(answer, BaseException):
            raise answer
        return socket.socket()  # "connected": closed again at once
    return connect


def test_filtered_ports_cost_one_timeout_in_parallel():
    answers = dict.fromkeys((81, 5432, 3306, 6379, 27017, 9000, 9001, 9091), "drop")
    answers[22] = "ok"
    started = time.monotonic()
    res, _failed = run({"host": "192.0.2.30", "ports": list(answers), "timeout": 0.3}, connect=fake_network(answers))
    took = time.monotonic() - started
    assert res["filtered"] == sorted(p for p in answers if p != 22) and res["open"] == [22]
    assert took < 1.2, took  # eight 0.3 s timeouts in parallel, not 2.4 s in a row
    assert next(r for r in res["ports"] if r["port"] == 81)["detail"] == "no answer in 0.3s"


def test_unreachable_and_errors_are_named():
    answers = {1: OSError(errno.EHOSTUNREACH, "No route to host"), 2: socket.gaierror(-2, "Name or service not known"),
               3: OSError(errno.EACCES, "Permission denied")}
    res, _failed = run({"host": "h.example.test", "ports": [1, 2, 3]}, connect=fake_network(answers))
    assert res["no_route"] == [1] and res["errors"] == [2, 3]
    details = {r["port"]: r["detail"] for r in res["ports"]}
    assert details[1] == "No route to host" and "cannot resolve h.example.test" in details[2]


@pytest.mark.parametrize("params,start", [({"host": "", "ports": [22]}, "host:"),
                                          ({"host": "127.0.0.1", "ports": [0]}, "ports:"),
                                          ({"host": "127.0.0.1", "ports": [70000]}, "ports:"),
                                          ({"host": "127.0.0.1", "ports": [22], "timeout": 0}, "timeout:")])
def test_bad_input_names_the_option(params, start):
    calls = []
    res, failed = run(params, connect=lambda *a: calls.append(a))
    assert failed and res["msg"].startswith(start) and calls == []


def test_no_ports_is_an_empty_answer():
    assert tp.probe("127.0.0.1", []) == []


def reserved_result_keys() -> set[str]:
    """The result keys Ansible takes for itself when a module returns them (ansible-core's UnifiedTaskResult fields,
    e.g. ``unreachable`` is turned into a bool and marks the host unreachable), plus ``_ansible_*``."""
    from ansible._internal._task import UnifiedTaskResult

    keys = set(UnifiedTaskResult.get_result_key_to_resolved_field_mapping(source_is_module=True))
    assert {"changed", "failed", "unreachable", "skipped", "rc", "msg", "diff", "ansible_facts"} <= keys, keys
    return keys


# What a module may return under a reserved key: only what Ansible means by it.
MEANT = {"changed", "msg", "diff"}


def test_the_result_uses_no_key_ansible_reserves():
    """`make sandbox-verify` printed "Value for result key 'unreachable' of type list was converted to bool" on
    every run: the list of no-route ports was returned as ``unreachable``, which Ansible reserves (and a non-empty
    list would have marked the controller unreachable)."""
    answers = {1: OSError(errno.EHOSTUNREACH, "No route to host"), 2: "ok", 3: "drop"}
    res, failed = run({"host": "192.0.2.30", "ports": [1, 2, 3], "timeout": 0.1}, connect=fake_network(answers))
    assert not failed and res["no_route"] == [1] and res["open"] == [2] and res["filtered"] == [3]
    clash = (set(res) & reserved_result_keys()) - MEANT
    assert not clash, f"tcp_probe returns result keys Ansible reserves: {sorted(clash)}"
    assert not [k for k in res if k.startswith("_ansible_")]
    assert isinstance(res["changed"], bool)


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")))
def test_no_module_documents_a_return_key_ansible_reserves(module):
    import ast

    tree = ast.parse((ROOT / "plugins" / "modules" / f"{module}.py").read_text())
    docs = {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "RETURN"}
    returned = set(yaml.safe_load(docs.get("RETURN") or "") or {})
    clash = (returned & reserved_result_keys()) - MEANT
    assert not clash, f"{module} documents result keys Ansible reserves: {sorted(clash)}"
