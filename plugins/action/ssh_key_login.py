# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove, from the controller, that a user can log in to the task's host with a key - with the options of Ansible's
own connection to that host, and never with a password (see plugins/modules/ssh_key_login.py)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.action import ActionBase
from ansible_collections.selfhosted.platform.plugins.module_utils.ssh_guard import (
    is_ssh_connection,
    parse_ssh_config,
    probe_argv,
    probe_verdict,
    resolve_user,
)

# Environment variables that could feed a password to ssh (sshpass, askpass helpers): removed for the probe.
PASSWORD_ENV = ("SSHPASS", "SSH_ASKPASS", "DISPLAY")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("user", "timeout"))

    def _opt(self, name):
        """An option of the task's connection plugin, None when that plugin has no such option."""
        try:
            return self._connection.get_option(name)
        except (KeyError, AttributeError):
            return None

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        explicit = self._task.args.get("user") or None
        try:
            timeout = int(self._task.args.get("timeout", 10))
        except (TypeError, ValueError):
            return dict(result, failed=True, msg="ssh_key_login: timeout must be a number of seconds")

        connection = getattr(self._connection, "_load_name", None) or self._play_context.connection or "ssh"
        password = self._opt("password") or self._play_context.password
        result.update(changed=False, connection=connection, password_in_use=bool(password), not_ssh=False)
        if getattr(self._task, "delegate_to", None):
            return dict(result, failed=True, msg="ssh_key_login: do not delegate this task - it reads the options "
                                                 "of the connection to the host and already runs on the controller")
        if not is_ssh_connection(connection):
            result.update(proven=False, not_ssh=True, user=explicit or "", host="", port=None,
                          reason="the connection is %r, not SSH: there is no SSH login to prove" % connection)
            return result

        host = self._opt("host") or self._play_context.remote_addr or task_vars.get("inventory_hostname")
        port = self._opt("port")
        connection_user = self._opt("remote_user")
        private_key_file = self._opt("private_key_file")
        if private_key_file:
            private_key_file = os.path.expanduser(private_key_file)   # as the ssh connection plugin does
        key_dir = None
        try:
            if self._opt("private_key"):
                # The key's text (ansible_private_key, 2.19+): the probe needs it in a file, 0600, removed afterwards.
                key_dir = tempfile.mkdtemp(prefix="ssh-key-login-")
                private_key_file = os.path.join(key_dir, "id")
                fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(to_text(self._opt("private_key")).rstrip("\n") + "\n")
            common = dict(
                ssh_executable=self._opt("ssh_executable") or "ssh", port=port, private_key_file=private_key_file,
                ssh_args=self._opt("ssh_args"), ssh_common_args=self._opt("ssh_common_args"),
                ssh_extra_args=self._opt("ssh_extra_args"), host_key_checking=self._opt("host_key_checking"),
                timeout=timeout, proxy_command=self._opt("proxy_command"),
                identities_only=bool(self._opt("private_key")))
            # What ssh itself would use (~/.ssh/config's User, Port, HostName) - only to name the user when neither
            # firewall_ssh_key_user nor Ansible sets one; ssh -G does not connect.
            config = {}
            if not (explicit or connection_user):
                shown = self._ssh(probe_argv(host, user=None, config_only=True, **common), timeout)
                config = parse_ssh_config(shown.stdout) if shown.returncode == 0 else {}
            user, source = resolve_user(explicit, connection_user, config.get("user"), getpass.getuser())
            argv = probe_argv(host, user=user, **common)
            res = self._ssh(argv, timeout + 20)
            proven, reason = probe_verdict(res.returncode, res.stderr, user=user, host=host, port=port or 22)
        except subprocess.TimeoutExpired:
            proven, reason, argv, user, source = False, "ssh did not finish within %ss" % (timeout + 20), [], "", ""
        except (OSError, ValueError) as exc:
            return dict(result, failed=True, msg="ssh_key_login: cannot run ssh on the controller: %s" % to_native(exc))
        finally:
            if key_dir:
                shutil.rmtree(key_dir, ignore_errors=True)
        if password:
            reason += ("; Ansible itself logs in with a password (ansible_password/--ask-pass), which proves nothing "
                       "about keys and was not used for this probe")
        result.update(proven=proven, user=user, user_source=source, host=host, port=port or 22, reason=reason,
                      command=argv)
        return result

    @staticmethod
    def _ssh(argv, timeout):
        env = {k: v for k, v in os.environ.items() if k not in PASSWORD_ENV}
        env["SSH_ASKPASS_REQUIRE"] = "never"
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
