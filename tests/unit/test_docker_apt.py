"""The pure logic of the docker_engine role's Docker repository path (plugins/module_utils/docker_apt.py and its
filters): OpenPGP fingerprints (checked against Docker's published key and against gpg itself), Debian version
ordering (checked against dpkg itself), command output parsing, version resolution and the package and hold plans."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.filter import docker_engine as filters
from ansible_collections.selfhosted.platform.plugins.module_utils import docker_apt as da

DOCKER_KEY = (Path(__file__).parent / "data" / "docker-release-ce-deb.asc").read_text()
DOCKER_FPR = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_SUBKEY = "D3306A018370199E527AE7997EA0A9C3F273FCD8"

V1 = "5:20.10.24-1~debian.12~bookworm"
V2 = "5:20.10.25-1~debian.12~bookworm"
V3 = "5:27.3.1-1~debian.12~bookworm"
MADISON = "\n".join([
    f"  docker-ce | {V3} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    f"  docker-ce | {V1} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    f"  docker-ce | {V2} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    f"docker-ce-cli | {V2} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    f"docker-ce-cli | {V1} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    f"docker-ce-cli | {V3} | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    "containerd.io | 1.6.20-2 | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    "containerd.io | 1.6.20-1 | http://127.0.0.1:8765/linux/debian bookworm/stable amd64 Packages",
    "docker-compose-plugin | 2.40.3-1~debian.12~bookworm | http://127.0.0.1:8765/linux/debian bookworm/stable amd64"
    " Packages",
])
ENGINE = ["docker-ce", "docker-ce-cli"]
COMPANIONS = ["containerd.io", "docker-compose-plugin"]


def status(pkgs: dict[str, tuple[str, str]]) -> str:
    """dpkg-query -W output (`${Package}\\t${Version}\\t${Status}`) of installed packages {name: (version, want)}."""
    return "\n".join(f"{name}\t{v}\t{want} ok installed" for name, (v, want) in pkgs.items())


# --- OpenPGP -----------------------------------------------------------------------------------------------------

def test_dockers_published_key_has_the_documented_fingerprint():
    assert da.openpgp_fingerprints(DOCKER_KEY) == [DOCKER_FPR]
    assert da.openpgp_keys(DOCKER_KEY) == [{"fingerprint": DOCKER_FPR, "subkeys": [DOCKER_SUBKEY]}]
    assert filters.openpgp_fingerprints(DOCKER_KEY) == [DOCKER_FPR]


def test_the_roles_default_fingerprint_is_dockers_key():
    import yaml

    defaults = yaml.safe_load((Path(__file__).parents[2] / "roles/docker_engine/defaults/main.yml").read_text())
    assert da.normalize_fingerprint(defaults["docker_engine_repo_key_fingerprint"]) == DOCKER_FPR


def test_armor_headers_crlf_and_surrounding_text_are_accepted():
    body = DOCKER_KEY.replace("-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
                              "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: from download.example.test\n")
    text = "leading words\r\n" + body.replace("\n", "\r\n") + "trailing words\n"
    assert da.openpgp_fingerprints(text) == [DOCKER_FPR]


def test_a_damaged_key_fails_its_armor_checksum():
    lines = DOCKER_KEY.splitlines()
    lines[5] = lines[5][:10] + ("A" if lines[5][10] != "A" else "B") + lines[5][11:]
    with pytest.raises(da.OpenPGPError, match="checksum does not match"):
        da.openpgp_fingerprints("\n".join(lines))


@pytest.mark.parametrize(("text", "why"), [
    ("", "no '-----BEGIN PGP PUBLIC KEY BLOCK-----' block"),
    ("<html><body>404 Not Found</body></html>", "no '-----BEGIN PGP PUBLIC KEY BLOCK-----' block"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFit\n", "no '-----END PGP PUBLIC KEY BLOCK-----' line"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n", "not valid base64"),
])
def test_text_that_is_no_armored_key_is_refused(text, why):
    with pytest.raises(da.OpenPGPError, match=why.replace("(", r"\(").replace(")", r"\)")):
        da.openpgp_fingerprints(text)
    assert filters.openpgp_fingerprints(text, strict=False) == []
    with pytest.raises(AnsibleFilterError, match="openpgp_fingerprints: "):
        filters.openpgp_fingerprints(text)


def armor(data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    crc = base64.b64encode(da._crc24(data).to_bytes(3, "big")).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join(["-----BEGIN PGP PUBLIC KEY BLOCK-----", "", *lines, f"={crc}",
                      "-----END PGP PUBLIC KEY BLOCK-----", ""])


def first_packet_body() -> bytes:
    """The primary key packet body of Docker's key (old-format header, two-octet length)."""
    data = da._armored_blocks(DOCKER_KEY)[0]
    tag, body = next(da._packets(data))
    assert tag == 6
    return body


@pytest.mark.parametrize("header", ["new-2-octet", "new-5-octet", "old-4-octet"])
def test_every_packet_length_encoding_gives_the_same_fingerprint(header):
    body = first_packet_body()
    n = len(body)
    if header == "new-2-octet":
        assert 192 <= n < 8384
        n -= 192
        head = bytes([0xC0 | 6, (n >> 8) + 192, n & 0xFF])
    elif header == "new-5-octet":
        head = bytes([0xC0 | 6, 255]) + len(body).to_bytes(4, "big")
    else:
        head = bytes([0x80 | (6 << 2) | 2]) + len(body).to_bytes(4, "big")
    assert da.openpgp_fingerprints(armor(head + body)) == [DOCKER_FPR]


def test_v6_keys_are_fingerprinted_with_sha256():
    body = bytes([6]) + b"\x00" * 9 + b"synthetic key material"
    head = bytes([0xC0 | 6, len(body)])
    want = hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    assert da.openpgp_fingerprints(armor(head + body)) == [want]
    with pytest.raises(da.OpenPGPError, match="version 3 is not supported"):
        da.openpgp_fingerprints(armor(bytes([0xC0 | 6, 3, 3, 0, 0])))


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory):
    """Two keys generated by gpg itself in a throwaway GNUPGHOME: (armored export of both, [their fingerprints as gpg
    reports them])."""
    if not shutil.which("gpg"):
        pytest.skip("gpg is not installed on the controller")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        return subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                              env=env, capture_output=True, text=True, check=True).stdout

    try:
        gpg("--quick-generate-key", "Test Repo One <one@example.test>", "ed25519", "sign", "never")
        gpg("--quick-generate-key", "Test Repo Two <two@example.test>", "rsa2048", "sign,cert", "never")
        fprs = [line.split(":")[9] for line in gpg("--with-colons", "--list-keys").splitlines()
                if line.startswith("fpr:")]
        export = gpg("--armor", "--export")
        yield export, fprs
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False)


def test_fingerprints_agree_with_gpg_for_keys_it_generates(gpg_keys):
    export, fprs = gpg_keys
    # gpg lists each primary key's fingerprint (no subkeys were made): a file with two keys has two.
    assert da.openpgp_fingerprints(export) == fprs
    assert len(fprs) == 2


def test_normalize_fingerprint():
    assert da.normalize_fingerprint("9dc8 5822 9fc7 dd38 854a  e2d8 8d81 803c 0ebf cd88") == DOCKER_FPR
    assert da.normalize_fingerprint("0x" + DOCKER_FPR) == DOCKER_FPR
    assert da.normalize_fingerprint("0EBFCD88") == ""  # a key id is not a fingerprint
    assert da.normalize_fingerprint(DOCKER_FPR + "00") == ""
    assert da.normalize_fingerprint(None) == ""
    assert filters.openpgp_fingerprint_normalize("ab" * 32) == "AB" * 32


# --- Debian versions ---------------------------------------------------------------------------------------------

PAIRS = [
    (V1, V2), (V2, V3), ("5:20.10.24-1~debian.12~bookworm", "5:20.10.24-1"), ("1.0~rc1", "1.0"),
    ("1.0", "1.0+b1"), ("1.0-1", "1.0-1.1"), ("2:1.0", "1:9.9"), ("1.0.10", "1.0.9"), ("1.0a", "1.0"),
    ("27.3.1", "27.3.1"), ("0:1.0", "1.0"), ("1.6.20~ds1-1+deb12u3", "1.6.20-1"), ("1.001", "1.1"),
    ("20.10.24+dfsg1-1+deb12u1+b6", "20.10.24+dfsg1-1+deb12u1"),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_version_order_agrees_with_dpkg(a, b):
    ours = da.compare_versions(a, b)
    if not shutil.which("dpkg"):
        pytest.skip("dpkg is not installed on the controller")
    for op, want in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
        rc = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode
        assert (rc == 0) == want, f"{a} {op} {b}: dpkg says {rc == 0}, we say {want}"


def test_newest_first_and_duplicates():
    assert da.newest_first([V1, V3, V2, V1]) == [V3, V2, V1]


@pytest.mark.parametrize(("wanted", "version", "match"), [
    ("20.10", V1, True), ("20.10.24", V1, True), ("20.10.2", V1, False), ("20.1", V1, False),
    ("20", V1, True), ("27.3.1", V3, True), (V1, V1, True), ("20.10.24-1~debian.12~bookworm", V1, True),
    ("20.10.24-1", V1, False), (V1, V2, False),
])
def test_version_matches(wanted, version, match):
    assert da.version_matches(wanted, version) is match


# --- command output ----------------------------------------------------------------------------------------------

def test_parse_madison_sorts_newest_first():
    got = da.parse_madison(MADISON + "\nN: Unable to locate package docker-buildx-plugin\n")
    assert got["docker-ce"] == [V3, V2, V1]
    assert got["containerd.io"] == ["1.6.20-2", "1.6.20-1"]
    assert "docker-buildx-plugin" not in got


def test_parse_dpkg_status():
    out = "\n".join([
        f"docker-ce\t{V1}\thold ok installed",
        "containerd.io\t1.6.20-1\tinstall ok installed",
        "docker.io\t20.10.24+dfsg1-1+deb12u1+b6\tdeinstall ok config-files",
        "docker-ce-cli\t\tunknown ok not-installed",
    ])
    got = da.parse_dpkg_status(out)
    assert got["docker-ce"] == {"version": V1, "want": "hold", "installed": True}
    assert got["containerd.io"]["want"] == "install"
    assert got["docker.io"]["installed"] is False
    assert "docker-ce-cli" not in got


# --- plans -------------------------------------------------------------------------------------------------------

def plan(wanted="", st="", madison=MADISON):
    return filters.docker_engine_package_plan(madison, st, wanted, ENGINE, COMPANIONS)


def test_fresh_host_with_a_prefix_pin_gets_the_newest_match_not_the_newest_release():
    p = plan("20.10")
    assert p["error"] == "" and p["known"] is True and p["changing"] is True
    assert p["version"] == V2
    assert p["names"] == [f"docker-ce={V2}", f"docker-ce-cli={V2}", "containerd.io", "docker-compose-plugin"]
    assert p["release"] == [] and p["missing"] == ENGINE + COMPANIONS
    assert plan("20.10.24")["version"] == V1


def test_fresh_host_without_a_pin_gets_the_newest_release_in_lock_step():
    p = plan("")
    assert p["version"] == V3
    assert p["names"][:2] == [f"docker-ce={V3}", f"docker-ce-cli={V3}"]


def test_an_installed_engine_that_satisfies_the_pin_is_kept():
    st = status({"docker-ce": (V1, "hold"), "docker-ce-cli": (V1, "hold"), "containerd.io": ("1.6.20-1", "hold")})
    for wanted in ("20.10", "20.10.24", V1, V1.partition(":")[2]):
        p = plan(wanted, st)
        assert p["version"] == V1 and p["changing"] is False and p["release"] == [], wanted
        assert p["names"] == [f"docker-ce={V1}", f"docker-ce-cli={V1}", "containerd.io", "docker-compose-plugin"]
    # No pin: whatever is installed stays, unversioned.
    p = plan("", st)
    assert p["changing"] is False and p["names"] == ENGINE + COMPANIONS


def test_raising_the_pin_moves_the_engine_and_the_installed_companions_and_releases_the_holds():
    st = status({"docker-ce": (V1, "hold"), "docker-ce-cli": (V1, "hold"), "containerd.io": ("1.6.20-1", "hold")})
    p = plan(V2, st)
    assert p["changing"] is True and p["installed"] == V1 and p["version"] == V2
    # containerd.io is installed: to the repository's newest; the compose plugin is not: plain install.
    assert p["names"] == [f"docker-ce={V2}", f"docker-ce-cli={V2}", "containerd.io=1.6.20-2", "docker-compose-plugin"]
    assert p["release"] == ["docker-ce", "docker-ce-cli", "containerd.io"]
    assert p["missing"] == ["docker-compose-plugin"]
    # Lowering it is a move too (the role allows the downgrade).
    st3 = status({"docker-ce": (V3, "install"), "docker-ce-cli": (V3, "install")})
    p = plan("20.10.24", st3)
    assert p["version"] == V1 and p["changing"] is True and p["release"] == []


def test_switching_from_debians_docker_io_installs_the_repository_packages():
    st = status({"docker.io": ("20.10.24+dfsg1-1+deb12u1+b6", "install"),
                 "containerd": ("1.6.20~ds1-1+deb12u3", "install")})
    p = plan("20.10.24", st)
    assert p["installed"] == "" and p["changing"] is True and p["version"] == V1


def test_check_mode_before_the_repository_is_known():
    p = plan("20.10", "", madison="")
    assert p["known"] is False and p["version"] == "" and p["changing"] is True and p["error"] == ""
    assert p["names"] == ENGINE + COMPANIONS
    # An installed engine that satisfies the pin needs no lists.
    p = plan("20.10", status({"docker-ce": (V1, "hold")}), madison="")
    assert p["version"] == V1 and p["changing"] is False


def test_a_pin_the_repository_cannot_satisfy_names_the_option_and_the_choices():
    p = plan("26.1")
    assert p["names"] == [] and p["version"] == ""
    assert p["error"].startswith("docker_engine_version: '26.1' matches none of the docker-ce versions")
    assert V3 in p["error"] and V1 in p["error"]
    # docker-ce-cli must offer the same version.
    only_engine = "\n".join(line for line in MADISON.splitlines() if not (line.startswith("docker-ce-cli")
                                                                          and V2 in line))
    p = plan(V2, madison=only_engine)
    assert "for both docker-ce and docker-ce-cli" in p["error"]


def test_hold_plan():
    pkgs = ["docker-ce", "docker-ce-cli", "containerd.io"]
    st = da.parse_dpkg_status(status({"docker-ce": (V1, "hold"), "docker-ce-cli": (V1, "install"),
                                      "containerd.io": ("1.6.20-1", "install")}))
    assert da.hold_plan(st, pkgs, True) == {"hold": ["docker-ce-cli", "containerd.io"], "unhold": []}
    # hold false: the operator's own hold on docker-ce is left alone ...
    assert da.hold_plan(st, pkgs, False) == {"hold": [], "unhold": []}
    # ... and when the role released it to move the pin, it takes it again (in check mode: predicted as well).
    after_upgrade = da.parse_dpkg_status(status({"docker-ce": (V2, "install"), "docker-ce-cli": (V2, "install"),
                                                 "containerd.io": ("1.6.20-1", "install")}))
    assert da.hold_plan(after_upgrade, pkgs, False, released=["docker-ce"]) == {"hold": ["docker-ce"], "unhold": []}
    assert da.hold_plan(st, pkgs, False, released=["docker-ce"], check_mode=True) == {"hold": ["docker-ce"],
                                                                                      "unhold": []}
    # Check mode after a predicted release: the run re-holds what it released.
    assert da.hold_plan(st, pkgs, True, released=["docker-ce"], check_mode=True)["hold"] == pkgs
    assert da.hold_plan(st, pkgs, True, released=["docker-ce"], check_mode=False)["hold"] == pkgs[1:]
    # A fresh host in check mode: nothing is installed yet, everything will be held.
    assert filters.docker_engine_hold_plan("", pkgs, True, [], True) == {"hold": pkgs, "unhold": []}
