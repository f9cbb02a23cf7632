"""scripts/test_lanes.py: the full run as parallel pytest lanes. Every test module runs in exactly one lane, the
sandbox modules (whose converges start in the background) run in the servers lane, and the merged summary line and
exit code tell the truth about every lane."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import BACKGROUND

spec = importlib.util.spec_from_file_location("test_lanes", ROOT / "scripts" / "test_lanes.py")
lanes = importlib.util.module_from_spec(spec)
sys.modules["test_lanes"] = lanes
spec.loader.exec_module(lanes)


def lane_files(args: list[str]) -> set[Path]:
    """The test modules a lane's pytest arguments select (paths and --ignore=, as pytest reads them)."""
    picked: set[Path] = set()
    ignored = {(ROOT / a.split("=", 1)[1]).resolve() for a in args if a.startswith("--ignore=")}
    for arg in args:
        if arg.startswith("-"):
            continue
        path = (ROOT / arg).resolve()
        files = [path] if path.is_file() else sorted(path.rglob("test_*.py"))
        picked.update(f for f in files if f not in ignored and not any(p in ignored for p in f.parents))
    return picked


def test_every_test_module_runs_in_exactly_one_lane():
    every = {p.resolve() for top in ("lint", "unit", "integration", "molecule")
             for p in (ROOT / "tests" / top).rglob("test_*.py")}
    seen: dict[Path, str] = {}
    for name, args in lanes.LANES.items():
        for path in lane_files(args):
            assert path not in seen, f"{path} runs in lanes {seen[path]} and {name}"
            seen[path] = name
    assert set(seen) == every, f"in no lane: {sorted(map(str, every - set(seen)))}"


def test_background_sandboxes_run_in_a_server_lane_after_something_that_overlaps_their_converge():
    for key, (module, *_rest) in BACKGROUND.items():
        lane = [name for name, args in lanes.SERVER_LANES.items() if module in args]
        assert lane, f"the {key} sandbox module is in no server lane"
        # something else runs first in its lane while the sandbox converges in the background
        assert lanes.SERVER_LANES[lane[0]][0] != module, f"the {key} sandbox module starts its lane"
    assert set(lanes.SERVER_LANES) < set(lanes.LANES)


def test_count_and_summary_in_pytests_wording(tmp_path):
    junit = tmp_path / "j.xml"
    junit.write_text(textwrap.dedent("""\
        <testsuites><testsuite name="pytest">
          <testcase classname="a" name="ok"/>
          <testcase classname="a" name="ok2"/>
          <testcase classname="a" name="bad"><failure message="x"/></testcase>
          <testcase classname="a" name="skip"><skipped message="y"/></testcase>
          <testcase classname="a" name="err"><error message="z"/></testcase>
        </testsuite></testsuites>"""))
    totals = lanes.count(junit)
    assert totals == {"passed": 2, "failed": 1, "error": 1, "skipped": 1}
    assert lanes.summary_line(totals, 12.345) == "1 failed, 2 passed, 1 skipped, 1 error in 12.35s"
    assert lanes.summary_line({"passed": 3, "failed": 0, "error": 0, "skipped": 0}, 1) == "3 passed in 1.00s"
    assert lanes.count(tmp_path / "missing.xml") == {"passed": 0, "failed": 0, "error": 0, "skipped": 0}


@pytest.fixture
def tiny_lanes(tmp_path, monkeypatch):
    good = tmp_path / "test_good.py"
    good.write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_c():\n    assert 1 == 2\n")
    monkeypatch.setattr(lanes, "OUTPUT", tmp_path / "out")
    monkeypatch.setattr(lanes, "ROOT", tmp_path)
    return good, bad


def test_a_failing_lane_fails_the_run_and_the_merged_summary_is_the_last_line(tiny_lanes, capsys, monkeypatch):
    good, bad = tiny_lanes
    monkeypatch.setattr(lanes, "LANES", {"one": [str(good)], "two": [str(bad)]})
    assert lanes.run(lanes.LANES) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert "1 failed, 2 passed in" in out[-1] and "2 lanes in parallel" in out[-1]
    assert any(line.startswith("[one] ") and "2 passed" in line for line in out)
    assert any(line.startswith("lane two: 1 failed") and "FAILED (pytest exit 1)" in line for line in out)
    # what failed, and why, is printed beside the summary (a CI log's tail may hold no more than that)
    named = out.index(next(line for line in out if line.startswith("lane two:"))) + 1
    assert out[named].startswith("  FAILED ") and "test_bad::test_c - assert 1 == 2" in out[named]
    merged = lanes.count(lanes.OUTPUT / "junit.xml")
    assert merged == {"passed": 2, "failed": 1, "error": 0, "skipped": 0}
    assert "assert 1 == 2" in (lanes.OUTPUT / "lane-two.log").read_text()


def test_a_lane_that_selects_nothing_fails_the_run(tiny_lanes, capsys, monkeypatch):
    good, _bad = tiny_lanes
    monkeypatch.setattr(lanes, "LANES", {"one": [str(good)], "empty": [str(good), "-k", "no_such_test"]})
    assert lanes.run(lanes.LANES) == 1
    out = capsys.readouterr().out
    assert "lane empty: 0 passed" in out and "FAILED (pytest exit 5)" in out


def test_all_lanes_passing_pass_the_run(tiny_lanes, capsys, monkeypatch):
    good, _bad = tiny_lanes
    monkeypatch.setattr(lanes, "LANES", {"one": [str(good), "-k", "test_a"], "two": [str(good), "-k", "test_b"]})
    assert lanes.run(lanes.LANES) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].split(" in ")[0].endswith("2 passed")
