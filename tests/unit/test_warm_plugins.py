"""plugins/callback/warm_plugins.py: the collection's filter files loaded once in the controller's main process, so
the workers it forks find every filter without loading a file from source again."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = r"""
import importlib.util, json, sys
from ansible.plugins.loader import filter_loader, init_plugin_loader
init_plugin_loader([sys.argv[1]])
from ansible_collections.selfhosted.platform.plugins.callback import warm_plugins

loaded = []
if sys.argv[2] == "warm":
    loaded = warm_plugins.warm(filter_loader)
# what a forked worker does for a filter whose name is not its file's: load every file of the directory (and
# ansible-core's own filter files) it has not loaded yet
loads = []
real = importlib.util.spec_from_file_location


def counted(name, *a, **k):
    loads.append(name.rsplit(".", 1)[-1])
    return real(name, *a, **k)


importlib.util.spec_from_file_location = counted
found = filter_loader.get_with_context("selfhosted.platform.host_uid").object
print(json.dumps({"loaded": loaded, "loads_after": sorted(loads), "found": found is not None}))
"""


def probe(mode: str) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / ".build" / "collections"), mode],
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


FILTER_FILES = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.py") if p.stem != "__init__")


def test_without_warming_a_worker_loads_every_filter_file_for_one_filter():
    cold = probe("cold")
    assert cold["found"] and set(FILTER_FILES) <= set(cold["loads_after"])


def test_warmed_every_filter_file_is_loaded_and_a_worker_loads_none_again():
    warmed = probe("warm")
    assert warmed["loaded"] == FILTER_FILES
    assert warmed["found"] and warmed["loads_after"] == []


def test_the_repository_configuration_and_molecule_enable_it():
    assert "callbacks_enabled = selfhosted.platform.warm_plugins" in (ROOT / "ansible.cfg").read_text()
    assert "callbacks_enabled: selfhosted.platform.warm_plugins" in (
        ROOT / "molecule" / "default" / "molecule.yml").read_text()
