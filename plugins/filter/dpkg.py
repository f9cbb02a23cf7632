# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What dpkg says is installed. The roles ask ``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' <packages>``
(one cheap process) before apt: apt runs only for the packages this filter returns (opening apt's cache costs
seconds of CPU per call, and a converged host needs none), and check mode on a host without package lists predicts
exactly those. One home for the reading, so no role writes its own regex (a backslash class inside a YAML block
scalar reached Jinja doubled and matched nothing)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# dpkg's desired/current state letters of an installed package: "ii" (install ok installed), "hi" (held).
INSTALLED = ("ii", "hi")


def _installed(stdout) -> set[str]:
    """The packages dpkg-query's ``${Package} ${db:Status-Abbrev}`` lines list as installed or held."""
    names = set()
    for line in str(stdout or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1][:2] in INSTALLED:
            names.add(fields[0].split(":")[0])
    return names


def dpkg_not_installed(result, packages=None):
    """The packages dpkg does not list as installed (unknown to dpkg, removed with their configuration left
    (``rc``), half-installed, ...).

    RESULT is either the registered result of ONE ``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' p1 p2 ...``
    (PACKAGES names what was asked, in the order the answer keeps), or that of a loop with one package per item
    (its ``item`` is the package; PACKAGES not needed). A result without output (skipped, or ``{}``) leaves every
    package of PACKAGES missing."""
    if not isinstance(result, (dict, list)):
        raise AnsibleFilterError("dpkg_not_installed: expects the registered result of dpkg-query")
    if isinstance(result, list) or "results" in result:
        results = result if isinstance(result, list) else result.get("results") or []
        return [r.get("item") for r in results if r.get("item") not in _installed(r.get("stdout"))]
    if packages is None:
        raise AnsibleFilterError("dpkg_not_installed: name the packages dpkg-query was asked about")
    if isinstance(packages, str) or not isinstance(packages, list):
        raise AnsibleFilterError("dpkg_not_installed: packages must be a list of package names")
    installed = _installed(result.get("stdout"))
    return [p for p in packages if str(p) not in installed]


class FilterModule:
    def filters(self):
        return {"dpkg_not_installed": dpkg_not_installed}
