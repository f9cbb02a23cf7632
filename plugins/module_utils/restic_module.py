# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AnsibleModule of the restic_* modules. Apart from restic.py, which the backup role also installs on the
server as the backup runner's library (where Ansible is not installed)."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.restic import repository_secrets


class ResticModule(AnsibleModule):
    """AnsibleModule whose result never holds the password of the repository URL: before it exits or fails, even
    on an argument error found by its constructor, the password (as written and percent-decoded) is one of its
    no_log values, so Ansible masks it in ``invocation.module_args`` and everywhere in the result. (The
    constructor's syslog line is already cleaned by Ansible's URL heuristic.)"""

    def _mask_repository(self):
        params = getattr(self, "params", None) or {}
        repository = params.get("repository")
        if isinstance(repository, str):
            self.no_log_values.update(repository_secrets(repository))

    def exit_json(self, **kwargs):
        self._mask_repository()
        super().exit_json(**kwargs)

    def fail_json(self, msg, **kwargs):
        self._mask_repository()
        super().fail_json(msg, **kwargs)
