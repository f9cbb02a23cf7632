"""`site.yml --check` on a fresh host: the run installs Docker before it deploys anything, so in check mode the
modules that need the engine find no docker CLI and no containers. They must predict what the run would do
(changed, the creations) instead of failing. The engine's absence is faked at the module boundary (get_bin_path);
the sandbox tests run the whole check on a fresh server (tests/integration/test_sandbox.py)."""

from __future__ import annotations

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_stack as cs

from tests.unit.fake_module import Exit, Fail, FakeModule


class NoDocker(FakeModule):
    """A host where `docker` is not on the PATH yet."""

    def get_bin_path(self, name, required=False):
        assert not required, f"{name} must not be required in check mode"

    def run_command(self, cmd, data=None, binary_data=False):
        raise AssertionError(f"nothing can run without the engine: {cmd}")


def params(**kw):
    p = {"project_name": "amn-db", "project_dir": "/opt/selfhosted/stacks/amn-db", "state": "present",
         "definition": {"services": {"postgres": {"image": "postgres:16"}, "backup": {"image": "x:1"}}}}
    p.update(kw)
    return p


def run(module):
    with pytest.raises((Exit, Fail)) as info:
        cs.run(module)
    return info.value.result, isinstance(info.value, Fail)


def test_compose_stack_predicts_a_new_project_without_the_engine():
    res, failed = run(NoDocker(params(), check_mode=True, diff=True))
    assert not failed and res["changed"] and res["engine_missing"] and res["path"] == "check"
    assert [(a["service"], a["action"]) for a in res["actions"]] == [("backup", "create"), ("postgres", "create")]
    assert "project amn-db would be created with services backup, postgres" in res["msg"]


def test_compose_stack_absent_without_the_engine_is_no_change():
    res, failed = run(NoDocker(params(state="absent"), check_mode=True))
    assert not failed and not res["changed"] and res["actions"] == []


def test_outside_check_mode_there_is_no_prediction():
    class Missing(FakeModule):
        def get_bin_path(self, name, required=False):
            raise AssertionError("the prediction is for check mode only")

        def run_command(self, cmd, **kw):
            raise RuntimeError("went on to Compose")

    with pytest.raises(RuntimeError, match="went on to Compose"):
        cs.run(Missing(params(), check_mode=False))
