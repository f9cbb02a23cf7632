"""Unit tests for the restic client and the restic_* module logic (plugins/module_utils/restic.py),
with restic faked at the process boundary: a scripted Runner that answers like restic 0.14 (or 0.17/0.18, whose
answers were measured on Debian 13's 0.18.0) does and records every command line and environment."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from ansible_collections.selfhosted.platform.plugins.module_utils import restic as rs

from tests.unit.fake_module import Exit, Fail, FakeModule

PW = "Rep0-pw-" + "x" * 12
REPO = "/srv/restic"

SUMMARY = {"message_type": "summary", "files_new": 3, "files_changed": 1, "files_unmodified": 5, "dirs_new": 2,
           "dirs_changed": 1, "dirs_unmodified": 0, "data_blobs": 3, "tree_blobs": 3, "data_added": 1729,
           "total_files_processed": 9, "total_bytes_processed": 4096, "total_duration": 0.23,
           "snapshot_id": "c21d15c2"}
FULL_ID = "c21d15c228077d351a7d9d603aaec62cb82dfbb564c85d3a0b15e30bab3e1354"
SNAP = {"time": "2026-11-23T12:26:51.470390191Z", "paths": ["/data"], "hostname": "h1", "tags": ["files"],
        "id": FULL_ID, "short_id": "c21d15c2"}
NO_REPO_014 = ("Fatal: unable to open config file: stat /srv/restic/config: no such file or directory\n"
               "Is there a repository at the following location?\n/srv/restic\n")


class Module(FakeModule):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.warnings = []
        self.no_log_values = set()  # AnsibleModule's: values Ansible masks in the whole result

    def warn(self, msg):
        self.warnings.append(msg)


class FakeRestic:
    """A scripted restic: ``answers`` maps a subcommand to (rc, stdout, stderr) or a callable."""

    def __init__(self, version="0.14.0", **answers):
        self.version = version
        self.answers = answers
        self.calls = []  # (argv, env, stdin)
        self.pipes = []  # (producer argv, producer env, consumer argv, consumer env)
        self.producer = (0, "")

    @staticmethod
    def sub(argv):
        args = list(argv[1:])
        while args and args[0] in ("-o", "--cacert", "--cache-dir", "--no-lock"):
            args = args[1:] if args[0] == "--no-lock" else args[2:]
        return args

    def run(self, argv, env, data=None):
        self.calls.append((list(argv), dict(env), data))
        # the password file restic would read exists and is private while restic runs
        pw_file = env.get("RESTIC_PASSWORD_FILE") or ""
        if "/shp-restic-" in pw_file:
            assert stat.S_IMODE(os.stat(pw_file).st_mode) == 0o600
        args = self.sub(argv)
        if args[0] == "version":
            return 0, "restic %s compiled with go1.19.8 on linux/amd64\n" % self.version, ""
        key = " ".join(args[:2]) if " ".join(args[:2]) in self.answers else args[0]
        answer = self.answers.get(key, (0, "", ""))
        return answer(args) if callable(answer) else answer

    def pipe(self, producer, producer_env, consumer, consumer_env):
        self.pipes.append((list(producer), dict(producer_env), list(consumer), dict(consumer_env)))
        prc, perr = self.producer
        rc, out, err = self.answers.get("backup", (0, "", ""))
        return prc, perr, rc, out, err

    def pipe_from_restic(self, restic, restic_env, command, command_env):
        self.pipes.append((list(restic), dict(restic_env), list(command), dict(command_env)))
        rrc, rerr = self.dump
        crc, cout, cerr = self.consumer
        return rrc, rerr, crc, cout, cerr

    dump = (0, "")
    consumer = (0, "restored\n", "")

    class module:  # what Runner.module offers the client (bash for the command wrapper)
        @staticmethod
        def get_bin_path(name, required=False):
            return "/usr/bin/" + name

    def subcommands(self):
        return [self.sub(argv)[0] for argv, env, data in self.calls]


def params(**kw):
    p = {"repository": REPO, "password": PW, "password_file": None, "env": {}, "cache_dir": None, "options": [],
         "cacert": None, "restic_bin": None, "unlock_stale": True}
    p.update(kw)
    return p


class Outcome(dict):
    """A module's result, with .failed and the .module that produced it."""

    def __init__(self, result, failed, module):
        super().__init__(result)
        self.failed, self.module = failed, module


def run(action, p, fake, **kw):
    module = Module(p, **kw)
    with pytest.raises((Exit, Fail)) as info:
        rs.run_with_client(module, action, runner=fake)
    return Outcome(info.value.result, isinstance(info.value, Fail), module)


def assert_no_secret_on_argv(fake, *secrets):
    for argv, _env, _data in fake.calls:
        for secret in secrets:
            assert secret not in " ".join(argv)
    for prod, _penv, cons, _cenv in fake.pipes:
        for secret in secrets:
            assert secret not in " ".join(prod + cons)


# --- parsing ------------------------------------------------------------------------------------

def test_versions_and_json_lines():
    assert rs.parse_version("restic 0.14.0 compiled with go1.19.8 on linux/amd64") == (0, 14, 0)
    assert rs.parse_version("restic 0.17.3 compiled with go1.23.1 on linux/arm64") == (0, 17, 3)
    with pytest.raises(rs.ResticError):
        rs.parse_version("bash: restic: not found")
    out = 'created restic repository\n{"a": 1}\n[{"b": 2}]\n{broken\n'
    assert rs.json_lines(out) == [{"a": 1}, [{"b": 2}]]


@pytest.mark.parametrize("stderr,rc,version,kind", [
    (NO_REPO_014, 1, (0, 14, 0), "no_repository"),
    ("Fatal: unable to open config file: Lstat: file does not exist\nIs there a repository at the following "
     "location?\nsftp:u@h:/r", 1, (0, 14, 0), "no_repository"),
    ("Fatal: unable to open config file: Stat: <config/> does not exist\nIs there a repository", 1, (0, 14, 0),
     "no_repository"),
    ("Fatal: unable to open config file: Stat: The specified key does not exist.", 1, (0, 14, 0), "no_repository"),
    ("Fatal: unable to open config file: Head \"http://h:8000/config\": dial tcp: connection refused\n"
     "Is there a repository at the following location?", 1, (0, 14, 0), None),
    ("Fatal: unable to open config file: stat /srv/restic/config: permission denied", 1, (0, 14, 0), None),
    ("Fatal: wrong password or no key found", 1, (0, 14, 0), "wrong_password"),
    ("unable to create lock in backend: repository is already locked by PID 7", 1, (0, 14, 0), "locked"),
    ("Fatal: repository does not exist", 10, (0, 17, 0), "no_repository"),
    ("whatever", 12, (0, 17, 1), "wrong_password"),
    ("whatever", 10, (0, 14, 0), None),
])
def test_failures_are_classified_per_version(stderr, rc, version, kind):
    assert rs.classify_failure(version, rc, stderr) == kind


def test_times_to_the_nanosecond():
    assert rs.parse_time_ns("1970-01-01T00:00:01.000000001Z") == 1000000001
    assert rs.parse_time_ns("1970-01-01T02:00:01.5+02:00") == 1500000000
    with pytest.raises(rs.ResticError):
        rs.parse_time_ns("yesterday")


def test_retention_and_forget_output():
    assert rs.retention_args({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 0, "keep_within": "2d",
                              "keep_tags": ["pin"]}) == [
        "--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "2d", "--keep-tag", "pin"]
    keep, remove = rs.forget_groups([{"keep": [SNAP], "remove": [dict(SNAP, id="ab" * 32, short_id="abababab")]}])
    assert [s["short_id"] for s in keep] == ["c21d15c2"] and [s["id"] for s in remove] == ["ab" * 32]


def test_backup_errors_name_the_unreadable_items():
    stderr = "\n".join([
        json.dumps({"message_type": "error", "error": {}, "during": "scan", "item": "/data/locked"}),
        json.dumps({"message_type": "error", "error": {"Op": "open", "Path": "d", "Err": 13}, "during": "archival",
                    "item": "/data/d"}),
        "Warning: at least one source file could not be read"])
    errors = rs.backup_errors(stderr)
    assert [e["item"] for e in errors] == ["/data/locked", "/data/d"]
    assert errors[1]["error"] == "open: errno 13"


def test_redact_masks_url_passwords():
    assert rs.redact("rest:https://user:s3cret@backup.example.test:8000/h1/") == \
        "rest:https://user:***@backup.example.test:8000/h1/"
    assert rs.redact("/srv/restic") == "/srv/restic"


@pytest.mark.parametrize("repository,shown,secrets", [
    # a raw "/" (restic cannot parse it, but echoes the URL in its parse error)
    ("rest:https://user:pa/ss@backup.example.test:8000/repo", "rest:https://user:***@backup.example.test:8000/repo",
     ["pa/ss"]),
    # a raw "@": the password ends at the last "@"
    ("rest:http://user:pa@ss@backup.example.test:8000/repo", "rest:http://user:***@backup.example.test:8000/repo",
     ["pa@ss"]),
    # percent-encoded: both forms are secrets
    ("rest:http://user:p%40ss%2F1@backup.example.test/", "rest:http://user:***@backup.example.test/",
     ["p%40ss%2F1", "p@ss/1"]),
    # raw ":" in the password (the user ends at the first ":")
    ("rest:https://user:a:b:c@h:8000/", "rest:https://user:***@h:8000/", ["a:b:c"]),
    ("s3:https://key:Sec/r@t:x@s3.example.test/bucket/h1", "s3:https://key:***@s3.example.test/bucket/h1",
     ["Sec/r@t:x"]),
    # no password: nothing to mask
    ("sftp:user@host.example.test:/srv/restic", "sftp:user@host.example.test:/srv/restic", []),
    ("sftp://user@host.example.test:22//srv/restic", "sftp://user@host.example.test:22//srv/restic", []),
    ("rest:https://user@host.example.test:8000/", "rest:https://user@host.example.test:8000/", []),
    ("rest:https://host.example.test:8000/repo", "rest:https://host.example.test:8000/repo", []),
    ("s3:https://s3.example.test/bucket", "s3:https://s3.example.test/bucket", []),
    ("/srv/a:b@c", "/srv/a:b@c", []),
    ("", "", []),
])
def test_redact_parses_the_user_information(repository, shown, secrets):
    assert rs.redact(repository) == shown
    assert rs.repository_secrets(repository) == secrets
    for secret in secrets:
        assert secret not in shown


def test_scrub_masks_every_form_longest_first():
    secrets = rs.repository_secrets("rest:http://u:p%40ss@h/")
    text = 'Head "http://u:p%40ss@h/config" ... p@ss'
    assert rs.scrub(text, secrets) == 'Head "http://u:***@h/config" ... ***'
    nested = {"a": ["p@ss", ("x p%40ss",)], "p@ss": 1, "n": 3, "b": None}
    assert rs.scrub(nested, secrets) == {"a": ["***", ("x ***",)], "***": 1, "n": 3, "b": None}
    assert rs.scrub("unchanged", []) == "unchanged"


URL_PW = "UrlPw9/P@ss:" + "y" * 6  # raw "/", "@" and ":"
URL_REPO = "rest:http://backup:" + URL_PW.replace("/", "%2F").replace("@", "%40") + "@127.0.0.1:8000/h1/"
S3_REPO = "s3:http://key:" + URL_PW.replace("/", "%2F").replace("@", "%40") + "@127.0.0.1:9000/b/h1"


def echo(repo):
    """restic's stderr for an s3 repository: the location, password and all (restic 0.14 does this)."""
    return "Is there a repository at the following location?\n" + repo + "\n"


@pytest.mark.parametrize("action,extra,answers,words", [
    (rs.repository_action, {}, {"cat config": (1, "", "Fatal: wrong password or no key found\n")},
     "password: wrong password"),
    (rs.snapshot_info_action, {"group_by": "host", "tags": [], "host": None, "paths": []},
     {"snapshots": (1, "", "Fatal: unable to open config file: Stat: The specified key does not exist.\n" +
                    echo(S3_REPO))}, "repository: there is no restic repository"),
    (rs.restore_action, {"target": "/tmp/x", "snapshot": "deadbeef", "tags": [], "host": None, "paths": [],
                         "include": [], "force": False, "verify": False, "command": None},
     {"snapshots": (0, "[]", "")}, "snapshot: no snapshot deadbeef"),
    (rs.repository_action, {}, {"cat config": (1, "", "Fatal: unable to open config file: Stat: Get "
                                               "\"http://127.0.0.1:9000/b/?location=\": connection refused\n" +
                                               echo(S3_REPO))}, "restic cat config failed"),
    (rs.repository_action, {}, {"cat config": (1, "", "Fatal: parsing repository location failed: url.Parse: "
                                               "parse \"http://backup:%s@127.0.0.1:8000/h1/\": invalid port "
                                               "\":UrlPw9\" after host\n" % URL_PW)},
     "restic cat config failed"),
])
@pytest.mark.parametrize("repo", [URL_REPO, S3_REPO])
def test_failures_never_show_the_url_password(action, extra, answers, words, repo):
    """Wrong password, no repository, no snapshot, an unreachable or unparsable backend: the message names
    the cause and the repository, and neither the password nor its percent-encoded form appears anywhere in
    the result; both forms are the module's no_log values (Ansible masks module_args with them)."""
    res = run(action, params(repository=repo, **extra), FakeRestic(**answers))
    assert res.failed and words in res["msg"], res
    encoded = URL_PW.replace("/", "%2F").replace("@", "%40")
    shown = json.dumps(res)
    for secret in (URL_PW, encoded, "UrlPw9", "P@ss", "P%40ss"):
        assert secret not in shown, shown
    assert res.module.no_log_values >= {URL_PW, encoded}
    assert res["repository"] == repo.replace(encoded, "***")


def test_results_never_show_the_url_password():
    """A success: restic's own output echoing the location (``check`` prints it) is masked too."""
    fake = FakeRestic(**{"cat config": (0, '{"version": 2, "id": "r"}', ""),
                         "check": (0, "using temporary cache\n" + echo(S3_REPO) + "no errors were found\n", "")})
    res = run(rs.repository_action, params(repository=S3_REPO, check=True), fake)
    assert not res.failed and res["checked"], res
    assert URL_PW.replace("/", "%2F").replace("@", "%40") not in json.dumps(res)
    assert "key:***@127.0.0.1:9000" in res["check_output"]


# --- the client's environment -------------------------------------------------------------------

def test_secrets_travel_in_the_environment_and_a_private_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTIC_PASSWORD", "from-the-outside")
    monkeypatch.setenv("RESTIC_REPOSITORY", "/elsewhere")
    seen = {}

    def cat_config(args):
        return 0, json.dumps({"version": 2, "id": "r1"}), ""

    fake = FakeRestic(**{"cat config": cat_config})
    repo = "rest:https://user:RestPw9@backup.example.test:8000/h1/"
    res = run(rs.repository_action, params(repository=repo, env={"AWS_SECRET_ACCESS_KEY": "AwsS"},
                                           options=["s3.region=x"]), fake)
    assert not res.failed, res
    argv, env, _dummy = fake.calls[-1]
    seen["pw_file"] = env["RESTIC_PASSWORD_FILE"]
    assert env["RESTIC_REPOSITORY"] == repo and env["RESTIC_PASSWORD"] == ""  # "" unsets it for restic
    assert env["AWS_SECRET_ACCESS_KEY"] == "AwsS"
    assert argv[1:3] == ["-o", "s3.region=x"]
    assert_no_secret_on_argv(fake, PW, "RestPw9", "AwsS")
    assert not os.path.exists(seen["pw_file"]) and not os.path.exists(os.path.dirname(seen["pw_file"]))
    assert res["repository"] == "rest:https://user:***@backup.example.test:8000/h1/"
    assert res["restic_version"] == "0.14.0"


def test_password_file_is_used_as_is_and_a_readable_one_warned(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PW)
    pw.chmod(0o644)
    fake = FakeRestic(**{"cat config": (0, '{"version": 2, "id": "r1"}', "")})
    res = run(rs.repository_action, params(password=None, password_file=str(pw)), fake)
    assert not res.failed and fake.calls[-1][1]["RESTIC_PASSWORD_FILE"] == str(pw)
    assert any("0600" in w for w in res.module.warnings)


@pytest.mark.parametrize("change,opt", [({"repository": "relative/repo"}, "repository:"),
                                        ({"repository": "ftp:host:/x"}, "repository:"),
                                        ({"password": ""}, "password:"),
                                        ({"password": None, "password_file": "/nonexistent/pw"}, "password_file:"),
                                        ({"options": ["noequals"]}, "options:")])
def test_bad_connection_options_fail_before_restic_runs(change, opt):
    fake = FakeRestic()
    res = run(rs.repository_action, params(**change), fake)
    assert res.failed and res["msg"].startswith(opt) and fake.calls == []


def test_old_restic_is_refused():
    fake = FakeRestic(version="0.12.1")
    res = run(rs.repository_action, params(), fake)
    assert res.failed and "too old" in res["msg"]


# --- restic_repository --------------------------------------------------------------------------

def test_missing_repository_is_initialised_once():
    state = {"exists": False}

    def cat_config(args):
        if state["exists"]:
            return 0, '{"version": 2, "id": "newrepo"}', ""
        return 1, "", NO_REPO_014

    def init(args):
        state["exists"] = True
        return 0, "created restic repository newrepo at /srv/restic\n", ""

    fake = FakeRestic(**{"cat config": cat_config, "init": init})
    res = run(rs.repository_action, params(), fake)
    assert not res.failed and res["changed"] and res["initialized"] and res["repository_id"] == "newrepo"
    assert fake.subcommands() == ["version", "cat", "init", "cat"]
    res = run(rs.repository_action, params(), fake)
    assert not res["changed"] and "init" not in fake.subcommands()[4:]


def test_check_mode_does_not_initialise():
    fake = FakeRestic(**{"cat config": (1, "", NO_REPO_014)})
    res = run(rs.repository_action, params(), fake, check_mode=True)
    assert res["changed"] and res["initialized"] and "init" not in fake.subcommands()


@pytest.mark.parametrize("stderr,words", [
    ("Fatal: unable to open config file: Head \"http://h/config\": dial tcp: connection refused", "rc=1"),
    ("Fatal: wrong password or no key found", "password: wrong password"),
])
def test_other_failures_never_initialise(stderr, words):
    fake = FakeRestic(**{"cat config": (1, "", stderr)})
    res = run(rs.repository_action, params(), fake)
    assert res.failed and words in res["msg"] and "init" not in fake.subcommands()


def test_restic_017_exit_codes():
    fake = FakeRestic(version="0.17.3", **{"cat config": (10, "", "Fatal: repository does not exist"),
                                           "init": (0, "", "")})
    res = run(rs.repository_action, params(), fake)
    assert "init" in fake.subcommands()
    # an init that leaves no repository behind is an error, not a success
    assert res.failed and "no repository is found" in res["msg"]


def test_check_with_subset_and_its_failure():
    fake = FakeRestic(**{"cat config": (0, '{"version": 2, "id": "r"}', ""),
                         "check": (0, "no errors were found\n", "")})
    res = run(rs.repository_action, params(check=True, read_data_subset="10%"), fake)
    assert res["checked"] and fake.calls[-1][0][-3:] == ["check", "--read-data-subset", "10%"]
    fake.answers["check"] = (1, "", "Fatal: repository contains errors")
    res = run(rs.repository_action, params(check=True), fake)
    assert res.failed and res["msg"].startswith("check:")
    res = run(rs.repository_action, params(check=True, read_data_subset="lots"), FakeRestic())
    assert res.failed and res["msg"].startswith("read_data_subset:")


# --- restic_backup ------------------------------------------------------------------------------

def bparams(**kw):
    p = params(paths=["/data"], excludes=["*.tmp"], exclude_caches=False, one_file_system=False,
               skip_if_unchanged=False, unreadable="warn", command=None, command_env={}, filename=None,
               allow_empty=False, tags=["files"], host="h1")
    p.update(kw)
    return p


def backup_answers(rc=0, summary=None, stderr=""):
    out = json.dumps({"message_type": "status", "percent_done": 0}) + "\n" + json.dumps(summary or SUMMARY) + "\n"
    return {"backup": (rc, out, stderr), "snapshots": (0, json.dumps([SNAP]) + "\n", "")}


def test_backup_of_paths_returns_the_summary_and_the_full_id():
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, bparams(), fake)
    assert not res.failed and res["changed"] and res["exit_code"] == 0
    assert res["snapshot_id"] == FULL_ID and res["snapshot_short_id"] == "c21d15c2"
    assert res["files_new"] == 3 and res["data_added"] == 1729 and res["duration"] == 0.23
    argv = next(a for a, e, d in fake.calls if "backup" in a)
    assert argv[argv.index("backup"):] == ["backup", "--json", "--tag", "files", "--host", "h1", "--exclude",
                                           "*.tmp", "--", "/data"]


def test_exit_code_3_is_a_warning_listing_the_unreadable_files():
    stderr = json.dumps({"message_type": "error", "error": {}, "during": "scan", "item": "/data/secret"}) + "\n" + \
        json.dumps({"message_type": "error", "error": {}, "during": "archival", "item": "/data/secret"}) + \
        "\nWarning: at least one source file could not be read\n"
    fake = FakeRestic(**backup_answers(rc=3, stderr=stderr))
    res = run(rs.backup_action, bparams(), fake)
    assert not res.failed and res["exit_code"] == 3 and res["unreadable"] == ["/data/secret"]
    assert res.module.warnings and "/data/secret" in res.module.warnings[0] and "c21d15c2" in res.module.warnings[0]
    res = run(rs.backup_action, bparams(unreadable="fail"), fake)
    assert res.failed and res["msg"].startswith("paths:") and "/data/secret" in res["msg"]


def test_a_fatal_backup_fails():
    fake = FakeRestic(backup=(1, "", "Fatal: unable to save snapshot: disk full"))
    res = run(rs.backup_action, bparams(), fake)
    assert res.failed and "disk full" in res["msg"]


def test_check_mode_is_a_dry_run_and_skip_if_unchanged():
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, bparams(), fake, check_mode=True)
    backups = [a for a, e, d in fake.calls if "backup" in a]
    assert len(backups) == 1 and "--dry-run" in backups[0] and res["changed"] and res["snapshot_id"] is None
    quiet = dict(SUMMARY, files_new=0, files_changed=0, dirs_new=0, dirs_changed=0)
    fake = FakeRestic(**backup_answers(summary=quiet))
    res = run(rs.backup_action, bparams(skip_if_unchanged=True), fake)
    assert not res["changed"] and [a for a, e, d in fake.calls if "backup" in a and "--dry-run" not in a] == []
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, bparams(skip_if_unchanged=True), fake)
    assert res["changed"] and len([a for a, e, d in fake.calls if "backup" in a]) == 2


@pytest.mark.parametrize("change,opt", [({"paths": ["data"]}, "paths:"),
                                        ({"paths": None}, "paths:"),
                                        ({"paths": None, "command": ["pg_dump"], "filename": "/abs"}, "filename:"),
                                        ({"paths": None, "command": ["pg_dump"], "filename": "../x"}, "filename:"),
                                        ({"command_env": {"A": "b"}}, "command_env:"),
                                        ({"tags": ["a,b"]}, "tags:")])
def test_backup_validation_names_the_option(change, opt):
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, bparams(**change), fake)
    assert res.failed and res["msg"].startswith(opt)
    assert not [a for a, e, d in fake.calls if "backup" in a]


def cparams(**kw):
    return bparams(paths=None, command=["docker", "exec", "db-1", "pg_dump", "-Fc", "app"], filename="pg/app.dump",
                   command_env={"PGPASSWORD": "DbPw7"}, tags=["db"], **kw)


def test_command_backup_pipes_with_secrets_in_the_environment_only():
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, cparams(), fake)
    assert not res.failed and res["source"] == "command" and res["snapshot_id"] == FULL_ID
    prod, penv, cons, cenv = fake.pipes[0]
    assert prod == ["docker", "exec", "db-1", "pg_dump", "-Fc", "app"]
    assert penv["PGPASSWORD"] == "DbPw7" and "PGPASSWORD" not in cenv and "RESTIC_PASSWORD_FILE" not in penv
    assert cons[cons.index("backup"):] == ["backup", "--json", "--tag", "db", "--host", "h1", "--stdin",
                                           "--stdin-filename", "pg/app.dump"]
    assert_no_secret_on_argv(fake, PW, "DbPw7")
    assert "forget" not in fake.subcommands()


def test_a_failed_dump_fails_and_its_snapshot_is_forgotten():
    fake = FakeRestic(**backup_answers())
    fake.producer = (1, "pg_dump: error: connection to server failed\n")
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and res["msg"].startswith("command: exited 1: pg_dump: error")
    forget = [a for a, e, d in fake.calls if a[1:2] == ["forget"] or "forget" in a]
    assert forget and forget[-1][-1] == FULL_ID


def test_an_empty_dump_fails_unless_allowed():
    empty = dict(SUMMARY, total_bytes_processed=0)
    fake = FakeRestic(**backup_answers(summary=empty))
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and "printed nothing" in res["msg"] and "forget" in fake.subcommands()
    fake = FakeRestic(**backup_answers(summary=empty))
    res = run(rs.backup_action, cparams(allow_empty=True), fake)
    assert not res.failed and "forget" not in fake.subcommands()


def test_command_backup_in_check_mode_runs_nothing():
    fake = FakeRestic(**backup_answers())
    res = run(rs.backup_action, cparams(), fake, check_mode=True)
    assert res["changed"] and fake.pipes == []


def test_restic_failing_under_a_dump_names_both():
    fake = FakeRestic(backup=(1, "", "Fatal: wrong password or no key found"))
    fake.producer = (141, "")
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and res["msg"].startswith("password: wrong password") and "rc=141" in res["msg"]


# --- restic 0.17+ runs the dump itself (--stdin-from-command), as measured on 0.18.0 (Debian 13) ---------------
# What restic 0.18.0 printed on stderr for `backup --json --stdin-from-command -- sh -c 'echo data; echo oops >&2;
# exit 3'` (exit code 1, no snapshot made).
FAILED_018 = ('subprocess bash: oops\n'
              '{"message_type":"error","error":{"message":"failed to save /pg/app.dump: Fatal: command failed: exit '
              'status 3"},"during":"archival","item":"/pg/app.dump"}\n'
              '{"message_type":"exit_error","code":1,"message":"Fatal: unable to save snapshot: failed to save '
              '/pg/app.dump: Fatal: command failed: exit status 3"}\n')


def test_features_come_from_the_version():
    assert rs.features((0, 14, 0)) == {"exit_codes": False, "stdin_from_command": False, "stdin_dirs": True}
    assert rs.features((0, 16, 4)) == {"exit_codes": False, "stdin_from_command": False, "stdin_dirs": True}
    assert rs.features((0, 17, 0)) == {"exit_codes": True, "stdin_from_command": True, "stdin_dirs": True}
    assert rs.features((0, 18, 0)) == {"exit_codes": True, "stdin_from_command": True, "stdin_dirs": False}
    assert rs.features((0, 18, 1)) == {"exit_codes": True, "stdin_from_command": True, "stdin_dirs": True}


def test_restic_0_17_runs_the_dump_itself_with_its_own_environment():
    fake = FakeRestic(version="0.17.3", **backup_answers())
    res = run(rs.backup_action, cparams(), fake)
    assert not res.failed and res["snapshot_id"] == FULL_ID and res["restic_version"] == "0.17.3"
    assert fake.pipes == []  # no pipe: restic runs the command
    argv, env, _data = next(c for c in fake.calls if fake.sub(c[0])[0] == "backup")
    args = fake.sub(argv)
    assert args[:args.index("--")] == ["backup", "--json", "--tag", "db", "--host", "h1", "--stdin-from-command",
                                       "--stdin-filename", "pg/app.dump"]
    assert args[args.index("--") + 1:] == ["/usr/bin/bash", "-c", rs.COMMAND_WRAPPER, "bash", "docker", "exec",
                                           "db-1", "pg_dump", "-Fc", "app"]
    # The command's secret reaches it through the wrapper's environment only; restic's are named to be dropped.
    assert env["SHP_CMD_ENV_PGPASSWORD"] == "DbPw7" and env["SHP_CMD_KEYS"] == "PGPASSWORD"
    assert "PGPASSWORD" not in env
    assert {"RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY"} <= set(env["SHP_RESTIC_KEYS"].split())
    assert_no_secret_on_argv(fake, PW, "DbPw7")
    assert "forget" not in fake.subcommands()


def test_restic_0_17_a_failed_dump_makes_no_snapshot_and_nothing_is_forgotten():
    status = json.dumps({"message_type": "status", "percent_done": 0}) + "\n"
    fake = FakeRestic(version="0.18.0", backup=(1, status, FAILED_018))
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed, res
    assert res["msg"] == ("command: exited 3: oops; restic made no snapshot (restic 0.18.0 ran it with "
                          "--stdin-from-command)")
    assert "forget" not in fake.subcommands()


def test_restic_0_17_an_empty_dump_exits_3_and_is_refused_unless_allowed():
    """restic 0.18 saves an empty file and exits 3 ("no data read") when the command prints nothing."""
    empty = dict(SUMMARY, total_bytes_processed=0)
    stderr = "error: failed to save /pg/app.dump: read /pg/app.dump: no data read\n"
    fake = FakeRestic(version="0.18.0", **backup_answers(rc=3, summary=empty, stderr=stderr))
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and "printed nothing" in res["msg"] and "forget" in fake.subcommands()
    fake = FakeRestic(version="0.18.0", **backup_answers(rc=3, summary=empty, stderr=stderr))
    res = run(rs.backup_action, cparams(allow_empty=True), fake)
    assert not res.failed and "forget" not in fake.subcommands()
    # On 0.14 (a pipe) an exit code 3 with nothing read is a broken read, not an empty dump: refused even if allowed.
    fake = FakeRestic(**backup_answers(rc=3, summary=empty, stderr=stderr))
    res = run(rs.backup_action, cparams(allow_empty=True), fake)
    assert res.failed and "could not read all of its output (rc=3)" in res["msg"]


def test_restic_0_17_failing_for_its_own_reason_is_named():
    fake = FakeRestic(version="0.18.0", backup=(12, "", "Fatal: wrong password or no key found\n"))
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and res["msg"].startswith("password: wrong password")


def test_the_command_wrapper_gives_the_command_its_environment_and_none_of_restics(tmp_path):
    """COMMAND_WRAPPER run for real by bash, as restic runs it: the command sees its own variable (a value with
    quotes, spaces and $) and none of restic's."""
    value = "it's \"$HOME\" `id`  x"
    env = {"PATH": os.environ["PATH"], "RESTIC_REPOSITORY": "rest:http://u:pw@h/", "RESTIC_PASSWORD_FILE": "/pw",
           "RESTIC_PASSWORD": "", "SHP_CMD_ENV_PGPASSWORD": value, "SHP_CMD_KEYS": "PGPASSWORD",
           "SHP_RESTIC_KEYS": "RESTIC_PASSWORD RESTIC_PASSWORD_FILE RESTIC_REPOSITORY"}
    probe = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
             "if k.startswith(('RESTIC', 'SHP', 'PG'))}))")
    res = subprocess.run(["bash", "-c", rs.COMMAND_WRAPPER, "bash", sys.executable, "-c", probe], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"PGPASSWORD": value}


def test_restic_0_18_0_saves_a_file_below_a_directory_under_its_flat_name():
    """Debian 13's restic 0.18.0 fails `--stdin-filename postgres/db/x.dump` (main: every dump of the backup role
    failed there with "open /postgres: no such file or directory")."""
    fake = FakeRestic(version="0.18.0", **backup_answers())
    res = run(rs.backup_action, cparams(), fake)
    assert not res.failed, res
    argv = next(a for a, e, d in fake.calls if fake.sub(a)[0] == "backup")
    assert argv[argv.index("--stdin-filename") + 1] == "pg%2Fapp.dump"
    # Any other release keeps the directories (the pipe of 0.14 too).
    for version in ("0.14.0", "0.18.1"):
        fake = FakeRestic(version=version, **backup_answers())
        run(rs.backup_action, cparams(), fake)
        argv = next(a for a, e, d in fake.calls if fake.sub(a)[0] == "backup") if version != "0.14.0" \
            else fake.pipes[0][2]
        assert argv[argv.index("--stdin-filename") + 1] == "pg/app.dump", version


def test_flat_names_are_distinct_and_both_are_looked_up():
    assert rs.flat_name("postgres/db/app.dump") == "postgres%2Fdb%2Fapp.dump"
    assert rs.flat_name("a%2Fb") != rs.flat_name("a/b")
    assert rs.stored_paths("/postgres/db/app.dump") == ["/postgres/db/app.dump", "/postgres%2Fdb%2Fapp.dump"]
    assert rs.stored_paths("flat.sql") == ["/flat.sql"]
    assert rs.stdin_name("postgres/db/app.dump", (0, 18, 0)) == "postgres%2Fdb%2Fapp.dump"
    assert rs.stdin_name("/postgres/db/app.dump", (0, 14, 0)) == "postgres/db/app.dump"


def test_a_restore_streams_the_newest_dump_whichever_restic_saved_it():
    """A host whose dumps were saved by restic 0.14 (directories) and then by Debian 13's 0.18.0 (flat names): the
    restore takes the newest of either, and dumps the path that snapshot holds."""
    older = dict(SNAP, paths=["/postgres/db/app.dump"], time="2026-11-23T12:00:00Z", id="a" * 64, short_id="aaaaaaaa")
    newer = dict(SNAP, paths=["/postgres%2Fdb%2Fapp.dump"], time="2026-11-24T12:00:00Z", id="b" * 64,
                 short_id="bbbbbbbb")

    def snapshots(args):
        if "--path" in args:
            path = args[args.index("--path") + 1]
            return 0, json.dumps([s for s in (older, newer) if s["paths"] == [path]]) + "\n", ""
        ident = args[-1]
        return 0, json.dumps([s for s in (older, newer) if s["id"].startswith(ident)]) + "\n", ""

    base = params(target=None, snapshot="latest", tags=[], host=None, paths=[], verify=False, force=False,
                  include=[], filename="postgres/db/app.dump", command_env={},
                  command=["docker", "exec", "-i", "db-postgres-1", "pg_restore", "-d", "app"])
    fake = FakeRestic(version="0.18.0", snapshots=snapshots)
    res = run(rs.restore_action, base, fake)
    assert not res.failed and res["snapshot"]["short_id"] == "bbbbbbbb", res
    assert fake.pipes[-1][0][-3:] == ["dump", "b" * 64, "/postgres%2Fdb%2Fapp.dump"]
    assert res["filename"] == "/postgres/db/app.dump" and res["restored"] == ["/postgres%2Fdb%2Fapp.dump"]
    # A snapshot asked for by id: the path it holds.
    fake = FakeRestic(version="0.18.0", snapshots=snapshots)
    res = run(rs.restore_action, dict(base, snapshot="aaaaaaaa"), fake)
    assert not res.failed and fake.pipes[-1][0][-3:] == ["dump", "a" * 64, "/postgres/db/app.dump"]
    # Neither name anywhere: the message names both.
    fake = FakeRestic(version="0.18.0", snapshots=(0, "[]\n", ""))
    res = run(rs.restore_action, base, fake)
    assert res.failed and "/postgres%2Fdb%2Fapp.dump" in res["msg"] and "/postgres/db/app.dump" in res["msg"]


def test_command_failures_are_read_from_restics_stderr():
    assert rs.command_exit(FAILED_018) == 3 and rs.command_stderr(FAILED_018) == "oops"
    assert rs.command_exit("Fatal: command failed: signal: killed") == -1
    assert rs.command_exit("subprocess bash: fine\n") is None


# --- restic_forget ------------------------------------------------------------------------------

def fparams(**kw):
    p = params(**dict.fromkeys(rs.RETENTION_KEYS))
    p.update(keep_tags=[], tags=[], host=None, group_by=None, prune=True)
    p.update(kw)
    return p


def test_forget_needs_a_policy():
    fake = FakeRestic()
    res = run(rs.forget_action, fparams(), fake)
    assert res.failed and "at least one retention option" in res["msg"] and "forget" not in fake.subcommands()


def test_forget_reports_removed_snapshots_and_dry_runs_in_check_mode():
    old = dict(SNAP, id="ab" * 32, short_id="abababab")
    fake = FakeRestic(forget=(0, json.dumps([{"keep": [SNAP], "remove": [old]}]) + "\n", ""))
    res = run(rs.forget_action, fparams(keep_daily=7, keep_weekly=4, tags=["db", "pg"]), fake,
              check_mode=True, diff=True)
    argv = fake.calls[-1][0]
    assert argv[argv.index("forget"):] == ["forget", "--json", "--keep-daily", "7", "--keep-weekly", "4", "--tag",
                                           "db,pg", "--prune", "--dry-run"]  # all tags, not any
    assert res["changed"] and not res["pruned"] and [s["short_id"] for s in res["removed"]] == ["abababab"]
    assert res["diff"]["after"]["snapshots"] == ["c21d15c2"]
    fake = FakeRestic(forget=(0, json.dumps([{"keep": [SNAP], "remove": None}]) + "\n", ""))
    res = run(rs.forget_action, fparams(keep_last=1), fake)
    assert not res["changed"] and not res["pruned"]


# --- restic_restore -----------------------------------------------------------------------------

def node(path, kind="file", size=0, mode=0o644, mtime="2026-01-02T03:04:05.123456789Z"):
    return {"name": os.path.basename(path), "type": kind, "path": path, "size": size, "mode": mode, "mtime": mtime,
            "struct_type": "node"}


def test_restore_plan_compares_type_size_mtime_and_mode(tmp_path):
    mtime = "2026-01-02T03:04:05.123456789Z"
    ns = rs.parse_time_ns(mtime)
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "f"
    f.write_bytes(b"12345")
    f.chmod(0o640)
    os.utime(f, ns=(ns, ns))
    nodes = [node("/d", "dir"), node("/d/f", size=5, mode=0o640), node("/d/g", size=1)]
    assert rs.restore_plan(nodes, str(tmp_path)) == [("/d/g", "missing")]
    os.utime(f, ns=(ns, ns + 1))
    assert rs.restore_plan(nodes[:2], str(tmp_path)) == [("/d/f", "modification time differs")]
    os.utime(f, ns=(ns, ns))
    f.chmod(0o600)
    assert rs.restore_plan(nodes[:2], str(tmp_path))[0][1].startswith("permissions 600")
    f.write_bytes(b"123")
    assert rs.restore_plan(nodes[:2], str(tmp_path))[0][1] == "size 3, snapshot 5"


def test_restore_is_honest_about_changed(tmp_path):
    listing = json.dumps(dict(SNAP, struct_type="snapshot")) + "\n" + json.dumps(node("/x", size=1)) + "\n"
    fake = FakeRestic(snapshots=(0, json.dumps([SNAP]) + "\n", ""), ls=(0, listing, ""))
    base = params(target=str(tmp_path / "t"), snapshot="latest", tags=["files"], host=None, paths=[], verify=False,
                  force=False)
    res = run(rs.restore_action, base, fake, check_mode=True, diff=True)
    assert res["changed"] and res["restored"] == ["/x"] and "restore" not in fake.subcommands()
    assert "/x (missing)" in res["diff"]["prepared"]
    res = run(rs.restore_action, base, fake)
    assert res["changed"] and "restore" in fake.subcommands()
    argv = next(a for a, e, d in fake.calls if "restore" in a)
    assert argv[argv.index("restore"):] == ["restore", FULL_ID, "--target", str(tmp_path / "t")]
    assert res.module.warnings  # the fake restored nothing, so the target still differs
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").write_text("1")
    ns = rs.parse_time_ns("2026-01-02T03:04:05.123456789Z")
    os.utime(tmp_path / "t" / "x", ns=(ns, ns))
    fake.calls.clear()
    res = run(rs.restore_action, base, fake)
    assert not res["changed"] and "restore" not in fake.subcommands()
    res = run(rs.restore_action, dict(base, force=True), fake)
    assert res["changed"] and "restore" in fake.subcommands()


def test_restore_of_an_unknown_snapshot_names_the_option(tmp_path):
    fake = FakeRestic(snapshots=(0, "[]\n", ""))
    base = params(target=str(tmp_path), snapshot="latest", tags=["nope"], host=None, paths=[], verify=False,
                  force=False)
    res = run(rs.restore_action, base, fake)
    assert res.failed and res["msg"].startswith("snapshot: no snapshot matches")
    fake = FakeRestic(snapshots=(1, "", "Fatal: no matching ID found for prefix \"deadbeef\""))
    res = run(rs.restore_action, dict(base, snapshot="deadbeef"), fake)
    assert res.failed and res["msg"].startswith("snapshot: no snapshot deadbeef")
    res = run(rs.restore_action, dict(base, target="rel"), fake)
    assert res.failed and res["msg"].startswith("target:")


def test_a_broken_pipe_seen_by_restic_fails_and_forgets_even_if_the_command_says_ok():
    error = {"message_type": "error", "error": {}, "during": "archival", "item": "/x.dump"}
    fake = FakeRestic(**backup_answers(rc=3, stderr=json.dumps(error)))
    res = run(rs.backup_action, cparams(), fake)
    assert res.failed and "could not read all of its output (rc=3)" in res["msg"]
    assert "forget" in fake.subcommands()


# --- locks ----------------------------------------------------------------------------------------

LOCK_A, LOCK_B = "a" * 64, "b" * 64
LOCKED_014 = ("unable to create lock in backend: repository is already locked by PID 22703 on vm by root\n"
              "the `unlock` command can be used to remove stale locks\n")


def locked_repository(locks, live):
    """A fake whose exclusive commands fail while any lock exists; ``restic unlock`` removes the
    locks not in LIVE (what restic does with stale ones)."""
    def check(args):
        return (1, "", LOCKED_014) if locks else (0, "no errors were found\n", "")

    def unlock(args):
        locks[:] = [x for x in locks if x in live]
        return 0, "successfully removed locks\n", ""

    return FakeRestic(**{"cat": (0, '{"version": 2, "id": "r1"}', ""), "check": check, "unlock": unlock,
                         "list locks": lambda args: (0, "".join(x + "\n" for x in locks), "")})


def test_a_stale_lock_is_removed_and_the_command_retried():
    locks = [LOCK_A]
    fake = locked_repository(locks, live=())
    res = run(rs.repository_action, params(check=True), fake)
    assert not res.failed, res
    assert res["checked"] and res["stale_locks_removed"] == 1 and locks == []
    assert fake.subcommands().count("check") == 2 and "unlock" in fake.subcommands()
    unlock_argv = next(argv for argv, env, data in fake.calls if fake.sub(argv)[0] == "unlock")
    assert "--remove-all" not in unlock_argv


def test_a_live_lock_is_never_removed():
    locks = [LOCK_A, LOCK_B]
    fake = locked_repository(locks, live=(LOCK_B,))
    res = run(rs.repository_action, params(check=True), fake)
    # the stale one goes, the live one stays, and the failure names it
    assert res.failed and "locked by a running restic process" in res["msg"] and "live" in res["msg"]
    assert locks == [LOCK_B] and fake.subcommands().count("check") == 2

    locks[:] = [LOCK_B]
    fake = locked_repository(locks, live=(LOCK_B,))
    res = run(rs.repository_action, params(check=True), fake)
    assert res.failed and locks == [LOCK_B] and fake.subcommands().count("check") == 1  # nothing removed: no retry


def test_unlock_stale_false_leaves_every_lock():
    locks = [LOCK_A]
    fake = locked_repository(locks, live=())
    res = run(rs.repository_action, params(check=True, unlock_stale=False), fake)
    assert res.failed and "unlock_stale=false" in res["msg"] and locks == [LOCK_A]
    assert "unlock" not in fake.subcommands() and "list" not in fake.subcommands()


def test_restore_into_a_command_streams_one_file_with_its_own_environment():
    stdin_snap = dict(SNAP, paths=["/postgres/db/app.dump"], tags=["databases", "db", "db"])
    fake = FakeRestic(snapshots=(0, json.dumps([stdin_snap]) + "\n", ""))
    base = params(target=None, snapshot="latest", tags=[], host=None, paths=[], verify=False, force=False,
                  include=[], filename="postgres/db/app.dump", command_env={"PGPASSWORD": "DbPw-123456"},
                  command=["docker", "exec", "-i", "-e", "PGPASSWORD", "db-postgres-1", "pg_restore", "-d", "app"])
    res = run(rs.restore_action, base, fake, check_mode=True)
    assert res["changed"] and fake.pipes == []
    snaps_argv = next(a for a, e, d in fake.calls if "snapshots" in a)
    assert snaps_argv[-2:] == ["--path", "/postgres/db/app.dump"]  # latest = newest holding that file
    res = run(rs.restore_action, base, fake)
    assert not res.failed and res["filename"] == "/postgres/db/app.dump" and res["stdout_lines"] == ["restored"]
    restic, renv, command, cenv = fake.pipes[-1]
    assert restic[-3:] == ["dump", FULL_ID, "/postgres/db/app.dump"]
    assert command == base["command"] and cenv == {"PGPASSWORD": "DbPw-123456"}
    assert "PGPASSWORD" not in renv and renv["RESTIC_REPOSITORY"] == REPO
    assert_no_secret_on_argv(fake, PW, "DbPw-123456")

    fake.consumer = (1, "", "pg_restore: error: could not execute query")
    res = run(rs.restore_action, base, fake)
    assert res.failed and res["msg"].startswith("command: exited 1") and "could not execute query" in res["msg"]
    fake.consumer, fake.dump = (0, "", ""), (1, "Fatal: wrong password or no key found")
    res = run(rs.restore_action, base, fake)
    assert res.failed and res["msg"].startswith("password:")
    res = run(rs.restore_action, dict(base, filename=None), fake)
    assert res.failed and res["msg"].startswith("filename:")


def test_restore_include_limits_the_comparison_and_the_restore(tmp_path):
    entries = [dict(SNAP, struct_type="snapshot"), node("/a", "dir"), node("/a/keep", size=1), node("/b", "dir"),
               node("/b/x", size=1)]
    listing = "\n".join(json.dumps(x) for x in entries)
    fake = FakeRestic(snapshots=(0, json.dumps([SNAP]) + "\n", ""), ls=(0, listing + "\n", ""))
    base = params(target=str(tmp_path), snapshot="latest", tags=[], host=None, paths=[], verify=False, force=False,
                  include=["/b"], command=None, filename=None, command_env={})
    res = run(rs.restore_action, base, fake)
    assert res["restored"] == ["/b", "/b/x"]
    argv = next(a for a, e, d in fake.calls if "restore" in a)
    assert argv[-2:] == ["--include", "/b"]
    res = run(rs.restore_action, dict(base, include=["/c"]), fake)
    assert res.failed and res["msg"].startswith("include:")


def test_the_client_imports_without_ansible():
    """restic.py is also the backup runner's library on the server (installed as shp_restic.py), where Ansible
    is not installed: it must import with the standard library alone."""
    code = ("import sys, importlib.util; sys.modules['ansible'] = None; "
            "spec = importlib.util.spec_from_file_location('shp_restic', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(m.redact('rest:http://u:pa/ss@h/'))")
    res = subprocess.run([sys.executable, "-I", "-c", code, rs.__file__], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "rest:http://u:***@h/", res.stderr
