# Copyright: (c) 2026, selfhosted.platform maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load the collection's filter plugins in the controller's main process before it forks a worker per task."""

from __future__ import annotations

DOCUMENTATION = r"""
name: warm_plugins
type: aggregate
short_description: Load this collection's filter plugins once, before Ansible forks its workers
description:
  - Ansible runs every task of every host in a worker process forked from the controller's main process. A worker
    that templates a filter of a collection whose plugin files define several filters each (as this one's do) loads
    every filter file of the collection, and the modules they import, from source, and the loaded code dies with the
    worker; the next task loads it all again.
  - This callback loads them once in the main process when the playbook starts, so every worker inherits them from
    the fork. In a profile of a converge that loading was about a tenth of the controller's CPU time
    (docs/performance.md).
  - It changes no output and no result. Enable it with C(callbacks_enabled = selfhosted.platform.warm_plugins) in
    C(ansible.cfg) (the collection's own ansible.cfg does) or C(ANSIBLE_CALLBACKS_ENABLED).
requirements:
  - enable in the configuration (C(callbacks_enabled))
"""

import contextlib
import sys

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader

COLLECTION = "selfhosted.platform"
NO_SUCH_PLUGIN = "_warm_plugins_no_such_filter"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "selfhosted.platform.warm_plugins"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loaded: list[str] = []

    def v2_playbook_on_start(self, playbook):
        self.loaded = warm(filter_loader)
        self._display.vvvv("warm_plugins: loaded %s" % ", ".join(self.loaded))


def warm(loader, collection: str = COLLECTION) -> list[str]:
    """Load every plugin file of LOADER's type (filter) in COLLECTION into this process; the names of the files loaded.

    Asking the loader for a name none of the files defines makes it load each file of the collection's directory in
    turn (what a worker does for every filter whose name is not a file's) and keep it in sys.modules. A file that
    fails to load is left to the worker that needs it, which reports the error."""
    with contextlib.suppress(Exception):  # the worker that templates the filter reports it
        loader.get_with_context("%s.%s" % (collection, NO_SUCH_PLUGIN))
    prefix = "ansible_collections.%s.plugins.%s." % (collection, loader.type)
    return sorted(name[len(prefix):] for name in list(sys.modules) if name.startswith(prefix))
