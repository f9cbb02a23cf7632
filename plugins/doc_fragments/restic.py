# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # How every restic_* module reaches its repository.
    DOCUMENTATION = r"""
options:
  repository:
    description:
      - The restic repository, as restic spells it, for example C(/srv/backup/restic) (a local path),
        C(sftp:backup@192.0.2.10:/srv/restic), C(rest:https://user:pass@backup.example.test:8000/host1/) or
        C(s3:https://s3.example.test/bucket/host1).
      - It reaches restic through the C(RESTIC_REPOSITORY) environment variable, never the command line, so REST
        credentials in the URL stay out of the process list.
      - The password of a URL (C(rest:https://user:PASSWORD@host:8000/repo), C(s3:https://key:SECRET@host/bucket))
        is never shown, although this option is not C(no_log) (the rest of the location is useful in messages). The
        user information ends at the last C(@) after C(://) and the password starts after its first C(:), so
        passwords holding C(/), C(@) or C(:), raw or percent-encoded (C(%2F), C(%40), C(%3A); restic needs a C(/)
        encoded), are found whole. Messages and results show C(***) in its place (C(repository) in results),
        restic's own output (which echoes the location) included; the password as written and percent-decoded
        are the module's no_log values, so Ansible shows C(********) for them in C(invocation.module_args) and
        anywhere else in the result. C(sftp:user@host:/path) carries no password.
    type: str
    required: true
  password:
    description:
      - The repository password (from Ansible Vault). It is written to a temporary C(0600) file in a private
        directory for restic's C(RESTIC_PASSWORD_FILE) and removed when the module ends; never on a command line.
      - Exactly one of O(password) and O(password_file) is required.
    type: str
  password_file:
    description:
      - A file on the managed host holding the repository password (mode C(0600); the module warns otherwise).
    type: path
  env:
    description:
      - Environment for restic only, for backend credentials, for example C(AWS_ACCESS_KEY_ID) and
        C(AWS_SECRET_ACCESS_KEY) for S3-compatible storage, C(RESTIC_REST_USERNAME) and C(RESTIC_REST_PASSWORD) for a
        REST server (restic 0.16+), C(B2_ACCOUNT_ID)... Never logged.
      - C(RESTIC_PASSWORD*) and C(RESTIC_REPOSITORY*) from the module's own environment are ignored, so the
        password and repository are always the ones given here.
    type: dict
    default: {}
  cache_dir:
    description: restic's cache directory (C(--cache-dir)); restic's default (C(~/.cache/restic)) when unset.
    type: path
  options:
    description:
      - Extended options, each C(key=value), passed as C(-o key=value), for example
        C(sftp.command=ssh backup@192.0.2.10 -i /root/.ssh/backup -s sftp) or C(s3.region=eu-central-1).
    type: list
    elements: str
    default: []
  cacert:
    description: A CA certificate file to trust for a REST or S3 server (C(--cacert)).
    type: path
  restic_bin:
    description: The restic binary; by default C(restic) from the PATH. restic 0.14 (Debian 12) or newer is needed.
    type: path
  unlock_stale:
    description:
      - When restic refuses a command because the repository is locked, run C(restic unlock) once and retry.
        C(restic unlock) without C(--remove-all) removes only stale locks (the holder's process is gone on this
        host, or the lock is older than 30 minutes), so a live backup's lock is never removed and the task then
        fails naming the lock. The number removed is returned as RV(stale_locks_removed) by the modules.
    type: bool
    default: true
requirements:
  - restic 0.14 or newer on the managed host (the C(restic) Debian package).
"""
