# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of npm_admin: the first admin account of Nginx Proxy Manager, for both API generations.

- 2.13 and newer start without any user: ``GET /api/`` says ``setup: false`` and ``POST /api/users`` (without a
  token) creates the first user, made admin. (``INITIAL_ADMIN_EMAIL``/``INITIAL_ADMIN_PASSWORD`` at first start
  create it instead; the module then finds the account ready.)
- 2.12 and older create ``admin@example.com`` / ``changeme``: the module logs in with it and immediately changes
  the email (``PUT /api/users/{id}``) and the password (``PUT /api/users/{id}/auth``).

A run where the declared credentials already log in changes nothing (one health request and one login, whose
token is cached for the tasks that follow).
"""

from __future__ import annotations

import re

from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import (
    DEFAULT_EMAIL,
    DEFAULT_PASSWORD,
    NpmClient,
    NpmError,
    Outcome,
)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ADMIN_SPEC = dict(
    url=dict(type="str", required=True),
    email=dict(type="str", required=True),
    password=dict(type="str", required=True, no_log=True),
    totp_secret=dict(type="str", no_log=True),
    name=dict(type="str"),
    nickname=dict(type="str"),
    default_email=dict(type="str", default=DEFAULT_EMAIL),
    default_password=dict(type="str", default=DEFAULT_PASSWORD, no_log=True),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
    token_cache=dict(type="bool", default=True),
    token_cache_dir=dict(type="path"),
)


def make_admin_client(p):
    return NpmClient(p["url"], p["email"], p["password"], validate_certs=p["validate_certs"], timeout=p["timeout"],
                     token_cache=p["token_cache"], cache_dir=p.get("token_cache_dir"),
                     totp_secret=p.get("totp_secret"))


def run_admin(client, module):
    p = module.params
    if not EMAIL_RE.match(p["email"] or ""):
        raise NpmError("email: %r is not an email address" % p["email"])
    if p["email"].lower() == (p["default_email"] or "").lower() and p["password"] == p["default_password"]:
        raise NpmError("password: the declared credentials are NPM's well-known default ones; choose others")
    result = {"changed": False, "changes": [], "warnings": []}
    client.health()
    result["setup_before"] = client.is_setup
    profile = {"name": p.get("name"), "nickname": p.get("nickname")}
    if not client.is_setup:  # 2.13+: no user yet
        result.update(changed=True, method="first_user", changes=["admin %s (create with the setup endpoint)"
                                                                  % p["email"]])
        if module.check_mode:
            return result
        body = {"name": profile["name"] or "Administrator", "nickname": profile["nickname"] or "Admin",
                "email": p["email"], "roles": ["admin"], "is_disabled": False,
                "auth": {"type": "password", "secret": p["password"]}}
        user = client.public_call("POST", "/api/users", body) or {}
        client.login()
        result["user"] = user_view(user)
        return result
    try:
        client.login()
        result["method"] = "login"
    except NpmError as exc:
        if exc.status not in (400, 401, 403) or exc.option == "totp_secret":
            raise
        result["method"] = "default_admin"
    if result["method"] == "login":
        me = None
        if profile["name"] or profile["nickname"]:
            me = client.call("GET", "/api/users/me") or {}
            update = dict((k, v) for k, v in profile.items() if v and me.get(k) != v)
            if update:
                result["changed"] = True
                result["changes"] += ["%s: %r -> %r" % (k, me.get(k), v) for k, v in update.items()]
                if not module.check_mode:
                    me = client.call("PUT", "/api/users/%s" % me["id"], update) or me
        result["user"] = user_view(me) if me else {"email": p["email"]}
        return result
    return from_default(client, module, result, profile)


def from_default(client, module, result, profile):
    """≤ 2.12 (or an account still on the default credentials): log in as the default admin and change them."""
    p = module.params
    try:
        token = client.request_token(p["default_email"], p["default_password"])[0]
    except NpmError as exc:
        if exc.status not in (400, 401, 403):
            raise
        raise NpmError("password: NPM %s refused the declared credentials of %s and the default ones (%s); the "
                       "admin account was set up with another password. Give the current credentials, or reset the "
                       "account in NPM." % (client.version_text, p["email"], p["default_email"])) from None
    result.update(changed=True, changes=["admin %s -> %s (email)" % (p["default_email"], p["email"]),
                                         "admin password (changed from the default)"])
    if module.check_mode:
        return result
    client.token = token
    try:
        me = client.call("GET", "/api/users/me") or {}
        update = {"email": p["email"]}
        update.update(dict((k, v) for k, v in profile.items() if v))
        me = client.call("PUT", "/api/users/%s" % me["id"], update) or me
        client.call("PUT", "/api/users/%s/auth" % me["id"], {"type": "password", "current": p["default_password"],
                                                             "secret": p["password"]})
    except NpmError as exc:
        raise Outcome("NPM refused to change the default admin account: %s" % exc.msg, result) from None
    client.token = None
    client.login()
    result["user"] = user_view(me)
    return result


def user_view(user):
    return dict((k, user.get(k)) for k in ("id", "email", "name", "nickname", "roles") if k in (user or {}))
