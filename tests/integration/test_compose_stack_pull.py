"""compose_stack's pulls against a real registry (Debian's docker-registry on loopback, tests/integration/
registry_helpers.py): check mode asks the registry through the Engine API (GET /distribution/{name}/json) and
predicts what the run then does — a newer image recreates its services, an image the registry lacks fails,
credentials come from the Docker config, and an unreachable registry is reported as unverified.

Images are built FROM shp-test/base:bookworm with a changing label, pushed as 127.0.0.1:PORT/shp-it-<hex>/...;
projects are named shp-it-cs-<hex> and removed afterwards, the images with the registry.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration import docker_helpers as dh
from tests.integration.test_compose_stack import BASE, Project, actions

pytestmark = pytest.mark.integration


@pytest.fixture
def proj(tmp_path):
    dh.require_docker()
    if dh.docker("image", "inspect", BASE, check=False).returncode != 0:
        dh._missing(f"image {BASE} is missing")
    p = Project(tmp_path)
    yield p
    p.cleanup()


def definition(ref: str) -> dict:
    """Two services from the registry: ``app`` (REF) and ``side`` (the same repository's tag ``side``, pushed by
    push_side), so pull=always asks about both and only ``app`` changes."""
    side = ref.rsplit(":", 1)[0] + ":side"
    return {"services": {"app": {"image": ref, "command": ["sleep", "infinity"], "init": True},
                         "side": {"image": side, "command": ["sleep", "infinity"], "init": True}}}


def push_side(reg, ref: str, config_dir: Path | None = None) -> None:
    reg.push(ref.rsplit(":", 1)[0] + ":side", f"FROM {BASE}\nLABEL shp.side=yes\n", config_dir=config_dir)


def image_id(ref: str) -> str:
    return dh.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def push_newer(reg, ref: str, label: str, config_dir: Path | None = None) -> tuple[str, str]:
    """Push a newer image as REF, then point the local REF back at the image it had: the registry is ahead of
    this host, as after a release pushed from CI. Returns (old id, new id)."""
    old = image_id(ref)
    new = reg.push(ref, f"FROM {BASE}\nLABEL shp.release={label}\n", config_dir=config_dir)
    dh.docker("tag", old, ref)
    assert image_id(ref) == old != new
    return old, new


def test_pull_always_newer_image_check_mode_predicts_the_recreate(proj, registry):
    ref = registry.ref(f"{proj.name}/app", "stable")
    first_id = registry.push(ref, f"FROM {BASE}\nLABEL shp.release=one\n")
    push_side(registry, ref)
    r = proj.result(definition=definition(ref), pull="always")
    assert not r.get("failed") and r["changed"], json.dumps(r)
    before = proj.containers()

    _old, new_id = push_newer(registry, ref, "two")
    c = proj.result(definition=definition(ref), pull="always", check=True)
    assert not c.get("failed") and c["changed"], c
    assert actions(c) == {"app": "recreate", "side": "none"}, c
    reasons = next(a["reasons"] for a in c["actions"] if a["service"] == "app")
    assert reasons[0].startswith(f"newer image in registry: {ref} (sha256:"), reasons
    assert c["pull_prediction"][ref]["verdict"] == "newer" and c["pulled"] == [ref]
    # Check mode pulled nothing and touched nothing.
    assert image_id(ref) == first_id and proj.containers() == before

    r = proj.result(definition=definition(ref), pull="always")
    assert not r.get("failed") and r["changed"], json.dumps(r)
    assert actions(r) == {"app": "recreate", "side": "none"} and r["pulled"] == [ref], r
    assert r["services"]["app"]["image_id_after"] == new_id and image_id(ref) == new_id
    side = ref.replace(":stable", ":side")
    assert r["pull_prediction"][ref]["verdict"] == "newer" and r["pull_prediction"][side]["verdict"] == "current", r
    after = proj.containers()
    assert after["app"] != before["app"] and after["side"] == before["side"]

    again = proj.result(definition=definition(ref), pull="always")
    assert not again["changed"] and again["path"] == "fast-noop" and again["pulled"] == [], again
    # The registry's digest is the local one: no docker pull (nor any other process) on the no-op.
    assert again["pull_prediction"][ref]["verdict"] == "current" and again["cli_calls"] == 0, again
    assert not proj.result(definition=definition(ref), pull="always", check=True)["changed"]


def test_pull_missing_image_the_registry_lacks_fails_in_check_mode_as_in_the_run(proj, registry):
    ref = registry.ref(f"{proj.name}/app", "never-pushed")
    push_side(registry, ref)
    dh.docker("image", "rm", ref.rsplit(":", 1)[0] + ":side")  # not here either: pull=missing asks about it too
    c = proj.result(definition=definition(ref), check=True)
    assert c.get("failed"), c
    assert ref in c["msg"] and f"not in registry {registry.host}" in c["msg"] and "manifest unknown" in c["msg"], c
    assert c["pull_prediction"][ref]["verdict"] == "missing"
    assert c["pull_prediction"][ref.rsplit(":", 1)[0] + ":side"]["verdict"] == "pullable"
    r = proj.result(definition=definition(ref))
    assert r.get("failed") and ref in r["msg"] and "manifest unknown" in r["msg"], r
    assert "nothing was changed" in r["msg"]
    # It failed before writing the project or starting anything.
    assert not (proj.dir / "compose.yaml").exists() and proj.containers() == {}


def test_what_docker_itself_says_about_a_missing_image(registry):
    """The module's verdict matches the real failure: docker pull of the same reference fails with manifest
    unknown (this is what the run would have hit in `up`)."""
    ref = registry.ref(dh.unique_name("cs") + "/app", "never-pushed")
    res = dh.docker("pull", ref, check=False)
    assert res.returncode != 0 and "manifest unknown" in res.stderr, res.stderr


def test_registry_with_auth_prediction_uses_the_docker_config(proj, auth_registry, tmp_path, monkeypatch):
    reg = auth_registry
    good = reg.docker_config(tmp_path / "docker-good")
    ref = reg.ref(f"{proj.name}/private", "1")
    dh.docker("--config", str(good), "login", "-u", reg.auth[0], "--password-stdin", reg.host, input=reg.auth[1])
    reg.push(ref, f"FROM {BASE}\nLABEL shp.release=one\n", config_dir=good)
    push_side(reg, ref, config_dir=good)
    monkeypatch.setenv("DOCKER_CONFIG", str(good))  # the module's environment (ansible-playbook's)
    r = proj.result(definition=definition(ref), pull="always")
    assert not r.get("failed") and r["changed"], json.dumps(r)

    _old, new_id = push_newer(reg, ref, "two", config_dir=good)
    c = proj.result(definition=definition(ref), pull="always", check=True)
    assert not c.get("failed") and actions(c)["app"] == "recreate", c
    pred = c["pull_prediction"][ref]
    assert pred["verdict"] == "newer" and pred["credentials"] == "config.json auths", pred
    r = proj.result(definition=definition(ref), pull="always")
    assert not r.get("failed") and r["services"]["app"]["image_id_after"] == new_id, r

    # Wrong and absent credentials: check mode says so, naming the registry, the image and the registry's words.
    monkeypatch.setenv("DOCKER_CONFIG", str(reg.docker_config(tmp_path / "docker-wrong", password="not-the-password")))
    c = proj.result(definition=definition(ref), pull="always", check=True)
    assert c.get("failed") and f"registry {reg.host} refused image {ref}" in c["msg"], c
    assert "unauthorized: authentication required" in c["msg"] and "not-the-password" not in json.dumps(c)
    assert c["pull_prediction"][ref]["verdict"] == "denied"
    monkeypatch.setenv("DOCKER_CONFIG", str(reg.docker_config(tmp_path / "docker-none", password="")))
    c = proj.result(definition=definition(ref), pull="always", check=True)
    assert c.get("failed") and "no basic auth credentials" in c["msg"] and "credentials: no credentials" in c["msg"], c
    # ... and so does the run, before pulling anything.
    r = proj.result(definition=definition(ref), pull="always")
    assert r.get("failed") and "no basic auth credentials" in r["msg"] and "nothing was changed" in r["msg"], r
    assert proj.containers()["app"]


def test_registry_stopped_check_mode_says_unverified(proj, registry):
    ref = registry.ref(f"{proj.name}/app", "1")
    registry.push(ref, f"FROM {BASE}\nLABEL shp.release=one\n")
    push_side(registry, ref)
    r = proj.result(definition=definition(ref), pull="always")
    assert not r.get("failed") and r["changed"], json.dumps(r)
    with registry.stopped():
        start = time.monotonic()
        c = proj.result(definition=definition(ref), pull="always", check=True)
        took = time.monotonic() - start
        assert not c.get("failed") and not c["changed"], c
        warnings = " ".join(c.get("warnings") or [])
        assert ref in warnings and "not verified" in warnings and "connection refused" in warnings, c
        pred = c["pull_prediction"][ref]
        assert pred["verdict"] == "unverified" and "connection refused" in pred["detail"], pred
        # The run's docker pull hits the same unreachable registry and says so.
        r = proj.result(definition=definition(ref), pull="always")
        assert r.get("failed") and "connection refused" in r["msg"] and ref in r["msg"], r
    assert took < 30, took
