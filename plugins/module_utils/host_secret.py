# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the host_secret module: a secret kept in a root-owned file on the managed host.

A value supplied by the caller (from vault) always wins and is written when the file differs;
without one, the file's current content is the secret; when there is no file yet a random
secret is generated and written once. ``regenerate`` replaces a stored secret with a new random
one (a password rotation). The secret never appears in a diff or a message.
"""

from __future__ import annotations

import os
import secrets
import string
import tempfile

CHARSETS = {
    "alphanumeric": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "urlsafe": string.ascii_letters + string.digits + "-_",
}


def generate(length, charset="alphanumeric"):
    alphabet = CHARSETS[charset]
    return "".join(secrets.choice(alphabet) for dummy in range(length))


def read_secret(path):
    """The secret stored in path (without a trailing newline), or None when there is none."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return text or None


def write_secret(path, value, mode):
    """Write atomically; the temporary file is created with the final mode so the secret is
    never readable by others, not even for a moment."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".host_secret.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(value.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def decide(current, supplied, length, charset, regenerate=False):
    """(secret, action) where action is 'keep', 'generate', 'create', 'update' or 'regenerate'. Pure.
    REGENERATE replaces a stored secret with a new random one (never equal to it)."""
    if supplied is not None and supplied != "":
        return supplied, ("keep" if current == supplied else ("update" if current is not None else "create"))
    if current is not None and not regenerate:
        return current, "keep"
    secret = generate(length, charset)
    while secret == current:  # a 1 in 62**length event, but "regenerated" must mean "different"
        secret = generate(length, charset)
    return secret, "generate" if current is None else "regenerate"


def run(module):
    p = module.params
    path = p["path"]
    result = {"changed": False, "path": path}

    if p.get("regenerate") and p["value"]:
        module.fail_json(msg="regenerate: cannot be combined with value (a value from vault is the secret; change "
                             "it there instead)", **result)
    if p.get("regenerate") and p["state"] == "absent":
        module.fail_json(msg="regenerate: only with state=present", **result)
    if p["length"] < 8:
        module.fail_json(msg="length: must be at least 8, got %d" % p["length"], **result)
    try:
        mode = int(p["mode"], 8) if isinstance(p["mode"], str) else int(p["mode"])
    except ValueError:
        module.fail_json(msg="mode: give an octal mode such as 0600, got %s" % p["mode"], **result)
    if mode & 0o077 & ~0o040:
        module.fail_json(msg="mode: a secret file may be readable by its owner and group only, got %s" % p["mode"],
                         **result)

    if p["state"] == "absent":
        if os.path.exists(path):
            result["changed"] = True
            if not module.check_mode:
                os.unlink(path)
        result["action"] = "remove" if result["changed"] else "keep"
        if module._diff:
            result["diff"] = {"before_header": path, "after_header": path,
                              "before": "(secret)\n" if result["changed"] else "", "after": ""}
        module.exit_json(**result)

    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        if not p["create_parent"]:
            module.fail_json(msg="path: the directory %s does not exist (create_parent=false)" % directory, **result)
        if not module.check_mode:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        result["changed"] = True

    try:
        current = read_secret(path)
    except UnicodeDecodeError:
        module.fail_json(msg="path: %s does not hold a UTF-8 secret; refusing to replace it" % path, **result)
    except OSError as exc:
        module.fail_json(msg="path: cannot read %s: %s" % (path, exc), **result)

    secret, action = decide(current, p["value"], p["length"], p["charset"], p.get("regenerate", False))
    result["action"] = action
    if action != "keep":
        result["changed"] = True
        if not module.check_mode:
            write_secret(path, secret, mode)

    file_args = module.load_file_common_arguments({"path": path, "mode": p["mode"], "owner": p["owner"],
                                                   "group": p["group"]})
    if os.path.exists(path):
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])

    if module._diff:
        before = "" if current is None else "(secret)\n"
        after = "(secret)\n" if action == "keep" else "(secret, %s)\n" % {
            "generate": "generated", "create": "from value", "update": "changed", "regenerate": "regenerated"}[action]
        result["diff"] = {"before_header": path, "after_header": path, "before": before, "after": after}
    result["generated"] = action in ("generate", "regenerate")
    result["secret"] = secret
    module.exit_json(**result)
