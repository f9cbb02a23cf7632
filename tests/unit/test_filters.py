"""Unit tests for the collection's filter plugins (plugins/filter)."""

from __future__ import annotations

import base64

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter.docker_config import docker_config
from ansible_collections.selfhosted.platform.plugins.filter.stack import compose_definition, watchtower_services

LABEL = "com.centurylinklabs.watchtower.enable"


def test_watchtower_opt_in_becomes_the_label_and_only_there():
    stack = {"name": "amn", "services": {
        "backend": {"image": "b:1", "watchtower": True, "labels": {"team": "core"}},
        "db": {"image": "postgres:16", "watchtower": False},
        "cache": {"image": "redis:7", "labels": [f"{LABEL}=true", "x=y"]},
    }}
    doc = compose_definition(stack)
    assert doc["services"]["backend"]["labels"] == {"team": "core", LABEL: "true"}
    assert "labels" not in doc["services"]["db"]
    # A hand-written label cannot opt a service in behind the declaration's back.
    assert doc["services"]["cache"]["labels"] == {"x": "y"}
    assert "watchtower" not in doc["services"]["backend"]
    assert watchtower_services(stack) == ["backend"]
    assert stack["services"]["backend"]["watchtower"] is True  # input untouched


def test_external_networks_joined_by_services_without_their_own():
    stack = {"services": {"web": {"image": "w"}, "worker": {"image": "w", "networks": ["default"]},
                          "host": {"image": "h", "network_mode": "host"}},
             "networks": ["data-shared"]}
    doc = compose_definition(stack, ["proxy"])
    assert doc["services"]["web"]["networks"] == ["default", "data-shared", "proxy"]
    assert doc["services"]["worker"]["networks"] == ["default"]
    assert "networks" not in doc["services"]["host"]
    assert doc["networks"] == {"data-shared": {"external": True, "name": "data-shared"},
                               "proxy": {"external": True, "name": "proxy"}}


def test_volumes_pass_through_and_bad_input_is_refused():
    # the hardened defaults off, the document is exactly the declaration (tests/unit/test_container_defaults.py)
    doc = compose_definition({"services": {"a": {"image": "x"}}, "volumes": {"data": {}}},
                             service_defaults={"enabled": False})
    assert doc == {"services": {"a": {"image": "x"}}, "volumes": {"data": {}}}
    with pytest.raises(AnsibleFilterError):
        compose_definition({"services": {}})
    with pytest.raises(AnsibleFilterError):
        compose_definition({"services": {"a": {"image": "x", "watchtower": "yes"}}})


def test_docker_config():
    cfg = docker_config([{"registry": "git.example.test", "username": "deploy", "password": "p:w"}])
    token = cfg["auths"]["git.example.test"]["auth"]
    assert base64.b64decode(token).decode() == "deploy:p:w"
    assert docker_config([]) == {"auths": {}}
    with pytest.raises(AnsibleFilterError):
        docker_config([{"registry": "x"}])
