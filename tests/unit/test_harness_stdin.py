"""The test harness keeps ansible-core's precondition: a blocking stdin ("Ansible requires blocking IO on
stdin/stdout/stderr"). A child that leaves O_NONBLOCK on the stdin it shares with the session (ssh does) made the
molecule scenarios and the firewall tests fail in a parallel run; tools started by run_tool get a /dev/null of their
own, and each test starts with the session's stdin blocking again."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import run_tool

PROBE = "import os; print(os.get_blocking(0))"


@pytest.fixture
def nonblocking_stdin():
    try:
        os.fstat(0)
    except OSError:
        pytest.skip("this session has no stdin")
    before = os.get_blocking(0)
    os.set_blocking(0, False)
    try:
        yield
    finally:
        os.set_blocking(0, before)


def test_a_tool_gets_a_blocking_stdin_even_when_the_session_s_is_not(nonblocking_stdin):
    assert not os.get_blocking(0)
    res = run_tool([sys.executable, "-c", PROBE])
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr


def test_each_test_starts_with_a_blocking_stdin():
    try:
        os.fstat(0)
    except OSError:
        pytest.skip("this session has no stdin")
    assert os.get_blocking(0)
