# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker's user-namespace remapping (daemon.json ``userns-remap``, CIS Docker Benchmark 2.9), in one place.

With remapping on, dockerd runs every container in a user namespace: uid N inside a container is uid BASE+N on the
host (and gid M is GBASE+M), where BASE is the start of the remapped user's range in /etc/subuid (GBASE: its group's
range in /etc/subgid). Every file a container reads or writes through a bind mount must therefore be owned by the
shifted ids on the host.

- :func:`plan` decides, from the option and the host's /etc/subuid and /etc/subgid, which user and group dockerd
  remaps to, which ranges they get (an existing one is kept; a missing one is allocated, the same start in both files
  where possible, so the offset is known before dockerd first starts with the option and stays the same), and
  returns the mapping every layer reads (the docker_engine role publishes it as the fact ``docker_engine__userns``).
- :func:`host_id` shifts one container uid or gid to the host's (the filters ``selfhosted.platform.host_uid`` and
  ``host_gid``); no role adds an offset by itself.
- :func:`shift_plan` / :func:`shift_tree` move the owners of a directory tree written before remapping was turned on
  (or restored from a backup made before it) into the remapped range (the module ``selfhosted.platform.userns_shift``).

Pure functions apart from :func:`shift_tree` (which walks and chowns); no Ansible imports.
"""

from __future__ import annotations

import os
import re
import stat

# Docker's own default: the "default" user is dockremap (group dockremap), created by dockerd when missing.
DEFAULT_USER = "dockremap"
# The size of a range: every uid a container may use, 0..65535 (Docker's and shadow's default subordinate range).
SIZE = 65536
# Where new ranges start (shadow's SUB_UID_MIN and dockerd's own first choice).
FIRST = 100000
NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
OFF = {"enabled": False, "remap": "", "user": "", "group": "", "uid_base": 0, "gid_base": 0, "size": 0,
       "subuid_line": "", "subgid_line": ""}


class UsernsError(ValueError):
    """A bad option or a host the mapping cannot be settled on; the message names the option or the file."""


def parse_remap(value, where="docker_engine_userns_remap"):
    """(user, group) dockerd remaps to for the option VALUE: '' (off) -> None, 'default' -> dockremap:dockremap,
    'USER' -> USER:USER (dockerd looks the group up under the user's name), 'USER:GROUP'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsernsError("%s: expected '', 'default' or 'USER[:GROUP]', got %r" % (where, value))
    text = value.strip()
    if text == "default":
        return DEFAULT_USER, DEFAULT_USER
    user, sep, group = text.partition(":")
    group = group if sep else user
    for part, what in ((user, "user"), (group, "group")):
        if not NAME_RE.match(part):
            raise UsernsError(
                "%s: %r is not a valid %s name in %r (give 'default' or 'USER[:GROUP]' with names such as dockremap; "
                "numeric ids are not accepted, the role creates the names)" % (where, part, what, value))
    return user, group


def parse_subid(text):
    """[(name, start, count)] of an /etc/subuid or /etc/subgid text, in file order (blank, comment and malformed
    lines skipped, as shadow's tools skip them)."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def _overlaps(start, count, ranges):
    return any(start < s + c and s < start + count for _n, s, c in ranges)


def free_start(ranges, count=SIZE, first=FIRST, prefer=None):
    """The lowest start >= FIRST (PREFER first, when it is free) of COUNT ids that overlaps none of RANGES."""
    if prefer is not None and prefer >= first and not _overlaps(prefer, count, ranges):
        return prefer
    candidates = sorted({first} | {s + c for _n, s, c in ranges if s + c >= first})
    for start in candidates:
        if not _overlaps(start, count, ranges):
            return start
    raise UsernsError("no free range of %d ids found" % count)  # pragma: no cover - candidates always end free


def _own_range(ranges, name, path, where):
    mine = [r for r in ranges if r[0] == name]
    if len(mine) > 1:
        raise UsernsError(
            "%s: %s has %d ranges in %s (%s); the collection needs exactly one of at least %d ids, so that one offset "
            "maps every container id: remove the others" % (
                where, name, len(mine), path, ", ".join("%d:%d" % (s, c) for _n, s, c in mine), SIZE))
    if mine and mine[0][2] < SIZE:
        raise UsernsError(
            "%s: the range of %s in %s (%d:%d) holds fewer than %d ids; containers use uids 0..65535: give it at "
            "least %d (or remove the line and let the role allocate one)" % (
                where, name, path, mine[0][1], mine[0][2], SIZE, SIZE))
    return mine[0] if mine else None


def plan(remap, subuid_text="", subgid_text="", where="docker_engine_userns_remap"):
    """The mapping for the option REMAP on a host whose /etc/subuid and /etc/subgid read SUBUID_TEXT and SUBGID_TEXT.

    Returns ``{enabled, remap, user, group, uid_base, gid_base, size, subuid_line, subgid_line}``: the bases are the
    starts of the ranges (0 when off), size the ids a container can use, and ``sub*_line`` the line to append to the
    file when the user (group) has no range yet ('' when it has one)."""
    pair = parse_remap(remap, where)
    if pair is None:
        return dict(OFF)
    user, group = pair
    uids, gids = parse_subid(subuid_text), parse_subid(subgid_text)
    own_u = _own_range(uids, user, "/etc/subuid", where)
    own_g = _own_range(gids, group, "/etc/subgid", where)
    out = dict(OFF, enabled=True, remap=remap.strip(), user=user, group=group)
    if own_u and own_g:
        ubase, ucount, gbase, gcount = own_u[1], own_u[2], own_g[1], own_g[2]
    elif own_u:
        ubase, ucount = own_u[1], own_u[2]
        gbase, gcount = free_start(gids, prefer=ubase), SIZE
    elif own_g:
        gbase, gcount = own_g[1], own_g[2]
        ubase, ucount = free_start(uids, prefer=gbase), SIZE
    else:
        # The same start in both files where one is free in both, so uid and gid shift alike.
        start = FIRST
        while True:
            ustart = free_start(uids, first=start)
            gstart = free_start(gids, first=ustart)
            if gstart == ustart:
                break
            start = gstart
        ubase = gbase = ustart
        ucount = gcount = SIZE
    out.update(uid_base=ubase, gid_base=gbase, size=min(ucount, gcount),
               subuid_line="" if own_u else "%s:%d:%d" % (user, ubase, SIZE),
               subgid_line="" if own_g else "%s:%d:%d" % (group, gbase, SIZE))
    return out


def mapping(userns):
    """The published mapping (the fact ``docker_engine__userns``) as (enabled, uid_base, gid_base, size); None, an
    empty dict or enabled false is off."""
    if not userns:
        return False, 0, 0, 0
    if not isinstance(userns, dict):
        raise UsernsError("the user-namespace mapping must be the dict docker_engine publishes "
                          "(docker_engine__userns), got %r" % (userns,))
    if not userns.get("enabled"):
        return False, 0, 0, 0
    try:
        return True, int(userns["uid_base"]), int(userns["gid_base"]), int(userns["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsernsError("the user-namespace mapping lacks uid_base, gid_base or size: %r" % (userns,)) from exc


def _host_id(value, base, size, kind, where):
    if isinstance(value, bool):
        raise UsernsError("%s: expected a %s, got %r" % (where, kind, value))
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str) and value.strip() == "root":
        number = 0
    else:
        raise UsernsError(
            "%s: %r is a name; with user-namespace remapping (docker_engine_userns_remap) an owner of container "
            "files must be the number the container uses (e.g. 1001) or root, which the platform shifts into the "
            "remapped range" % (where, value))
    if number < 0 or number >= size:
        raise UsernsError("%s: %s %d is outside the ids a remapped container can use (0..%d)" % (
            where, kind, number, size - 1))
    return base + number


def host_id(value, userns, kind="uid", where="owner"):
    """The host's id for the container's uid (KIND 'uid') or gid ('gid') VALUE under the mapping USERNS (the fact
    ``docker_engine__userns``). Off: VALUE as it is (a name included). On: base + the number ('root' is 0); a name or
    an id outside the range is an error naming WHERE."""
    enabled, ubase, gbase, size = mapping(userns)
    if not enabled:
        return value
    return _host_id(value, ubase if kind == "uid" else gbase, size, kind, where)


# ---------------------------------------------------------------------------------------------
# Trees written before remapping (or restored from a backup made before it)
# ---------------------------------------------------------------------------------------------
def shifted(uid, gid, userns):
    """(uid, gid) an entry owned by UID:GID should have under USERNS: ids below the range's size are container ids
    not shifted yet (they move by the base); ids already in the range, or above it, stay."""
    enabled, ubase, gbase, size = mapping(userns)
    if not enabled:
        return uid, gid
    return (uid + ubase if uid < size else uid), (gid + gbase if gid < size else gid)


def shift_plan(entries, userns):
    """[(path, (uid, gid), (new uid, new gid))] of ENTRIES ((path, uid, gid) tuples) whose owner must move."""
    out = []
    for path, uid, gid in entries:
        new = shifted(uid, gid, userns)
        if new != (uid, gid):
            out.append((path, (uid, gid), new))
    return out


def walk_owners(top):
    """(path, uid, gid) of TOP and everything below it, without following symlinks or leaving TOP's filesystem."""
    st = os.lstat(top)
    yield top, st.st_uid, st.st_gid
    if not stat.S_ISDIR(st.st_mode):
        return
    device = st.st_dev
    for root, dirs, files in os.walk(top):
        keep = []
        for name in dirs:
            path = os.path.join(root, name)
            sub = os.lstat(path)
            yield path, sub.st_uid, sub.st_gid
            if stat.S_ISDIR(sub.st_mode) and sub.st_dev == device:
                keep.append(name)
        dirs[:] = keep
        for name in files:
            path = os.path.join(root, name)
            sub = os.lstat(path)
            yield path, sub.st_uid, sub.st_gid


def shift_tree(top, userns, apply=True):
    """Shift the owners of TOP's tree under USERNS (see :func:`shifted`); with APPLY false only plan. Modes are kept
    (chown clears set-uid/set-gid bits: they are put back). Returns the plan."""
    todo = shift_plan(walk_owners(top), userns)
    if apply:
        for path, _old, (uid, gid) in todo:
            mode = os.lstat(path).st_mode
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode))
    return todo


LIST_CAP = 50


def run_shift(module):
    """The module selfhosted.platform.userns_shift: shift the trees of ``paths`` under ``mapping``; changed when an
    owner moved (or would, in check mode); missing paths are skipped unless ``missing: fail``."""
    p = module.params
    try:
        enabled = mapping(p.get("mapping"))[0]
    except UsernsError as exc:
        module.fail_json(msg="mapping: %s" % exc)
    result = {"changed": False, "shifted": [], "shifted_count": 0, "missing": []}
    if not enabled:
        module.exit_json(**result)
    todo = []
    for top in p["paths"]:
        if not os.path.isabs(top):
            module.fail_json(msg="paths: %r is not an absolute path" % top)
        if not os.path.lexists(top):
            if p["missing"] == "fail":
                module.fail_json(msg="paths: %s does not exist" % top)
            result["missing"].append(top)
            continue
        try:
            todo += shift_tree(top, p["mapping"], apply=not module.check_mode)
        except OSError as exc:
            module.fail_json(msg="%s: %s" % (top, exc), **result)
    lines = ["%s %d:%d -> %d:%d" % (path, old[0], old[1], new[0], new[1]) for path, old, new in todo]
    result.update(changed=bool(todo), shifted=lines[:LIST_CAP], shifted_count=len(todo))
    if module._diff and todo:
        result["diff"] = {"before_header": "owners", "after_header": "owners (remapped)",
                          "before": "".join("%s %d:%d\n" % (path, old[0], old[1]) for path, old, _n in todo[:LIST_CAP]),
                          "after": "".join("%s %d:%d\n" % (path, new[0], new[1]) for path, _o, new in todo[:LIST_CAP])}
    module.exit_json(**result)
