"""Build the test images from Debian packages, with caching.

No container registry is reachable on the machines this project is tested on, so every
image starts from a Debian root filesystem made with ``debootstrap`` and imported with
``docker import`` (``base:<suite>``). Further images are built ``FROM`` that base out of the
directories next to this file (one directory per image, each with a ``Dockerfile``).

Suites: every image is built on Debian 12 (bookworm, ``<name>:latest``). Images listed in
``SUITES`` are also built on the other suites named there, as ``<name>:<suite>`` from
``base:<suite>`` (their Dockerfile says ``FROM ${PREFIX}/base:${SUITE}``): the ``server`` image
on Debian 13 (trixie) is ``server:trixie``, the sandbox server for ``make sandbox DEBIAN=trixie``.

Files from elsewhere in the checkout that an image needs are listed in ``SHARED`` and copied into its build
context (a temporary copy of the directory), so there is one source for them (the ``npm`` image serves the fake
NPM API of tests/fakes/npm_api.py).

Caching: every image carries the label ``org.selfhosted.build-hash``, a digest of its build
context plus the id of its parent image. An image whose label matches the digest computed now
is not rebuilt, so a second run builds nothing and takes well under a second per image.

Usage: python3 tests/images/build.py [--force] [NAME[:SUITE] ...]   (default: every image on every suite)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import apt_sources  # next to this file (build.py runs as a script)

HERE = Path(__file__).resolve().parent
PREFIX = os.environ.get("SHP_IMAGE_PREFIX", "shp-test")
LABEL = "org.selfhosted.build-hash"
# The suite every image is built on (tagged :latest); SUITES adds other suites for some images.
DEFAULT_SUITE = "bookworm"
SUITES = {"server": ["trixie"]}
# The Debian mirror comes from this machine's own apt sources (apt_sources.py), or from
# SHP_DEBIAN_MIRROR / SHP_DEBIAN_SECURITY_MIRROR; it is looked up when the base image is built.
# Order matters: an image must come after the image it is built FROM.
ORDER = ["server", "postgres", "mariadb", "redis", "nginx", "httpapp", "watchtower", "socketproxy", "npm", "authelia"]
# Per image: {name in the build context: path from the checkout's root}.
ROOT = HERE.parent.parent
SHARED = {"npm": {"npm_api.py": "tests/fakes/npm_api.py", "server.py": "tests/fakes/server.py"}}


def log(msg: str) -> None:
    print(f"[images] {msg}", flush=True)


def docker(*args: str, capture: bool = True, check: bool = True, **kw) -> str:
    res = subprocess.run(["docker", *args], capture_output=capture, text=True, check=False, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return (res.stdout or "").strip()


def image_label(ref: str) -> str | None:
    res = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{ index .Config.Labels \"" + LABEL + "\" }}", ref],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        return None
    return res.stdout.strip()


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref)


def tree_digest(path: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
        h.update(oct(f.stat().st_mode & 0o777).encode())
    return h.hexdigest()[:32]


def sources_list(suite: str, archive: str, security: str | None) -> str:
    """The base image's /etc/apt/sources.list: the builder's mirrors, so every image's apt-get
    uses what works on the machine that built it."""
    text = f"deb {archive} {suite} main\ndeb {archive} {suite}-updates main\n"
    if security:
        text += f"deb {security} {suite}-security main\n"
    return text


def base_ref(suite: str) -> str:
    return f"{PREFIX}/base:{suite}"


def image_ref(name: str, suite: str) -> str:
    """The tag of image NAME built on SUITE: <name>:latest on the default suite, else <name>:<suite>."""
    return f"{PREFIX}/{name}:{'latest' if suite == DEFAULT_SUITE else suite}"


def build_plan(names: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(suites whose base is needed, [(image, suite)] in build order) for NAMES (``name`` for every suite of
    the image, ``name:suite`` for one); an empty list is every image on every suite. Raises ValueError naming
    an unknown image or suite."""
    wanted: dict[str, set[str]] = {}
    for item in names:
        name, _sep, suite = item.partition(":")
        if name not in ORDER:
            raise ValueError(f"unknown image: {name} (one of {', '.join(ORDER)})")
        suites = [DEFAULT_SUITE, *SUITES.get(name, [])]
        if suite and suite not in suites:
            raise ValueError(f"{name} is not built on {suite} (only on {', '.join(suites)})")
        wanted.setdefault(name, set()).update([suite] if suite else suites)
    plan = []
    for name in ORDER:
        for suite in [DEFAULT_SUITE, *SUITES.get(name, [])]:
            if not names or suite in wanted.get(name, ()):
                plan.append((name, suite))
    bases = list(dict.fromkeys(suite for _name, suite in sorted(plan, key=lambda x: x[1] != DEFAULT_SUITE)))
    return bases, plan


def build_base(suite: str, force: bool) -> None:
    # The recipe for the base is this function; hash it with the suite, package list and mirrors
    # (the mirrors end up in the image's sources.list, which later builds use).
    ref = base_ref(suite)
    packages = "ca-certificates,apt-transport-https,gnupg,procps,iproute2,curl,less,netbase"
    archive, security = apt_sources.mirrors_for(suite)
    sources = sources_list(suite, archive, security)
    digest = hashlib.sha256(f"{suite}|{packages}|minbase|v2|{sources}".encode()).hexdigest()[:32]
    if not force and image_label(ref) == digest:
        log(f"{ref}: up to date")
        return
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is not installed (apt-get install debootstrap)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shp-debootstrap-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"{ref}: debootstrap {suite} from {archive} (security: {security or 'none'})")
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(root), archive],
            check=True, stdout=subprocess.DEVNULL, env={**os.environ, **apt_sources.apt_proxy()},
        )
        # Make the rootfs container friendly, the way the official debian image is.
        (root / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
            '/var/cache/apt/*.bin || true"; };\nAPT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
            '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
        )
        (root / "etc/apt/apt.conf.d/docker-no-recommends").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        )
        (root / "etc/dpkg/dpkg.cfg.d/docker-excludes").write_text(
            "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
            "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
            "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
        )
        (root / "etc/apt/sources.list").write_text(sources)
        for d in ("var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc", "usr/share/man"):
            p = root / d
            if p.exists():
                for child in p.iterdir():
                    if child.is_file():
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "--change", f"LABEL {LABEL}={digest}", "--change", 'CMD ["bash"]',
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-", ref],
            stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL,
        )
        tar.wait()
        if tar.returncode != 0:
            raise SystemExit("tar of the debootstrap rootfs failed")
    log(f"{ref}: built in {time.monotonic() - start:.0f}s")


def parent_of(dockerfile: Path, suite: str = DEFAULT_SUITE) -> str:
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(\S+)", line, re.I)
        if m:
            return m.group(1).replace("${PREFIX}", PREFIX).replace("${SUITE}", suite)
    raise SystemExit(f"{dockerfile}: no FROM line")


def build_one(name: str, suite: str, force: bool) -> None:
    shared = SHARED.get(name)
    if not shared:
        build_context(name, suite, HERE / name, force)
        return
    with tempfile.TemporaryDirectory(prefix=f"shp-image-{name}-") as tmp:
        ctx = Path(tmp) / name
        shutil.copytree(HERE / name, ctx)
        for target, source in shared.items():
            shutil.copy2(ROOT / source, ctx / target)
        build_context(name, suite, ctx, force)


def build_context(name: str, suite: str, ctx: Path, force: bool) -> None:
    dockerfile = ctx / "Dockerfile"
    ref = image_ref(name, suite)
    parent = parent_of(dockerfile, suite)
    if suite != DEFAULT_SUITE and parent == parent_of(dockerfile, DEFAULT_SUITE):
        raise SystemExit(f"{dockerfile}: built on {suite} too (SUITES), so it must say "
                         "FROM ${PREFIX}/base:${SUITE}")
    digest = tree_digest(ctx, extra=image_id(parent))  # the parent's id: another suite is another parent
    if not force and image_label(ref) == digest:
        log(f"{ref}: up to date")
        return
    start = time.monotonic()
    log(f"{ref}: building")
    # apt's proxy reaches the Dockerfiles' apt-get as Docker's predefined proxy build arguments
    # (which are not part of the build cache key).
    proxy_args = [a for k, v in apt_sources.apt_proxy().items() for a in ("--build-arg", f"{k}={v}")]
    res = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"PREFIX={PREFIX}", "--build-arg", f"SUITE={suite}", *proxy_args,
         "--label", f"{LABEL}={digest}",
         "-t", ref, str(ctx)],
        capture_output=True, text=True, check=False, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"building {ref} failed")
    log(f"{ref}: built in {time.monotonic() - start:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even when the build hash matches")
    ap.add_argument("names", nargs="*",
                    help=f"images to build, NAME or NAME:SUITE (default: all of {', '.join(ORDER)}, on every suite)")
    args = ap.parse_args()
    try:
        bases, plan = build_plan(args.names)
    except ValueError as exc:
        ap.error(str(exc))
    for suite in bases:
        build_base(suite, args.force)
    for name, suite in plan:
        if (HERE / name / "Dockerfile").exists():
            build_one(name, suite, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
