# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker socket proxy's allowlist: validation and its rendering as the proxy's flags. Pure Python, no I/O.

The proxy is wollomatic/socket-proxy (https://github.com/wollomatic/socket-proxy). Its contract, read from its
source (internal/config/config.go, cmd/socket-proxy/handlehttprequest.go) and README:

- one flag per HTTP method, ``-allow<METHOD>=<regex>`` (GET HEAD POST PUT PATCH DELETE CONNECT TRACE OPTIONS); a
  method without a flag is refused with ``405 Method Not Allowed``;
- each regex is Go RE2 syntax, compiled as ``^`` + regex + ``$`` and matched against the request's decoded URL
  path (no query string); a path that does not match is refused with ``403 Forbidden``;
- an invalid regex stops the proxy at start.

An allowlist is data: ``{METHOD: [path regex, ...]}``. The role keeps it in several options (what monitoring needs,
what updating adds, what ``--cleanup`` adds, the operator's additions); they are merged in order, and every problem
names the option and the entry. Each path regex starts with ``/`` and has no anchors; the rendering joins a
method's regexes in one group behind the optional API version prefix (``/v1.41``), so ``^`` + flag + ``$`` still
anchors every alternative - ``a|b`` would otherwise become ``^a|b$``.
"""

from __future__ import annotations

import re

# socket-proxy's methods, in the order its configuration lists them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS")
# Docker API clients put the negotiated version first (/v1.41/containers/json); unversioned paths are valid too.
VERSION_PREFIX = r"(?:/v1\.[0-9]+)?"


def _re2_problem(pattern):
    """A construct Go's RE2 (the proxy's regex engine) rejects although Python's re accepts it, or anchors the
    proxy adds itself; None when there is none. Scans escapes and character classes, so ``\\(?=`` or ``[$^]``
    are literal text, not constructs."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                return "backreferences (\\%s) are not supported by Go's RE2" % nxt
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            # A ']' (or '^]') right after the opening bracket is a literal member, not the end of the class.
            j = i + 1
            if pattern[j:j + 1] == "^":
                j += 1
            if pattern[j:j + 1] == "]":
                j += 1
            i = j
            continue
        if c in "^$":
            return ("anchors (%s) are added by the proxy around every pattern; leave them out" % c)
        if c == "(" and pattern[i + 1:i + 2] == "?":
            head = pattern[i + 2:i + 4]
            if head[:1] in ("=", "!") or head in ("<=", "<!"):
                return "lookaround groups ((?%s...) are not supported by Go's RE2" % (
                    head if head[:1] == "<" else head[:1])
            if head[:1] == ">":
                return "atomic groups ((?>...) are not supported by Go's RE2"
            if pattern[i + 2:i + 4] == "P=":
                return "named backreferences ((?P=name)) are not supported by Go's RE2"
        if c in "*+?}" and pattern[i + 1:i + 2] == "+":
            return "possessive quantifiers (%s+) are not supported by Go's RE2" % c
        i += 1
    return None


def pattern_problem(pattern):
    """Why PATTERN cannot be an allowlist entry, or None."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string (a path regex), got %r" % (pattern,)
    try:
        re.compile(pattern)
    except re.error as exc:
        return "%r is not a valid regular expression (%s)" % (pattern, exc)
    why = _re2_problem(pattern)
    if why:
        return "%r: %s" % (pattern, why)
    if not pattern.startswith("/"):
        return "%r must start with / (a path such as /containers/json; the proxy matches the whole path)" % pattern
    return None


def allowlist_problems(allowlist, option):
    """Every problem of one allowlist (``{METHOD: [path regex, ...]}``), each starting with OPTION and the entry's
    place (``watchtower_socket_proxy_allow.POST[1]``)."""
    if allowlist is None:
        return []
    if not isinstance(allowlist, dict):
        return ["%s: expected a dict of HTTP method -> list of path regexes, got %s" % (
            option, type(allowlist).__name__)]
    problems = []
    for method, patterns in allowlist.items():
        where = "%s.%s" % (option, method)
        if method not in METHODS:
            hint = " (write %s)" % str(method).upper() if str(method).upper() in METHODS else ""
            problems.append("%s: unknown HTTP method%s; the proxy knows %s" % (where, hint, ", ".join(METHODS)))
            continue
        if patterns is None:
            continue
        if not isinstance(patterns, list):
            problems.append("%s: expected a list of path regexes, got %s" % (where, type(patterns).__name__))
            continue
        for index, pattern in enumerate(patterns):
            why = pattern_problem(pattern)
            if why:
                problems.append("%s[%d]: %s" % (where, index, why))
    return problems


def named_problems(named):
    """Problems of several allowlists, NAMED ``{option: allowlist}`` (or a list of (option, allowlist) pairs)."""
    pairs = named.items() if isinstance(named, dict) else named
    problems = []
    for option, allowlist in pairs:
        problems.extend(allowlist_problems(allowlist, option))
    return problems


def merge(named):
    """The allowlists of NAMED merged in order: ``{METHOD: [path regex, ...]}``, duplicates dropped, methods in
    the proxy's order. Call named_problems first: entries are taken as they are."""
    pairs = named.items() if isinstance(named, dict) else named
    out = {}
    for _option, allowlist in pairs:
        for method, patterns in (allowlist or {}).items():
            bucket = out.setdefault(method, [])
            bucket.extend(p for p in patterns or [] if p not in bucket)
    return dict((m, out[m]) for m in METHODS if out.get(m))


def method_regex(patterns):
    """One method's flag value: the version prefix, then the patterns as one group of alternatives."""
    return "%s(?:%s)" % (VERSION_PREFIX, "|".join(patterns))


def proxy_flags(allowlist):
    """socket-proxy's flags for a merged ALLOWLIST: ``-allow<METHOD>=<regex>``, one per method that has patterns."""
    return ["-allow%s=%s" % (method, method_regex(allowlist[method])) for method in METHODS if allowlist.get(method)]


def decide(allowlist, method, path):
    """What socket-proxy answers a request with, given the merged ALLOWLIST: 405 for a method without a flag,
    403 for a path its regex does not match, None when the request is passed to the Docker socket. PATH is the
    decoded URL path without the query string."""
    if not allowlist.get(method):
        return 405
    return None if re.fullmatch(method_regex(allowlist[method]), path) else 403
