"""Static checks as tests, so `make test` ends with one pytest summary.

ruff (Python style and bugs), ansible-lint with the production profile (roles, playbooks,
molecule scenarios, inventories), and the collection build: `ansible-galaxy collection build`
must produce a tarball that installs and whose roles and plugins ansible-doc renders.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, explain, run_tool

pytestmark = pytest.mark.lint


def test_ruff_is_clean():
    res = run_tool(["ruff", "check", "--no-cache", "."])
    assert res.returncode == 0, explain(res)


def test_ansible_lint_production_profile(tmp_path: Path):
    # ansible-lint installs this collection into its cache (ANSIBLE_HOME/collections) once and never
    # refreshes it: a fresh ANSIBLE_HOME per run lints the checkout as it is now.
    res = run_tool(["ansible-lint", "--offline", "--profile", "production", "--nocolor"], timeout=900,
                   ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    assert res.returncode == 0, explain(res)


def test_collection_builds_installs_and_documents(tmp_path: Path):
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    res = run_tool(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path), str(ROOT)])
    assert res.returncode == 0, explain(res)
    tarball = tmp_path / f"selfhosted-platform-{galaxy['version']}.tar.gz"
    assert tarball.exists(), res.stdout
    with tarfile.open(tarball) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["dependencies"] == galaxy["dependencies"]
    assert "roles/docker_engine/meta/argument_specs.yml" in names
    # Nothing from the developer's machine or the test ground leaks into the artefact.
    assert not [n for n in names if n.startswith((".venv", ".sandbox", ".build", ".ci/"))]

    install_root = tmp_path / "collections"
    res = run_tool(["ansible-galaxy", "collection", "install", "--force", "--offline", "--no-deps",
                    "-p", str(install_root), str(tarball)])
    assert res.returncode == 0, explain(res)
    assert (install_root / "ansible_collections/selfhosted/platform/roles/docker_engine").is_dir()

    res = run_tool(["ansible-doc", "-t", "role", "-l", "selfhosted.platform", "--json"],
                   ANSIBLE_COLLECTIONS_PATH=str(install_root))
    assert res.returncode == 0, explain(res)
    roles = json.loads(res.stdout)
    assert "selfhosted.platform.docker_engine" in roles, roles
    modules = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    for where in (str(install_root), str(ROOT / ".build" / "collections")):  # installed tarball and checkout
        res = run_tool(["ansible-doc", "-l", "selfhosted.platform", "--json"], ANSIBLE_COLLECTIONS_PATH=where)
        assert res.returncode == 0, explain(res)
        listed = json.loads(res.stdout)
        assert sorted(k.rsplit(".", 1)[1] for k in listed) == modules, listed
        for module in modules:
            res = run_tool(["ansible-doc", f"selfhosted.platform.{module}"], ANSIBLE_COLLECTIONS_PATH=where)
            assert res.returncode == 0 and "RETURN VALUES" in res.stdout, explain(res)


def test_every_role_has_argument_specs_and_commented_defaults():
    for role in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        options = specs["options"]
        # Every default is declared in the spec with the same default, and every option is prefixed.
        for name, value in defaults.items():
            assert name in options, f"{role.name}: default {name} missing from argument_specs"
            assert name.startswith(f"{role.name}_"), f"{role.name}: {name} is not role-prefixed"
            assert options[name].get("default") == value, f"{role.name}: default of {name} differs from the spec"
        text = (role / "defaults" / "main.yml").read_text()
        assert text.count("\n#") >= len(defaults) // 2, f"{role.name}: defaults/main.yml is not commented"


def test_reference_docs_are_generated_from_specs():
    res = run_tool(["python", "scripts/gen_docs.py", "--check"])
    assert res.returncode == 0, explain(res)


def test_example_inventories_resolve_with_the_documented_vault_password():
    """inventories/amn decrypts with the documented example password and every variable the roles get
    renders (vault values included); the addresses are documentation ones."""
    # data_tier_connections is what the data_tier role records at run time; a stand-in here.
    runtime = '{"data_tier_connections": {"amn-mongodb": {"databases": {"marketplace": {"password": "gen"}}}}}'
    res = run_tool(["ansible", "all", "-i", "inventories/amn", "--vault-password-file",
                    "inventories/vault-password.example.txt", "-e", runtime, "-m", "ansible.builtin.debug", "-a",
                    "msg={{ [app_stack_stacks, watchtower_registry_auths, watchtower_notification_url,"
                    " data_tier_instances | map(attribute='superuser_password') | list, ansible_host] }}"])
    assert res.returncode == 0, explain(res)
    assert "example-jwt-secret" in res.stdout and "192.0.2.10" in res.stdout
    assert "VARIABLE IS NOT DEFINED" not in res.stdout
