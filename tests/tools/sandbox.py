"""Create, reuse and destroy throwaway "servers": containers running systemd that behave like a
fresh Debian VPS (12 from shp-test/server:latest, 13 from shp-test/server:trixie), reached over real SSH on a
loopback port.

Used by ``make sandbox`` (the embedded default server), by the molecule scenarios and by the
integration tests. Only the Docker CLI and OpenSSH client are needed (stdlib Python).

    sandbox.py create  --name shp-sandbox [--ssh-port 2222] [--state-dir .sandbox] [--image shp-test/server:trixie]
                       [--userns-remap default]
    sandbox.py destroy --name shp-sandbox [--state-dir .sandbox]
    sandbox.py export-images --output .sandbox/images/standins.tar IMAGE...
    sandbox.py cluster-create  --prefix shp-swarm --state-dir .sandbox-swarm [--image ...] HOST...
    sandbox.py cluster-destroy --prefix shp-swarm --state-dir .sandbox-swarm HOST...
    sandbox.py caps

A cluster (``make sandbox-swarm``) is several servers on one Docker network of their own (``<prefix>-net``), created
in parallel: server ``<prefix>-<HOST>`` per inventory host, its key, host keys, SSH port and its address on that
network under ``<state-dir>/<HOST>/`` (inventories/sandbox-swarm reads them, as inventories/sandbox reads the one
server's). The images the cluster needs are exported once (export-images) and loaded into every server by the
docker_engine role, on all of them at once.

The container flags are the ones BRIEF section 4 gives: host cgroup namespace with the cgroup
tree mounted read-write, tmpfs on /run and /run/lock, seccomp unconfined, and every capability of
the host's bounding set added one by one (``--privileged`` fails on these machines because
CAP_SYS_RESOURCE is missing from the bounding set). Docker inside the server gets its own
volume for /var/lib/docker (overlay2 cannot sit on the container's own overlay root).

A server made for Docker's user-namespace remapping (``create --userns-remap VALUE``, ``make sandbox
SANDBOX_USERNS_REMAP=default``) also gets ``--security-opt systempaths=unconfined``: the kernel lets a new user
namespace mount proc only where the proc it can see is fully visible, and Docker masks parts of the server's own
(/proc/keys, /proc/acpi, ...), so every remapped container inside would fail with "mount proc:/proc ... operation not
permitted" (measured 2026-12 on this machine's kernel). A real server's /proc is not masked. VALUE is written to
``<state-dir>/userns_remap``, where inventories/sandbox reads docker_engine_userns_remap; a server made without it
keeps its masked /proc and cannot be reused for remapping.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

LABEL = "org.selfhosted.sandbox"

# Linux capability numbers → names (include/uapi/linux/capability.h), as Docker spells them.
CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]


def caps_from_mask(mask: int) -> list[str]:
    """Names of the capabilities set in a CapBnd-style bit mask (unknown high bits ignored)."""
    return [name for bit, name in enumerate(CAP_NAMES) if mask & (1 << bit)]


def bounding_caps(status_path: str = "/proc/self/status") -> list[str]:
    """The capabilities in this process's bounding set, read from /proc/self/status."""
    with open(status_path, encoding="ascii") as fh:
        for line in fh:
            if line.startswith("CapBnd:"):
                return caps_from_mask(int(line.split()[1], 16))
    raise RuntimeError(f"no CapBnd line in {status_path}")


def run_args(name: str, image: str, ssh_port: int, pubkey: str, caps: list[str], *,
             hostname: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The ``docker run`` argument vector for a server container (pure, unit-tested)."""
    args = [
        "docker", "run", "-d", "--name", name, "--hostname", hostname or name,
        "--label", f"{LABEL}=1",
        "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp:exec",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "-v", f"{name}-docker:/var/lib/docker",
        "-p", f"127.0.0.1:{ssh_port}:22",
        "-e", f"SHP_AUTHORIZED_KEY={pubkey}",
    ]
    for cap in caps:
        args += ["--cap-add", cap]
    args += extra or []
    args.append(image)
    return args


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}… failed ({res.returncode}): {res.stderr.strip()}")
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_state(name: str) -> dict | None:
    res = sh("docker", "container", "inspect", name, check=False)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout)[0]


def published_ssh_port(info: dict) -> int:
    bindings = info["HostConfig"]["PortBindings"].get("22/tcp") or []
    return int(bindings[0]["HostPort"])


def ssh_base(state_dir: Path, port: int) -> list[str]:
    return [
        "ssh", "-i", str(state_dir / "id_ed25519"), "-p", str(port),
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
        "-o", f"UserKnownHostsFile={state_dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "root@127.0.0.1",
    ]


def wait_for_ssh(state_dir: Path, port: int, timeout: float = 90) -> None:
    """Wait for sshd, record its host keys in state_dir/known_hosts, then prove key login works."""
    deadline = time.monotonic() + timeout
    keys = ""
    while time.monotonic() < deadline:
        res = sh("ssh-keyscan", "-T", "2", "-p", str(port), "127.0.0.1", check=False)
        keys = "\n".join(ln for ln in res.stdout.splitlines() if ln and not ln.startswith("#"))
        if keys:
            break
        time.sleep(1)
    if not keys:
        raise SystemExit(f"sshd on 127.0.0.1:{port} did not answer within {timeout:.0f}s")
    (state_dir / "known_hosts").write_text(keys + "\n")
    while time.monotonic() < deadline:
        res = sh(*ssh_base(state_dir, port), "systemctl is-system-running --wait >/dev/null 2>&1; true",
                 check=False)
        if res.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit(f"key login to 127.0.0.1:{port} failed: {res.stderr.strip()}")


def ensure_key(state_dir: Path) -> str:
    key = state_dir / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "selfhosted-sandbox", "-f", str(key))
    key.chmod(0o600)
    return (state_dir / "id_ed25519.pub").read_text().strip()


USERNS_OPT = "systempaths=unconfined"


def userns_args(userns_remap: str) -> list[str]:
    """The extra ``docker run`` flags of a server made for user-namespace remapping (none without it)."""
    return ["--security-opt", USERNS_OPT] if userns_remap else []


def unmasked(info: dict) -> bool:
    """Whether the container INFO runs with an unmasked /proc. The Engine does not keep ``systempaths=unconfined`` in
    HostConfig.SecurityOpt: it records the option as empty MaskedPaths and ReadonlyPaths (a container made without it
    has both filled)."""
    host = info.get("HostConfig") or {}
    if USERNS_OPT in (host.get("SecurityOpt") or []):
        return True
    return host.get("MaskedPaths") == [] and host.get("ReadonlyPaths") == []


def reuse_problem(info: dict | None, name: str, image: str, userns_remap: str = "") -> str | None:
    """Why the existing container INFO cannot be reused as a server from IMAGE (another image: a Debian 12 server
    is not a Debian 13 one; one with a masked /proc for user-namespace remapping), or None."""
    if info and info["Config"].get("Image") != image:
        return (f"sandbox {name} runs {info['Config'].get('Image')}, not {image}: destroy it first "
                f"(sandbox.py destroy --name {name}, or make sandbox-destroy with the same DEBIAN)")
    if info and userns_remap and not unmasked(info):
        return (f"sandbox {name} was made without {USERNS_OPT}, which user-namespace remapping needs: destroy it "
                f"first (sandbox.py destroy --name {name}, or make sandbox-destroy with the same DEBIAN)")
    return None


def create_server(name: str, state_dir: Path, image: str, *, ssh_port: int = 0, hostname: str | None = None,
                  network: str | None = None, userns_remap: str = "") -> dict:
    """Create (or reuse, starting it when stopped) the server NAME from IMAGE, wait for key login over SSH and
    record its SSH port (and, on NETWORK, its address there) in STATE_DIR; with USERNS_REMAP, a server that can run
    Docker's user-namespace remapping, the value recorded in STATE_DIR/userns_remap."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    pubkey = ensure_key(state_dir)
    info = container_state(name)
    if info and info["Config"]["Labels"].get(LABEL) != "1":
        raise SystemExit(f"container {name} exists and is not a sandbox: refusing to touch it")
    problem = reuse_problem(info, name, image, userns_remap)
    if problem:
        raise SystemExit(problem)
    if info and not info["State"]["Running"]:
        sh("docker", "start", name)
        info = container_state(name)
    if info:
        port = published_ssh_port(info)
        action = "reused"
    else:
        port = ssh_port or free_port()
        caps = bounding_caps()
        extra = (["--network", network] if network else []) + userns_args(userns_remap)
        while True:
            # An older daemon rejects capabilities newer than itself (Docker 20.10 knows no
            # CAP_BPF): drop the one it names and try again; nothing was created.
            res = sh(*run_args(name, image, port, pubkey, caps, hostname=hostname, extra=extra), check=False)
            unknown = re.search(r'unknown capability: "?(?:CAP_)?([A-Z_]+)', res.stderr)
            if res.returncode == 0 or not unknown or unknown.group(1) not in caps:
                break
            caps.remove(unknown.group(1))
        if res.returncode != 0:
            raise SystemExit(f"docker run {name} failed: {res.stderr.strip()}")
        action = "created"
        info = container_state(name)
    wait_for_ssh(state_dir, port)
    (state_dir / "ssh_port").write_text(f"{port}\n")
    if userns_remap:
        (state_dir / "userns_remap").write_text(f"{userns_remap}\n")
    else:
        (state_dir / "userns_remap").unlink(missing_ok=True)
    out = {"name": name, "action": action, "ssh_port": port, "key": str(state_dir / "id_ed25519"),
           "known_hosts": str(state_dir / "known_hosts")}
    if network:
        address = network_address(info, network)
        (state_dir / "address").write_text(f"{address}\n")
        out["address"] = address
    return out


def create(args: argparse.Namespace) -> int:
    out = create_server(args.name, Path(args.state_dir).resolve(), args.image, ssh_port=args.ssh_port,
                        hostname=args.hostname, userns_remap=args.userns_remap)
    print(json.dumps(out))
    return 0


def destroy(args: argparse.Namespace, quiet: bool = False) -> int:
    info = container_state(args.name)
    if info and info["Config"]["Labels"].get(LABEL) != "1":
        raise SystemExit(f"container {args.name} is not a sandbox: refusing to remove it")
    if info:
        sh("docker", "rm", "-f", "-v", args.name)
    sh("docker", "volume", "rm", "-f", f"{args.name}-docker", check=False)
    if args.state_dir and Path(args.state_dir).exists() and args.purge_state:
        shutil.rmtree(args.state_dir)
    if quiet:
        return int(bool(info))
    print(json.dumps({"name": args.name, "removed": bool(info)}))
    return 0


def network_address(info: dict, network: str) -> str:
    """The server's IPv4 address on NETWORK (from docker container inspect)."""
    addr = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(network, {}).get("IPAddress", "")
    if not addr:
        raise SystemExit(f"container {info.get('Name', '?').lstrip('/')} has no address on {network}")
    return addr


def cluster_names(prefix: str, hosts: list[str]) -> dict[str, str]:
    """Inventory host -> server container name (pure, unit-tested)."""
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", host):
            raise SystemExit(f"cluster host {host!r}: lower-case letters, digits and - only")
    return {host: f"{prefix}-{host}" for host in hosts}


def ensure_network(name: str) -> None:
    """The cluster's own Docker network, labelled as a sandbox's (an existing one of another owner is refused)."""
    res = sh("docker", "network", "inspect", name, check=False)
    if res.returncode == 0:
        if (json.loads(res.stdout)[0].get("Labels") or {}).get(LABEL) != "1":
            raise SystemExit(f"network {name} exists and is not a sandbox's: refusing to use it")
        return
    sh("docker", "network", "create", "--label", f"{LABEL}=1", name)


def cluster_create(args: argparse.Namespace) -> int:
    """The servers of a cluster on one network, created (or reused) in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    network = f"{args.prefix}-net"
    ensure_network(network)
    names = cluster_names(args.prefix, args.hosts)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {host: pool.submit(create_server, name, state / host, args.image, hostname=name, network=network)
                   for host, name in names.items()}
        out = {host: fut.result() for host, fut in futures.items()}
    print(json.dumps({"network": network, "servers": out}))
    return 0


def cluster_destroy(args: argparse.Namespace) -> int:
    removed = {}
    for host, name in cluster_names(args.prefix, args.hosts).items():
        removed[host] = destroy(argparse.Namespace(name=name, state_dir=None, purge_state=False), quiet=True)
    network = f"{args.prefix}-net"
    res = sh("docker", "network", "inspect", network, check=False)
    if res.returncode == 0 and (json.loads(res.stdout)[0].get("Labels") or {}).get(LABEL) == "1":
        sh("docker", "network", "rm", network, check=False)
    if args.purge_state and Path(args.state_dir).exists():
        shutil.rmtree(args.state_dir)
    print(json.dumps({"network": network, "removed": removed}))
    return 0


def export_images(args: argparse.Namespace) -> int:
    """docker save the images into one tarball (shared layers stored once), unless the tarball
    already holds exactly these image ids."""
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = [sh("docker", "image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() for ref in args.images]
    stamp = out.with_suffix(".ids")
    want = "\n".join(f"{ref} {iid}" for ref, iid in zip(args.images, ids, strict=True)) + "\n"
    if out.exists() and stamp.exists() and stamp.read_text() == want:
        print(json.dumps({"output": str(out), "changed": False}))
        return 0
    tmp = out.with_suffix(".tmp")
    sh("docker", "save", "-o", str(tmp), *args.images)
    tmp.replace(out)
    stamp.write_text(want)
    print(json.dumps({"output": str(out), "changed": True}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--name", default="shp-sandbox")
    c.add_argument("--hostname")
    c.add_argument("--image", default=os.environ.get("SHP_SERVER_IMAGE", "shp-test/server:latest"))
    c.add_argument("--ssh-port", type=int, default=int(os.environ.get("SHP_SANDBOX_SSH_PORT", "0")))
    c.add_argument("--state-dir", default=".sandbox")
    c.add_argument("--userns-remap", default="",
                   help="a server for Docker's user-namespace remapping (e.g. default), recorded in the state dir")
    d = sub.add_parser("destroy")
    d.add_argument("--name", default="shp-sandbox")
    d.add_argument("--state-dir", default=".sandbox")
    d.add_argument("--purge-state", action="store_true")
    e = sub.add_parser("export-images")
    e.add_argument("--output", required=True, help="tarball to write")
    e.add_argument("images", nargs="+")
    cc = sub.add_parser("cluster-create")
    cc.add_argument("--prefix", required=True, help="servers are <prefix>-<host>, their network <prefix>-net")
    cc.add_argument("--image", default=os.environ.get("SHP_SERVER_IMAGE", "shp-test/server:latest"))
    cc.add_argument("--state-dir", required=True)
    cc.add_argument("hosts", nargs="+", help="inventory host names")
    cd = sub.add_parser("cluster-destroy")
    cd.add_argument("--prefix", required=True)
    cd.add_argument("--state-dir", required=True)
    cd.add_argument("--purge-state", action="store_true")
    cd.add_argument("hosts", nargs="+")
    sub.add_parser("caps")
    args = ap.parse_args(argv)
    if args.cmd == "create":
        return create(args)
    if args.cmd == "destroy":
        return destroy(args)
    if args.cmd == "export-images":
        return export_images(args)
    if args.cmd == "cluster-create":
        return cluster_create(args)
    if args.cmd == "cluster-destroy":
        return cluster_destroy(args)
    print(" ".join(bounding_caps()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
