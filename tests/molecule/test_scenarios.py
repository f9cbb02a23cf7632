"""Every molecule scenario under molecule/ (except shared/) runs its full test sequence:
destroy, syntax, create, prepare, converge, idempotence (second converge changed=0),
check (converge in --check mode on the converged server), verify (testinfra), destroy."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, explain, run_tool

pytestmark = pytest.mark.molecule

SCENARIOS = sorted(p.name for p in (ROOT / "molecule").iterdir() if (p / "molecule.yml").exists())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str):
    # Four converges of a fresh server: 5 minutes on a quiet machine, over 30 in a full parallel run (CPU-bound).
    res = run_tool(["molecule", "test", "-s", scenario], timeout=3600, NO_COLOR="1")
    if res.returncode != 0:
        # A failed or timed-out sequence never reached its destroy step: the server must not outlive the test.
        run_tool(["molecule", "destroy", "-s", scenario], timeout=600, NO_COLOR="1")
    assert res.returncode == 0, explain(res, tail=30000)
    log = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
    # Idempotence, check and verify must have run and passed, not been skipped.
    for step in ("idempotence", "check", "verify"):
        assert re.search(rf"{step}: Executed: Successful", log), f"{step} did not pass:\n{log[-20000:]}"
