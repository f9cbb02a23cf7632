# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the docker_engine role's Docker apt repository path; the logic is in
plugins/module_utils/docker_apt.py (pure, unit-tested)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import docker_apt


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
            "openpgp_fingerprints": openpgp_fingerprints,
            "openpgp_fingerprint_normalize": openpgp_fingerprint_normalize,
            "docker_engine_package_plan": docker_engine_package_plan,
            "docker_engine_hold_plan": docker_engine_hold_plan,
        }
