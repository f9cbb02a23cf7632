"""tests/tools/awx_run.py: a playbook run the way AWX runs a job (ansible-runner, private data dir, the Vault
password answered to --ask-vault-pass), against localhost over the local connection. No Docker needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, ROOT, explain, run_tool
from tests.tools.awx_run import VAULT_PROMPT, run_like_awx

pytestmark = pytest.mark.integration

VAULT_PASSWORD = "shp-it-awx-vault-7f3a91c2"
SECRET = "shp-it-awx-secret-b81d44e0"

PLAYBOOK = """\
---
- name: Tiny AWX-style job
  hosts: all
  gather_facts: false
  tasks:
    - name: Check the extra variable and the vaulted one
      ansible.builtin.assert:
        that:
          - awx_greeting == 'hello from extravars'
          - vault_awx_secret | length > 0
        quiet: true

    - name: Write the vaulted value where the test can read it
      ansible.builtin.copy:
        content: "{{ vault_awx_secret }}"
        dest: "{{ awx_out_dir }}/secret.txt"
        mode: "0600"
      no_log: true

    - name: Say the extra variable
      ansible.builtin.debug:
        msg: "greeting={{ awx_greeting }} tag={{ awx_tag | default('none') }}"
"""

FAILING = """\
---
- name: A job that fails
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: shp-it-awx-intended-failure
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "project"
    (proj / "playbooks").mkdir(parents=True)
    (proj / "playbooks" / "job.yml").write_text(PLAYBOOK)
    (proj / "playbooks" / "fail.yml").write_text(FAILING)
    return proj


@pytest.fixture()
def inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"shp-it-awx-local": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    vault_file = inv / "group_vars" / "all" / "vault.yml"
    vault_file.write_text(yaml.safe_dump({"vault_awx_secret": SECRET}))
    password_file = tmp_path / "vault-pass.txt"
    password_file.write_text(VAULT_PASSWORD + "\n")
    res = run_tool([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
                    str(vault_file)])
    assert res.returncode == 0, explain(res)
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    return inv


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_successful_run_with_vault_and_extravars(tmp_path: Path, project: Path, inventory: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    pdd = tmp_path / "pdd"
    extravars = {"awx_greeting": "hello from extravars", "awx_out_dir": str(out_dir)}
    result = run_like_awx("playbooks/job.yml", inventory, extravars, VAULT_PASSWORD, {"ANSIBLE_NOCOLOR": "1"}, pdd,
                          project=project)
    assert result.status == "successful", result.stdout
    assert result.rc == 0
    assert result.stats == {"shp-it-awx-local": {"ok": 3, "changed": 1, "failed": 0, "unreachable": 0,
                                                 "skipped": 0, "rescued": 0, "ignored": 0}}, result.stdout
    # The vaulted value reached the play (decrypted with the password answered over the pty).
    assert (out_dir / "secret.txt").read_text() == SECRET
    assert "greeting=hello from extravars" in result.stdout
    # AWX's private data dir layout.
    assert (pdd / "project").resolve() == project.resolve()
    assert (pdd / "inventory" / "hosts.yml").is_file()
    assert json.loads((pdd / "env" / "extravars").read_text())["awx_greeting"] == "hello from extravars"
    assert "--ask-vault-pass" in (pdd / "env" / "cmdline").read_text()
    assert result.artifact_dir.parent == pdd / "artifacts"
    assert list((result.artifact_dir / "job_events").glob("*.json"))
    command = json.loads((result.artifact_dir / "command").read_text())
    assert "--ask-vault-pass" in command["command"]
    # The password is in no file of the private data dir: not in env/, not in the artifacts (command, env, stdout,
    # job events); and the vaulted value (no_log) is not in them either.
    assert _files_containing(pdd, VAULT_PASSWORD) == []
    assert _files_containing(pdd, SECRET) == []
    assert VAULT_PROMPT  # the prompt AWX answers, exported for callers


def test_check_mode_limit_and_tags(tmp_path: Path, project: Path, inventory: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extravars = {"awx_greeting": "hello from extravars", "awx_out_dir": str(out_dir)}
    result = run_like_awx("playbooks/job.yml", inventory, extravars, VAULT_PASSWORD, {}, tmp_path / "pdd",
                          limit="shp-it-awx-local", tags="all", check=True, project=project)
    assert result.status == "successful", result.stdout
    # --check: the copy reports what it would change and writes nothing.
    assert result.stats["shp-it-awx-local"]["changed"] == 1
    assert not (out_dir / "secret.txt").exists()
    command = json.loads((result.artifact_dir / "command").read_text())["command"]
    assert "--check" in command
    assert command[command.index("--limit") + 1] == "shp-it-awx-local"


def test_failing_playbook_is_failed(tmp_path: Path, project: Path, inventory: Path):
    result = run_like_awx("playbooks/fail.yml", inventory, {}, VAULT_PASSWORD, {}, tmp_path / "pdd",
                          project=project)
    assert result.status == "failed"
    assert result.rc == 2
    assert result.stats["shp-it-awx-local"]["failed"] == 1
    assert "shp-it-awx-intended-failure" in result.stdout


def test_wrong_vault_password_fails_without_echoing_it(tmp_path: Path, project: Path, inventory: Path):
    wrong = "shp-it-awx-wrong-password-0c9e"
    result = run_like_awx("playbooks/job.yml", inventory, {"awx_greeting": "x", "awx_out_dir": str(tmp_path)},
                          wrong, {}, tmp_path / "pdd", project=project)
    assert result.status == "failed"
    assert result.rc != 0
    assert "Decryption failed" in result.stdout or "decrypt" in result.stdout.lower(), result.stdout
    assert _files_containing(tmp_path / "pdd", wrong) == []


def test_missing_playbook_is_refused_before_running(tmp_path: Path, inventory: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yml"):
        run_like_awx("playbooks/nope.yml", inventory, {}, None, {}, tmp_path / "pdd")
    assert not (tmp_path / "pdd").exists()


def test_cli_prints_the_summary(tmp_path: Path, project: Path, inventory: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extravars = tmp_path / "extravars.yml"
    extravars.write_text(yaml.safe_dump({"awx_greeting": "hello from extravars", "awx_out_dir": str(out_dir)}))
    # The Vault password comes from $VAULT_PASSWORD, as an AWX-style wrapper would hand it over.
    res = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tools" / "awx_run.py"), "--project", str(project),
         "--playbook", "playbooks/job.yml", "--inventory", str(inventory),
         "--extravars", str(extravars), "--private-data-dir", str(tmp_path / "pdd")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "VAULT_PASSWORD": VAULT_PASSWORD, "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["status"] == "successful"
    assert summary["stats"]["shp-it-awx-local"]["failed"] == 0
    assert (out_dir / "secret.txt").read_text() == SECRET
