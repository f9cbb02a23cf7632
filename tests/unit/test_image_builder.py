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


def test_every_image_dir_is_in_the_build_order():
    dirs = {p.name for p in (ROOT / "tests/images").iterdir() if (p / "Dockerfile").exists()}
    assert dirs <= set(build.ORDER)
    for name in dirs:
        parent = build.parent_of(ROOT / "tests/images" / name / "Dockerfile")
        # Every image builds from the base or from an image earlier in the order.
        parent_name = parent.split("/")[-1].split(":")[0]
        assert parent_name == "base" or build.ORDER.index(parent_name) < build.ORDER.index(name)
