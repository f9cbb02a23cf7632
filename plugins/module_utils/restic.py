# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restic CLI client behind the restic_* modules: version detection, repository detection that
works on restic 0.14 (Debian 12) and newer, backups of paths or of a command's stdout, retention,
check and restore, and parsing of restic's JSON output.

Secrets never reach a command line: the repository (which may carry REST credentials) travels in
RESTIC_REPOSITORY, the password in a 0600 file named by RESTIC_PASSWORD_FILE, backend credentials
(S3 keys, ...) in the environment of the restic process only.

Facts about restic this code relies on (measured on 0.14.0):
  - ``backup --json`` prints status lines and one ``summary`` line (``snapshot_id`` is the short id
    on 0.14, the full id from 0.16); errors are JSON lines on stderr with ``item``;
  - exit codes: 0 ok, 1 fatal, 3 some source files unreadable (the snapshot is still made);
    10 no repository, 11 lock failed, 12 wrong password only from 0.17;
  - on older versions a missing repository is the ``unable to open config file`` message of
    ``restic cat config`` with a not-found cause;
  - ``--stdin-from-command`` is 0.17+ (measured on 0.18.0, Debian 13): restic runs the command, prefixes its
    stderr lines with ``subprocess <name>: ``, and when it exits non-zero makes no snapshot and exits 1 with
    ``command failed: exit status N``; a command that prints nothing gives an empty file and exit code 3.
    Older releases read a pipe (``backup --stdin``, both exit codes known) and the snapshot of a failed
    command is forgotten;
  - 0.18.0 (Debian 13's) cannot save a stdin file below a directory: ``--stdin-filename postgres/db/x.dump``
    fails with ``unable to save snapshot: open /postgres: no such file or directory`` with --stdin and
    --stdin-from-command alike (restic issue 5324, fixed in 0.18.1). Such a file is saved there under its
    flat name (``postgres%2Fdb%2Fx.dump``, ``stdin_name``), and every lookup of a saved file tries both
    names (``stored_paths``), so snapshots made by either release are found.

What a release can do is one fact, ``features(version)``, taken from ``restic version`` on the host the
client runs on (the modules and the backup runner alike), never from the distribution's name.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import stat
import tempfile
import time
from urllib.parse import unquote

MIN_VERSION = (0, 14, 0)
# The first release with exit codes 10/11/12 and backup --stdin-from-command.
V0_17 = (0, 17, 0)
# The release whose --stdin-filename cannot hold a directory (restic issue 5324, fixed in 0.18.1).
STDIN_NO_DIRS = ((0, 18, 0),)

# Variables that would make restic use another password or repository than the one asked for.
SCRUBBED_ENV = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY",
                "RESTIC_REPOSITORY_FILE", "RESTIC_KEY_HINT")

NOT_FOUND_RE = re.compile(r"no such file or directory|does not exist|not exist|404|NoSuchKey|NoSuchBucket|"
                          r"not found", re.IGNORECASE)
WRONG_PASSWORD_RE = re.compile(r"wrong password or no key found", re.IGNORECASE)
LOCKED_RE = re.compile(r"repository is already locked|unable to create lock", re.IGNORECASE)

RETENTION_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
                  "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly",
                  "keep_within_monthly", "keep_within_yearly")


class ResticError(Exception):
    """A failure with a message naming the option or the step that failed."""


# ---------------------------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------------------------

def parse_version(text):
    """(major, minor, patch) from ``restic version`` output ('restic 0.14.0 compiled with ...')."""
    match = re.search(r"restic\s+v?(\d+)\.(\d+)\.(\d+)", text or "")
    if not match:
        raise ResticError("cannot read the restic version from %r" % (text or "").strip()[:200])
    return tuple(int(x) for x in match.groups())


def version_str(version):
    return ".".join(str(x) for x in version)


def features(version):
    """What restic VERSION can do, where the client's behaviour depends on it:
    exit_codes - 10 no repository, 11 lock failed, 12 wrong password (else the messages tell);
    stdin_from_command - restic runs a dump command itself and makes no snapshot when it fails (else a pipe, and
    the snapshot of a failed command is forgotten);
    stdin_dirs - a file saved from stdin may be below a directory (not on 0.18.0: it is saved under its flat name)."""
    return {"exit_codes": version >= V0_17, "stdin_from_command": version >= V0_17,
            "stdin_dirs": tuple(version) not in STDIN_NO_DIRS}


def flat_name(filename):
    """FILENAME with its directories folded into one name restic 0.18.0 can save from stdin: ``%`` and ``/``
    percent-encoded (``postgres/db/x.dump`` -> ``postgres%2Fdb%2Fx.dump``), so different names stay different."""
    return filename.lstrip("/").replace("%", "%25").replace("/", "%2F")


def stdin_name(filename, version):
    """The name restic VERSION saves a stdin file called FILENAME under."""
    name = filename.lstrip("/")
    return name if features(version)["stdin_dirs"] else flat_name(name)


def stored_paths(filename):
    """The snapshot paths a file saved from stdin as FILENAME can have, by any restic: as named, and flat."""
    name = filename.lstrip("/")
    return list(dict.fromkeys(["/" + name, "/" + flat_name(name)]))


def json_lines(text):
    """Every JSON object or array line of text, in order; other lines are ignored."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line[0] not in "{[":
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def backup_summary(stdout):
    """The summary message of ``backup --json``, or None."""
    for msg in reversed(json_lines(stdout)):
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            return msg
    return None


def backup_errors(stderr):
    """[(item, during, text)] from the error messages ``backup --json`` prints on stderr."""
    errors = []
    for msg in json_lines(stderr):
        if isinstance(msg, dict) and msg.get("message_type") == "error":
            err = msg.get("error") or {}
            text = ""
            if isinstance(err, dict):
                text = err.get("message") or ""
                if not text and err.get("Op"):
                    text = "%s: errno %s" % (err.get("Op"), err.get("Err"))
            errors.append({"item": msg.get("item", ""), "during": msg.get("during", ""), "error": text})
    return errors


def unique_items(errors):
    """The items of backup errors, each once, in order (restic reports a directory at scan and archival)."""
    seen = []
    for err in errors:
        if err["item"] not in seen:
            seen.append(err["item"])
    return seen


def summary_result(summary):
    """The module's view of a backup summary."""
    keys = ("files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified",
            "data_added", "total_files_processed", "total_bytes_processed")
    result = {k: int(summary.get(k) or 0) for k in keys}
    result["duration"] = float(summary.get("total_duration") or 0.0)
    return result


def nothing_new(summary):
    """Whether a (dry-run) backup summary says the snapshot would equal its parent."""
    return not any(int(summary.get(k) or 0) for k in ("files_new", "files_changed", "dirs_new", "dirs_changed"))


def classify_failure(version, rc, stderr):
    """'no_repository', 'wrong_password', 'locked' or None for a failed restic command."""
    if features(version)["exit_codes"]:
        codes = {10: "no_repository", 11: "locked", 12: "wrong_password"}
        if rc in codes:
            return codes[rc]
    text = stderr or ""
    if WRONG_PASSWORD_RE.search(text):
        return "wrong_password"
    if LOCKED_RE.search(text):
        return "locked"
    # 0.14-0.16: "Fatal: unable to open config file: <cause>\nIs there a repository at the following location?"
    # Only a not-found cause means "no repository"; a network or permission error is not one.
    match = re.search(r"unable to open config file:?(.*)", text)
    if match and NOT_FOUND_RE.search(match.group(1)):
        return "no_repository"
    return None


def parse_time_ns(value):
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fraction digits, as restic prints."""
    match = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", value or "")
    if not match:
        raise ResticError("unexpected time format from restic: %r" % value)
    year, month, day, hour, minute, second, frac, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1000000000 + int((frac or "0").ljust(9, "0"))


def retention_args(policy):
    """restic forget flags for a policy dict (keys of RETENTION_KEYS and keep_tags)."""
    args = []
    for key in RETENTION_KEYS:
        value = policy.get(key)
        if value in (None, "", 0):
            continue
        args += ["--" + key.replace("_", "-"), str(value)]
    for tag in policy.get("keep_tags") or []:
        args += ["--keep-tag", tag]
    return args


def snapshot_view(snap):
    return {"id": snap.get("id"), "short_id": snap.get("short_id") or (snap.get("id") or "")[:8],
            "time": snap.get("time"), "host": snap.get("hostname"), "tags": snap.get("tags") or [],
            "paths": snap.get("paths") or []}


def forget_groups(data):
    """(keep, remove) snapshot views from ``forget --json`` output (a list of groups)."""
    keep, remove = [], []
    for group in data or []:
        keep += [snapshot_view(s) for s in group.get("keep") or []]
        remove += [snapshot_view(s) for s in group.get("remove") or []]
    return keep, remove


def node_differs(node, target):
    """Why TARGET on disk differs from snapshot NODE (a ``restic ls --json`` entry), or None.
    Files compare by type, size, mtime (restic restores it to the nanosecond) and permissions."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return "missing"
    kind = node.get("type")
    if kind == "dir":
        return None if stat.S_ISDIR(st.st_mode) else "not a directory"
    if kind == "symlink":
        return None if stat.S_ISLNK(st.st_mode) else "not a symlink"
    if kind == "file":
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size != int(node.get("size") or 0):
            return "size %d, snapshot %d" % (st.st_size, int(node.get("size") or 0))
        if node.get("mtime") and st.st_mtime_ns != parse_time_ns(node["mtime"]):
            return "modification time differs"
        if stat.S_IMODE(st.st_mode) != int(node.get("mode") or 0) & 0o7777:
            return "permissions %o, snapshot %o" % (stat.S_IMODE(st.st_mode), int(node.get("mode") or 0) & 0o7777)
        return None
    return None  # devices, fifos, sockets: restic recreates them; not compared


def under(path, top):
    """Whether snapshot PATH is TOP or below it (or a parent directory restic recreates on the way)."""
    return top in ("/", path) or path.startswith(top + "/") or top.startswith(path.rstrip("/") + "/")


def restore_plan(nodes, target):
    """[(snapshot path, reason)] of the nodes a restore to TARGET would write."""
    plan = []
    for node in nodes:
        path = node.get("path") or ""
        reason = node_differs(node, os.path.join(target, path.lstrip("/")))
        if reason:
            plan.append((path, reason))
    return plan


# ---------------------------------------------------------------------------------------------
# Processes: the boundary unit tests fake
# ---------------------------------------------------------------------------------------------

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# `set -o pipefail; producer | restic` with both exit codes kept, and each side's environment its own:
# the producer gets the command's variables (copied from SHP_CMD_ENV_<name> by the `export` builtin, so
# no value is ever on an argv) and loses restic's; restic never sees the command's.
PIPE_WRAPPER = (
    'n="$1"; shift; prod=("${@:1:$n}"); cons=("${@:$((n + 1))}"); '
    '( for k in $SHP_RESTIC_KEYS; do unset "$k"; done; '
    '  for k in $SHP_CMD_KEYS; do v="SHP_CMD_ENV_$k"; export "$k=${!v}"; unset "$v"; done; '
    '  unset SHP_RESTIC_KEYS SHP_CMD_KEYS SHP_PERR SHP_PRC; exec "${prod[@]}" </dev/null ) 2>"$SHP_PERR" | '
    '( for k in $SHP_CMD_KEYS; do unset "SHP_CMD_ENV_$k"; done; exec "${cons[@]}" ); '
    's=("${PIPESTATUS[@]}"); printf %s "${s[0]}" >"$SHP_PRC"; exit "${s[1]}"'
)

# The same pipe the other way round: restic (``dump``) produces, the command consumes.
REVERSE_PIPE_WRAPPER = (
    'n="$1"; shift; prod=("${@:1:$n}"); cons=("${@:$((n + 1))}"); '
    '( for k in $SHP_CMD_KEYS; do unset "SHP_CMD_ENV_$k"; done; '
    '  unset SHP_RESTIC_KEYS SHP_CMD_KEYS SHP_PERR SHP_PRC; exec "${prod[@]}" </dev/null ) 2>"$SHP_PERR" | '
    '( for k in $SHP_RESTIC_KEYS; do unset "$k"; done; '
    '  for k in $SHP_CMD_KEYS; do v="SHP_CMD_ENV_$k"; export "$k=${!v}"; unset "$v"; done; '
    '  unset SHP_RESTIC_KEYS SHP_CMD_KEYS SHP_PERR SHP_PRC; exec "${cons[@]}" ); '
    's=("${PIPESTATUS[@]}"); printf %s "${s[0]}" >"$SHP_PRC"; exit "${s[1]}"'
)


# The command restic runs with --stdin-from-command: bash drops restic's variables and sets the command's own
# (copied from SHP_CMD_ENV_<name> by the `export` builtin, so no value is ever on an argv), then becomes the command.
COMMAND_WRAPPER = (
    'for k in $SHP_RESTIC_KEYS; do unset "$k"; done; '
    'for k in $SHP_CMD_KEYS; do v="SHP_CMD_ENV_$k"; export "$k=${!v}"; unset "$v"; done; '
    'unset SHP_RESTIC_KEYS SHP_CMD_KEYS; exec "$@"'
)
# restic's report of a command that failed ("Fatal: command failed: exit status 3", "... signal: killed").
COMMAND_FAILED_RE = re.compile(r"command failed: (?:exit status (\d+)|signal: (\S+))")
SUBPROCESS_LINE_RE = re.compile(r"^subprocess [^:]*: ?")


def command_stderr(stderr):
    """The command's own stderr out of restic's (the lines restic prefixes with ``subprocess <name>: ``)."""
    return "\n".join(SUBPROCESS_LINE_RE.sub("", line) for line in (stderr or "").splitlines()
                     if SUBPROCESS_LINE_RE.match(line))


def command_exit(stderr):
    """The exit code restic reports for the command it ran (a signal is -1), or None when it reports no failure."""
    match = COMMAND_FAILED_RE.search(stderr or "")
    if not match:
        return None
    return int(match.group(1)) if match.group(1) else -1


class Runner:
    """Runs restic (and the command a stdin backup reads) through the module's run_command, with
    environment updates (a variable set to "" counts as unset for restic)."""

    def __init__(self, module):
        self.module = module

    def run(self, argv, env, data=None):
        return self.module.run_command(argv, data=data, binary_data=True, environ_update=env)

    def pipe(self, producer, producer_env, consumer, consumer_env):
        """PRODUCER's stdout into CONSUMER's stdin. Returns (producer rc, producer stderr, rc, stdout,
        stderr). PRODUCER_ENV and CONSUMER_ENV are environment updates for each side only."""
        return self._pipe(PIPE_WRAPPER, producer, consumer, consumer_env, producer_env)

    def pipe_from_restic(self, restic, restic_env, command, command_env):
        """RESTIC's stdout (a ``restic dump``) into COMMAND's stdin. Returns (restic rc, restic stderr,
        command rc, command stdout, command stderr); each side gets only its own environment."""
        return self._pipe(REVERSE_PIPE_WRAPPER, restic, command, restic_env, command_env)

    def _pipe(self, wrapper, producer, consumer, restic_env, command_env):
        for name in command_env:
            if not ENV_NAME_RE.match(name):
                raise ResticError("command_env: %r is not a variable name" % name)
        bash = self.module.get_bin_path("bash", required=True)
        tmpdir = tempfile.mkdtemp(prefix="shp-restic-pipe-")
        try:
            env = dict(restic_env)
            env.update(("SHP_CMD_ENV_" + k, str(v)) for k, v in command_env.items())
            env.update(SHP_RESTIC_KEYS=" ".join(sorted(k for k in restic_env if ENV_NAME_RE.match(k))),
                       SHP_CMD_KEYS=" ".join(sorted(command_env)),
                       SHP_PERR=os.path.join(tmpdir, "stderr"), SHP_PRC=os.path.join(tmpdir, "rc"))
            argv = [bash, "-c", wrapper, "bash", str(len(producer))] + list(producer) + list(consumer)
            rc, out, err = self.module.run_command(argv, environ_update=env)
            try:
                with open(env["SHP_PRC"]) as fh:
                    prc = int(fh.read().strip() or "-1")
            except (OSError, ValueError):
                prc = -1
            try:
                with open(env["SHP_PERR"], "rb") as fh:
                    perr = fh.read().decode("utf-8", "replace")
            except OSError:
                perr = ""
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return prc, perr, rc, out, err


# ---------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------

class PasswordFile:
    """The password file restic reads: the given one, or a temporary 0600 file in a private 0700
    directory holding the given password, removed on exit."""

    def __init__(self, password=None, path=None):
        self.password, self.path, self._tmpdir = password, path, None

    def __enter__(self):
        if self.password is not None:
            self._tmpdir = tempfile.mkdtemp(prefix="shp-restic-")
            os.chmod(self._tmpdir, 0o700)
            self.path = os.path.join(self._tmpdir, "password")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.password + "\n")
        return self.path

    def __exit__(self, *exc):
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        return False


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------

class Restic:
    """One repository, reached with a password file and an environment."""

    def __init__(self, runner, binary, repository, password_file, env=None, cache_dir=None, options=None,
                 cacert=None, unlock_stale=True):
        self.runner = runner
        self.unlock_stale = unlock_stale
        self.stale_locks_removed = 0
        self.binary = binary
        self.repository = repository
        self.secrets = repository_secrets(repository)
        self.shown = redact(repository)  # the repository as messages show it
        self.global_args = []
        for opt in options or []:
            self.global_args += ["-o", opt]
        if cacert:
            self.global_args += ["--cacert", cacert]
        if cache_dir:
            self.global_args += ["--cache-dir", cache_dir]
        # an update of the module's environment: "" unsets for restic
        environ = dict.fromkeys(SCRUBBED_ENV, "")
        environ.update({k: str(v) for k, v in (env or {}).items()})
        environ["RESTIC_REPOSITORY"] = repository
        environ["RESTIC_PASSWORD_FILE"] = password_file
        environ.setdefault("RESTIC_PROGRESS_FPS", "0.016")
        self.env = environ
        self._version = None

    # -- helpers -------------------------------------------------------------------------------
    def argv(self, *args):
        return [self.binary] + list(self.global_args) + list(args)

    def call(self, *args, **kw):
        """Run restic ARGS (with ``env``, the client's environment unless given). A command refused because of a
        lock is retried once after ``restic unlock`` removed stale locks (restic's own rule: the holder's process
        is gone on this host, or the lock is older than 30 minutes); a live lock is never removed, so then the
        failure stands."""
        env = kw.get("env") or self.env
        rc, out, err = self.runner.run(self.argv(*args), env, kw.get("data"))
        if (rc != 0 and self.unlock_stale and args[:1] not in (("unlock",), ("list",))
                and classify_failure(self.version, rc, err) == "locked" and self.remove_stale_locks()):
            rc, out, err = self.runner.run(self.argv(*args), env, kw.get("data"))
        return rc, out, err

    def lock_ids(self):
        rc, out, err = self.runner.run(self.argv("list", "locks", "--no-lock"), self.env, None)
        if rc != 0:
            raise self.explain("list locks", rc, err)
        return [line.strip() for line in (out or "").splitlines() if re.match(r"^[0-9a-f]{64}$", line.strip())]

    def remove_stale_locks(self):
        """How many stale locks ``restic unlock`` (without --remove-all) removed."""
        before = self.lock_ids()
        if not before:
            return 0
        rc, _out, err = self.runner.run(self.argv("unlock"), self.env, None)
        if rc != 0:
            raise self.explain("unlock", rc, err)
        removed = len(set(before) - set(self.lock_ids()))
        self.stale_locks_removed += removed
        return removed

    def explain(self, what, rc, stderr):
        """A ResticError for a failed command, with the cause named where restic tells it."""
        kind = classify_failure(self.version, rc, stderr)
        # restic echoes the repository URL (with its password on some backends and on parse errors)
        tail = scrub_output("\n".join((stderr or "").strip().splitlines()[-8:]), self.secrets)
        if kind == "wrong_password":
            return ResticError("password: wrong password for repository %s (%s)" % (self.shown, tail))
        if kind == "no_repository":
            return ResticError("repository: there is no restic repository at %s; initialise it with "
                               "selfhosted.platform.restic_repository (%s)" % (self.shown, tail))
        if kind == "locked":
            return ResticError("repository: %s is locked by a running restic process; stale locks %s (%s)" % (
                self.shown, "were removed, this one is live" if self.unlock_stale
                else "are kept because unlock_stale=false", tail))
        return ResticError("restic %s failed (rc=%d): %s" % (what, rc, tail))

    def checked(self, what, *args):
        rc, out, err = self.call(*args)
        if rc != 0:
            raise self.explain(what, rc, err)
        return out

    # -- version and repository ----------------------------------------------------------------
    @property
    def version(self):
        if self._version is None:
            rc, out, err = self.runner.run([self.binary, "version"], self.env, None)
            if rc != 0:
                raise ResticError("restic version failed (rc=%d): %s" % (rc, (err or out).strip()[-500:]))
            self._version = parse_version(out)
            if self._version < MIN_VERSION:
                raise ResticError("restic %s is too old; %s or newer is needed" % (
                    version_str(self._version), version_str(MIN_VERSION)))
        return self._version

    @property
    def features(self):
        """features() of the restic on this host."""
        return features(self.version)

    def config(self):
        """The repository's config (dict), or None when there is no repository at all.
        Any other failure (network, wrong password, lock) raises: never guess "missing"."""
        version = self.version
        rc, out, err = self.call("cat", "config")
        if rc == 0:
            try:
                return json.loads(out)
            except ValueError:
                raise ResticError("restic cat config printed no JSON: %s" % out[:300]) from None
        if classify_failure(version, rc, err) == "no_repository":
            return None
        raise self.explain("cat config", rc, err)

    def init(self):
        self.checked("init", "init")
        config = self.config()
        if config is None:
            raise ResticError("repository: restic init succeeded but no repository is found at %s afterwards" % (
                self.shown))
        return config

    # -- snapshots -----------------------------------------------------------------------------
    def snapshots(self, ids=(), tags=None, host=None, paths=None):
        args = ["snapshots", "--json"]
        if tags:  # one taglist: snapshots with all of them (repeated --tag is OR)
            args += ["--tag", ",".join(tags)]
        if host:
            args += ["--host", host]
        for path in paths or []:
            args += ["--path", path]
        data = json_lines(self.checked("snapshots", *(args + list(ids))))
        return [snapshot_view(s) for s in (data[0] if data else [])]

    def forget_ids(self, ids):
        if ids:
            self.checked("forget", "forget", *ids)

    # -- backup --------------------------------------------------------------------------------
    @staticmethod
    def backup_args(tags, host, dry_run):
        args = ["backup", "--json"]
        for tag in tags or []:
            args += ["--tag", tag]
        if host:
            args += ["--host", host]
        if dry_run:
            args.append("--dry-run")
        return args

    def backup_paths(self, paths, excludes=(), tags=None, host=None, exclude_caches=False, one_file_system=False,
                     dry_run=False):
        """(rc, summary, errors) of a backup of paths; rc 0 or 3 only (anything else raises)."""
        args = self.backup_args(tags, host, dry_run)
        for pattern in excludes or []:
            args += ["--exclude", pattern]
        if exclude_caches:
            args.append("--exclude-caches")
        if one_file_system:
            args.append("--one-file-system")
        rc, out, err = self.call(*(args + ["--"] + list(paths)))
        summary = backup_summary(out)
        if rc not in (0, 3) or summary is None:
            raise self.explain("backup", rc, err)
        return rc, summary, backup_errors(err)

    def backup_command(self, command, command_env, filename, tags=None, host=None):
        """Back up COMMAND's stdout as FILENAME. Returns (command rc, command stderr, restic rc, summary);
        summary is None when restic made no snapshot because the command failed (restic 0.17+ runs it itself,
        --stdin-from-command). Raises when restic made no snapshot for another reason; a snapshot made of a
        failed command (restic 0.14-0.16 read it from a pipe; rc 3: restic saw the pipe break) is returned so
        the caller can forget it."""
        penv = {k: str(v) for k, v in (command_env or {}).items()}
        filename = stdin_name(filename, self.version)
        if self.features["stdin_from_command"]:
            return self._backup_from_command(command, penv, filename, tags, host)
        args = self.backup_args(tags, host, False) + ["--stdin", "--stdin-filename", filename]
        prc, perr, rc, out, err = self.runner.pipe(list(command), penv, self.argv(*args), self.env)
        summary = backup_summary(out)
        if rc not in (0, 3) or summary is None or not summary.get("snapshot_id"):
            error = self.explain("backup --stdin", rc, err)
            if prc != 0:
                error = ResticError("%s; the command also failed (rc=%d): %s" % (
                    error, prc, perr.strip()[-1000:]))
            raise error
        return prc, perr, rc, summary

    def _backup_from_command(self, command, command_env, filename, tags, host):
        """restic 0.17+: ``backup --stdin-from-command``, the command wrapped so that it gets its own environment
        and none of restic's (the repository and its credentials), as the pipe does."""
        for name in command_env:
            if not ENV_NAME_RE.match(name):
                raise ResticError("command_env: %r is not a variable name" % name)
        bash = self.runner.module.get_bin_path("bash", required=True)
        env = dict(self.env)
        env.update(("SHP_CMD_ENV_" + k, v) for k, v in command_env.items())
        env.update(SHP_RESTIC_KEYS=" ".join(sorted(k for k in self.env if ENV_NAME_RE.match(k))),
                   SHP_CMD_KEYS=" ".join(sorted(command_env)))
        args = self.backup_args(tags, host, False) + ["--stdin-from-command", "--stdin-filename", filename, "--",
                                                      bash, "-c", COMMAND_WRAPPER, "bash"] + list(command)
        rc, out, err = self.call(*args, env=env)
        summary = backup_summary(out)
        prc, perr = command_exit(err), command_stderr(err)
        if prc is not None and not (summary and summary.get("snapshot_id")):
            return prc, perr, rc, None
        if rc not in (0, 3) or summary is None or not summary.get("snapshot_id"):
            raise self.explain("backup --stdin-from-command", rc, err)
        return prc or 0, perr, rc, summary

    # -- retention and check -------------------------------------------------------------------
    def forget(self, policy, tags=None, host=None, group_by=None, prune=True, dry_run=False):
        args = ["forget", "--json"] + retention_args(policy)
        if tags:  # one taglist: snapshots with all of them (repeated --tag is OR)
            args += ["--tag", ",".join(tags)]
        if host:
            args += ["--host", host]
        if group_by is not None:
            args += ["--group-by", group_by]
        if prune:
            args.append("--prune")
        if dry_run:
            args.append("--dry-run")
        out = self.checked("forget", *args)
        arrays = [x for x in json_lines(out) if isinstance(x, list)]
        return forget_groups(arrays[0] if arrays else [])

    def check(self, read_data_subset=None):
        args = ["check"]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        rc, out, err = self.call(*args)
        return rc, out, err

    # -- restore -------------------------------------------------------------------------------
    def ls(self, snapshot):
        """(snapshot, [nodes]) of ``restic ls --json SNAPSHOT``."""
        msgs = json_lines(self.checked("ls", "ls", "--json", snapshot))
        snap = next((m for m in msgs if m.get("struct_type") == "snapshot"), None)
        nodes = [m for m in msgs if m.get("struct_type") == "node"]
        if snap is None:
            raise ResticError("snapshot: restic ls %s printed no snapshot" % snapshot)
        return snapshot_view(snap), nodes

    def restore(self, snapshot, target, verify=False, include=()):
        args = ["restore", snapshot, "--target", target]
        for path in include or ():
            args += ["--include", path]
        if verify:
            args.append("--verify")
        return self.checked("restore", *args)

    def dump_to_command(self, snapshot, filename, command, command_env):
        """Stream FILENAME of SNAPSHOT (``restic dump``) into COMMAND's stdin. Returns (stdout, stderr)
        of the command; raises naming the side that failed."""
        path = "/" + filename.lstrip("/")
        rrc, rerr, crc, out, err = self.runner.pipe_from_restic(
            self.argv("dump", snapshot, path), self.env, list(command),
            {k: str(v) for k, v in (command_env or {}).items()})
        if rrc != 0:
            error = self.explain("dump %s" % path, rrc, rerr)
            if crc != 0:
                error = ResticError("%s; the command also failed (rc=%d): %s" % (error, crc, err.strip()[-1000:]))
            raise error
        if crc != 0:
            raise ResticError("command: exited %d while reading %s from snapshot %s: %s" % (
                crc, path, snapshot[:8], (err or out).strip()[-1500:]))
        return out, err

    def resolve_stored(self, snapshot, filename, tags=None, host=None):
        """(snapshot view, path) of a file saved from stdin as FILENAME: for 'latest' the newest snapshot holding
        it under any of its stored_paths (restic 0.18.0 saved it flat), else the given snapshot and the path it
        holds."""
        paths = stored_paths(filename)
        if snapshot == "latest":
            found = [(snap, path) for path in paths for snap in self.snapshots(tags=tags, host=host, paths=[path])]
            if not found:
                raise ResticError("snapshot: no snapshot matches tags=%s host=%s paths=%s" % (
                    tags or [], host or "any", paths))
            return max(found, key=lambda x: parse_time_ns(x[0]["time"]))
        snap = self.resolve(snapshot)
        held = [path for path in paths if path in snap["paths"]]
        return snap, (held or paths)[0]

    def resolve(self, snapshot, tags=None, host=None, paths=None):
        """The snapshot view for 'latest' (with filters) or an id / short id."""
        if snapshot == "latest":
            snaps = self.snapshots(tags=tags, host=host, paths=paths)
            if not snaps:
                raise ResticError("snapshot: no snapshot matches tags=%s host=%s paths=%s" % (
                    tags or [], host or "any", paths or []))
            return sorted(snaps, key=lambda s: parse_time_ns(s["time"]))[-1]
        rc, out, err = self.call("snapshots", "--json", snapshot)
        data = json_lines(out)
        if rc != 0 or not data or not data[0]:
            if rc != 0 and classify_failure(self.version, rc, err):
                raise self.explain("snapshots", rc, err)
            raise ResticError("snapshot: no snapshot %s in %s" % (snapshot, self.shown))
        return snapshot_view(data[0][0])


# ---------------------------------------------------------------------------------------------
# Shared by the modules
# ---------------------------------------------------------------------------------------------

def connection_spec():
    """argument_spec entries every restic_* module takes (documented in the restic doc fragment)."""
    return dict(
        repository=dict(type="str", required=True),
        password=dict(type="str", no_log=True),
        password_file=dict(type="path", no_log=False),
        env=dict(type="dict", default={}, no_log=True),
        cache_dir=dict(type="path"),
        options=dict(type="list", elements="str", default=[]),
        cacert=dict(type="path"),
        restic_bin=dict(type="path"),
        unlock_stale=dict(type="bool", default=True),
    )


CONNECTION_EXCLUSIVE = [("password", "password_file")]
CONNECTION_ONE_OF = [("password", "password_file")]


def validate_connection(p):
    repo = p["repository"] or ""
    if not repo.strip():
        raise ResticError("repository: must not be empty")
    scheme = repo.split(":", 1)[0] if ":" in repo and not repo.startswith("/") else "local"
    if scheme not in ("local", "sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone"):
        raise ResticError("repository: unknown backend %r in %r (a local path, sftp:, rest:, s3:, ...)" % (
            scheme, repo))
    if scheme == "local" and not repo.startswith("/"):
        raise ResticError("repository: a local repository must be an absolute path, got %r" % repo)
    if p.get("password_file"):
        try:
            mode = os.stat(p["password_file"]).st_mode
        except OSError as exc:
            raise ResticError("password_file: %s: %s" % (p["password_file"], exc.strerror)) from None
        if not stat.S_ISREG(mode):
            raise ResticError("password_file: %s is not a regular file" % p["password_file"])
    if p.get("password") is not None and not p["password"]:
        raise ResticError("password: must not be empty")
    for opt in p.get("options") or []:
        if "=" not in opt:
            raise ResticError("options: %r is not key=value" % opt)
    return scheme


def insecure_password_file(path):
    """Whether the password file can be read by group or others."""
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False


def open_client(module, password_file, runner=None):
    p = module.params
    binary = p.get("restic_bin") or module.get_bin_path("restic", required=True)
    return Restic(runner or Runner(module), binary, p["repository"], password_file, env=p.get("env"),
                  cache_dir=p.get("cache_dir"), options=p.get("options"), cacert=p.get("cacert"),
                  unlock_stale=p.get("unlock_stale", True))


def run_with_client(module, action, runner=None):
    """Validate the connection options, make the password file, run ACTION(module, client) and
    exit with its result (a dict) or fail with the ResticError it raised. The password of the
    repository URL is masked in every message and returned value, and is one of the module's
    no_log values (so Ansible masks it in invocation.module_args and wherever else it appears)."""
    p = module.params
    secrets = repository_secrets(p.get("repository"))
    module.no_log_values.update(secrets)
    try:
        validate_connection(p)
    except ResticError as exc:
        module.fail_json(msg=scrub(str(exc), secrets), changed=False)
    if p.get("password_file") and insecure_password_file(p["password_file"]):
        module.warn("password_file %s can be read by group or others; make it 0600" % p["password_file"])
    try:
        with PasswordFile(password=p.get("password"), path=p.get("password_file")) as pw_path:
            client = open_client(module, pw_path, runner)
            client.version  # noqa: B018 - detect (and refuse too old) restic before anything else
            result = action(module, client)
    except ResticError as exc:
        module.fail_json(msg=scrub(str(exc), secrets), changed=False, repository=redact(p["repository"]))
    result.setdefault("repository", redact(p["repository"]))
    result["restic_version"] = version_str(client.version)
    result["stale_locks_removed"] = client.stale_locks_removed
    module.exit_json(**scrub(result, secrets))


def url_password_span(repository):
    """(start, end) of the password in a repository URL's user information, or None.

    Only locations with ``://`` carry one (``rest:https://user:pw@host:8000/repo``,
    ``s3:https://key:secret@host/bucket``); ``sftp:user@host:/path`` names a user without a password. The
    user ends at the first ``:`` of the user information, and the password at the LAST ``@`` after
    ``://``: a password may hold a raw ``@``, ``:`` or ``/`` (which restic cannot parse, but echoes) or their
    percent-encoded forms. An ``@`` in the path is therefore taken as the end of a password: more is masked,
    never less."""
    repository = repository or ""
    start = repository.find("://")
    if start < 0:
        return None
    start += 3
    at = repository.rfind("@", start)
    if at < 0:
        return None
    colon = repository.find(":", start, at)
    if colon < 0 or "/" in repository[start:colon]:
        return None  # a user without a password (or an "@" in the path of a URL without user information)
    return colon + 1, at


def redact(repository):
    """The repository location with the password of its URL replaced by ``***``
    (``rest:https://user:***@host:8000/repo``); other locations unchanged."""
    span = url_password_span(repository)
    if span is None:
        return repository or ""
    return repository[:span[0]] + "***" + repository[span[1]:]


def repository_secrets(repository):
    """The password of the repository URL as written and percent-decoded (each once, non-empty)."""
    span = url_password_span(repository)
    if span is None:
        return []
    raw = repository[span[0]:span[1]]
    return [x for x in dict.fromkeys((raw, unquote(raw))) if x]


# Go's URL parser quotes what it took for the port: with a raw "/", "?" or "#" in the password, that is the
# password's beginning ('invalid port ":pa" after host' for rest:http://u:pa/ss@host/).
GO_BAD_PORT_RE = re.compile(r'(invalid port )"[^"]*"( after host)')


def scrub_output(text, secrets):
    """restic's output with the URL password masked: every occurrence of SECRETS and the port Go's URL
    parser quotes when a password holds a raw "/", "?" or "#"."""
    return GO_BAD_PORT_RE.sub(r'\1"***"\2', scrub(text or "", secrets))


def scrub(value, secrets):
    """VALUE (a string, or dicts/lists/tuples of them) with every occurrence of each secret replaced by
    ``***``, the longest secret first (so a secret holding another is masked whole)."""
    ordered = sorted((x for x in secrets or () if x), key=len, reverse=True)
    if not ordered:
        return value
    if isinstance(value, str):
        for secret in ordered:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {scrub(k, ordered): scrub(v, ordered) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(x, ordered) for x in value)
    return value


# ---------------------------------------------------------------------------------------------
# What each module does (the module files only declare options)
# ---------------------------------------------------------------------------------------------

READ_DATA_SUBSET_RE = re.compile(r"^(\d+/\d+|\d+(\.\d+)?%|\d+[kKmMgGtT]?)$")
LIST_CAP = 100


def restic_missing(module):
    """Whether the restic binary the module would run is not on the host (yet)."""
    binary = module.params.get("restic_bin") or module.get_bin_path("restic")
    return not binary or not os.path.exists(binary)


def predict_repository_without_restic(p):
    """restic_repository in check mode on a host without restic yet (``site.yml --check`` on a fresh host, where the
    same run installs restic first): the repository cannot be asked, so the prediction is what the run does with a
    repository it does not find - initialise it - and the result says it could not be verified."""
    return {"changed": True, "initialized": True, "checked": False, "restic_missing": True,
            "repository": redact(p.get("repository")),
            "msg": "check mode: restic is not installed on this host yet (the run installs it first), so the "
                   "repository could not be asked; the run initialises it unless it exists already"}


def repository_action(module, client):
    """restic_repository: the repository exists (initialised when missing); optionally checked."""
    p = module.params
    subset = p.get("read_data_subset")
    if subset and not READ_DATA_SUBSET_RE.match(subset):
        raise ResticError("read_data_subset: %r is not n/t, x%% or a size like 500M" % subset)
    if subset and not p.get("check"):
        raise ResticError("read_data_subset: only with check=true")
    config = client.config()
    result = {"changed": False, "initialized": False, "checked": False}
    if config is None:
        result.update(changed=True, initialized=True)
        if module.check_mode:
            result["msg"] = "the repository would be initialised"
            return result
        config = client.init()
    result["repository_id"] = config.get("id")
    result["repository_format"] = config.get("version")
    if p.get("check"):
        if module.check_mode:
            client.global_args.append("--no-lock")
        rc, out, err = client.check(subset)
        result["check_output"] = "\n".join((out + err).strip().splitlines()[-20:])
        if rc != 0 and classify_failure(client.version, rc, err):
            raise client.explain("check", rc, err)
        if rc != 0:
            raise ResticError("check: the repository %s has errors (rc=%d):\n%s" % (
                client.shown, rc, result["check_output"]))
        result["checked"] = True
    return result


def validate_backup(p):
    paths, command = p.get("paths") or [], p.get("command") or []
    if bool(paths) == bool(command):
        raise ResticError("paths: give either paths or command (exactly one)")
    for path in paths:
        if not os.path.isabs(path):
            raise ResticError("paths: %r is not an absolute path" % path)
    if command:
        name = p.get("filename") or ""
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ResticError("filename: a relative file name (like db/app.dump) is required with command")
    if p.get("command_env") and not command:
        raise ResticError("command_env: only with command")
    for name in p.get("command_env") or {}:
        if not ENV_NAME_RE.match(name):
            raise ResticError("command_env: %r is not a variable name" % name)
    for tag in p.get("tags") or []:
        if not tag or "," in tag:
            raise ResticError("tags: %r is not a tag (non-empty, no comma)" % tag)


def snapshot_ids(client, short_id):
    """(full id, short id) for the id a backup summary printed (short on 0.14, full from 0.16)."""
    snaps = client.snapshots(ids=[short_id]) if short_id else []
    full = snaps[0]["id"] if snaps else short_id
    return full, (full or "")[:8]


def backup_action(module, client):
    """restic_backup: a snapshot of paths or of a command's stdout, with its summary."""
    p = module.params
    validate_backup(p)
    tags, host = p.get("tags") or [], p.get("host")
    result = {"changed": True, "source": "paths" if p.get("paths") else "command", "tags": tags, "host": host,
              "unreadable": [], "exit_code": 0, "snapshot_id": None, "snapshot_short_id": None}
    if p.get("paths"):
        backup = dict(paths=p["paths"], excludes=p.get("excludes"), tags=tags, host=host,
                      exclude_caches=p.get("exclude_caches"), one_file_system=p.get("one_file_system"))
        if module.check_mode or p.get("skip_if_unchanged"):
            rc, summary, errors = client.backup_paths(dry_run=True, **backup)
            if p.get("skip_if_unchanged") and nothing_new(summary) and not errors:
                result.update(summary_result(summary), changed=False, msg="nothing changed since the last snapshot")
                return result
            if module.check_mode:
                result.update(summary_result(summary), msg="a snapshot would be made (dry run)")
                result["unreadable"] = unique_items(errors)[:LIST_CAP]
                return result
        rc, summary, errors = client.backup_paths(**backup)
        full, short = snapshot_ids(client, summary.get("snapshot_id"))
        # "exit_code", not "rc": Ansible fails any task whose result has a non-zero rc
        result.update(summary_result(summary), exit_code=rc, snapshot_id=full, snapshot_short_id=short)
        if rc == 3:
            items = unique_items(errors)
            result["unreadable"] = items[:LIST_CAP]
            text = "restic could not read %d source file(s); snapshot %s lacks them: %s" % (
                len(items), short, ", ".join(items[:20]))
            if p.get("unreadable") == "fail":
                raise ResticError("paths: " + text)
            module.warn(text)
        return result
    # a command's stdout
    if module.check_mode:
        result["msg"] = "the command would be run and its output saved as %s" % p["filename"]
        return result
    summary, full, short = command_snapshot(client, p["command"], p.get("command_env"), p["filename"], tags, host,
                                            allow_empty=p.get("allow_empty"))
    result.update(summary_result(summary), snapshot_id=full, snapshot_short_id=short)
    return result


def command_snapshot(client, command, command_env, filename, tags, host, allow_empty=False):
    """A snapshot of COMMAND's stdout as FILENAME, or ResticError: a command that failed (or printed
    nothing, unless ALLOW_EMPTY) leaves no snapshot: restic 0.17+ makes none, the one an older restic made is
    forgotten. Returns (summary, full id, short id)."""
    prc, perr, rc, summary = client.backup_command(command, command_env, filename, tags, host)
    if summary is None:
        raise ResticError("command: exited %d: %s; restic made no snapshot (restic %s ran it with "
                          "--stdin-from-command)" % (prc, perr.strip()[-1500:], version_str(client.version)))
    full, short = snapshot_ids(client, summary.get("snapshot_id"))
    empty = int(summary.get("total_bytes_processed") or 0) == 0
    problem = None
    if prc != 0:
        problem = "command: exited %d: %s" % (prc, perr.strip()[-1500:])
    elif empty and not allow_empty:
        problem = "command: printed nothing (allow_empty=false): %s" % perr.strip()[-1500:]
    elif rc != 0 and not (empty and client.features["stdin_from_command"]):  # 0.17+: rc 3 for an empty output
        problem = "command: restic could not read all of its output (rc=%d)" % rc
    if problem:
        client.forget_ids([full])
        raise ResticError("%s; the incomplete snapshot %s was forgotten" % (problem, short))
    return summary, full, short


def forget_action(module, client):
    """restic_forget: the retention policy applied (and pruned); changed when snapshots go."""
    p = module.params
    policy = {k: p.get(k) for k in RETENTION_KEYS}
    policy["keep_tags"] = p.get("keep_tags") or []
    for key in RETENTION_KEYS[:6]:
        if p.get(key) is not None and p[key] < 0:
            raise ResticError("%s: must be 0 or more (-1 keeps all only from restic 0.17)" % key)
    if not retention_args(policy):
        raise ResticError("keep_last, keep_daily, ...: give at least one retention option; forget without a "
                          "policy would remove nothing")
    keep, remove = client.forget(policy, tags=p.get("tags"), host=p.get("host"), group_by=p.get("group_by"),
                                 prune=p.get("prune"), dry_run=module.check_mode)
    result = {"changed": bool(remove), "kept": keep, "removed": remove,
              "pruned": bool(remove) and p.get("prune") and not module.check_mode}
    if module._diff:
        result["diff"] = {"before": {"snapshots": sorted(s["short_id"] for s in keep + remove)},
                          "after": {"snapshots": sorted(s["short_id"] for s in keep)}}
    return result


def restore_action(module, client):
    """restic_restore: the snapshot's files in target; changed only when something differed."""
    p = module.params
    if p.get("command"):
        return restore_into_command(module, client)
    target = p.get("target") or ""
    if not os.path.isabs(target):
        raise ResticError("target: %r is not an absolute path" % target)
    snap = client.resolve(p.get("snapshot") or "latest", tags=p.get("tags"), host=p.get("host"),
                          paths=p.get("paths"))
    nodes = client.ls(snap["id"])[1]
    include = [x.rstrip("/") or "/" for x in p.get("include") or []]
    for path in include:
        if not path.startswith("/"):
            raise ResticError("include: %r is not an absolute path (as stored in the snapshot)" % path)
    if include:
        nodes = [n for n in nodes if any(under(n.get("path") or "", x) for x in include)]
        if not nodes:
            raise ResticError("include: snapshot %s holds nothing under %s" % (snap["short_id"], ", ".join(include)))
    plan = restore_plan(nodes, target)
    if p.get("force") and not plan:
        plan = [(n.get("path"), "forced") for n in nodes if n.get("type") == "file"]
    result = {"changed": bool(plan), "snapshot": snap, "target": target, "restored_count": len(plan),
              "restored": [path for path, dummy in plan][:LIST_CAP]}
    if module._diff:
        result["diff"] = {"before": {"target": target},
                          "after": {"target": target, "snapshot": snap["short_id"]},
                          "prepared": "\n".join("%s (%s)" % x for x in plan[:LIST_CAP])}
    if not plan or module.check_mode:
        return result
    # restic 0.14 does not replace an existing symlink ("file exists"): remove the ones it will recreate
    for node in nodes:
        if node.get("type") == "symlink":
            path = os.path.join(target, (node.get("path") or "").lstrip("/"))
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
    client.restore(snap["id"], target, verify=p.get("verify"), include=include)
    left = restore_plan(nodes, target)
    if left:
        module.warn("after the restore %d path(s) still differ from snapshot %s: %s" % (
            len(left), snap["short_id"], ", ".join("%s (%s)" % x for x in left[:10])))
    return result


def restore_into_command(module, client):
    """restic_restore with command: one file of the snapshot streamed into a command (a database
    restore through ``docker exec -i``). Always a change when it runs; check mode only resolves."""
    p = module.params
    name = (p.get("filename") or "").lstrip("/")
    if not name:
        raise ResticError("filename: the file of the snapshot to stream into command is required with command")
    if p.get("target"):
        raise ResticError("target: give either target or command, not both")
    for var in p.get("command_env") or {}:
        if not ENV_NAME_RE.match(var):
            raise ResticError("command_env: %r is not a variable name" % var)
    if p.get("paths"):
        snap = client.resolve(p.get("snapshot") or "latest", tags=p.get("tags"), host=p.get("host"),
                              paths=p["paths"])
        stored = "/" + name
    else:  # the file as any restic saved it (0.18.0: under its flat name)
        snap, stored = client.resolve_stored(p.get("snapshot") or "latest", name, tags=p.get("tags"),
                                             host=p.get("host"))
    result = {"changed": True, "snapshot": snap, "filename": "/" + name, "restored_count": 1,
              "restored": [stored]}
    if module._diff:
        result["diff"] = {"before": "", "after": "stream /%s of snapshot %s into %s\n" % (
            name, snap["short_id"], " ".join(p["command"]))}
    if module.check_mode:
        result["msg"] = "/%s of snapshot %s would be streamed into the command" % (name, snap["short_id"])
        return result
    out, err = client.dump_to_command(snap["id"], stored, p["command"], p.get("command_env"))
    result["stdout_lines"] = (out or "").splitlines()[-50:]
    result["stderr_lines"] = (err or "").splitlines()[-50:]
    return result


# ---------------------------------------------------------------------------------------------
# restic_snapshot_info
# ---------------------------------------------------------------------------------------------

GROUP_FIELDS = ("host", "tags", "paths")


def parse_group_by(text):
    """The fields of a group_by option (restic's spelling: ``host,tags``; "" for one group)."""
    fields = [f.strip() for f in (text or "").split(",") if f.strip()]
    for field in fields:
        if field not in GROUP_FIELDS:
            raise ResticError("group_by: %r is not one of %s (comma-separated)" % (field, ", ".join(GROUP_FIELDS)))
    if len(set(fields)) != len(fields):
        raise ResticError("group_by: %r names a field twice" % text)
    return [f for f in GROUP_FIELDS if f in fields]


def group_key(snap, fields):
    """The group of a snapshot view: {field: value} for the grouping fields (tags and paths sorted)."""
    key = {}
    for field in fields:
        value = snap.get(field)
        key[field] = sorted(value or []) if field in ("tags", "paths") else value
    return key


def with_age(snap, now):
    """A copy of a snapshot view with its age (seconds and hours, from NOW in seconds since the epoch)."""
    age = now - parse_time_ns(snap["time"]) / 1e9
    return dict(snap, age_seconds=round(age), age_hours=round(age / 3600.0, 2))


def snapshot_groups(snaps, fields, now):
    """[{key, count, latest}] of snapshot views grouped by FIELDS, each group's newest snapshot with
    its age; groups in the order of their newest snapshot, newest first."""
    groups = {}
    for snap in snaps:
        key = group_key(snap, fields)
        ident = json.dumps(key, sort_keys=True)
        entry = groups.setdefault(ident, {"key": key, "count": 0, "latest": None})
        entry["count"] += 1
        if entry["latest"] is None or parse_time_ns(snap["time"]) > parse_time_ns(entry["latest"]["time"]):
            entry["latest"] = snap
    out = sorted(groups.values(), key=lambda g: parse_time_ns(g["latest"]["time"]), reverse=True)
    return [dict(g, latest=with_age(g["latest"], now)) for g in out]


def snapshot_info_action(module, client, now=None):
    """restic_snapshot_info: the snapshots matching tags/host/paths, the newest overall and per group,
    with their ages. Read-only: restic runs with --no-lock, so a running backup does not block it."""
    p = module.params
    fields = parse_group_by(p.get("group_by"))
    for tag in p.get("tags") or []:
        if not tag or "," in tag:
            raise ResticError("tags: %r is not a tag (non-empty, no comma)" % tag)
    for path in p.get("paths") or []:
        if not os.path.isabs(path):
            raise ResticError("paths: %r is not an absolute path (as stored in the snapshots)" % path)
    now = time.time() if now is None else now
    if "--no-lock" not in client.global_args:
        client.global_args.append("--no-lock")
    snaps = client.snapshots(tags=p.get("tags"), host=p.get("host"), paths=p.get("paths"))
    snaps = sorted(snaps, key=lambda s: parse_time_ns(s["time"]))
    result = {"changed": False, "count": len(snaps), "groups": snapshot_groups(snaps, fields, now),
              "latest": with_age(snaps[-1], now) if snaps else None,
              "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
    if p.get("list_snapshots", True):
        result["snapshots"] = [with_age(s, now) for s in snaps]
    return result
