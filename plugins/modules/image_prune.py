#!/usr/bin/python
# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_prune
short_description: Remove dangling images, old unused images and old build cache, reporting what went and the space
version_added: 0.1.0
description:
  - Image hygiene on demand, with Docker's own semantics - the requests C(docker image prune),
    C(docker image prune -a --filter until=<unused_until>) and C(docker builder prune --filter until=<builder_until>)
    send to the daemon.
  - C(dangling) images are untagged top-level images no container uses (superseded builds and pulls). C(unused)
    images are tagged images that no container, running or stopped, uses and that were created more than
    O(unused_until) ago. Build cache records go when they are not in use and were last used (or created) more than
    O(builder_until) ago.
  - The candidates are listed first from the same API, so check mode reports exactly which images would go and how
    much space they hold; a real run reports the images that are gone and the space the daemon says it reclaimed.
    C(changed) is true only when something was (or would be) removed.
author:
  - selfhosted.platform maintainers (@selfhosted-platform)
requirements:
  - The Docker daemon's unix socket on the managed host (the default one, or C(DOCKER_HOST=unix://...)).
attributes:
  check_mode:
    description: Lists the candidates and their size; removes nothing.
    support: full
  diff_mode:
    description: Nothing beyond RV(candidates).
    support: none
options:
  dangling:
    description: Remove dangling images.
    type: bool
    default: true
  unused_until:
    description:
      - Remove tagged images no container uses that were created more than this long ago, a duration like C(168h),
        C(90m) or C(1h30m). An empty string keeps every tagged image.
      - An image is in use as long as any container, stopped ones too, was created from it; images the platform
        preloads for stopped services are therefore kept.
    type: str
    default: 168h
  builder_until:
    description: Remove build cache last used more than this long ago (a duration); an empty string keeps the cache.
    type: str
    default: 72h
  timeout:
    description: Seconds to wait for the daemon's answer to each request (pruning a large cache takes a while).
    type: int
    default: 300
notes:
  - A record of the build cache that is shared with another one counts in RV(space_estimate) as zero bytes, since
    removing it frees nothing while the other record lives; the daemon's own figure after a real run is
    RV(space_reclaimed).
"""

EXAMPLES = r"""
- name: Show what a prune would remove
  selfhosted.platform.image_prune:
    unused_until: 168h
    builder_until: 72h
  check_mode: true
  register: would

- name: Remove only dangling images
  selfhosted.platform.image_prune:
    unused_until: ""
    builder_until: ""
"""

RETURN = r"""
candidates:
  description: What was (or in check mode would be) removed, listed before the prune.
  returned: success
  type: dict
  contains:
    dangling:
      description: Dangling images (id, short_id, tags, created, age_hours, size and size_human - the bytes removing
        it frees, its size less the layers it shares with other images).
      type: list
      elements: dict
    unused:
      description: Unused tagged images older than O(unused_until), with their tags.
      type: list
      elements: dict
    build_cache:
      description: Build cache records (id, type, size, shared, last_used).
      type: list
      elements: dict
  sample: {"dangling": [{"id": "sha256:4f2a...", "short_id": "4f2a7c1e9b3d", "tags": [], "size": 74231808,
                         "size_human": "74.2MB", "created": "2026-11-20T10:02:11Z", "age_hours": 73.4}],
           "unused": [], "build_cache": []}
space_estimate:
  description: Bytes the candidates hold alone (layers shared with images that stay are not counted).
  returned: success
  type: int
space_estimate_human:
  description: RV(space_estimate) as the docker CLI prints sizes.
  returned: success
  type: str
  sample: 74.2MB
removed_images:
  description: The images that are gone after the prune (empty in check mode).
  returned: success
  type: list
  elements: dict
untagged:
  description: Tags the prune removed (an image with several tags loses them all).
  returned: success and not check mode
  type: list
  elements: str
build_cache_removed:
  description: Number of build cache records removed.
  returned: success
  type: int
space_reclaimed:
  description: Bytes the daemon reports as reclaimed (0 in check mode).
  returned: success
  type: int
space_reclaimed_human:
  description: RV(space_reclaimed) as the docker CLI prints sizes.
  returned: success
  type: str
  sample: 74.2MB
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.selfhosted.platform.plugins.module_utils.image_prune import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dangling=dict(type="bool", default=True),
            unused_until=dict(type="str", default="168h"),
            builder_until=dict(type="str", default="72h"),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == "__main__":
    main()
