# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for Authelia declared as code.

``authelia_users_database``
    Inventory users ``[{name, displayname, email, groups, password, disabled}]`` to the content of Authelia's
    ``users_database.yml`` (file authentication backend), passwords hashed with argon2id through passlib, using
    Authelia's recommended parameters (m=65536 KiB, t=3, p=4, 32-byte key, 16-byte salt).

    The hashes are *stable*: the same user with the same password gives byte-identical output on every run, so the
    file is not rewritten and the container is not restarted unless a password or a user changes. The salt is
    derived, not random: ``HMAC-SHA256(salt_key, "authelia-users-database-salt\\0" + user name)`` cut to 16 bytes,
    where ``salt_key`` is a per-site secret the role keeps on the host (generated once, like its other secrets).

    Why that is acceptable: a salt must be unique (so one computation never attacks two hashes and precomputed
    tables are useless) and need not be random or secret. The derived salt is unique per user and per site (two
    users with the same password, or the same user on two sites, get different hashes) and unpredictable without
    the site key. The password is deliberately kept *out* of the salt: a salt computed as HMAC(key, name +
    password) would be a fast, unsalted verifier of the password for anyone holding the key - and the key lives on
    the same host as the users file - which would let an attacker test guesses at HMAC speed instead of argon2's.
    The only cost of a per-user salt is that successive passwords of the same user share it, so an attacker who
    holds several historical copies of the file can attack that user's old and new hashes in one pass.

``authelia_users_check``
    The same validation of the users without hashing anything (the role runs it before it touches the host).

``authelia_session_cookies``
    Validates ``session.cookies`` (domain, https ``authelia_url`` and ``default_redirection_url`` inside it) as
    Authelia 4.38 does and returns them; an empty ``default_redirection_url`` is dropped.

``authelia_access_control``
    Validates the access control rules declared in inventory and returns them verbatim, with the default policy,
    failing on the errors Authelia would refuse to start with (policy, domain/domain_regex, bypass with subject,
    subject prefixes, methods, regular expressions), naming the rule and the field.

``npm_authelia_hosts``
    Expands ``authelia: true`` on Nginx Proxy Manager proxy hosts into Authelia's NGINX auth_request snippet
    (appended to the host's own ``advanced_config``); ``authelia: false`` makes ``advanced_config`` explicit (the
    host's own or empty) so that a formerly protected host loses the snippet; strips the ``authelia`` key, so the list
    can go straight to ``selfhosted.platform.npm_proxy_hosts``.

Error messages name the user or rule and the field; they never contain a password.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import warnings
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

# Authelia's recommended argon2id parameters (its documentation's defaults for the file backend).
ARGON2_MEMORY = 65536  # KiB
ARGON2_ITERATIONS = 3
ARGON2_PARALLELISM = 4
ARGON2_KEY_LENGTH = 32
ARGON2_SALT_LENGTH = 16
SALT_CONTEXT = b"authelia-users-database-salt\0"
MIN_SALT_KEY = 16

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
GROUP_NAME = re.compile(r"^[^\s,]+$")
USER_KEYS = frozenset(("name", "displayname", "email", "groups", "password", "disabled"))

POLICIES = ("bypass", "one_factor", "two_factor", "deny")
RULE_KEYS = frozenset(("domain", "domain_regex", "policy", "subject", "networks", "resources", "query", "methods"))
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "OPTIONS", "COPY", "LOCK", "MKCOL",
           "MOVE", "PROPFIND", "PROPPATCH", "UNLOCK")
SUBJECT_PREFIXES = ("user:", "group:", "oauth2:client:")

# The contract shared with the NPM stand-in's edge: Authelia's documented NGINX auth_request integration (v4.38
# AuthRequest endpoint). AUTHELIA_URL is replaced by the proxy role's proxy_npm_authelia_url.
NPM_AUTHELIA_SNIPPET = """\
location /internal/authelia/authz {
    internal;
    proxy_pass AUTHELIA_URL/api/authz/auth-request;
    proxy_set_header X-Original-Method $request_method;
    proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header Content-Length "";
    proxy_set_header Connection "";
    proxy_pass_request_body off;
}

location / {
    auth_request /internal/authelia/authz;
    auth_request_set $user $upstream_http_remote_user;
    auth_request_set $groups $upstream_http_remote_groups;
    auth_request_set $name $upstream_http_remote_name;
    auth_request_set $email $upstream_http_remote_email;
    proxy_set_header Remote-User $user;
    proxy_set_header Remote-Groups $groups;
    proxy_set_header Remote-Name $name;
    proxy_set_header Remote-Email $email;
    auth_request_set $redirection_url $upstream_http_location;
    error_page 401 =302 $redirection_url;
    include conf.d/include/proxy.conf;
}
"""
AUTHELIA_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
LOCATION_ROOT = re.compile(r"(^|[;{}\s])location\s+(=\s*)?/\s*\{")


# --------------------------------------------------------------------------------------------------
# users_database.yml
# --------------------------------------------------------------------------------------------------

def _argon2_hasher():
    """passlib's argon2 handler with Authelia's parameters, or a clear error when the controller lacks it."""
    try:
        from passlib.hash import argon2
    except ImportError as exc:
        raise AnsibleFilterError("authelia_users_database: needs passlib on the controller "
                                 "(pip install passlib argon2-cffi)") from exc
    try:
        with warnings.catch_warnings():
            # argon2-cffi 23.1+ deprecates the __version__ attribute passlib 1.7.4 reads while loading its backend.
            warnings.simplefilter("ignore", DeprecationWarning)
            argon2.get_backend()
    except Exception as exc:
        raise AnsibleFilterError("authelia_users_database: passlib has no argon2 backend on the controller "
                                 "(pip install argon2-cffi)") from exc
    return argon2


def derive_salt(salt_key, user_name):
    """The 16-byte salt of a user: HMAC-SHA256 keyed by the per-site salt key over the user name (see the module
    docstring for why the password is not part of it)."""
    mac = hmac.new(salt_key.encode("utf-8"), SALT_CONTEXT + user_name.encode("utf-8"), hashlib.sha256)
    return mac.digest()[:ARGON2_SALT_LENGTH]


def hash_password(password, salt):
    """An argon2id PHC string (``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<key>``) as Authelia reads it."""
    argon2 = _argon2_hasher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return argon2.using(type="ID", memory_cost=ARGON2_MEMORY, rounds=ARGON2_ITERATIONS,
                            parallelism=ARGON2_PARALLELISM, digest_size=ARGON2_KEY_LENGTH, salt=salt).hash(password)


def _user_label(index, user):
    name = user.get("name") if isinstance(user, dict) else None
    if isinstance(name, str) and USER_NAME.match(name):
        return "users[%d] (%s)" % (index, name)
    return "users[%d]" % index


def _check_user(index, user):
    """The normalised user entry without its password, or an AnsibleFilterError naming the user and the field."""
    if not isinstance(user, dict):
        raise AnsibleFilterError("authelia_users_database: users[%d] must be a dict" % index)
    label = _user_label(index, user)
    unknown = sorted(set(user) - USER_KEYS)
    if unknown:
        raise AnsibleFilterError("authelia_users_database: %s: unknown key(s) %s (known: %s)"
                                 % (label, ", ".join(unknown), ", ".join(sorted(USER_KEYS))))
    name = user.get("name")
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise AnsibleFilterError("authelia_users_database: %s: name must be 1-100 characters of letters, digits and "
                                 "._@+- starting with a letter or digit" % label)
    password = user.get("password")
    if password is None or password == "":
        raise AnsibleFilterError("authelia_users_database: %s: password is missing or empty (set it from vault)"
                                 % label)
    if not isinstance(password, str):
        raise AnsibleFilterError("authelia_users_database: %s: password must be a string" % label)
    displayname = user.get("displayname", name)
    if not isinstance(displayname, str) or not displayname.strip():
        raise AnsibleFilterError("authelia_users_database: %s: displayname must be a non-empty string" % label)
    email = user.get("email", "")
    if not isinstance(email, str) or (email and not re.match(r"^[^@\s]+@[^@\s]+$", email)):
        raise AnsibleFilterError("authelia_users_database: %s: email must be an e-mail address" % label)
    groups = user.get("groups", [])
    if groups is None:
        groups = []
    if not isinstance(groups, list) or not all(isinstance(g, str) and GROUP_NAME.match(g) for g in groups):
        raise AnsibleFilterError("authelia_users_database: %s: groups must be a list of group names (no spaces or "
                                 "commas)" % label)
    disabled = user.get("disabled", False)
    if not isinstance(disabled, bool):
        raise AnsibleFilterError("authelia_users_database: %s: disabled must be true or false" % label)
    entry = {"disabled": disabled, "displayname": displayname, "groups": list(groups)}
    if email:
        entry["email"] = email
    return name, entry


def authelia_users_check(users):
    """The names of USERS once every user is valid (no hashing: cheap enough to run before anything changes)."""
    if users is None:
        users = []
    if not isinstance(users, list):
        raise AnsibleFilterError("authelia_users_database: the input must be a list of users")
    names = []
    for index, user in enumerate(users):
        name, _entry = _check_user(index, user)
        if name in names:
            raise AnsibleFilterError("authelia_users_database: %s: the name is declared twice"
                                     % _user_label(index, user))
        names.append(name)
    return names


def authelia_users_database(users, salt_key):
    """The document of Authelia's users_database.yml (``{"users": {name: {...}}}``) for USERS, hashes salted from
    SALT_KEY (a per-site secret of 16+ characters). Every user is validated before any hash is computed."""
    if not isinstance(salt_key, str) or len(salt_key) < MIN_SALT_KEY:
        raise AnsibleFilterError("authelia_users_database: the salt key must be a string of %d or more characters"
                                 % MIN_SALT_KEY)
    authelia_users_check(users)
    out = {}
    for index, user in enumerate(users or []):
        name, entry = _check_user(index, user)
        entry["password"] = hash_password(user["password"], derive_salt(salt_key, name))
        out[name] = entry
    return {"users": out}


# --------------------------------------------------------------------------------------------------
# access_control
# --------------------------------------------------------------------------------------------------

def _str_list(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _rule_label(index, rule):
    domains = _str_list(rule.get("domain")) or _str_list(rule.get("domain_regex")) or []
    return "rules[%d] (domain '%s')" % (index, ",".join(domains))


def _check_regexes(label, field, patterns):
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise AnsibleFilterError("authelia_access_control: %s: %s '%s' is not a valid regular expression: %s"
                                     % (label, field, pattern, exc)) from exc


def _check_rule(index, rule):
    if not isinstance(rule, dict):
        raise AnsibleFilterError("authelia_access_control: rules[%d] must be a dict" % index)
    label = _rule_label(index, rule)
    unknown = sorted(set(rule) - RULE_KEYS)
    if unknown:
        raise AnsibleFilterError("authelia_access_control: %s: unknown key(s) %s (known: %s)"
                                 % (label, ", ".join(unknown), ", ".join(sorted(RULE_KEYS))))
    if "policy" not in rule:
        raise AnsibleFilterError("authelia_access_control: %s: policy is missing (one of %s)"
                                 % (label, ", ".join(POLICIES)))
    if rule["policy"] not in POLICIES:
        raise AnsibleFilterError("authelia_access_control: %s: policy '%s' is not one of %s"
                                 % (label, rule["policy"], ", ".join(POLICIES)))
    domains = rule.get("domain")
    regexes = rule.get("domain_regex")
    if domains is None and regexes is None:
        raise AnsibleFilterError("authelia_access_control: %s: domain or domain_regex must be present" % label)
    for field in ("domain", "domain_regex", "resources", "networks", "methods"):
        if field in rule and not _str_list(rule[field]):
            raise AnsibleFilterError("authelia_access_control: %s: %s must be a string or a non-empty list of strings"
                                     % (label, field))
    _check_regexes(label, "domain_regex", _str_list(regexes) or [])
    _check_regexes(label, "resources", _str_list(rule.get("resources")) or [])
    for method in _str_list(rule.get("methods")) or []:
        if method not in METHODS:
            raise AnsibleFilterError("authelia_access_control: %s: method '%s' is not one of %s"
                                     % (label, method, ", ".join(METHODS)))
    if "subject" in rule:
        subjects = rule["subject"]
        groups = [subjects] if isinstance(subjects, str) else subjects
        if not isinstance(groups, list) or not groups:
            raise AnsibleFilterError("authelia_access_control: %s: subject must be a string or a non-empty list"
                                     % label)
        for group in groups:
            items = _str_list(group)
            if not items:
                raise AnsibleFilterError("authelia_access_control: %s: subject items must be strings or lists of "
                                         "strings" % label)
            for item in items:
                if not item.startswith(SUBJECT_PREFIXES) or item.endswith(":"):
                    raise AnsibleFilterError("authelia_access_control: %s: subject '%s' must start with 'user:', "
                                             "'group:' or 'oauth2:client:' and name someone" % (label, item))
        if rule["policy"] == "bypass":
            raise AnsibleFilterError("authelia_access_control: %s: policy 'bypass' cannot have a subject (Authelia "
                                     "refuses it: a bypass rule applies to everyone)" % label)
    if rule["policy"] == "bypass":
        for pattern in _str_list(regexes) or []:
            if re.search(r"\(\?P<(User|Group)>", pattern):
                raise AnsibleFilterError("authelia_access_control: %s: policy 'bypass' cannot use the User or Group "
                                         "named groups in domain_regex" % label)
    if "query" in rule and not isinstance(rule["query"], list):
        raise AnsibleFilterError("authelia_access_control: %s: query must be a list" % label)


def authelia_access_control(rules, default_policy="deny"):
    """``{"default_policy": ..., "rules": RULES}`` with RULES returned verbatim once every rule is valid."""
    if default_policy not in POLICIES:
        raise AnsibleFilterError("authelia_access_control: default_policy '%s' is not one of %s"
                                 % (default_policy, ", ".join(POLICIES)))
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise AnsibleFilterError("authelia_access_control: the rules must be a list")
    if not rules and default_policy not in ("one_factor", "two_factor"):
        raise AnsibleFilterError("authelia_access_control: with no rules the default_policy must be one_factor or "
                                 "two_factor (Authelia refuses '%s')" % default_policy)
    for index, rule in enumerate(rules):
        _check_rule(index, rule)
    return {"default_policy": default_policy, "rules": copy.deepcopy(rules)}


# --------------------------------------------------------------------------------------------------
# session cookies
# --------------------------------------------------------------------------------------------------

COOKIE_KEYS = frozenset(("domain", "authelia_url", "default_redirection_url", "name", "same_site", "expiration",
                         "inactivity", "remember_me"))
COOKIE_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


def _in_domain(host, domain):
    return host == domain or host.endswith("." + domain)


def _https_url(label, field, value, domain):
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise AnsibleFilterError("authelia_session_cookies: %s: %s must be an absolute https:// URL, got %r"
                                 % (label, field, value))
    if not _in_domain(parts.hostname.lower(), domain):
        raise AnsibleFilterError("authelia_session_cookies: %s: %s (%s) is outside the cookie domain %s"
                                 % (label, field, value, domain))


def authelia_session_cookies(cookies):
    """Authelia's session.cookies from inventory, validated as Authelia 4.38 validates them (a real domain, not a
    wildcard, not overlapping another; https authelia_url and default_redirection_url inside it and not equal).
    An empty default_redirection_url is dropped."""
    if not isinstance(cookies, list) or not cookies:
        raise AnsibleFilterError("authelia_session_cookies: at least one session cookie domain is needed (set "
                                 "authelia_session_domain or authelia_session_cookies)")
    out, domains = [], []
    for index, cookie in enumerate(cookies):
        if not isinstance(cookie, dict):
            raise AnsibleFilterError("authelia_session_cookies: cookies[%d] must be a dict" % index)
        domain = cookie.get("domain")
        label = "cookies[%d] (%s)" % (index, domain or "")
        unknown = sorted(set(cookie) - COOKIE_KEYS)
        if unknown:
            raise AnsibleFilterError("authelia_session_cookies: %s: unknown key(s) %s (known: %s)"
                                     % (label, ", ".join(unknown), ", ".join(sorted(COOKIE_KEYS))))
        if not isinstance(domain, str) or not domain:
            raise AnsibleFilterError("authelia_session_cookies: %s: domain is missing (set authelia_session_domain)"
                                     % label)
        if domain.startswith("*.") or not COOKIE_DOMAIN.match(domain):
            raise AnsibleFilterError("authelia_session_cookies: %s: domain must be a lower-case domain name with a "
                                     "dot, not a wildcard" % label)
        for other in domains:
            if _in_domain(domain, other) or _in_domain(other, domain):
                raise AnsibleFilterError("authelia_session_cookies: %s: domain overlaps the cookie domain %s"
                                         % (label, other))
        domains.append(domain)
        _https_url(label, "authelia_url", cookie.get("authelia_url"), domain)
        item = copy.deepcopy(cookie)
        redirect = item.get("default_redirection_url")
        if redirect in (None, ""):
            item.pop("default_redirection_url", None)
        else:
            _https_url(label, "default_redirection_url", redirect, domain)
            if redirect.rstrip("/") == cookie["authelia_url"].rstrip("/"):
                raise AnsibleFilterError("authelia_session_cookies: %s: default_redirection_url must differ from "
                                         "authelia_url" % label)
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------------
# Nginx Proxy Manager proxy hosts
# --------------------------------------------------------------------------------------------------

def npm_authelia_snippet(authelia_url):
    """The advanced_config block protecting a proxy host with Authelia at AUTHELIA_URL."""
    if not isinstance(authelia_url, str) or not AUTHELIA_URL.match(authelia_url.rstrip("/")):
        raise AnsibleFilterError("npm_authelia_hosts: the Authelia URL must look like http://authelia:9091 "
                                 "(scheme, host, optional port, no path), got %r" % (authelia_url,))
    return NPM_AUTHELIA_SNIPPET.replace("AUTHELIA_URL", authelia_url.rstrip("/"))


def npm_authelia_hosts(hosts, authelia_url="http://authelia:9091"):
    """HOSTS (npm_proxy_hosts items) with ``authelia: true`` expanded into the auth_request snippet appended to the
    item's advanced_config, ``authelia: false`` turned into an explicit advanced_config (the item's own or empty, so
    the snippet goes away), and every ``authelia`` key removed. Items without the key are returned unchanged."""
    if hosts is None:
        return []
    if not isinstance(hosts, list):
        raise AnsibleFilterError("npm_authelia_hosts: the input must be a list of proxy hosts")
    out = []
    for index, host in enumerate(hosts):
        if not isinstance(host, dict):
            raise AnsibleFilterError("npm_authelia_hosts: proxy_npm_proxy_hosts[%d] must be a dict" % index)
        # A shallow copy: only top-level keys change. A deepcopy of the templar's lazy containers copies its plugin
        # loaders, which prints a deprecation warning on every verify.yml run in npm mode.
        item = dict(host)
        protect = item.pop("authelia", False)
        label = "proxy_npm_proxy_hosts[%d] (%s)" % (index, ",".join(str(d) for d in item.get("domain_names") or []))
        if not isinstance(protect, bool):
            raise AnsibleFilterError("npm_authelia_hosts: %s: authelia must be true or false" % label)
        if protect:
            own = item.get("advanced_config") or ""
            if not isinstance(own, str):
                raise AnsibleFilterError("npm_authelia_hosts: %s: advanced_config must be a string" % label)
            if LOCATION_ROOT.search(own):
                raise AnsibleFilterError("npm_authelia_hosts: %s: advanced_config already has a 'location /' block; "
                                         "with authelia: true the Authelia snippet provides it" % label)
            if any(isinstance(loc, dict) and str(loc.get("path", "")).strip() == "/"
                   for loc in item.get("locations") or []):
                raise AnsibleFilterError("npm_authelia_hosts: %s: a custom location for '/' conflicts with "
                                         "authelia: true (the Authelia snippet provides 'location /')" % label)
            snippet = npm_authelia_snippet(authelia_url)
            # The snippet's `location /` replaces the one NPM would generate, and nginx's add_header and
            # proxy_set_header inheritance drops the server-level ones there: carry the host's HSTS header and
            # websocket upgrade into it as NPM's own location does (_hsts.conf, allow_websocket_upgrade).
            extra = []
            if item.get("hsts_enabled") and item.get("ssl_forced"):
                extra.append("    add_header Strict-Transport-Security $hsts_header always;")
            if item.get("allow_websocket_upgrade"):
                extra += ["    proxy_set_header Upgrade $http_upgrade;",
                          "    proxy_set_header Connection $http_connection;",
                          "    proxy_http_version 1.1;"]
            if extra:
                snippet = snippet.replace("    include conf.d/include/proxy.conf;",
                                          "\n".join(extra) + "\n    include conf.d/include/proxy.conf;", 1)
            item["advanced_config"] = (own.rstrip("\n") + "\n\n" + snippet) if own.strip() else snippet
        elif "authelia" in host:
            # An explicit false manages advanced_config too, so a host that was protected loses the snippet (without
            # the key, npm_proxy_hosts leaves an advanced_config the item does not give as NPM has it).
            item["advanced_config"] = item.get("advanced_config") or ""
        out.append(item)
    return out


class FilterModule:
    def filters(self):
        return {
            "authelia_users_check": authelia_users_check,
            "authelia_users_database": authelia_users_database,
            "authelia_session_cookies": authelia_session_cookies,
            "authelia_access_control": authelia_access_control,
            "npm_authelia_hosts": npm_authelia_hosts,
        }
