"""The process sampler of tests/secret_sweep.py inside a real container (``docker exec NAME ps``), as the sandbox
sweep uses it on the server container: a command line started in the container during the block is seen there,
and reported as a secret occurrence of that source."""

from __future__ import annotations

import secrets

import pytest

from tests.integration import docker_helpers as dh
from tests.secret_sweep import ProcessSampler, wait_for

pytestmark = pytest.mark.integration


def test_the_sampler_reads_the_process_list_inside_a_container():
    marker = "InContainer-" + secrets.token_hex(6)
    dk = dh.Session()
    try:
        dh.require_docker()
        box = dk.run(f"{dh.IMAGE_PREFIX}/base:bookworm", "sleep", "infinity", kind="sweep", extra=["--init"])
        with ProcessSampler(containers=[box.name], interval=0.1) as ps:
            dh.docker("exec", "-d", box.name, "sh", "-c", f"sleep 20; : {marker}")
            assert wait_for(lambda: ps.saw(marker, box.name), 20), ps.errors
        assert ps.rounds[box.name] >= 1 and ps.rounds["host"] >= 1
        assert ps.saw("sleep infinity", box.name)
        with pytest.raises(AssertionError) as exc:
            ps.assert_no_secrets([marker])
        assert f"argv[{box.name}]" in str(exc.value) and marker not in str(exc.value)
    finally:
        dk.cleanup()
