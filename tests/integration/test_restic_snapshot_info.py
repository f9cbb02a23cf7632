"""restic_snapshot_info with the real restic (the Debian package) against a local repository, driven as real
Ansible tasks: snapshots made by restic_backup (paths and a command's stdout, with the backup role's tags) and
one back-dated with ``restic backup --time`` are listed, filtered, grouped and aged exactly as restic itself
reports them; the listing takes no lock (it works while another restic holds an exclusive lock) and never
changes anything."""

from __future__ import annotations

import calendar
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import docker_helpers as dh
from tests.integration.test_restic import PASSWORD, conn, play, restic, task

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _needs_restic():
    if shutil.which("restic") is None:
        if dh.allow_skip():
            pytest.skip("restic is not installed (scripts/testground.sh installs it)")
        pytest.fail("restic is not installed (scripts/testground.sh installs it)", pytrace=False)


# root without CAP_DAC_OVERRIDE: file permissions apply to it as to anyone (see test_restic.py).
NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def restic_run(tmp: Path, *args: str, stdin: str | None = None, prefix: tuple[str, ...] = (),
               **env: str) -> subprocess.CompletedProcess:
    """restic itself with the test's repository, optional stdin, environment and command prefix."""
    restic(tmp, "version")  # writes the password file restic() uses
    full = dict(os.environ, RESTIC_REPOSITORY=str(tmp / "repo"), RESTIC_PASSWORD_FILE=str(tmp / "restic-pw"),
                RESTIC_CACHE_DIR=str(tmp / "cache"), **env)
    return subprocess.run([*prefix, "restic", *args], env=full, input=stdin, capture_output=True, text=True,
                          check=False, timeout=120)


def test_snapshots_are_listed_grouped_and_aged_like_restic_says(tmp_path):
    data = tmp_path / "uploads"
    data.mkdir()
    (data / "a.txt").write_text("a")
    setup, _out = play(tmp_path, [
        task("restic_repository", conn(tmp_path)),
        task("restic_backup", conn(tmp_path, paths=[str(data)], tags=["files", "files"], host="h1")),
        task("restic_backup", conn(tmp_path, command=["sh", "-c", "echo dump-1"], filename="postgres/db1/app.dump",
                                   tags=["databases", "db", "db1"], host="h1")),
        task("restic_backup", conn(tmp_path, command=["sh", "-c", "echo dump-2"], filename="postgres/db1/app.dump",
                                   tags=["databases", "db", "db1"], host="h1")),
        task("restic_backup", conn(tmp_path, command=["sh", "-c", "echo other"], filename="x.dump",
                                   tags=["databases", "db", "db2"], host="h2")),
    ])
    assert all(not r.get("failed") for r in setup), setup
    newest_db1 = setup[3]["snapshot_id"]
    # A snapshot of db2 on h1 dated in the past (restic reads --time in the local zone: TZ=UTC).
    old = restic_run(tmp_path, "backup", "--stdin", "--stdin-filename", "mariadb/db2/wiki.sql", "--tag", "databases",
                     "--tag", "db", "--tag", "db2", "--host", "h1", "--time", "2026-01-02 03:04:05", stdin="old\n",
                     TZ="UTC")
    assert old.returncode == 0, old.stderr
    truth = json.loads(restic(tmp_path, "snapshots", "--json").stdout)
    assert len(truth) == 5

    info = task("restic_snapshot_info", conn(tmp_path, tags=["databases", "db"], host="h1", group_by="tags"))
    started = time.time()
    results, _out = play(tmp_path, [info, dict(info, check_mode=True)])
    res, checked = results
    assert not res.get("failed") and not res["changed"], res
    ids = [s["id"] for s in res["snapshots"]]
    want = [s["id"] for s in sorted(truth, key=lambda s: s["time"]) if s["hostname"] == "h1"
            and {"databases", "db"} <= set(s["tags"])]
    assert ids == want and res["count"] == 3
    groups = {",".join(g["key"]["tags"]): g for g in res["groups"]}
    assert set(groups) == {"databases,db,db1", "databases,db,db2"}
    assert groups["databases,db,db1"]["count"] == 2 and groups["databases,db,db1"]["latest"]["id"] == newest_db1
    assert groups["databases,db,db1"]["latest"]["age_seconds"] < time.time() - started + 120
    expected_age = started - calendar.timegm((2026, 1, 2, 3, 4, 5, 0, 0, 0))
    assert abs(groups["databases,db,db2"]["latest"]["age_seconds"] - expected_age) < 120
    assert res["latest"]["id"] == newest_db1 and res["groups"][0]["latest"]["id"] == newest_db1
    assert checked["count"] == 3 and not checked["changed"]

    # paths filter, list_snapshots=false, default grouping by host and tags
    info = task("restic_snapshot_info", conn(tmp_path, paths=[str(data)], list_snapshots=False))
    results, _out = play(tmp_path, [info])
    res = results[0]
    assert res["count"] == 1 and "snapshots" not in res, res
    assert res["groups"][0]["key"] == {"host": "h1", "tags": ["files", "files"]}
    assert res["latest"]["paths"] == [str(data)]


def test_listing_takes_no_lock_and_bad_input_fails_clearly(tmp_path):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's file-permission override")
    results, _out = play(tmp_path, [task("restic_repository", conn(tmp_path)),
                                    task("restic_backup", conn(tmp_path, command=["echo", "x"], filename="x.dump",
                                                               tags=["databases"]))])
    assert all(not r.get("failed") for r in results), results
    # The repository's lock directory cannot be written: a locking restic cannot even list snapshots there
    # (what a monitoring run meets on a read-only mount or an append-only server), the module can.
    (tmp_path / "repo" / "locks").chmod(0o555)
    try:
        locking = restic_run(tmp_path, "snapshots", "--json", prefix=NO_DAC if os.geteuid() == 0 else ())
        assert locking.returncode != 0 and "lock" in locking.stderr.lower(), locking
        results, _out = play(tmp_path, [task("restic_snapshot_info", conn(tmp_path, tags=["databases"]))],
                             prefix=NO_DAC if os.geteuid() == 0 else ())
    finally:
        (tmp_path / "repo" / "locks").chmod(0o700)
    assert not results[0].get("failed") and results[0]["count"] == 1, results
    assert restic(tmp_path, "list", "locks", "--no-lock").stdout.strip() == ""

    results, out = play(tmp_path, [
        task("restic_snapshot_info", conn(tmp_path, password="not-the-password")),
        task("restic_snapshot_info", conn(tmp_path, group_by="day")),
        task("restic_snapshot_info", conn(tmp_path, repository=str(tmp_path / "nothing-here"))),
    ])
    assert results[0]["failed"] and results[0]["msg"].startswith("password: wrong password"), results[0]
    assert results[1]["failed"] and results[1]["msg"].startswith("group_by:"), results[1]
    assert results[2]["failed"] and "there is no restic repository" in results[2]["msg"], results[2]
    assert "not-the-password" not in out and PASSWORD not in out
