"""The importable job templates: awx/selfhosted-platform.json (awxkit's `awx import` format) and
semaphore/selfhosted-platform.json (Semaphore's project backup format), both generated from
scripts/job_templates.yml.

Checked here: the files are what the generator makes; their structure follows the upstream formats (awxkit
24.6's import: resource lists keyed by EXPORTABLE_RESOURCES, natural keys, related credentials and survey_spec;
Semaphore's BackupFormat with the references its BackupFormat.Verify/Restore resolve by name); every AWX survey
passes the rules AWX's API applies on POST .../survey_spec/ (JobTemplateSurveySpec._validate_spec_data); every
playbook exists and the survey variables are the ones the playbook reads and documents; no secret in the files.
Neither AWX nor Semaphore runs here, so the import itself is not exercised.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import gen_job_templates as gen
from tests.conftest import ROOT

AWX = json.loads(gen.AWX_FILE.read_text())
SEMAPHORE = json.loads(gen.SEMAPHORE_FILE.read_text())
SOURCE = gen.load_source()

# awxkit/api/pages/api.py (awxkit 24.6.1): the resource lists `awx import` reads, in dependency order.
AWX_RESOURCES = ["users", "organizations", "teams", "credential_types", "credentials", "notification_templates",
                 "projects", "inventory", "inventory_sources", "job_templates", "workflow_job_templates",
                 "execution_environments", "applications", "schedules"]
# The natural key fields per object type (awxkit's NATURAL_KEY of each page class).
AWX_NATURAL_KEYS = {"organization": {"name"}, "credential": {"organization", "name", "credential_type"},
                    "credential_type": {"name", "kind"}, "project": {"organization", "name"},
                    "inventory": {"organization", "name"}, "inventory_source": {"name", "inventory"},
                    "job_template": {"organization", "name"}, "execution_environment": {"name"}}
RESOURCE_TYPES = {"organizations": "organization", "credentials": "credential", "projects": "project",
                  "inventory": "inventory", "inventory_sources": "inventory_source",
                  "job_templates": "job_template", "execution_environments": "execution_environment"}
# AWX's managed credential types (not in the file: every AWX has them).
MANAGED_CREDENTIAL_TYPES = [{"name": "Vault", "kind": "vault", "type": "credential_type"},
                            {"name": "Machine", "kind": "ssh", "type": "credential_type"}]
# awx/api/views JobTemplateSurveySpec.ALLOWED_TYPES.
SURVEY_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str, "multiselect": str,
                "integer": int, "float": float}


def awx_survey_errors(spec: dict) -> list[str]:
    """The checks AWX's API runs on POST /api/v2/job_templates/<id>/survey_spec/ (JobTemplateSurveySpec.
    _validate_spec_data), for a spec that is new (no stored $encrypted$ defaults)."""
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if field not in spec:
            errors.append(f"Field '{field}' is missing from survey spec.")
        elif not isinstance(spec[field], kind):
            errors.append(f"Expected {kind.__name__} for field '{field}'")
    if errors:
        return errors
    if not spec["spec"]:
        return ["'spec' doesn't contain any items."]
    seen = set()
    for idx, item in enumerate(spec["spec"]):
        if not isinstance(item, dict):
            errors.append(f"Survey question {idx} is not a json object.")
            continue
        for field in ("type", "question_name", "variable", "required"):
            if field not in item:
                errors.append(f"'{field}' missing from survey question {idx}")
            elif not isinstance(item[field], bool if field == "required" else str):
                errors.append(f"'{field}' in survey question {idx} has the wrong type")
        if item.get("variable") in seen:
            errors.append(f"'variable' '{item['variable']}' duplicated in survey question {idx}.")
        seen.add(item.get("variable"))
        qtype = item.get("type")
        if qtype not in SURVEY_TYPES:
            errors.append(f"'{qtype}' in survey question {idx} is not an allowed question type.")
            continue
        default = item.get("default", "")
        if default != "" and not isinstance(default, SURVEY_TYPES[qtype]):
            errors.append(f"Default value {default} in survey question {idx} has the wrong type.")
        for key in ("min", "max"):
            if item.get(key) is not None and not isinstance(item[key], int):
                errors.append(f"The {key} limit in survey question {idx} expected to be integer.")
        if qtype in ("multiplechoice", "multiselect"):
            choices = item.get("choices")
            if not choices:
                errors.append(f"Survey question {idx} of type {qtype} must specify choices.")
                continue
            choices = choices.splitlines() if isinstance(choices, str) else choices
            defaults = default.splitlines() if isinstance(default, str) else default
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append("Multiple Choice (Single Select) can only have one default value.")
            if any(d not in choices for d in defaults):
                errors.append("Default choice must be answered from the choices listed.")
        if isinstance(default, str) and default.startswith("$encrypted$"):
            errors.append(f"$encrypted$ is a reserved keyword, may not be used for new default in position {idx}.")
    return errors


def _playbook_header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or line.strip() in ("", "---"):
            lines.append(line)
        else:
            break
    return "\n".join(lines)


def documented_variables(playbook: Path) -> set[str]:
    """The variables a playbook's header documents as inputs: every `-e name=...`."""
    return set(re.findall(r"-e\s+([a-z_][a-z0-9_]*)=", _playbook_header(playbook.read_text())))


def _nk_refs(value: Any) -> list[dict]:
    """Every natural-key reference (a dict with a "type") inside a value."""
    if isinstance(value, dict):
        if "type" in value and isinstance(value["type"], str) and value["type"] in AWX_NATURAL_KEYS:
            return [value]
        return [ref for v in value.values() for ref in _nk_refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in _nk_refs(v)]
    return []


def test_generated_files_are_up_to_date():
    assert gen.main(["--check"]) == 0, "run: python scripts/gen_job_templates.py"


def test_awx_file_has_awxkit_resource_lists_with_natural_keys():
    assert set(AWX) <= set(AWX_RESOURCES), set(AWX) - set(AWX_RESOURCES)
    defined = list(MANAGED_CREDENTIAL_TYPES)
    for resource, assets in AWX.items():
        assert isinstance(assets, list) and assets, resource
        for asset in assets:
            key = asset["natural_key"]
            assert key["type"] == RESOURCE_TYPES[resource]
            assert set(key) - {"type"} == AWX_NATURAL_KEYS[key["type"]], key
            assert key["name"] == asset["name"]
            defined.append(key)
    # Every reference (inventory, project, execution environment, credentials, credential types) resolves to an
    # object of the file (or a credential type AWX manages), as awxkit's import resolves them by natural key.
    for resource, assets in AWX.items():
        for asset in assets:
            fields = {k: v for k, v in asset.items() if k != "natural_key"}
            for ref in _nk_refs(fields):
                assert ref in defined, f"{resource}/{asset['name']}: dangling reference {ref}"


def test_awx_credentials_are_vault_and_ssh_placeholders():
    creds = {c["credential_type"]["kind"]: c for c in AWX["credentials"]}
    assert set(creds) == {"vault", "ssh"}
    assert creds["vault"]["inputs"]["vault_password"] == "ASK"
    assert creds["ssh"]["inputs"]["ssh_key_data"] == ""
    assert "password" not in creds["ssh"]["inputs"]


def test_awx_inventory_sources_are_the_repository_inventories():
    project = AWX["projects"][0]
    assert project["scm_type"] == "git"
    assert project["scm_url"] == yaml.safe_load((ROOT / "galaxy.yml").read_text())["repository"] + ".git"
    for source in AWX["inventory_sources"]:
        assert source["source"] == "scm"
        assert source["source_project"] == project["natural_key"]
        assert (ROOT / source["source_path"] / "hosts.yml").is_file(), source["source_path"]
        assert source["inventory"] in [i["natural_key"] for i in AWX["inventory"]]


def test_awx_job_templates_cover_the_operational_playbooks():
    by_playbook: dict[str, list[dict]] = {}
    for jt in AWX["job_templates"]:
        by_playbook.setdefault(jt["playbook"], []).append(jt)
    expected = {f"playbooks/{name}.yml" for name in ("site", "verify", "backup_now", "restore", "rotate_db_password",
                                                     "add_stack", "add_domain", "prune_images")}
    assert set(by_playbook) == expected
    site = {jt["job_type"]: jt for jt in by_playbook["playbooks/site.yml"]}
    assert set(site) == {"run", "check"}
    assert site["check"]["diff_mode"] is True
    vault_kind = [c["natural_key"] for c in AWX["credentials"] if c["credential_type"]["kind"] == "vault"]
    for jt in AWX["job_templates"]:
        assert jt["survey_enabled"] is True
        assert vault_kind[0] in jt["related"]["credentials"]
        assert len(jt["related"]["credentials"]) == 2


@pytest.mark.parametrize("jt", AWX["job_templates"], ids=lambda jt: jt["name"])
def test_awx_survey_passes_awx_validation(jt: dict):
    assert awx_survey_errors(jt["related"]["survey_spec"]) == []


def test_awx_survey_validator_rejects_what_awx_rejects():
    good = {"name": "n", "description": "d", "spec": [
        {"question_name": "q", "variable": "v", "type": "multiplechoice", "required": True, "choices": ["a", "b"],
         "default": "a"}]}
    assert awx_survey_errors(good) == []
    assert awx_survey_errors({**good, "spec": []}) == ["'spec' doesn't contain any items."]
    bad_default = json.loads(json.dumps(good))
    bad_default["spec"][0]["default"] = "c"
    assert awx_survey_errors(bad_default) == ["Default choice must be answered from the choices listed."]
    duplicate = {**good, "spec": good["spec"] * 2}
    assert any("duplicated" in e for e in awx_survey_errors(duplicate))
    no_required = {**good, "spec": [{k: v for k, v in good["spec"][0].items() if k != "required"}]}
    assert awx_survey_errors(no_required) == ["'required' missing from survey question 0"]


@pytest.mark.parametrize("template", SOURCE["templates"], ids=lambda t: t["name"])
def test_playbook_exists_and_survey_matches_its_variables(template: dict):
    playbook = ROOT / template["playbook"]
    assert playbook.is_file(), f"{template['playbook']} is not in the repository"
    text = playbook.read_text()
    survey_vars = {q["variable"] for q in template["survey"]}
    # Every survey answer is a variable the playbook reads ...
    for var in survey_vars:
        assert re.search(rf"\b{var}\b", text), f"{template['playbook']} never reads {var}"
    # ... and every input its header documents (-e name=...) can be answered.
    missing = documented_variables(playbook) - survey_vars
    assert not missing, f"{template['playbook']} documents {sorted(missing)}, the survey does not ask for them"


def test_restore_survey_defaults_to_the_safe_choices():
    restore = next(t for t in SOURCE["templates"] if t["playbook"] == "playbooks/restore.yml")
    questions = {q["variable"]: q for q in restore["survey"]}
    assert questions["restore_into"]["default"] == "scratch"
    assert questions["restore_confirm"]["default"] == ""
    assert documented_variables(ROOT / "playbooks" / "restore.yml") >= {
        "restore_instance", "restore_database", "restore_confirm", "restore_kind", "restore_path", "restore_into",
        "restore_snapshot"}


# Semaphore's BackupFormat (services/project/types.go and the db structs' backup/db tags), the parts used here.
_NAME = {"type": "string", "minLength": 1}
SEMAPHORE_SCHEMA = {
    "type": "object",
    "required": ["meta", "templates", "repositories", "keys", "inventories", "environments", "views"],
    "properties": {
        "meta": {"type": "object", "required": ["name"], "properties": {"name": _NAME}},
        "keys": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"], "additionalProperties": False,
            "properties": {"name": _NAME, "type": {"enum": ["none", "ssh", "login_password", "string"]},
                           "owner": {"type": "string"}}}},
        "repositories": {"type": "array", "items": {
            "type": "object", "required": ["name", "git_url", "git_branch", "ssh_key"],
            "properties": {"name": _NAME, "git_url": _NAME, "git_branch": _NAME, "ssh_key": _NAME}}},
        "inventories": {"type": "array", "items": {
            "type": "object", "required": ["name", "inventory", "type"],
            "properties": {"name": _NAME, "inventory": _NAME, "type": {"enum": ["static", "static-yaml", "file"]},
                           "ssh_key": {"type": ["string", "null"]}, "become_key": {"type": ["string", "null"]}}}},
        "environments": {"type": "array", "items": {
            "type": "object", "required": ["name", "json"],
            "properties": {"name": _NAME, "json": {"type": "string"}, "env": {"type": ["string", "null"]}}}},
        "templates": {"type": "array", "items": {
            "type": "object", "required": ["name", "playbook", "repository", "inventory"],
            "properties": {
                "name": _NAME, "playbook": _NAME, "repository": _NAME, "inventory": {"type": ["string", "null"]},
                "environment": {"type": ["string", "null"]}, "app": {"enum": ["", "ansible"]},
                "type": {"enum": ["", "build", "deploy"]}, "arguments": {"type": ["string", "null"]},
                "vaults": {"type": "array", "items": {
                    "type": "object", "required": ["type", "vault_key"],
                    "properties": {"type": {"enum": ["password", "script"]}, "vault_key": {"type": "string"}}}},
                "survey_vars": {"type": "array", "items": {
                    "type": "object", "required": ["name", "title", "type"],
                    "properties": {"name": _NAME, "title": _NAME, "required": {"type": "boolean"},
                                   "type": {"enum": ["", "int", "enum", "secret", "text"]},
                                   "description": {"type": "string"},
                                   "values": {"type": "array", "items": {
                                       "type": "object", "required": ["name", "value"],
                                       "properties": {"name": {"type": "string"},
                                                      "value": {"type": "string"}}}}}}}}}},
    },
}


def test_semaphore_file_matches_the_backup_format():
    jsonschema.validate(SEMAPHORE, SEMAPHORE_SCHEMA)


def test_semaphore_references_resolve_like_its_restore():
    """BackupFormat.Verify / Restore look every reference up by name: unique names, existing targets."""
    names = {kind: [item["name"] for item in SEMAPHORE[kind]]
             for kind in ("keys", "repositories", "inventories", "environments", "templates")}
    for kind, values in names.items():
        assert len(values) == len(set(values)), f"duplicate {kind}"
    for repo in SEMAPHORE["repositories"]:
        assert repo["ssh_key"] in names["keys"]  # Restore requires a key, "none" for a public repository
    for inv in SEMAPHORE["inventories"]:
        assert inv["ssh_key"] in names["keys"]
        assert (ROOT / inv["inventory"] / "hosts.yml").is_file()
    keys = {k["name"]: k for k in SEMAPHORE["keys"]}
    for tpl in SEMAPHORE["templates"]:
        assert tpl["repository"] in names["repositories"]
        assert tpl["inventory"] in names["inventories"]
        assert tpl["environment"] in names["environments"]
        for vault in tpl["vaults"]:
            # Semaphore hands only login_password keys to --vault-password-file (AccessKeyRoleAnsiblePasswordVault).
            assert keys[vault["vault_key"]]["type"] == "login_password"
        if tpl["arguments"] is not None:
            assert isinstance(json.loads(tpl["arguments"]), list)
        for var in tpl["survey_vars"]:
            assert (var["type"] == "enum") == bool(var.get("values")), var
    for env in SEMAPHORE["environments"]:
        assert isinstance(json.loads(env["json"]), dict)
        assert "ANSIBLE_COLLECTIONS_PATH" in json.loads(env["env"])


def test_semaphore_and_awx_offer_the_same_templates():
    awx = {jt["name"]: jt for jt in AWX["job_templates"]}
    for tpl in SEMAPHORE["templates"]:
        jt = awx[tpl["name"]]
        assert tpl["playbook"] == jt["playbook"]
        assert [v["name"] for v in tpl["survey_vars"]] == [q["variable"] for q in jt["related"]["survey_spec"]["spec"]]
        args = json.loads(tpl["arguments"]) if tpl["arguments"] else []
        assert ("--check" in args) == (jt["job_type"] == "check")
        assert ("--diff" in args) == jt["diff_mode"]
    assert len(awx) == len(SEMAPHORE["templates"])


SECRET_PATTERNS = [r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"\$ANSIBLE_VAULT;", r"sandbox-dummy",
                   r"selfhosted-example-vault", r"ghp_[A-Za-z0-9]{20,}", r"AKIA[0-9A-Z]{16}"]


@pytest.mark.parametrize("path", [gen.AWX_FILE, gen.SEMAPHORE_FILE, gen.SOURCE], ids=lambda p: p.name)
def test_no_secrets_in_the_files(path: Path):
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), f"{path.name} matches {pattern}"

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if re.search(r"password|secret|ssh_key_data|private_key|token", key) and isinstance(item, str):
                    assert item in ("", "ASK"), f"{where}.{key} holds a value"
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text), path.name)
