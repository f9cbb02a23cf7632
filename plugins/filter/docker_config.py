# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter building a Docker client config (config.json) from registry credentials."""

from __future__ import annotations

import base64

from ansible.errors import AnsibleFilterError


def docker_config(auths):
    """[{registry, username, password}] -> {"auths": {registry: {"auth": base64(user:password)}}}."""
    out = {}
    for item in auths or []:
        try:
            registry, user, password = item["registry"], item["username"], item["password"]
        except (KeyError, TypeError) as exc:
            raise AnsibleFilterError("docker_config: every item needs registry, username and password") from exc
        token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")
        out[str(registry)] = {"auth": token}
    return {"auths": out}


class FilterModule:
    def filters(self):
        return {"docker_config": docker_config}
