"""Unit tests for tcp_probe (plugins/module_utils/tcp_probe.py): real connections to sockets this test opens on
loopback for open and closed; the network's other answers (a DROP, no route) faked at socket.create_connection."""

from __future__ import annotations

import errno
import socket
import time

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import tcp_probe as tp

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
    assert res["unreachable"] == [1] and res["errors"] == [2, 3]
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
