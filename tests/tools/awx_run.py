"""Run a playbook the way AWX runs a job: through ansible-runner, from a private data directory.

AWX (awx/main/tasks/jobs.py, RunJob) builds an ansible-runner private data directory per job and calls
ansible_runner's ``run()`` on it:

  <private_data_dir>/
    project/            the project checkout (AWX: a copy at the job's revision; here: a symlink to the checkout)
    inventory/          the inventory (AWX: its imported inventory as a script; here: a copy of the inventory dir)
    env/extravars       extra variables (survey answers, job template extra_vars), passed as ``-e @env/extravars``
    env/envvars         the job's environment (credential injectors, ANSIBLE_* settings)
    env/settings        ansible-runner settings (job_timeout, pexpect_timeout, ...)
    env/cmdline         extra ansible-playbook arguments (--ask-vault-pass, --check, --diff, --tags ...)
    artifacts/<ident>/  what the run leaves: job_events/*.json, stdout, rc, status, command

The Vault password takes AWX's own road: AWX adds ``--ask-vault-pass`` to the command line and gives the
password to ansible-runner as an expect answer for the prompt ``Vault password:\\s*?$`` (RunJob's
get_password_prompts), so it only ever travels over the pty ansible-playbook reads it from: it is not in
a file, not in the environment and not on a command line, and so not in the artifacts either.

    python tests/tools/awx_run.py --playbook playbooks/site.yml --inventory inventories/sandbox \\
        --extravars vars.yml [--vault-password-file F | $VAULT_PASSWORD] [--envvar NAME=VALUE]
        [--limit H] [--tags T] [--check] [--diff] [--private-data-dir D] [--project DIR]

The CLI prints a JSON summary (status, rc, per-host stats, artifact dir) and exits with ansible's rc.

Known differences from AWX: AWX runs inside an execution environment container and imports the inventory
into its database (``ansible-inventory --list --export``; a whole-file vaulted group_vars file makes that
import fail, see docs/awx-semaphore.md), while this runs ansible-playbook from the current Python
environment against a copy of the inventory directory. Paths an inventory computes from ``inventory_dir``
therefore point into the private data directory (the sandbox inventory: pass SHP_SANDBOX_STATE in envvars).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# The prompt ansible-playbook prints for --ask-vault-pass, exactly as AWX matches it.
VAULT_PROMPT = r"Vault password:\s*?$"
# playbook_on_stats keys -> the names reported per host.
STAT_KEYS = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
             "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}


@dataclass
class AwxRunResult:
    """What a run left: ansible-runner's status (successful, failed, timeout, canceled), ansible's rc,
    per-host counts from the playbook_on_stats event, the artifact directory and the captured stdout."""

    status: str
    rc: int
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    artifact_dir: Path = Path()
    stdout: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["artifact_dir"] = str(self.artifact_dir)
        data.pop("stdout")
        return data


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def prepare_private_data_dir(private_data_dir: Path, *, project: Path, inventory: Path, extravars: dict,
                             envvars: dict, cmdline: list[str], settings: dict) -> None:
    """Lay out an ansible-runner private data directory the way AWX does for a job."""
    private_data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(private_data_dir, 0o700)
    project_link = private_data_dir / "project"
    if project_link.is_symlink() or project_link.exists():
        if project_link.is_symlink() or project_link.is_file():
            project_link.unlink()
        else:
            shutil.rmtree(project_link)
    project_link.symlink_to(project.resolve(), target_is_directory=True)

    inventory_dir = private_data_dir / "inventory"
    if inventory_dir.exists():
        shutil.rmtree(inventory_dir)
    if inventory.is_dir():
        shutil.copytree(inventory, inventory_dir, symlinks=True)
    else:
        inventory_dir.mkdir()
        shutil.copy2(inventory, inventory_dir / inventory.name)

    env = private_data_dir / "env"
    # ansible-runner reads these with its YAML/JSON loader; AWX writes them the same way.
    _write(env / "extravars", json.dumps(extravars, indent=2, sort_keys=True))
    _write(env / "envvars", json.dumps({k: str(v) for k, v in envvars.items()}, indent=2, sort_keys=True))
    _write(env / "settings", json.dumps(settings, indent=2, sort_keys=True))
    _write(env / "cmdline", shlex.join(cmdline))


def _stats_from_events(artifact_dir: Path) -> dict[str, dict[str, int]]:
    """Per-host counts from the playbook_on_stats event in artifacts/<ident>/job_events."""
    events_dir = artifact_dir / "job_events"
    if not events_dir.is_dir():
        return {}
    for event_file in sorted(events_dir.glob("*.json")):
        event = json.loads(event_file.read_text(encoding="utf-8"))
        if event.get("event") != "playbook_on_stats":
            continue
        data = event.get("event_data", {})
        hosts = set()
        for key in STAT_KEYS:
            hosts.update((data.get(key) or {}).keys())
        return {host: {name: int((data.get(key) or {}).get(host, 0)) for key, name in STAT_KEYS.items()}
                for host in sorted(hosts)}
    return {}


def run_like_awx(playbook: str, inventory: Path, extravars: dict, vault_password: str | None, envvars: dict,
                 private_data_dir: Path, limit: str | None = None, tags: str | None = None, check: bool = False,
                 *, diff: bool = False, project: Path | None = None, ident: str | None = None,
                 timeout: int | None = None, verbosity: int = 0) -> AwxRunResult:
    """Run ``playbook`` (a path relative to ``project``, the checkout by default) against ``inventory`` (a
    directory or file) through ansible_runner.run(), as AWX runs a job template.

    ``extravars`` become env/extravars (AWX: survey answers and extra_vars), ``envvars`` env/envvars,
    ``vault_password`` is answered to ansible-playbook's ``--ask-vault-pass`` prompt (AWX's Vault credential),
    ``check`` adds --check (AWX job_type "check"), ``diff`` --diff. ``timeout`` is AWX's job timeout in
    seconds. Returns status, rc, per-host stats, the artifact directory and stdout.
    """
    import ansible_runner

    project = Path(project or ROOT)
    if not (project / playbook).is_file():
        raise FileNotFoundError(f"playbook {playbook!r} not found under {project}")
    inventory = Path(inventory)
    if not inventory.exists():
        raise FileNotFoundError(f"inventory {inventory} not found")
    private_data_dir = Path(private_data_dir).resolve()
    cmdline: list[str] = []
    if vault_password is not None:
        cmdline.append("--ask-vault-pass")
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if tags:
        cmdline += ["--tags", tags]
    if verbosity:
        cmdline.append("-" + "v" * verbosity)
    settings: dict[str, Any] = {"pexpect_timeout": 10, "suppress_ansible_output": True}
    if timeout:
        settings["job_timeout"] = int(timeout)
    envvars = dict(envvars)
    # ansible-playbook from the same Python environment as ansible-runner (AWX: the one in the EE).
    envvars.setdefault("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    # Plain text in stdout (AWX keeps the colours for its UI; callers here read and assert on it).
    envvars.setdefault("ANSIBLE_FORCE_COLOR", "0")
    envvars.setdefault("ANSIBLE_NOCOLOR", "1")
    prepare_private_data_dir(private_data_dir, project=project, inventory=inventory, extravars=extravars,
                             envvars=envvars, cmdline=cmdline, settings=settings)
    ident = ident or uuid.uuid4().hex
    runner = ansible_runner.run(
        private_data_dir=str(private_data_dir),
        playbook=playbook,
        inventory=str(private_data_dir / "inventory"),
        limit=limit,
        ident=ident,
        # Answered over the pty (AWX: expect_passwords). suppress_env_files keeps ansible-runner from dumping
        # the kwargs (passwords included) into env/ files: the password stays in memory, as in AWX.
        passwords={VAULT_PROMPT: vault_password} if vault_password is not None else None,
        suppress_env_files=True,
        quiet=True,
    )
    artifact_dir = Path(runner.config.artifact_dir)
    stdout_file = artifact_dir / "stdout"
    stdout = stdout_file.read_text(encoding="utf-8", errors="replace") if stdout_file.exists() else ""
    rc = runner.rc if runner.rc is not None else -1
    return AwxRunResult(status=runner.status, rc=rc, stats=_stats_from_events(artifact_dir),
                        artifact_dir=artifact_dir, stdout=stdout)


def _load_vars(path: str | None) -> dict:
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: extra variables must be a mapping")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--playbook", required=True, help="playbook path relative to the project (the checkout)")
    parser.add_argument("--inventory", required=True, type=Path, help="inventory directory or file")
    parser.add_argument("--project", type=Path, default=ROOT, help="the project directory (default: this checkout)")
    parser.add_argument("--extravars", help="YAML/JSON file of extra variables (env/extravars)")
    parser.add_argument("--envvar", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the run (env/envvars); repeatable")
    parser.add_argument("--vault-password-file",
                        help="file holding the Vault password (default: $VAULT_PASSWORD when set)")
    parser.add_argument("--private-data-dir", type=Path,
                        help="ansible-runner private data dir (default: a new one under tests/output/awx-run)")
    parser.add_argument("--limit")
    parser.add_argument("--tags")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--diff", action="store_true")
    parser.add_argument("--timeout", type=int, help="job timeout in seconds")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)

    envvars = {}
    for item in args.envvar:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--envvar {item!r}: expected NAME=VALUE")
        envvars[name] = value
    vault_password = None
    if args.vault_password_file:
        vault_password = Path(args.vault_password_file).read_text(encoding="utf-8").rstrip("\n")
    elif os.environ.get("VAULT_PASSWORD"):
        vault_password = os.environ["VAULT_PASSWORD"]
    private_data_dir = args.private_data_dir or ROOT / "tests" / "output" / "awx-run" / uuid.uuid4().hex[:12]
    result = run_like_awx(args.playbook, args.inventory, _load_vars(args.extravars), vault_password, envvars,
                          private_data_dir, limit=args.limit, tags=args.tags, check=args.check, diff=args.diff,
                          project=args.project, timeout=args.timeout, verbosity=args.verbose)
    sys.stderr.write(result.stdout)
    print(json.dumps(result.to_json(), indent=2))
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
