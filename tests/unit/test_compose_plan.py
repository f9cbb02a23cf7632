"""Unit tests for the pure compose_stack planner (plugins/module_utils/compose_plan.py)."""

from __future__ import annotations

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import compose_plan as cp


def want(hash_="h1", image="img:1", image_id="sha256:aaa", replicas=1, build=False, healthcheck=False):
    return {"hash": hash_, "image": image, "image_id": image_id, "replicas": replicas, "build": build,
            "healthcheck": healthcheck}


def box(service, hash_="h1", image_id="sha256:aaa", state="running", health=None, name=None, oneoff=False):
    return {"service": service, "config_hash": hash_, "image_id": image_id, "state": state, "health": health,
            "name": name or f"p-{service}-1", "oneoff": oneoff}


def actions(steps):
    return {s["service"]: s["action"] for s in steps}


def test_nothing_differs_is_a_noop():
    steps = cp.plan({"web": want(), "db": want("h2")}, [box("web"), box("db", "h2")])
    assert actions(steps) == {"db": "none", "web": "none"}
    assert not cp.is_changing(steps)


def test_missing_container_is_created_and_missing_image_noted():
    steps = cp.plan({"web": want(image_id=None)}, [])
    assert actions(steps) == {"web": "create"}
    assert "will be pulled" in steps[0]["reasons"][1]


def test_config_hash_difference_recreates_only_that_service():
    steps = cp.plan({"web": want("new"), "db": want("h2")}, [box("web", "old"), box("db", "h2")])
    assert actions(steps) == {"db": "none", "web": "recreate"}
    assert steps[1]["reasons"] == ["configuration changed"]


def test_retagged_image_recreates():
    steps = cp.plan({"web": want(image_id="sha256:new")}, [box("web", image_id="sha256:old")])
    assert actions(steps) == {"web": "recreate"}
    assert "now points to" in steps[0]["reasons"][0]


def test_unknown_image_label_is_not_a_difference():
    steps = cp.plan({"web": want()}, [box("web", image_id="")])
    assert actions(steps) == {"web": "none"}


def test_recreate_never_reports_but_does_not_act():
    steps = cp.plan({"web": want("new")}, [box("web", "old")], recreate="never")
    assert actions(steps) == {"web": "none"}
    assert "recreate=never" in steps[0]["reasons"][0]


def test_recreate_always():
    steps = cp.plan({"web": want()}, [box("web")], recreate="always")
    assert actions(steps) == {"web": "recreate"}


@pytest.mark.parametrize("state", ["exited", "created", "paused"])
def test_stopped_container_is_started(state):
    steps = cp.plan({"web": want()}, [box("web", state=state)])
    assert actions(steps) == {"web": "start"}


def test_restarting_container_is_not_a_change():
    # up would not change a crash loop; the state is reported, not acted on.
    assert actions(cp.plan({"web": want()}, [box("web", state="restarting")])) == {"web": "none"}


def test_scale_difference():
    steps = cp.plan({"web": want(replicas=3)}, [box("web"), box("web", name="p-web-2")])
    assert actions(steps) == {"web": "scale"}


def test_scaled_to_zero_stops_running():
    assert actions(cp.plan({"w": want(replicas=0)}, [box("w")])) == {"w": "stop"}
    assert actions(cp.plan({"w": want(replicas=0)}, [box("w", state="exited")])) == {"w": "none"}


def test_orphans_are_removed_only_when_asked():
    containers = [box("web"), box("old")]
    assert actions(cp.plan({"web": want()}, containers)) == {"web": "none", "old": "none"}
    assert actions(cp.plan({"web": want()}, containers, remove_orphans=True)) == {"web": "none", "old": "remove"}


def test_oneoff_containers_are_ignored():
    steps = cp.plan({"web": want()}, [box("web"), box("web", "zzz", oneoff=True, name="p-web-run-1")])
    assert actions(steps) == {"web": "none"}


def test_services_subset():
    steps = cp.plan({"web": want("new"), "db": want("new")}, [box("web", "old"), box("db", "old"), box("orphan")],
                    services=["web"], remove_orphans=True)
    assert actions(steps) == {"db": "skip", "web": "recreate"}


def test_replicas_of():
    assert cp.replicas_of({}) == 1
    assert cp.replicas_of({"deploy": {"replicas": 3}}) == 3
    assert cp.replicas_of({"scale": 2}) == 2


def test_desired_services_reads_healthchecks():
    resolved = {"services": {
        "a": {"image": "x:1", "healthcheck": {"test": ["CMD", "true"]}},
        "b": {"image": "y:1", "healthcheck": {"disable": True, "test": ["CMD", "true"]}},
        "c": {"build": {"context": "."}, "image": "c:dev"},
        "d": {"image": "d:1", "healthcheck": {"test": ["NONE"]}},
    }}
    d = cp.desired_services(resolved, {"a": "ha"}, {"x:1": "sha256:x"})
    assert d["a"]["healthcheck"] and d["a"]["hash"] == "ha" and d["a"]["image_id"] == "sha256:x"
    assert not d["b"]["healthcheck"] and not d["d"]["healthcheck"]
    assert d["c"]["build"] and d["c"]["image_id"] is None


def test_wait_verdict():
    desired = {"web": want(healthcheck=True), "worker": want()}
    ok, failing = cp.wait_verdict(["web", "worker"], [box("web", health="healthy"), box("worker")], desired)
    assert ok and failing == []
    ok, failing = cp.wait_verdict(["web", "worker"], [box("web", health="starting"), box("worker")], desired)
    assert not ok and failing[0]["service"] == "web"
    ok, failing = cp.wait_verdict(["web", "worker"], [box("web", health="healthy")], desired)
    assert not ok and failing == [{"service": "worker", "container": None, "state": "missing", "health": None}]


def test_hopeless_only_for_exited_without_restart_policy():
    failing = [{"service": "w", "container": "p-w-1", "state": "exited", "health": None}]
    assert cp.hopeless(failing, {"p-w-1": "no"})
    assert not cp.hopeless(failing, {"p-w-1": "unless-stopped"})
    assert not cp.hopeless([{"service": "w", "container": "p-w-1", "state": "running", "health": "unhealthy"}], {})


def test_plan_text_lists_every_service():
    text = cp.plan_text(cp.plan({"web": want("new"), "db": want()}, [box("web", "old"), box("db")]))
    assert "web" in text and "recreate" in text and "configuration changed" in text and "db" in text


def test_error_text_drops_compose_progress_lines():
    from ansible_collections.selfhosted.platform.plugins.module_utils.compose_cli import error_text

    err = ("Network p_default  Creating\n Network p_default  Created\n Container p-web-1  Creating\n"
           " Container p-web-1  can't set healthcheck.start_interval as feature require Docker Engine v25 or later\n"
           "can't set healthcheck.start_interval as feature require Docker Engine v25 or later\n")
    assert error_text(err) == ("Container p-web-1  can't set healthcheck.start_interval as feature require Docker "
                               "Engine v25 or later\ncan't set healthcheck.start_interval as feature require Docker "
                               "Engine v25 or later")


def test_wait_verdict_wants_a_full_second_of_uptime():
    desired = {"web": want(healthcheck=True), "worker": want()}
    fresh = dict(box("worker"), status="Up Less than a second")
    ok, failing = cp.wait_verdict(["web", "worker"], [dict(box("web", health="healthy"), status="Up 1 second"),
                                                      fresh], desired)
    assert not ok and failing == [{"service": "worker", "container": "p-worker-1", "state": "running",
                                   "health": None, "note": "up less than a second"}]
    ok, failing = cp.wait_verdict(["worker"], [dict(fresh, status="Up 2 seconds")], desired)
    assert ok and not failing
    restarting = dict(box("worker", state="restarting"), status="Restarting (1) Less than a second ago")
    assert not cp.wait_verdict(["worker"], [restarting], desired)[0]


def test_has_healthcheck_reads_the_full_and_the_cached_model():
    assert cp.has_healthcheck({"healthcheck": {"test": ["CMD", "true"]}})
    assert not cp.has_healthcheck({"healthcheck": {"test": ["NONE"]}})
    assert not cp.has_healthcheck({})
    assert cp.has_healthcheck({"healthcheck": True}) and not cp.has_healthcheck({"healthcheck": False})


def test_a_service_that_builds_is_known_by_the_tag_compose_builds():
    resolved = {"services": {"api": {"build": {"context": "/x"}}, "job": {"build": "/y", "image": "job:dev"},
                             "db": {"image": "postgres:16"}, "odd": {}}}
    assert cp.service_images(resolved, "shop") == {"api": "shop-api", "job": "job:dev", "db": "postgres:16"}
    assert cp.build_targets(resolved) == ["api", "job"] and cp.build_targets(resolved, ["job", "db"]) == ["job"]
    d = cp.desired_services(resolved, {}, {"shop-api": "sha256:new"}, project="shop")
    steps = cp.plan(d, [{"service": "api", "config_hash": None, "image_id": "sha256:old", "state": "running"}],
                    services=["api"])
    assert steps[0]["action"] == cp.RECREATE and "now points to sha256:new" in steps[0]["reasons"][0]


def test_built_report_says_which_build_changed_its_image():
    report = cp.built_report(["a", "b"], {"a": "p-a", "b": "p-b"}, {"p-a": "sha256:1", "p-b": "sha256:2"},
                             {"p-a": "sha256:1", "p-b": "sha256:3"})
    assert [(r["service"], r["changed"]) for r in report] == [("a", False), ("b", True)]


def test_wait_failure_message_names_an_exited_container():
    failing = [{"service": "db", "container": "p-db-1", "state": "exited", "health": None},
               {"service": "web", "container": "p-web-1", "state": "running", "health": "starting"}]
    details = {"db": [{"container": "p-db-1", "exit_code": 3, "log": ["fatal: no space"]}],
               "web": [{"container": "p-web-1", "exit_code": 0, "log": []}]}
    msg = cp.wait_failure_message(failing, details, 120, 0.31, early=True)
    assert msg == ("a container exited during the wait (after 0.3s) and will not be restarted: db: container p-db-1 "
                   "exited with code 3; p-web-1 (running, starting)\nlast 1 log lines of p-db-1:\n  fatal: no space")
    assert cp.wait_failure_message(failing[1:], details, 120, 120.0, early=False) == \
        "services not healthy within 120s: p-web-1 (running, starting)"


def test_images_in_use_prefers_the_containers():
    desired = {"web": {"image": "app:1", "image_id": "sha256:new"}, "job": {"image": "job:1", "image_id": None}}
    rows = [{"service": "web", "image": "app:1", "image_id": "sha256:old", "oneoff": False},
            {"service": "web", "image": "app:1", "image_id": "sha256:x", "oneoff": True}]
    assert cp.images_in_use(desired, rows) == {"web": {"image": "app:1", "image_id": "sha256:old"},
                                               "job": {"image": "job:1", "image_id": None}}


def test_rollback_point_staleness():
    point = {"images": {"web": "sha256:1"}, "files": [{"path": "/p/compose.yaml"}]}
    rows = [{"service": "web", "image_id": "sha256:1", "state": "running"}]
    assert cp.rollback_point_stale(point, rows, []) == []
    assert cp.rollback_point_stale(None, rows, []) == ["no rollback point"]
    moved = [{"service": "web", "image_id": "sha256:2", "state": "running"}]
    assert cp.rollback_point_stale(point, moved, []) == ["images of web changed since the point was recorded"]
    assert cp.rollback_point_stale(point, rows, ["/p/nginx.conf"]) == ["restart_on files not saved: /p/nginx.conf"]


def test_rollback_pins_only_images_that_still_exist():
    recorded = {"web": "sha256:1", "api": "sha256:a", "db": "sha256:d"}
    images = {"web": "app:1", "api": "api:1", "db": "pg:16"}
    now = {"app:1": "sha256:2", "api:1": "sha256:b", "pg:16": "sha256:d"}
    pins, fallbacks = cp.rollback_pins(recorded, images, now, {"sha256:1": "sha256:1", "sha256:a": None})
    assert pins == {"web": {"image": "sha256:1"}}
    assert fallbacks == [{"service": "api", "image": "api:1", "image_id": "sha256:a", "current": "sha256:b"}]
