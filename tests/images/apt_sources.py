"""The Debian mirror this machine's apt uses, read from its own configuration.

The test images are built from Debian packages (debootstrap, then ``apt-get install`` in each
Dockerfile). They must come from wherever apt works on the machine that builds them (a corporate
mirror, a caching proxy, a snapshot), so no mirror host is written into the repository: the
builder reads the machine's apt sources, in either format apt accepts:

- deb822 ``*.sources`` files (``Types:``/``URIs:``/``Suites:``/``Components:``, paragraphs separated
  by blank lines, ``Enabled: no`` honoured, continuation lines, ``#`` comments), and
- one-line ``sources.list`` / ``*.list`` entries (``deb [option=value ...] URI SUITE COMPONENT...``).

``debian_mirrors()`` picks the archive mirror (an entry carrying the suite, its ``-updates``, or
any other suite of the Debian archive with component ``main``) and the security mirror (an entry
for ``<suite>-security``, or the older ``<suite>/updates``). Any suite can be asked for: a mirror
serves every release, so a bookworm host can build trixie images from the same URIs.

Pure functions (parsing, choosing) beside one reader of ``/etc/apt``; apt's HTTP proxy setting is
read with ``apt-config`` so debootstrap and ``docker build`` use it too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import NamedTuple

# URI schemes debootstrap can fetch from. apt's own method indirections (mirror+file:, mirror://)
# and cdrom: are not usable by debootstrap.
USABLE_SCHEMES = ("http://", "https://", "file:/", "ftp://")


class Source(NamedTuple):
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str]
    options: dict[str, str]
    origin: str


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            current[key] += "\n" + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_deb822(text: str, origin: str = "") -> list[Source]:
    """Entries of a deb822 ``.sources`` file; disabled paragraphs (``Enabled: no``) are left out."""
    out = []
    for p in _deb822_paragraphs(text):
        if p.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        if not p.get("uris") or not p.get("suites"):
            continue
        options = {k: v for k, v in p.items() if k not in ("types", "uris", "suites", "components", "enabled")}
        out.append(Source(types=p.get("types", "deb").split(), uris=p["uris"].split(), suites=p["suites"].split(),
                          components=p.get("components", "").split(), options=options, origin=origin))
    return out


_ONE_LINE = re.compile(r"^\s*(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$")


def parse_one_line(text: str, origin: str = "") -> list[Source]:
    """Entries of a one-line ``sources.list``; comments and malformed lines are left out."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = _ONE_LINE.match(line)
        if not m:
            continue
        kind, opts, uri, suite, comps = m.groups()
        options = {}
        for item in shlex.split(opts or ""):
            k, _, v = item.partition("=")
            options[k.lower()] = v
        out.append(Source(types=[kind], uris=[uri], suites=[suite], components=comps.split(), options=options,
                          origin=origin))
    return out


def read_sources(etc_apt: Path = Path("/etc/apt")) -> list[Source]:
    """Every enabled entry in sources.list, sources.list.d/*.list and sources.list.d/*.sources, in
    apt's order (sources.list first, then the directory's files sorted by name)."""
    entries: list[Source] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        entries += parse_one_line(main_list.read_text(errors="replace"), str(main_list))
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".list":
                entries += parse_one_line(f.read_text(errors="replace"), str(f))
            elif f.suffix == ".sources":
                entries += parse_deb822(f.read_text(errors="replace"), str(f))
    return entries


def _is_security(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def _usable(uri: str) -> bool:
    return uri.startswith(USABLE_SCHEMES)


def debian_mirrors(entries: list[Source], suite: str) -> tuple[str | None, str | None]:
    """(archive URI, security URI) for SUITE from the machine's entries; None where there is none.

    The archive mirror is the first binary entry with component ``main`` whose suite is SUITE or
    SUITE-updates, else the first with component ``main`` for any non-security suite of a Debian
    archive (an entry whose suites all look like Debian's: codename, -updates, -backports,
    stable/testing/...). The security mirror is the first binary entry for a ``-security`` suite
    (or the pre-bullseye ``/updates`` form).
    """
    binary = [e for e in entries if "deb" in e.types and "main" in e.components]
    archive = security = None
    wanted = {suite, f"{suite}-updates"}
    for e in binary:
        uris = [u for u in e.uris if _usable(u)]
        if uris and wanted & set(e.suites):
            archive = uris[0].rstrip("/")
            break
    if archive is None:
        for e in binary:
            uris = [u for u in e.uris if _usable(u)]
            if uris and any(not _is_security(s) for s in e.suites) and "debian" in " ".join(e.uris).lower():
                archive = uris[0].rstrip("/")
                break
    for e in binary:
        uris = [u for u in e.uris if _usable(u)]
        if uris and any(_is_security(s) for s in e.suites):
            security = uris[0].rstrip("/")
            break
    return archive, security


def apt_proxy() -> dict[str, str]:
    """apt's HTTP(S) proxy (Acquire::http::Proxy / Acquire::https::Proxy) as environment variables
    for debootstrap and ``docker build``; the environment's own proxy variables win."""
    env: dict[str, str] = {}
    try:
        out = subprocess.run(["apt-config", "shell", "HTTP", "Acquire::http::Proxy", "HTTPS", "Acquire::https::Proxy"],
                             capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return env
    values = dict(re.findall(r"^(HTTPS?)='([^']*)'$", out, re.M))
    for var, key in (("http_proxy", "HTTP"), ("https_proxy", "HTTPS")):
        if os.environ.get(var):
            env[var] = os.environ[var]
        elif values.get(key) and values[key].upper() != "DIRECT":
            env[var] = values[key]
    return env


def mirrors_for(suite: str, environ: os._Environ | dict = os.environ,
                etc_apt: Path = Path("/etc/apt")) -> tuple[str, str | None]:
    """(archive, security) for SUITE: SHP_DEBIAN_MIRROR / SHP_DEBIAN_SECURITY_MIRROR when set, else
    the machine's apt sources. Without either, a SystemExit that says what to set."""
    entries = read_sources(etc_apt)
    found_archive, found_security = debian_mirrors(entries, suite)
    archive = environ.get("SHP_DEBIAN_MIRROR") or found_archive
    security = environ.get("SHP_DEBIAN_SECURITY_MIRROR") or found_security
    if not archive:
        raise SystemExit(
            f"no Debian mirror found in {etc_apt}/sources.list* (no enabled 'deb' entry with component main "
            "and a http(s)/file URI); set SHP_DEBIAN_MIRROR to the archive's URI")
    return archive, security
