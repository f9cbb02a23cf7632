# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic behind the docker_engine role's Docker apt repository path (no I/O; the role runs the commands and
passes their output in):

- ``openpgp_fingerprints``: the primary-key fingerprints of an ASCII-armored OpenPGP public key, computed from the
  key packets themselves (RFC 4880 v4: SHA-1, RFC 9580 v6 and LibrePGP v5: SHA-256), so the managed host needs no
  gpg to check the repository key before apt trusts it;
- ``compare_versions``: Debian's version ordering (epoch, upstream, revision; ``~`` sorts before everything);
- ``parse_madison`` / ``parse_dpkg_status``: ``apt-cache madison`` and ``dpkg-query -W`` output;
- ``resolve_version``: ``docker_engine_version`` (an exact version or a prefix of the upstream version) against
  what the repository offers and what is installed;
- ``package_plan`` / ``hold_plan``: the apt package list (engine pinned, companions to the repository's newest when
  the engine version moves) and the dpkg holds to release, take and drop.
"""

from __future__ import annotations

import base64
import hashlib
import re

ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
TAG_PUBLIC_KEY = 6
TAG_PUBLIC_SUBKEY = 14
# RFC 4880 6.1: CRC-24 of the armored data.
CRC24_INIT = 0xB704CE
CRC24_POLY = 0x1864CFB

FINGERPRINT = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")
# An exact Debian version (epoch optional, a revision after the last hyphen) or a prefix of the upstream version.
VERSION = re.compile(r"^(?:[0-9]+:)?[0-9][0-9A-Za-z.+~-]*$")


class OpenPGPError(ValueError):
    """The text is not an ASCII-armored OpenPGP public key (says why)."""


class PlanError(ValueError):
    """A declared version the repository cannot satisfy (names the option and the choices)."""


# ---------------------------------------------------------------------------------------------------------------
# OpenPGP fingerprints


def _crc24(data: bytes) -> int:
    crc = CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _bit in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= CRC24_POLY
    return crc & 0xFFFFFF


def _armored_blocks(text: str) -> list[bytes]:
    """The decoded data of every public key block in TEXT (the CRC-24 line is checked when present)."""
    blocks, lines, inside, body_started = [], [], False, False
    checksum = None
    for raw in text.splitlines():
        line = raw.strip()
        if line == ARMOR_BEGIN:
            inside, body_started, lines, checksum = True, False, [], None
            continue
        if not inside:
            continue
        if line == ARMOR_END:
            try:
                data = base64.b64decode("".join(lines), validate=True)
            except ValueError as exc:
                raise OpenPGPError(f"the armored data is not valid base64 ({exc})") from exc
            if checksum is not None:
                try:
                    want = int.from_bytes(base64.b64decode(checksum, validate=True), "big")
                except ValueError as exc:
                    raise OpenPGPError("the armor checksum line is not valid base64") from exc
                if _crc24(data) != want:
                    raise OpenPGPError("the armor checksum does not match the data (the key is damaged)")
            blocks.append(data)
            inside = False
            continue
        if not body_started:
            # Armor headers ("Comment: ...") end at a blank line; base64 never holds a colon.
            if not line or ":" in line:
                if not line:
                    body_started = True
                continue
            body_started = True
        if line.startswith("=") and len(line) == 5:
            checksum = line[1:]
        elif line:
            lines.append(line)
    if inside:
        raise OpenPGPError(f"no '{ARMOR_END}' line")
    if not blocks:
        raise OpenPGPError(f"no '{ARMOR_BEGIN}' block (an ASCII-armored key is expected)")
    return blocks


def _packets(data: bytes):
    """(tag, body) of every packet in DATA (old and new packet formats)."""
    pos = 0
    while pos < len(data):
        head = data[pos]
        if not head & 0x80:
            raise OpenPGPError(f"byte {pos} is not a packet header")
        if head & 0x40:  # new format
            tag = head & 0x3F
            first = data[pos + 1] if pos + 1 < len(data) else None
            if first is None:
                raise OpenPGPError("truncated packet header")
            if first < 192:
                length, pos = first, pos + 2
            elif first < 224:
                if pos + 2 >= len(data):
                    raise OpenPGPError("truncated packet header")
                length, pos = ((first - 192) << 8) + data[pos + 2] + 192, pos + 3
            elif first == 255:
                length, pos = int.from_bytes(data[pos + 2:pos + 6], "big"), pos + 6
            else:
                raise OpenPGPError(f"packet with tag {tag} uses a partial body length, which key packets may not")
        else:  # old format
            tag, kind = (head >> 2) & 0x0F, head & 0x03
            if kind == 3:
                length, pos = len(data) - pos - 1, pos + 1
            else:
                size = (1, 2, 4)[kind]
                length, pos = int.from_bytes(data[pos + 1:pos + 1 + size], "big"), pos + 1 + size
        body = data[pos:pos + length]
        if len(body) != length:
            raise OpenPGPError(f"packet with tag {tag} is truncated")
        yield tag, body
        pos += length


def _fingerprint(body: bytes) -> str:
    version = body[0] if body else None
    if version == 4:
        digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
    elif version == 5:
        digest = hashlib.sha256(b"\x9a" + len(body).to_bytes(4, "big") + body).hexdigest()
    elif version == 6:
        digest = hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest()
    else:
        raise OpenPGPError(f"key packet version {version} is not supported (v4, v5 and v6 are)")
    return digest.upper()


def openpgp_keys(text: str) -> list[dict]:
    """[{fingerprint, subkeys: [fingerprint, ...]}] of every primary key in the armored TEXT, in file order."""
    keys: list[dict] = []
    for data in _armored_blocks(text):
        for tag, body in _packets(data):
            if tag == TAG_PUBLIC_KEY:
                keys.append({"fingerprint": _fingerprint(body), "subkeys": []})
            elif tag == TAG_PUBLIC_SUBKEY:
                if not keys:
                    raise OpenPGPError("a subkey packet comes before any primary key")
                keys[-1]["subkeys"].append(_fingerprint(body))
    if not keys:
        raise OpenPGPError("the armored block holds no public key packet")
    return keys


def openpgp_fingerprints(text: str) -> list[str]:
    """The primary-key fingerprints (40 or 64 upper-case hex digits) of the armored public key TEXT."""
    return [k["fingerprint"] for k in openpgp_keys(text)]


def normalize_fingerprint(value: str) -> str:
    """A fingerprint as people write it (spaces, lower case, an optional 0x) -> 40/64 upper-case hex digits, or ''
    when it is not one."""
    text = re.sub(r"\s+", "", str(value or "")).upper()
    text = text.removeprefix("0X")
    return text if FINGERPRINT.match(text) else ""


# ---------------------------------------------------------------------------------------------------------------
# Debian versions


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternating non-digit and digit runs."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def split_version(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a Debian version."""
    epoch, sep, rest = version.partition(":")
    if not sep:
        epoch, rest = "0", version
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version A sorts before, equal to or after B (dpkg --compare-versions)."""
    ea, ua, ra = split_version(a)
    eb, ub, rb = split_version(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest_first(versions) -> list[str]:
    out: list[str] = []
    for v in versions:
        if v not in out:
            out.append(v)
    # insertion sort with the Debian comparison (lists are short)
    ordered: list[str] = []
    for v in out:
        k = 0
        while k < len(ordered) and compare_versions(ordered[k], v) > 0:
            k += 1
        ordered.insert(k, v)
    return ordered


def version_matches(wanted: str, version: str) -> bool:
    """Whether VERSION satisfies docker_engine_version WANTED: an exact version (it holds a '-' or an epoch; the
    epoch may be left out) or a prefix of the upstream version ending at a dot ('27.3' is 27.3, 27.3.1, not 27.30)."""
    if "-" in wanted or ":" in wanted:
        return version == wanted or version.partition(":")[2] == wanted
    upstream = split_version(version)[1]
    return upstream == wanted or upstream.startswith(wanted + ".")


# ---------------------------------------------------------------------------------------------------------------
# Command output


def parse_madison(stdout: str) -> dict[str, list[str]]:
    """`apt-cache madison PKG...` -> {package: [versions, newest first]}."""
    found: dict[str, list[str]] = {}
    for line in (stdout or "").splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3 or not parts[0] or not parts[1]:
            continue
        found.setdefault(parts[0], []).append(parts[1])
    return {pkg: newest_first(vs) for pkg, vs in found.items()}


def parse_dpkg_status(stdout: str) -> dict[str, dict]:
    """`dpkg-query -W -f '${Package}\\t${Version}\\t${Status}\\n' PKG...` -> {package: {version, want, installed}}
    (`want` is dpkg's selection: install, hold, deinstall, purge; packages dpkg only remembers are left out)."""
    out: dict[str, dict] = {}
    for line in (stdout or "").splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, version, status = (p.strip() for p in parts)
        words = status.split()
        if len(words) != 3 or words[2] == "not-installed":
            continue
        out[name] = {"version": version, "want": words[0],
                     "installed": words[2] in ("installed", "half-configured", "unpacked", "triggers-awaited",
                                               "triggers-pending")}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Plans


def resolve_version(wanted: str, available: list[str], installed: str | None, *, package: str = "docker-ce",
                    also_in: list[str] | None = None) -> str:
    """The version of PACKAGE to have: the installed one when it satisfies WANTED (or nothing is wanted), else the
    newest AVAILABLE version that satisfies it (and that ALSO_IN offers too: docker-ce-cli ships in lock-step).
    '' when nothing can be said yet (the package lists do not know the repository). PlanError when the repository
    offers no matching version."""
    wanted = (wanted or "").strip()
    if installed and (not wanted or version_matches(wanted, installed)):
        return installed
    if not available:
        return ""
    candidates = [v for v in available if not wanted or version_matches(wanted, v)]
    if also_in is not None:
        candidates = [v for v in candidates if v in also_in]
    if not candidates:
        shown = ", ".join(available[:8]) + (f" (and {len(available) - 8} older)" if len(available) > 8 else "")
        raise PlanError(
            f"docker_engine_version: {wanted!r} matches none of the {package} versions the repository offers"
            + (" for both docker-ce and docker-ce-cli" if also_in is not None else "")
            + f" (newest first: {shown}); write an exact version from this list or a prefix of one, e.g. "
            f"{split_version(available[0])[1].rsplit('.', 1)[0]!r}")
    return candidates[0]


def package_plan(madison: dict[str, list[str]], status: dict[str, dict], wanted: str, engine: list[str],
                 companions: list[str]) -> dict:
    """What the install task asks apt for and which holds it releases first.

    ``engine`` (docker-ce, docker-ce-cli) is pinned to the resolved version whenever one is wanted; the first one
    decides (``installed``/``version``). ``companions`` (containerd.io and the CLI plugins) are installed when
    missing and, when the engine version moves, brought to the newest version the repository offers in the same
    transaction (what Docker's own upgrade instructions do). ``known`` says whether the package lists know the
    repository at all (check mode before the repository is added does not)."""
    main = engine[0]
    installed = status.get(main, {}).get("version") if status.get(main, {}).get("installed") else None
    available = madison.get(main, [])
    also_in = madison.get(engine[1], []) if len(engine) > 1 and available else None
    version = resolve_version(wanted, available, installed, package=main, also_in=also_in)
    known = bool(available)
    # Unknown version: the lists do not know the repository yet, and the installed engine (if any) does not
    # satisfy the pin, so the run installs or changes it.
    changing = version != installed if version else True
    names = []
    for pkg in engine:
        names.append(f"{pkg}={version}" if version and (wanted or changing) else pkg)
    for pkg in companions:
        newest = (madison.get(pkg) or [None])[0]
        is_installed = status.get(pkg, {}).get("installed")
        names.append(f"{pkg}={newest}" if changing and is_installed and newest else pkg)
    held = [p for p in [*engine, *companions] if status.get(p, {}).get("want") == "hold"]
    missing = [p for p in [*engine, *companions] if not status.get(p, {}).get("installed")]
    return {
        "known": known,
        "installed": installed or "",
        "version": version,
        "changing": changing,
        "names": names,
        "release": held if changing else [],
        "missing": missing,
        "available": available[:8],
    }


def hold_plan(status: dict[str, dict], packages: list[str], hold: bool, released: list[str] | None = None,
              check_mode: bool = False) -> dict:
    """The dpkg selections to change after the install: ``hold`` the PACKAGES not held yet (hold true). With hold
    false the role takes no hold of its own and leaves the operator's as it found them: only the holds it RELEASED
    to move the pinned version are taken again (``unhold`` stays empty; it is kept for the tasks' shape). In check
    mode the release before the install was only predicted, so the packages it named still read as held here
    although the run re-holds them: they count as not held."""
    released = released or []
    held = {p for p in packages if status.get(p, {}).get("want") == "hold" and not (check_mode and p in released)}
    if hold:
        return {"hold": [p for p in packages if p not in held], "unhold": []}
    return {"hold": [p for p in packages if p in released and p not in held], "unhold": []}
