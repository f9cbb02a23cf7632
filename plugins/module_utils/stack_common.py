# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What compose_stack and swarm_stack share: the YAML dumper of the files they write, reading and atomically writing
those files, and masking secret values in text and results.

A module of its own so that swarm_stack does not import compose_stack (and with it compose_plan and
compose_registry): every module run imports what it uses, and Ansible ships it to the host in the module's payload.
"""

from __future__ import annotations

import os
import tempfile

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - Compose and docker stack deploy read JSON as YAML, so this still works
    yaml = None
    HAS_YAML = False

MASK = "********"


class _Dumper(yaml.SafeDumper if HAS_YAML else object):
    """Block-style YAML with multi-line strings as literal blocks."""


if HAS_YAML:

    def _str_presenter(dumper, data):
        if "\n" in data:
            return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
        return dumper.represent_scalar("tag:yaml.org,2002:str", data)

    _Dumper.add_representer(str, _str_presenter)


class _FastDumper((getattr(yaml, "CSafeDumper", None) or yaml.SafeDumper) if HAS_YAML else object):
    """_Dumper's output from libyaml's emitter where PyYAML has it (Debian's python3-yaml does), about ten times
    faster: swarm_stack renders its stack file on every run, a no-op included, to compare it with the one on disk.
    The same text as _Dumper's (tests/unit/test_swarm_stack.py compares them); PyYAML without libyaml: _Dumper."""


if HAS_YAML:
    _FastDumper.add_representer(str, _str_presenter)


def read_text(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def atomic_write(path, content, mode):
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def mask_text(text, secrets):
    """TEXT with every occurrence of each secret (longest first, as a substring) replaced by ********."""
    if not text or not isinstance(text, str):
        return text
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def mask_value(value, secrets):
    """mask_text over the string values of a result: dicts, lists and tuples of them (keys, the result's own
    field names and service names, stay)."""
    if not secrets:
        return value
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {k: mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_value(x, secrets) for x in value)
    return value


__all__ = ["HAS_YAML", "MASK", "_Dumper", "_FastDumper", "atomic_write", "mask_text", "mask_value", "read_text", "yaml"]
