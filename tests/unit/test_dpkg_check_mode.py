"""The roles ask dpkg which of their packages are installed (one ``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n'
p1 p2 ...``) before apt: apt runs only for the others, and check mode on a host without apt package lists predicts
exactly those. The expressions that read dpkg's answer, rendered with Ansible's own templating as the roles write
them: an installed (``ii``) or held (``hi``) package is missing from neither, a removed-with-config (``rc``) or
unknown one (no line at all) is."""

from __future__ import annotations

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tests.conftest import ROOT

LOADER = DataLoader()


def render(expression: str, **variables):
    return Templar(loader=LOADER, variables=variables).template(trust_as_template(expression))


ANSWER = {"stdout": "ufw ii \nfail2ban hi \npython3-systemd rc \n", "rc": 1}


@pytest.mark.parametrize(("role", "var", "registered", "packages"), [
    ("firewall", "firewall__missing_packages", "firewall__dpkg", "firewall__packages"),
    ("proxy", "proxy__missing_packages", "proxy__dpkg", "proxy__packages"),
])
def test_missing_packages_are_those_dpkg_does_not_list_installed(role, var, registered, packages):
    expression = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())[var]
    asked = ["ufw", "fail2ban", "python3-systemd", "nginx"]
    assert render(expression, **{registered: ANSWER, packages: asked}) == ["python3-systemd", "nginx"]
    assert render(expression, **{registered: ANSWER, packages: asked[:2]}) == []
    # Not asked (no package to ask about): nothing is missing.
    assert render(expression, **{packages: []}) == []


def test_backup_asks_apt_and_predicts_only_when_dpkg_does_not_list_restic():
    tasks = yaml.safe_load((ROOT / "roles" / "backup" / "tasks" / "install.yml").read_text())
    [apt] = [t for t in tasks if t.get("name") == "Install restic from the distribution" and "ansible.builtin.apt" in t]
    [debug] = [t for t in tasks
               if t.get("name") == "Install restic from the distribution" and "ansible.builtin.debug" in t]
    for expression in ("{{ " + debug["changed_when"] + " }}", "{{ " + apt["when"][-1] + " }}"):
        assert render(expression, backup__dpkg={"stdout": "restic ii \n", "rc": 0}) is False
        assert render(expression, backup__dpkg={"stdout": "restic hi \n", "rc": 0}) is False
        assert render(expression, backup__dpkg={"stdout": "restic rc \n", "rc": 0}) is True
        assert render(expression, backup__dpkg={"stdout": "", "rc": 1}) is True


def test_the_filter_reads_one_query_or_a_loop_and_refuses_what_is_neither():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.selfhosted.platform.plugins.filter.dpkg import dpkg_not_installed

    assert dpkg_not_installed({"stdout": "a ii \nb:amd64 ii \n"}, ["a", "b", "c"]) == ["c"]
    assert dpkg_not_installed({"results": [{"item": "a", "stdout": "a hi "}, {"item": "b", "stdout": ""}]}) == ["b"]
    assert dpkg_not_installed({}, ["a"]) == ["a"]
    for bad in (("ii",), ({"stdout": ""}, "a"), ({"stdout": ""},)):
        with pytest.raises(AnsibleFilterError):
            dpkg_not_installed(*bad)
