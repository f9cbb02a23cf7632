"""A stand-in for AnsibleModule at the boundary unit tests need: params, check/diff mode,
exit_json/fail_json as exceptions, run_command recorded and answered by a callback."""

from __future__ import annotations

import os


class Exit(Exception):
    def __init__(self, result: dict):
        super().__init__(result)
        self.result = result


class Fail(Exception):
    def __init__(self, result: dict):
        super().__init__(result.get("msg"))
        self.result = result


class FakeModule:
    def __init__(self, params: dict, check_mode: bool = False, diff: bool = False, responder=None):
        self.params = params
        self.check_mode = check_mode
        self._diff = diff
        self.responder = responder
        self.commands: list[tuple[list[str], str | None]] = []

    def exit_json(self, **result):
        raise Exit(result)

    def fail_json(self, **result):
        raise Fail(result)

    def get_bin_path(self, name, required=False):
        return "/usr/bin/" + name

    def run_command(self, cmd, data=None, binary_data=False):
        self.commands.append((list(cmd), data))
        return self.responder(cmd, data)

    def load_file_common_arguments(self, params):
        return dict(params)

    def set_fs_attributes_if_different(self, file_args, changed):
        mode = file_args.get("mode")
        if mode is not None:
            want = int(mode, 8) if isinstance(mode, str) else mode
            if os.stat(file_args["path"]).st_mode & 0o7777 != want:
                if not self.check_mode:
                    os.chmod(file_args["path"], want)
                return True
        return changed
