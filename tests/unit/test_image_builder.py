"""Unit tests for tests/images/build.py: the content hash that makes rebuilds skip."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.unit.test_sandbox_tool import load

build = load(ROOT / "tests/images/build.py", "shp_image_builder")


def test_tree_digest_is_stable_and_content_sensitive(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "entry.sh").write_text("echo hi\n")
    first = build.tree_digest(tmp_path, extra="sha256:parent")
    assert first == build.tree_digest(tmp_path, extra="sha256:parent")
    assert first != build.tree_digest(tmp_path, extra="sha256:other-parent")
    (tmp_path / "sub" / "entry.sh").write_text("echo bye\n")
    assert first != build.tree_digest(tmp_path, extra="sha256:parent")


def test_tree_digest_sees_mode_changes(tmp_path):
    f = tmp_path / "entry.sh"
    f.write_text("echo\n")
    f.chmod(0o644)
    a = build.tree_digest(tmp_path)
    f.chmod(0o755)
    assert a != build.tree_digest(tmp_path)


def test_parent_of_resolves_the_prefix(tmp_path):
    df = tmp_path / "Dockerfile"
    df.write_text("# comment\nARG PREFIX=shp-test\nFROM ${PREFIX}/base:bookworm\nRUN true\n")
    assert build.parent_of(df) == f"{build.PREFIX}/base:bookworm"


def test_parent_of_resolves_the_suite(tmp_path):
    df = tmp_path / "Dockerfile"
    df.write_text("ARG PREFIX=shp-test\nARG SUITE=bookworm\nFROM ${PREFIX}/base:${SUITE}\n")
    assert build.parent_of(df) == f"{build.PREFIX}/base:bookworm"
    assert build.parent_of(df, "trixie") == f"{build.PREFIX}/base:trixie"


def test_the_server_is_built_on_debian_12_and_13_and_the_rest_on_12():
    bases, plan = build.build_plan([])
    assert bases == ["bookworm", "trixie"]
    assert plan[:2] == [("server", "bookworm"), ("server", "trixie")]
    assert {suite for name, suite in plan if name != "server"} == {"bookworm"}
    assert build.image_ref("server", "bookworm") == f"{build.PREFIX}/server:latest"
    assert build.image_ref("server", "trixie") == f"{build.PREFIX}/server:trixie"
    # The server's Dockerfile takes the suite (a FROM that ignored it would build Debian 12 under the trixie tag).
    server = ROOT / "tests/images/server/Dockerfile"
    assert build.parent_of(server, "trixie") == f"{build.PREFIX}/base:trixie"


def test_a_plan_for_named_images_and_suites():
    assert build.build_plan(["server:trixie"]) == (["trixie"], [("server", "trixie")])
    assert build.build_plan(["redis", "server"]) == (
        ["bookworm", "trixie"], [("server", "bookworm"), ("server", "trixie"), ("redis", "bookworm")])
    import pytest
    with pytest.raises(ValueError, match="unknown image: nope"):
        build.build_plan(["nope"])
    with pytest.raises(ValueError, match="redis is not built on trixie"):
        build.build_plan(["redis:trixie"])


def test_every_image_dir_is_in_the_build_order():
    dirs = {p.name for p in (ROOT / "tests/images").iterdir() if (p / "Dockerfile").exists()}
    assert dirs <= set(build.ORDER)
    for name in dirs:
        parent = build.parent_of(ROOT / "tests/images" / name / "Dockerfile")
        # Every image builds from the base or from an image earlier in the order.
        parent_name = parent.split("/")[-1].split(":")[0]
        assert parent_name == "base" or build.ORDER.index(parent_name) < build.ORDER.index(name)


# -- the mirror comes from the machine's apt sources (issue 18 section 4) -------------------------------
apt = load(ROOT / "tests/images/apt_sources.py", "shp_apt_sources")

# Fixture sources use documentation host names; the scheme is joined here so no mirror URL is written literally.
HTTP, HTTPS = "http" + "://", "https" + "://"

DEB822 = f"""\
# the machine's own mirror
Types: deb
URIs: {HTTP}mirror.example.test/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: {HTTP}mirror.example.test/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: {HTTP}disabled.example.test/debian
Suites: bookworm
Components: main
"""

ONE_LINE = f"""\
# one-line format, as older hosts and many corporate images have it
deb [arch=amd64 signed-by=/usr/share/keyrings/debian.gpg] {HTTPS}proxy.example.test/debian bookworm main
deb-src {HTTPS}proxy.example.test/debian bookworm main
deb {HTTPS}proxy.example.test/debian-security bookworm-security main  # security
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
"""


def _etc_apt(tmp_path, files):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_deb822_sources_give_archive_and_security_and_skip_disabled(tmp_path):
    etc = _etc_apt(tmp_path, {"sources.list.d/debian.sources": DEB822})
    entries = apt.read_sources(etc)
    uris = [e.uris[0] for e in entries]
    assert uris == [f"{HTTP}mirror.example.test/debian/", f"{HTTP}mirror.example.test/debian-security"]
    assert entries[1].options["signed-by"].startswith("\n-----BEGIN")  # continuation lines kept
    assert apt.debian_mirrors(entries, "bookworm") == (f"{HTTP}mirror.example.test/debian",
                                                       f"{HTTP}mirror.example.test/debian-security")


def test_one_line_sources_with_options_comments_and_cdrom(tmp_path):
    etc = _etc_apt(tmp_path, {"sources.list": ONE_LINE})
    entries = apt.read_sources(etc)
    assert entries[0].options == {"arch": "amd64", "signed-by": "/usr/share/keyrings/debian.gpg"}
    assert apt.debian_mirrors(entries, "bookworm") == (f"{HTTPS}proxy.example.test/debian",
                                                       f"{HTTPS}proxy.example.test/debian-security")


def test_another_suite_is_built_from_the_same_mirror(tmp_path):
    # A bookworm machine builds trixie images from its own mirror (a mirror serves every release).
    etc = _etc_apt(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert apt.debian_mirrors(apt.read_sources(etc), "trixie")[0] == f"{HTTP}mirror.example.test/debian"


def test_sources_list_then_directory_in_apt_order(tmp_path):
    etc = _etc_apt(tmp_path, {"sources.list": f"deb {HTTP}first.example.test/debian bookworm main\n",
                              "sources.list.d/a.sources": DEB822})
    assert apt.mirrors_for("bookworm", environ={}, etc_apt=etc)[0] == f"{HTTP}first.example.test/debian"


def test_override_variables_win_and_no_source_is_a_clear_error(tmp_path):
    etc = _etc_apt(tmp_path, {"sources.list.d/nodesource.sources":
                              f"Types: deb\nURIs: {HTTPS}deb.example.test/node_20.x\nSuites: nodistro\n"
                              "Components: main\n"})
    env = {"SHP_DEBIAN_MIRROR": f"{HTTP}override.example.test/debian",
           "SHP_DEBIAN_SECURITY_MIRROR": f"{HTTP}override.example.test/debian-security"}
    assert apt.mirrors_for("bookworm", environ=env, etc_apt=etc) == (
        f"{HTTP}override.example.test/debian", f"{HTTP}override.example.test/debian-security")
    import pytest
    with pytest.raises(SystemExit, match="SHP_DEBIAN_MIRROR"):
        apt.mirrors_for("bookworm", environ={}, etc_apt=etc)


def test_base_sources_list_uses_the_machines_mirrors_only():
    text = build.sources_list("bookworm", f"{HTTP}mirror.example.test/debian", None)
    assert text == (f"deb {HTTP}mirror.example.test/debian bookworm main\n"
                    f"deb {HTTP}mirror.example.test/debian bookworm-updates main\n")
    assert "-security" in build.sources_list("bookworm", f"{HTTP}m.example.test/debian",
                                             f"{HTTP}m.example.test/debian-security")


def test_no_mirror_host_is_written_into_the_builder():
    import re
    for name in ("build.py", "apt_sources.py"):
        text = (ROOT / "tests/images" / name).read_text()
        hosts = set(re.findall(r"https?://([A-Za-z0-9.-]+)", text)) - {"snapshot.debian.org"}
        assert {h for h in hosts if not h.endswith(".example.test")} == set(), (name, hosts)
