"""The app_stack role on the local Docker Engine (no sandbox server): a stack converged by the real role through
``ansible-playbook --diff -vvv`` on localhost, the way site.yml runs it on a server.

Every project is named shp-it-as-<random> and removed afterwards.
"""

from __future__ import annotations

import json
import secrets
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import explain, run_tool
from tests.integration import docker_helpers as dh
from tests.secret_sweep import ProcessSampler, assert_no_secrets

pytestmark = pytest.mark.integration


def converge(tmp: Path, stacks: list[dict], *flags: str):
    """The app_stack role on localhost with STACKS under TMP; returns the ansible-playbook process."""
    variables = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "app_stack_stacks": stacks, "app_stack_stacks_dir": str(tmp / "stacks"),
                 "app_stack_data_root": str(tmp / "data"), "app_stack_prune_images": False}
    (tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": {"localhost": variables}}}))
    (tmp / "play.yml").write_text(json.dumps([{"hosts": "all", "gather_facts": False,
                                               "roles": ["selfhosted.platform.app_stack"]}]))
    return run_tool(["ansible-playbook", "-i", str(tmp / "inventory.json"), str(tmp / "play.yml"), *flags],
                    timeout=600, ANSIBLE_LOCALHOST_WARNING="false")


def test_secret_files_are_0600_and_never_printed_or_diffed(tmp_path):
    """A ``secret: true`` file is written 0600 and its content (old or new) appears nowhere in the output of a
    ``--diff -vvv`` converge (nor does the stack's env: the role's loops never print a stack whole), nor on any
    command line, nor in compose_stack's resolution cache; a plain file keeps 0644 and its diff; a
    change of the secret file recreates the service that mounts it; the second converge is changed=0."""
    image = dh.require_image("httpapp")
    name = dh.unique_name("as")
    first, second = "Tok1-" + secrets.token_hex(8), "Tok2-" + secrets.token_hex(8)
    env_secret = "EnvPw-" + secrets.token_hex(8)

    def stack(token: str) -> dict:
        web = {"image": image, "environment": {"APP_NAME": "web"},
               "volumes": ["./conf/app.ini:/etc/app/app.ini:ro", "./conf/credentials.ini:/etc/app/credentials.ini:ro"],
               "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], "interval": "1s",
                               "timeout": "3s", "retries": 20}}
        files = [{"dest": "conf/app.ini", "content": "[app]\nlevel = info\n"},
                 {"dest": "conf/credentials.ini", "content": f"[db]\npassword = {token}\n", "secret": True}]
        return {"name": name, "services": {"web": web}, "files": files, "env": {"DB_PASSWORD": env_secret}}

    project = tmp_path / "stacks" / name
    try:
        with ProcessSampler() as ps:
            res = converge(tmp_path, [stack(first)], "--diff", "-vvv")
        assert res.returncode == 0, explain(res)
        assert_no_secrets(res.stdout + res.stderr, [first, env_secret], where="first converge --diff -vvv")
        assert ps.saw("docker compose"), "the sampler never saw Compose run"
        ps.assert_no_secrets([first, env_secret])  # nor on any command line
        assert "+level = info" in res.stdout  # the plain file's diff is shown
        cred, plain = project / "conf" / "credentials.ini", project / "conf" / "app.ini"
        assert stat.S_IMODE(cred.stat().st_mode) == 0o600 and cred.stat().st_uid == 0
        assert cred.read_text() == f"[db]\npassword = {first}\n"
        assert stat.S_IMODE(plain.stat().st_mode) == 0o644
        web = dh.project_containers(name)
        assert len(web) == 1

        res = converge(tmp_path, [stack(second)], "--diff", "-vvv")
        assert res.returncode == 0, explain(res)
        assert_no_secrets(res.stdout + res.stderr, [first, second, env_secret], where="second converge --diff -vvv")
        assert cred.read_text() == f"[db]\npassword = {second}\n"
        assert stat.S_IMODE(cred.stat().st_mode) == 0o600
        assert dh.project_containers(name) != web, "the service mounting the secret file was not recreated"
        # The module's state: the resolution cache holds no secret at all; the rollback point holds copies of
        # the deployed files (what a rollback restores, the mounted secret file included), root-only, and only
        # of the deployed version (the replaced secret is gone).
        state = project / ".compose_stack"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for path in state.rglob("*"):
            if not path.is_file():
                continue
            text = path.read_text(errors="replace")
            assert first not in text, path
            if "last-good" in path.parts:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == 0, path
                assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
            else:
                assert second not in text, path

        res = converge(tmp_path, [stack(second)], "--diff")
        assert res.returncode == 0 and "changed=0" in res.stdout, explain(res)
    finally:
        errors = dh.remove_compose_project(name)
        assert not errors, errors
