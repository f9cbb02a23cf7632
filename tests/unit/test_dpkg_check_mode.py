"""Check mode on a host without apt package lists asks dpkg which packages are installed
(``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n'``) and predicts an install only for the others. The
expressions that read dpkg's answer, rendered with Ansible's own templating as the roles write them: an installed
(``ii``) or held (``hi``) package is not predicted, a removed-with-config (``rc``) or unknown one is."""

from __future__ import annotations

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tests.conftest import ROOT

LOADER = DataLoader()


def dpkg(pkg: str, abbrev: str | None) -> dict:
    """One loop result of the dpkg-query task, as dpkg prints it (Status-Abbrev is three characters)."""
    return {"item": pkg, "stdout": f"{pkg} {abbrev} " if abbrev else "", "rc": 0 if abbrev else 1}


RESULTS = {"results": [dpkg("ufw", "ii"), dpkg("fail2ban", "hi"), dpkg("python3-systemd", "rc"),
                       dpkg("nginx", None)]}


def render(expression: str, **variables):
    return Templar(loader=LOADER, variables=variables).template(trust_as_template(expression))


@pytest.mark.parametrize(("role", "var", "registered"), [
    ("firewall", "firewall__missing_packages", "firewall__dpkg"),
    ("proxy", "proxy__missing_packages", "proxy__dpkg"),
])
def test_missing_packages_are_those_dpkg_does_not_list_installed(role, var, registered):
    expression = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())[var]
    assert render(expression, **{registered: RESULTS}) == ["python3-systemd", "nginx"]
    assert render(expression, **{registered: {"results": RESULTS["results"][:2]}}) == []


def test_backup_predicts_restic_only_when_dpkg_does_not_list_it():
    tasks = yaml.safe_load((ROOT / "roles" / "backup" / "tasks" / "install.yml").read_text())
    [changed_when] = [t["changed_when"] for t in tasks
                      if t.get("name") == "Install restic from the distribution" and "ansible.builtin.debug" in t]
    expression = "{{ " + changed_when + " }}"
    assert render(expression, backup__dpkg={"results": [dpkg("restic", "ii")]}) is False
    assert render(expression, backup__dpkg={"results": [dpkg("restic", "hi")]}) is False
    assert render(expression, backup__dpkg={"results": [dpkg("restic", None)]}) is True
