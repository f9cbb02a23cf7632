"""Unit tests for tests/tools/sandbox.py: capability decoding and the docker run vector."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import ROOT


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sandbox = load(ROOT / "tests/tools/sandbox.py", "shp_sandbox_tool")


def test_caps_from_mask_decodes_bits():
    assert sandbox.caps_from_mask(0) == []
    assert sandbox.caps_from_mask(0b1) == ["CHOWN"]
    assert sandbox.caps_from_mask(1 << 21) == ["SYS_ADMIN"]


def test_caps_from_mask_skips_missing_sys_resource():
    # This machine's CapBnd: everything up to bit 40 except CAP_SYS_RESOURCE (24).
    caps = sandbox.caps_from_mask(0x000001FFFEFFFFFF)
    assert "SYS_RESOURCE" not in caps
    assert {"SYS_ADMIN", "NET_ADMIN", "MKNOD", "BPF", "CHECKPOINT_RESTORE"} <= set(caps)
    assert len(caps) == 40


def test_caps_ignore_unknown_high_bits():
    assert sandbox.caps_from_mask(1 << 63) == []


def test_bounding_caps_reads_proc_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t0000000000003000\n")
    assert sandbox.bounding_caps(str(status)) == ["NET_ADMIN", "NET_RAW"]


def test_run_args_have_the_systemd_and_ssh_flags():
    args = sandbox.run_args("shp-x", "img:1", 2200, "ssh-ed25519 AAAA test", ["SYS_ADMIN", "NET_ADMIN"])
    joined = " ".join(args)
    assert args[:3] == ["docker", "run", "-d"]
    assert "--privileged" not in args
    assert "--cgroupns=host" in args
    assert "/sys/fs/cgroup:/sys/fs/cgroup:rw" in joined
    assert "--tmpfs /run " in joined and "--tmpfs /run/lock" in joined
    assert "seccomp=unconfined" in joined
    assert "-p 127.0.0.1:2200:22" in joined  # SSH on loopback only
    assert "shp-x-docker:/var/lib/docker" in joined
    assert joined.count("--cap-add") == 2
    assert args[-1] == "img:1"
    assert f"{sandbox.LABEL}=1" in args


def test_a_server_of_another_image_is_not_reused():
    """`make sandbox DEBIAN=trixie` with the name of a Debian 12 server must not converge the Debian 12 one."""
    info = {"Config": {"Image": "shp-test/server:latest", "Labels": {sandbox.LABEL: "1"}}}
    assert sandbox.reuse_problem(info, "shp-x", "shp-test/server:latest") is None
    assert sandbox.reuse_problem(None, "shp-x", "shp-test/server:trixie") is None
    problem = sandbox.reuse_problem(info, "shp-x", "shp-test/server:trixie")
    assert "runs shp-test/server:latest, not shp-test/server:trixie" in problem and "destroy" in problem


def test_cluster_servers_are_named_after_their_inventory_hosts_on_a_network_of_their_own():
    names = sandbox.cluster_names("shp-swarm", ["swarm-1", "swarm-2"])
    assert names == {"swarm-1": "shp-swarm-swarm-1", "swarm-2": "shp-swarm-swarm-2"}
    with pytest.raises(SystemExit, match="lower-case letters"):
        sandbox.cluster_names("shp-swarm", ["Swarm_1"])
    args = sandbox.run_args("shp-swarm-swarm-1", "img:1", 2200, "ssh-ed25519 AAAA test", [],
                            extra=["--network", "shp-swarm-net"])
    assert args[-3:] == ["--network", "shp-swarm-net", "img:1"]
    info = {"Name": "/shp-swarm-swarm-1",
            "NetworkSettings": {"Networks": {"shp-swarm-net": {"IPAddress": "172.28.0.2"}}}}
    assert sandbox.network_address(info, "shp-swarm-net") == "172.28.0.2"
    with pytest.raises(SystemExit, match="has no address on bridge"):
        sandbox.network_address(info, "bridge")


def test_a_server_for_userns_remapping_unmasks_proc_and_a_masked_one_is_not_reused():
    """Docker's user-namespace remapping inside a server needs a fully visible /proc (the kernel refuses a new
    user namespace's proc mount over a masked one: "mount proc:/proc ... operation not permitted")."""
    assert sandbox.userns_args("") == []
    assert sandbox.userns_args("default") == ["--security-opt", "systempaths=unconfined"]
    # what the Engine records (20.10 and later): the option itself is not in SecurityOpt, the paths are emptied
    masked = {"Config": {"Image": "shp-test/server:trixie"},
              "HostConfig": {"SecurityOpt": ["seccomp=unconfined"], "MaskedPaths": ["/proc/kcore", "/proc/keys"],
                             "ReadonlyPaths": ["/proc/bus", "/proc/sys"]}}
    assert sandbox.reuse_problem(masked, "shp-x", "shp-test/server:trixie") is None
    problem = sandbox.reuse_problem(masked, "shp-x", "shp-test/server:trixie", "default")
    assert "without systempaths=unconfined" in problem and "destroy" in problem
    unmasked = {"Config": {"Image": "shp-test/server:trixie"},
                "HostConfig": {"SecurityOpt": ["seccomp=unconfined"], "MaskedPaths": [], "ReadonlyPaths": []}}
    assert sandbox.reuse_problem(unmasked, "shp-x", "shp-test/server:trixie", "default") is None


def test_the_debian_13_run_converges_with_userns_remapping():
    """The trixie sandbox of the integration tests is the remapped one (no server of its own for it)."""
    conftest = (ROOT / "tests" / "integration" / "conftest.py").read_text()
    lines = [line for line in conftest.splitlines() if "SANDBOX_USERNS_REMAP" in line]
    assert len(lines) == 1 and '("DEBIAN=trixie", "SANDBOX_USERNS_REMAP=default")' in lines[0], lines
    makefile = (ROOT / "Makefile").read_text()
    assert "$(if $(SANDBOX_USERNS_REMAP),--userns-remap $(SANDBOX_USERNS_REMAP))" in makefile
