"""Render the importable job template definitions from scripts/job_templates.yml:

  awx/selfhosted-platform.json        awxkit's import/export format: `awx import < awx/selfhosted-platform.json`
                                      (organization, execution environment, Vault + Machine credentials,
                                      project, inventories with their project sources, job templates with
                                      credentials and survey specs)
  semaphore/selfhosted-platform.json  Semaphore's project backup format: "New project" -> "Restore project"
                                      (keys, repository, inventories, variable group, templates with vaults
                                      and survey variables)

    python scripts/gen_job_templates.py          write both files
    python scripts/gen_job_templates.py --check  exit 1 when a file is out of date (used by the tests)

No secret goes into either file: AWX credential inputs are placeholders ("ASK" prompts for the Vault password at
launch until you store it), Semaphore exports keys without their secrets by design.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts" / "job_templates.yml"
AWX_FILE = ROOT / "awx" / "selfhosted-platform.json"
SEMAPHORE_FILE = ROOT / "semaphore" / "selfhosted-platform.json"

# AWX's managed credential types, by natural key (name, kind).
VAULT_TYPE = {"name": "Vault", "kind": "vault", "type": "credential_type"}
MACHINE_TYPE = {"name": "Machine", "kind": "ssh", "type": "credential_type"}
# Semaphore's names for the keys and the variable group.
SEMAPHORE_NONE_KEY = "none (public repository)"
SEMAPHORE_SSH_KEY = "selfhosted ssh key"
SEMAPHORE_VAULT_KEY = "selfhosted vault password"
SEMAPHORE_ENVIRONMENT = "selfhosted"
# Semaphore runs ansible-playbook in the repository checkout, so the checkout's ansible.cfg applies, and its
# collections_path (.build/collections, a developer's link to the checkout) would hide the installed collection.
SEMAPHORE_ENV = {"ANSIBLE_COLLECTIONS_PATH": "~/.ansible/collections:/usr/share/ansible/collections",
                 "ANSIBLE_FORCE_COLOR": "0"}
SEMAPHORE_TYPES = {"text": "", "multiplechoice": "enum", "integer": "int"}


def load_source(path: Path = SOURCE) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _org(src: dict) -> dict:
    return {"name": src["organization"], "type": "organization"}


def _credential_key(src: dict, name: str, ctype: dict) -> dict:
    return {"organization": _org(src), "name": name, "credential_type": ctype, "type": "credential"}


def _survey(template: dict) -> dict:
    spec = []
    for question in template["survey"]:
        item: dict[str, Any] = {
            "question_name": question["question_name"],
            "question_description": question.get("description", ""),
            "required": bool(question.get("required", False)),
            "type": question["type"],
            "variable": question["variable"],
            "min": 0 if question["type"] != "integer" else question.get("min", 0),
            "max": question.get("max", 1024),
            "default": question.get("default", ""),
            "choices": question.get("choices", ""),
            "new_question": False,
        }
        spec.append(item)
    return {"name": template["name"], "description": template["description"], "spec": spec}


def render_awx(src: dict) -> dict:
    org = _org(src)
    ee = src["execution_environment"]
    ee_key = {"name": ee["name"], "type": "execution_environment"}
    project = src["project"]
    project_key = {"organization": org, "name": project["name"], "type": "project"}
    creds = src["credentials"]
    vault_key = _credential_key(src, creds["vault"], VAULT_TYPE)
    machine_key = _credential_key(src, creds["machine"], MACHINE_TYPE)

    def inventory_key(name: str) -> dict:
        return {"organization": org, "name": name, "type": "inventory"}

    data: dict[str, Any] = {
        "organizations": [{"name": src["organization"], "description": "selfhosted.platform job templates",
                           "max_hosts": 0, "natural_key": org}],
        "execution_environments": [{
            "name": ee["name"], "description": ee["description"], "image": ee["image"], "pull": "missing",
            "organization": org, "credential": None, "natural_key": ee_key}],
        "credentials": [
            {"name": creds["vault"], "description": "The inventories' Ansible Vault password (set it after import)",
             "organization": org, "credential_type": VAULT_TYPE,
             # ASK: AWX prompts for it at launch until the password is stored in the credential.
             "inputs": {"vault_password": "ASK", "vault_id": ""}, "natural_key": vault_key},
            {"name": creds["machine"], "description": "SSH to the servers (paste the private key after import)",
             "organization": org, "credential_type": MACHINE_TYPE,
             "inputs": {"username": creds["machine_username"], "ssh_key_data": "", "become_method": "sudo"},
             "natural_key": machine_key},
        ],
        "projects": [{
            "name": project["name"], "description": project["description"], "local_path": "", "scm_type": "git",
            "scm_url": project["scm_url"], "scm_branch": project["scm_branch"], "scm_refspec": "", "scm_clean": True,
            "scm_track_submodules": False, "scm_delete_on_update": False, "credential": None, "timeout": 0,
            "organization": org, "scm_update_on_launch": True, "scm_update_cache_timeout": 60,
            "allow_override": False, "default_environment": ee_key, "signature_validation_credential": None,
            "natural_key": project_key}],
        "inventory": [],
        "inventory_sources": [],
        "job_templates": [],
    }
    for inv in src["inventories"]:
        data["inventory"].append({
            "name": inv["name"], "description": inv["description"], "organization": org, "kind": "",
            "host_filter": None, "variables": "---", "prevent_instance_group_fallback": False,
            "natural_key": inventory_key(inv["name"])})
        source_name = f"{inv['name']} ({inv['source_path']})"
        data["inventory_sources"].append({
            "name": source_name, "description": f"Hosts and group_vars of {inv['source_path']}", "source": "scm",
            "source_path": inv["source_path"], "source_vars": "---", "scm_branch": "", "credential": None,
            "enabled_var": "", "enabled_value": "", "host_filter": "", "overwrite": True, "overwrite_vars": True,
            "timeout": 0, "verbosity": 1, "limit": "", "update_on_launch": True, "update_cache_timeout": 0,
            "source_project": project_key, "inventory": inventory_key(inv["name"]),
            "execution_environment": ee_key,
            "natural_key": {"name": source_name, "inventory": inventory_key(inv["name"]), "type": "inventory_source"}})
    for tpl in src["templates"]:
        data["job_templates"].append({
            "name": tpl["name"], "description": tpl["description"], "job_type": tpl["job_type"],
            "inventory": inventory_key(src["default_inventory"]), "project": project_key,
            "playbook": tpl["playbook"], "scm_branch": "", "forks": 0, "limit": "", "verbosity": 0,
            "extra_vars": "---", "job_tags": "", "force_handlers": False, "skip_tags": "", "start_at_task": "",
            "timeout": 0, "use_fact_cache": False, "execution_environment": ee_key, "host_config_key": "",
            "ask_scm_branch_on_launch": False, "ask_diff_mode_on_launch": True, "ask_variables_on_launch": False,
            "ask_limit_on_launch": True, "ask_tags_on_launch": bool(tpl.get("ask_tags", False)),
            "ask_skip_tags_on_launch": False, "ask_job_type_on_launch": False, "ask_verbosity_on_launch": True,
            "ask_inventory_on_launch": True, "ask_credential_on_launch": False,
            "ask_execution_environment_on_launch": False, "ask_labels_on_launch": False,
            "ask_forks_on_launch": False, "ask_job_slice_count_on_launch": False, "ask_timeout_on_launch": False,
            "ask_instance_groups_on_launch": False, "survey_enabled": True,
            # The playbooks set `become: true` where they need it.
            "become_enabled": False, "diff_mode": bool(tpl.get("diff_mode", False)), "allow_simultaneous": False,
            "job_slice_count": 1, "webhook_service": "", "webhook_credential": None,
            "prevent_instance_group_fallback": False,
            "related": {"credentials": [vault_key, machine_key], "labels": [], "survey_spec": _survey(tpl)},
            "natural_key": {"organization": org, "name": tpl["name"], "type": "job_template"}})
    return data


def render_semaphore(src: dict) -> dict:
    project = src["project"]
    templates = []
    for tpl in src["templates"]:
        arguments = None
        if tpl["job_type"] == "check":
            arguments = json.dumps(["--check"] + (["--diff"] if tpl.get("diff_mode") else []))
        elif tpl.get("diff_mode"):
            arguments = json.dumps(["--diff"])
        survey_vars = []
        for question in tpl["survey"]:
            description = question.get("description", "")
            if question.get("default") not in (None, ""):
                description += f" (default: {question['default']})"
            var: dict[str, Any] = {"name": question["variable"], "title": question["question_name"],
                                   "description": description, "required": bool(question.get("required", False)),
                                   "type": SEMAPHORE_TYPES[question["type"]]}
            if question.get("choices"):
                var["values"] = [{"name": c, "value": c} for c in question["choices"]]
            survey_vars.append(var)
        templates.append({
            "name": tpl["name"], "description": tpl["description"], "playbook": tpl["playbook"],
            "arguments": arguments, "allow_override_args_in_task": False, "type": "", "app": "ansible",
            "autorun": False, "suppress_success_alerts": False, "survey_vars": survey_vars,
            "task_params": {"allow_debug": True, "allow_override_inventory": True, "allow_override_limit": True,
                            "allow_override_tags": bool(tpl.get("ask_tags", False)),
                            "allow_override_skip_tags": False, "limit": [], "tags": [], "skip_tags": []},
            "inventory": src["default_inventory"], "repository": project["name"],
            "environment": SEMAPHORE_ENVIRONMENT, "view": None, "cron": None,
            "vaults": [{"name": None, "type": "password", "script": None, "vault_key": SEMAPHORE_VAULT_KEY}]})
    return {
        "meta": {"name": project["name"], "alert": False, "max_parallel_tasks": 0, "type": ""},
        "keys": [{"name": SEMAPHORE_NONE_KEY, "type": "none", "owner": ""},
                 {"name": SEMAPHORE_SSH_KEY, "type": "ssh", "owner": ""},
                 {"name": SEMAPHORE_VAULT_KEY, "type": "login_password", "owner": ""}],
        "repositories": [{"name": project["name"], "git_url": project["scm_url"],
                          "git_branch": project["scm_branch"], "ssh_key": SEMAPHORE_NONE_KEY}],
        "inventories": [{"name": inv["name"], "inventory": inv["source_path"], "type": "file",
                         "ssh_key": SEMAPHORE_SSH_KEY, "become_key": None} for inv in src["inventories"]],
        "environments": [{"name": SEMAPHORE_ENVIRONMENT, "json": "{}",
                          "env": json.dumps(SEMAPHORE_ENV, sort_keys=True), "password": None}],
        "views": [],
        "templates": templates,
        "schedules": [],
        "integrations": [],
        "integration_aliases": [],
    }


def rendered() -> dict[Path, str]:
    src = load_source()
    return {AWX_FILE: json.dumps(render_awx(src), indent=2) + "\n",
            SEMAPHORE_FILE: json.dumps(render_semaphore(src), indent=2) + "\n"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date (run python scripts/gen_job_templates.py): "
              + ", ".join(str(p.relative_to(ROOT)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
