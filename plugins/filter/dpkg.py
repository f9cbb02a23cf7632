# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What dpkg says is installed, for the roles' check mode on a host without apt package lists: the roles loop
``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' <package>`` over their packages and predict an install for the
packages this filter returns. One home for the reading, so no role writes its own regex (a backslash class inside a
YAML block scalar reached Jinja doubled and matched nothing)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# dpkg's desired/current state letters of an installed package: "ii" (install ok installed), "hi" (held).
INSTALLED = ("ii", "hi")


def dpkg_not_installed(results):
    """The ``item`` of every loop result whose dpkg-query answer is not an installed package (unknown to dpkg,
    removed with its configuration left (``rc``), half-installed, ...)."""
    if isinstance(results, dict):
        results = results.get("results", [])
    if not isinstance(results, list):
        raise AnsibleFilterError("dpkg_not_installed: expects the registered result of a dpkg-query loop")
    missing = []
    for result in results:
        fields = str(result.get("stdout") or "").split()
        if not (len(fields) >= 2 and fields[1][:2] in INSTALLED):
            missing.append(result.get("item"))
    return missing


class FilterModule:
    def filters(self):
        return {"dpkg_not_installed": dpkg_not_installed}
