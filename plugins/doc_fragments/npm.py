# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # How every npm_* module that manages objects reaches and logs in to Nginx Proxy Manager.
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of Nginx Proxy Manager's admin interface, for example V(http://127.0.0.1:81) (on seed 003 the admin
        port is bound to 127.0.0.1, so run the module on the NPM host or through an SSH tunnel). A trailing C(/api) is
        accepted.
    type: str
    required: true
  username:
    description:
      - Email address of the NPM user the module logs in as (C(identity) of C(POST /api/tokens)).
    type: str
    required: true
    aliases: [identity, email]
  password:
    description:
      - Password of O(username).
    type: str
    required: true
    aliases: [secret]
  totp_secret:
    description:
      - Base32 TOTP secret of O(username) when two-factor authentication is turned on for that account (NPM 2.14+).
        NPM then answers the login with a challenge; the module computes the current code (RFC 6238, SHA1, 6 digits,
        30 seconds) and gets the token from C(POST /api/tokens/2fa).
      - Needs a correct clock on the machine the module runs on. Without it, a two-factor account fails with a
        message naming this option.
    type: str
  validate_certs:
    description: Verify the server's TLS certificate when O(url) is HTTPS.
    type: bool
    default: true
  timeout:
    description: Timeout in seconds of each HTTP request.
    type: int
    default: 30
  token_cache:
    description:
      - Keep the API token (valid one day) in a cache file so that every task and host of a run, and later runs,
        log in once instead of once per task. The file is mode 0600 in a 0700 directory of the user running the
        module, named after a slow hash (PBKDF2) of O(url), O(username) and O(password), and holds the token and its
        expiry only. A changed O(password) therefore logs in again, and a wrong one fails at once.
      - A token the server refuses is dropped and the module logs in once more and repeats the request once. NPM
        2.12 and older refuse with 401; 2.13 and newer with 400 C(Token has expired), or 500 C(Internal Error) for
        a token signed before NPM was reinstalled (checked with C(GET /api/users/me) before the login).
    type: bool
    default: true
  token_cache_dir:
    description:
      - Directory of the token cache. Defaults to C(selfhosted-npm-<uid>) under the temporary directory of the
        machine the module runs on. A directory not owned by that user or open to others is not used.
    type: path
"""
