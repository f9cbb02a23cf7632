"""ansible-test sanity on a copy of the collection at .../ansible_collections/selfhosted/platform.

ansible-test needs the collection on such a path; the copy holds exactly the files git knows
(tracked or new, not ignored). Tests whose tools are absent are skipped by ansible-test itself
(pslint needs PowerShell); everything else must pass with no ignore file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool

pytestmark = pytest.mark.sanity


def copy_collection(dest: Path) -> Path:
    target = dest / "ansible_collections" / "selfhosted" / "platform"
    target.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    return target


def test_ansible_test_sanity(tmp_path: Path):
    target = copy_collection(tmp_path)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    res = run_tool(["ansible-test", "sanity", "--requirements", "--python", py, "--color", "no"],
                   cwd=target, timeout=1800)
    assert res.returncode == 0, explain(res, tail=20000)
