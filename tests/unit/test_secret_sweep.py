"""The secret sweep helper (tests/secret_sweep.py) itself: every form of a secret is found and reported with its
line and context (the secret hidden), a sweep for nothing or for too short a secret is refused, and the process
sampler sees a real process's command line on this host and says when a source could not be read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.secret_sweep import ProcessSampler, assert_no_secrets, find_secrets, secret_forms, sweep, wait_for

SECRET = 'Pw"with/odd@chars'
OTHER = "Tok-1234abcd"


def test_every_form_is_found_with_line_and_context_and_the_secret_hidden():
    text = "\n".join([
        "ok: [localhost]",
        f"msg: wrong password {SECRET} for repo",  # raw
        json.dumps({"msg": f"x {SECRET}"}),  # JSON-escaped quote
        f"rest:https://u:{secret_forms(SECRET)['percent']}@h/",  # percent-encoded
        f"token={OTHER} and again {OTHER}",
    ])
    hits = find_secrets(text, [SECRET, OTHER], where="play")
    assert [(h.secret, h.form, h.line) for h in hits] == [(0, "raw", 2), (0, "json", 3), (0, "percent", 4),
                                                          (1, "raw", 5), (1, "raw", 5)]
    with pytest.raises(AssertionError) as exc:
        assert_no_secrets(text, [SECRET, OTHER], where="play")
    report = str(exc.value)
    assert report.startswith("5 secret occurrence(s) in play:")
    assert "play:2: <SECRET 0> (raw) in: " in report and "wrong password <SECRET 0> for repo" in report
    assert "play:5: <SECRET 1> (raw)" in report
    assert SECRET not in report and OTHER not in report and secret_forms(SECRET)["percent"] not in report


def test_clean_text_and_structures_pass():
    assert_no_secrets("nothing to see ******** here", [SECRET, OTHER])
    assert_no_secrets(b"bytes too", [SECRET])
    with pytest.raises(AssertionError):
        assert_no_secrets({"result": {"list": ["a", OTHER]}}, [OTHER])


@pytest.mark.parametrize("secrets", [[], ["abc"], [SECRET, ""]])
def test_a_sweep_for_nothing_or_for_a_short_secret_is_refused(secrets):
    with pytest.raises(ValueError):
        assert_no_secrets("text", secrets)


def test_sweep_reports_every_output_at_once():
    with pytest.raises(AssertionError) as exc:
        sweep({"converge": f"a {OTHER}", "restore": "clean", "backup": f"{SECRET}"}, [SECRET, OTHER])
    assert "converge:1: <SECRET 1>" in str(exc.value) and "backup:1: <SECRET 0>" in str(exc.value)
    assert "restore" not in str(exc.value)


def test_the_sampler_sees_a_real_process_argv_on_the_host():
    marker = "ArgvSecret-" + "9f3e1c7a"
    with ProcessSampler(interval=0.05) as ps:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)", marker])
        try:
            assert wait_for(lambda: ps.saw(marker), 10), "the sampler never saw the process"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert ps.rounds["host"] >= 2
    with pytest.raises(AssertionError) as exc:
        ps.assert_no_secrets([marker])
    assert "argv[host]" in str(exc.value) and "<SECRET 0>" in str(exc.value) and marker not in str(exc.value)
    ps.assert_no_secrets(["NotRunning-5a5a5a"])  # the rest of the process list is clean of it


def test_a_source_never_read_fails_the_sweep():
    with ProcessSampler(containers=["shp-it-no-such-container-0000"], host=False, interval=0.05) as ps:
        pass
    assert ps.rounds["shp-it-no-such-container-0000"] == 0 and ps.errors["shp-it-no-such-container-0000"]
    with pytest.raises(AssertionError, match="was never read"):
        ps.assert_no_secrets([OTHER])
