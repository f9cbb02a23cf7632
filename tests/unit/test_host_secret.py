"""Unit tests for host_secret (plugins/module_utils/host_secret.py) on a real temporary directory."""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import host_secret as hs

from tests.unit.fake_module import Exit, Fail, FakeModule


def params(path, **kw):
    p = {"path": str(path), "value": None, "length": 32, "charset": "alphanumeric", "owner": None, "group": None,
         "mode": "0600", "create_parent": True, "state": "present",
         "regenerate": False}
    p.update(kw)
    return p


def run(p, **kw):
    module = FakeModule(p, **kw)
    with pytest.raises((Exit, Fail)) as info:
        hs.run(module)
    return info.value.result, isinstance(info.value, Fail)


def test_generates_once_then_keeps(tmp_path):
    path = tmp_path / "sub" / "secret"
    first, failed = run(params(path))
    assert not failed and first["changed"] and first["generated"] and first["action"] == "generate"
    assert len(first["secret"]) == 32 and first["secret"].isalnum()
    assert path.read_text() == first["secret"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second, failed = run(params(path))
    assert not second["changed"] and second["secret"] == first["secret"] and not second["generated"]


def test_supplied_value_wins_and_is_written(tmp_path):
    path = tmp_path / "s"
    run(params(path))
    res, _failed = run(params(path, value="from-vault-123"))
    assert res["changed"] and res["action"] == "update" and res["secret"] == "from-vault-123"
    assert path.read_text() == "from-vault-123"
    again, _failed = run(params(path, value="from-vault-123"))
    assert not again["changed"]


def test_check_mode_touches_nothing_and_diff_hides_the_value(tmp_path):
    path = tmp_path / "s"
    res, _failed = run(params(path, value="topsecret-value"), check_mode=True, diff=True)
    assert res["changed"] and not path.exists()
    assert "topsecret-value" not in repr(res["diff"])
    assert res["diff"]["after"] == "(secret, from value)\n"


def test_mode_is_corrected_and_unsafe_modes_refused(tmp_path):
    path = tmp_path / "s"
    run(params(path))
    os.chmod(path, 0o644)
    res, failed = run(params(path))
    assert res["changed"] and stat.S_IMODE(path.stat().st_mode) == 0o600
    res, failed = run(params(path, mode="0644"))
    assert failed and res["msg"].startswith("mode:")
    res, failed = run(params(path, mode="u=rw"))
    assert failed and res["msg"].startswith("mode:")


def test_absent_and_short_length(tmp_path):
    path = tmp_path / "s"
    run(params(path))
    res, failed = run(params(path, state="absent"))
    assert res["changed"] and not path.exists()
    res, failed = run(params(path, length=4))
    assert failed and res["msg"].startswith("length:")


def test_trailing_newline_in_a_hand_written_file_is_not_part_of_the_secret(tmp_path):
    path = tmp_path / "s"
    path.write_text("handwritten\n")
    os.chmod(path, 0o600)
    res, _failed = run(params(path, value="handwritten"))
    assert not res["changed"] and res["secret"] == "handwritten"


def test_regenerate_replaces_the_stored_secret_every_run(tmp_path):
    path = tmp_path / "s"
    first, _failed = run(params(path))
    res, failed = run(params(path, regenerate=True, mode="0400"), diff=True)
    assert not failed and res["changed"] and res["action"] == "regenerate" and res["generated"]
    assert res["secret"] != first["secret"] and len(res["secret"]) == 32
    assert path.read_text() == res["secret"] and stat.S_IMODE(path.stat().st_mode) == 0o400
    assert res["diff"]["after"] == "(secret, regenerated)\n" and first["secret"] not in repr(res["diff"])
    again, _failed = run(params(path, regenerate=True, mode="0400"))
    assert again["changed"] and again["secret"] not in (first["secret"], res["secret"])
    # without regenerate the rotated secret is kept from now on
    kept, _failed = run(params(path, mode="0400"))
    assert not kept["changed"] and kept["secret"] == again["secret"]


def test_regenerate_in_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "s"
    first, _failed = run(params(path))
    res, failed = run(params(path, regenerate=True), check_mode=True)
    assert not failed and res["changed"] and res["action"] == "regenerate"
    assert path.read_text() == first["secret"]


def test_regenerate_without_a_file_generates(tmp_path):
    res, failed = run(params(tmp_path / "new", regenerate=True))
    assert not failed and res["action"] == "generate" and (tmp_path / "new").read_text() == res["secret"]


def test_regenerate_refuses_a_value_and_absent(tmp_path):
    path = tmp_path / "s"
    run(params(path))
    before = path.read_text()
    res, failed = run(params(path, regenerate=True, value="from-vault-123"))
    assert failed and res["msg"].startswith("regenerate:") and "vault" in res["msg"]
    res, failed = run(params(path, regenerate=True, state="absent"))
    assert failed and res["msg"].startswith("regenerate:") and path.read_text() == before


def test_a_regenerated_secret_never_equals_the_old_one(monkeypatch):
    answers = iter(["same-secret-1", "same-secret-1", "other-secret-2"])
    monkeypatch.setattr(hs, "generate", lambda length, charset="alphanumeric": next(answers))
    assert hs.decide("same-secret-1", None, 13, "alphanumeric", regenerate=True) == ("other-secret-2", "regenerate")
