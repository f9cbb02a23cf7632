"""The docker_engine role with ``docker_engine_source: docker`` against a stand-in for Docker's apt repository.

tests/tools/docker_apt_repo.py repackages Debian's docker.io, containerd and runc (fetched with the machine's own
apt) under Docker's package names and relations (docker-ce Conflicts docker.io; containerd.io Provides/Conflicts/
Replaces containerd and runc), at two engine versions, and writes them in Docker's layout
(``<url>/debian/dists/<codename>/stable/binary-<arch>/Packages``, key at ``<url>/debian/gpg``), signed with a key
generated for the run. Each throwaway server (tests/tools/sandbox.py: systemd, real sshd) serves it on its own
127.0.0.1, and the role reaches it through ``docker_engine_repo_url`` with its URL logic unchanged.

Server A (fresh):
  (a) a wrong fingerprint fails before anything is written, naming the option and both fingerprints;
  (b) --check on the fresh server predicts the converge; the converge installs the pinned version (a prefix,
      resolved to the older of the two versions) and holds the packages (apt upgrade then leaves them alone);
      a second run and --check --diff (package lists cleaned) report changed=0 and --check alters nothing.
Server B (converged by the role from Debian's docker.io, with a running container that keeps data in a named
volume; its scenario runs in a background thread while A's tests run, tests (c) and (d) check what it recorded):
  (c) switching to docker_engine_source: docker replaces docker.io/containerd/runc with the repository's packages;
      the container's data survives and the container runs again (by its restart policy: live-restore is off here,
      so dockerd really stops it); --check predicted the switch;
  (d) raising the pin: --check predicts exactly the release of the holds, the install and the new hold (so the
      switched server is otherwise converged), the run (package lists cleaned before it: it refreshes them itself)
      upgrades the engine, holds again, and the container is back with its data.

Wall times go to tests/output/docker-repo-times.txt (and to the output with pytest -s).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, explain, run_tool, tool_env
from tests.integration import docker_helpers as dh
from tests.integration.sandbox_helpers import changed_tasks, recap
from tests.tools import docker_apt_repo

pytestmark = [pytest.mark.integration]

TOOL = ROOT / "tests" / "tools" / "sandbox.py"
REPO_PORT = 8765
PLAY = """\
- name: The docker_engine role
  hosts: all
  gather_facts: true
  gather_subset: [min]
  roles:
    - role: selfhosted.platform.docker_engine
"""
DOCKER_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
DOCKERS_OWN_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
# What a converge may touch, read inside the server: --check must leave all of it as it was.
SNAPSHOT = r"""
set +e +o pipefail
dpkg-query -W -f '${Package} ${Version} ${Status}\n' | sort | sha256sum
apt-mark showhold
ls -la --time-style=+%s /etc/apt/keyrings /etc/apt/sources.list.d /etc/docker /usr/local/lib/docker/cli-plugins 2>&1
sha256sum /etc/apt/keyrings/* /etc/apt/sources.list.d/* /etc/docker/daemon.json 2>&1
ls -la --time-style=+%s /var/lib/apt/lists 2>&1 | sha256sum
systemctl show docker -p ActiveEnterTimestampMonotonic -p MainPID
docker ps -a --format '{{.Names}} {{.ID}} {{.State}} {{.Status}}' 2>&1 | sed 's/Up [^)]*$/Up/'
true
"""
TIMES: dict[str, float] = {}


def record(key: str, seconds: float) -> None:
    TIMES[key] = seconds
    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "docker-repo-times.txt").write_text("".join(f"{k}: {v:.1f}s\n" for k, v in TIMES.items()))


class Server:
    """A throwaway sandbox server serving the stand-in repository on its own 127.0.0.1."""

    def __init__(self, kind: str, tmp: Path):
        self.name = dh.unique_name(kind)
        self.state = tmp / self.name
        self.state.mkdir(parents=True)
        self.runs = 0

    def create(self, repo_root: Path) -> Server:
        res = run_tool(["python3", str(TOOL), "create", "--name", self.name, "--state-dir", str(self.state)],
                       timeout=300)
        assert res.returncode == 0, explain(res)
        self.port = int((self.state / "ssh_port").read_text())
        dh.docker("cp", f"{repo_root}/.", f"{self.name}:/srv/docker-repo", timeout=300)
        self.sh(f"systemd-run --unit shp-docker-repo python3 -m http.server {REPO_PORT} --bind 127.0.0.1"
                " --directory /srv/docker-repo")
        self.sh(f"for i in $(seq 50); do python3 -c 'import urllib.request as u; "
                f"u.urlopen(\"http://127.0.0.1:{REPO_PORT}/linux/debian/gpg\")' 2>/dev/null && exit 0; sleep 0.2;"
                " done; exit 1")
        return self

    def destroy(self) -> None:
        subprocess.run(["python3", str(TOOL), "destroy", "--name", self.name, "--state-dir", str(self.state),
                        "--purge-state"], capture_output=True, text=True, timeout=300, check=False)

    def sh(self, script: str, check: bool = True) -> str:
        res = dh.docker("exec", "-i", self.name, "bash", "-euo", "pipefail", "-s", input=script, check=False,
                        timeout=300)
        if check:
            assert res.returncode == 0, f"{script}\n--- exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def play(self, variables: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
        """ansible-playbook of the role over SSH with VARIABLES (extra vars, typed: JSON)."""
        self.runs += 1
        inv = self.state / "inventory.yml"
        inv.write_text(
            "all:\n  hosts:\n    box:\n"
            f"      ansible_host: 127.0.0.1\n      ansible_port: {self.port}\n      ansible_user: root\n"
            f"      ansible_ssh_private_key_file: {self.state / 'id_ed25519'}\n"
            f"      ansible_ssh_common_args: -o UserKnownHostsFile={self.state / 'known_hosts'}"
            " -o StrictHostKeyChecking=yes\n")
        play = self.state / "play.yml"
        play.write_text(PLAY)
        extra = self.state / f"vars-{self.runs}.json"
        extra.write_text(json.dumps(variables))
        started = time.monotonic()
        # stdin from /dev/null: the two servers' plays run in parallel threads, and ansible-playbook refuses a
        # non-blocking stdin it might inherit.
        res = subprocess.run(["ansible-playbook", "-i", str(inv), str(play), "-e", f"@{extra}", *args], cwd=ROOT,
                             env=tool_env(ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.state / "cp")),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False)
        logs = ROOT / "tests" / "output" / "docker-repo"
        logs.mkdir(parents=True, exist_ok=True)
        log = f"{' '.join(args)} {json.dumps(variables)}\n{res.stdout}\n--- stderr ---\n{res.stderr}"
        (logs / f"{self.name}-{self.runs}.log").write_text(log)
        return res, time.monotonic() - started

    def packages(self) -> dict[str, tuple[str, str]]:
        """{package: (version, dpkg status abbreviation, e.g. 'hi' / 'ii' / 'rc')} of the engine packages."""
        out = self.sh("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' " + " ".join(
            [*DOCKER_PACKAGES, "docker.io", "containerd", "runc"]) + " 2>/dev/null || true")
        return {p: (v, s.strip()) for p, v, s in (line.split(" ", 2) for line in out.splitlines())}


def ok(res: subprocess.CompletedProcess) -> dict[str, int]:
    assert res.returncode == 0, explain(res)
    r = recap(res.stdout)
    assert r["failed"] == 0 and r["unreachable"] == 0, explain(res)
    return r


def changed(res: subprocess.CompletedProcess) -> list[str]:
    return [t.removeprefix("selfhosted.platform.docker_engine : ") for t in changed_tasks(res.stdout)[0]]


@pytest.fixture(scope="module")
def ground(tmp_path_factory):
    """The signed stand-in repository, server A (fresh, serving it) and server B, on which the whole switch scenario
    (c) runs in the background while A's tests run; test (c) checks what it recorded."""
    dh.require_image("server")
    tmp = tmp_path_factory.mktemp("docker-repo")
    started = time.monotonic()
    try:
        repo = docker_apt_repo.build_repo(tmp / "repo")
    except RuntimeError as exc:
        pytest.fail(f"the stand-in repository could not be built: {exc}")
    record("build the stand-in repository (packages cached under .build/docker-repo)", time.monotonic() - started)
    common = {"docker_engine_source": "docker", "docker_engine_repo_url": f"http://127.0.0.1:{REPO_PORT}/linux",
              "docker_engine_repo_key_fingerprint": repo["fingerprint"]}
    b = Server("dockerrepo-b", tmp)
    b_result: dict = {}
    thread = threading.Thread(target=switch_scenario, args=(b, repo, common, b_result), daemon=True)
    thread.start()
    a = Server("dockerrepo-a", tmp)
    try:
        a.create(Path(repo["root"]))
        yield {"repo": repo, "a": a, "b": b, "b_result": b_result, "b_thread": thread, "vars": common}
    finally:
        a.destroy()
        thread.join(timeout=1200)
        b.destroy()
        print("".join(f"{k}: {v:.1f}s\n" for k, v in TIMES.items()))


# A container image made inside server B from its own dash, sleep and cat (2 MB; no image transfer needed).
TINY_IMAGE = r"""
bins="/usr/bin/dash /usr/bin/sleep /usr/bin/cat"
libs=$(ldd $bins | grep -o '/[^ ]*\.so[^ ]*' | sort -u)
tar -chf - -C / $(for f in $bins $libs; do echo "${f#/}"; done) 2>/dev/null \
  | docker import -c 'CMD ["/usr/bin/sleep", "infinity"]' - shp-it-tiny:1 >/dev/null
"""
KEEPER = "shp-it-keeper"
VOLUME = "shp-it-keeper-data"


def switch_scenario(b: Server, repo: dict, common: dict, result: dict) -> None:
    """Scenario (c) on server B, recorded in RESULT for the test: first the host as the role leaves it on Debian's
    docker.io (Compose copied into the plugin directory, as the copy or pip method does; live-restore off) with a
    container that keeps data in a named volume; then --check --diff and the converge to docker_engine_source:
    docker (c); then --check --diff and the converge of a raised pin (d)."""
    started = time.monotonic()
    try:
        b.create(Path(repo["root"]))
        compose = docker_apt_repo.compose_binary()
        res, secs = b.play({"docker_engine_source": "debian", "docker_engine_live_restore": False,
                            "docker_engine_compose_method": "copy", "docker_engine_compose_src": str(compose)})
        result["prepare"] = res
        record("(c) server B converged on docker.io (background)", secs)
        if res.returncode != 0:
            return
        result["marker"] = "kept-" + secrets.token_hex(8)
        b.sh(TINY_IMAGE + f"""
docker volume create {VOLUME} >/dev/null
docker run -d --name {KEEPER} --restart unless-stopped --stop-timeout 1 -v {VOLUME}:/data shp-it-tiny:1 \\
  /usr/bin/dash -c 'echo {result["marker"]} > /data/marker; exec /usr/bin/sleep infinity' >/dev/null
for i in $(seq 50); do [ -s /var/lib/docker/volumes/{VOLUME}/_data/marker ] && break; sleep 0.2; done
""")
        result["packages_before"] = b.packages()
        result["compose_copy"] = b.sh("ls /usr/local/lib/docker/cli-plugins/")
        result["started_before"] = b.sh(f"docker inspect -f '{{{{.State.StartedAt}}}}' {KEEPER}").strip()
        result["marker_before"] = b.sh(f"docker exec {KEEPER} /usr/bin/cat /data/marker").strip()

        variables = {**common, "docker_engine_version": repo["engine_versions"][0].partition(":")[2],
                     "docker_engine_hold": True, "docker_engine_live_restore": False}
        if not check_then_converge(b, variables, result, "switch", "(c) docker.io -> docker-ce"):
            return
        result["packages_after"] = b.packages()
        result["binaries"] = b.sh("readlink -f $(command -v dockerd) $(command -v runc)").split()
        result["plugin_dir"] = b.sh("ls /usr/local/lib/docker/cli-plugins/ 2>&1 || true").strip()
        result["compose"] = b.sh("docker compose version --short").strip()
        result["holds"] = b.sh("apt-mark showhold").split()
        result["state"] = json.loads(b.sh(f"docker inspect -f '{{{{json .State}}}}' {KEEPER}"))
        result["marker_after"] = b.sh(f"docker exec {KEEPER} /usr/bin/cat /data/marker").strip()
        result["marker_on_disk"] = b.sh(f"cat /var/lib/docker/volumes/{VOLUME}/_data/marker").strip()

        # (d) on the switched server: --check of the raised pin (it must predict exactly the release, the install and
        # the new hold - nothing else, so the switched server is otherwise converged), then the run, with the package
        # lists cleaned in between (the run refreshes them itself).
        raised = {**variables, "docker_engine_version": repo["engine_versions"][1]}
        result["pid_before_raise"] = b.sh("systemctl show docker -p MainPID --value").strip()
        if not check_then_converge(b, raised, result, "raise", "(d) raised pin, package lists cleaned before the run",
                                   between="rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/apt/lists/partial"):
            return
        result["packages_raised"] = b.packages()
        result["holds_raised"] = b.sh("apt-mark showhold").split()
        result["pid_after_raise"] = b.sh("systemctl show docker -p MainPID --value").strip()
        result["state_raised"] = json.loads(b.sh(f"docker inspect -f '{{{{json .State}}}}' {KEEPER}"))
        result["marker_raised"] = b.sh(f"docker exec {KEEPER} /usr/bin/cat /data/marker").strip()
    except Exception as exc:  # reported by test (c)
        result["error"] = repr(exc)
    finally:
        result["seconds"] = time.monotonic() - started


def check_then_converge(srv: Server, variables: dict, result: dict, key: str, label: str, between: str = "") -> bool:
    """--check --diff with a snapshot of the server before and after it, then (after the BETWEEN script) the run;
    recorded in RESULT under KEY ('<key>_check', '<key>_snapshot_before', '<key>_snapshot_after', '<key>')."""
    result[f"{key}_snapshot_before"] = srv.sh(SNAPSHOT)
    result[f"{key}_check"], secs = srv.play(variables, "--check", "--diff")
    record(f"{label}: --check --diff (background)", secs)
    result[f"{key}_snapshot_after"] = srv.sh(SNAPSHOT)
    if between:
        srv.sh(between)
    result[key], secs = srv.play(variables)
    record(f"{label}: converge (background)", secs)
    return result[key].returncode == 0


def test_a_wrong_fingerprint_fails_before_anything_is_written(ground):
    a = ground["a"]
    before = a.sh(SNAPSHOT)
    res, secs = a.play({**ground["vars"], "docker_engine_repo_key_fingerprint": DOCKERS_OWN_FINGERPRINT})
    record("(a) wrong fingerprint", secs)
    assert res.returncode != 0, explain(res)
    out = res.stdout + res.stderr
    assert (f"docker_engine_repo_key_fingerprint: the key at http://127.0.0.1:{REPO_PORT}/linux/debian/gpg has the"
            f" fingerprint {ground['repo']['fingerprint']}") in " ".join(out.split()), explain(res)
    assert f"expected exactly {DOCKERS_OWN_FINGERPRINT}" in " ".join(out.split()), explain(res)
    # It failed on the key check, before daemon.json, the keyring or any source: the host is as it was.
    assert a.sh(SNAPSHOT) == before
    assert "No such file" in a.sh("ls /etc/docker/daemon.json /etc/apt/keyrings/docker.asc"
                                  " /etc/apt/sources.list.d/docker.sources 2>&1 || true")


def test_b_fresh_server_converges_pinned_and_held_then_is_idempotent(ground):
    a, repo = ground["a"], ground["repo"]
    v1, v2 = repo["engine_versions"]
    prefix = v1.partition(":")[2].partition("-")[0]  # "20.10.24": the repository also has 20.10.25
    variables = {**ground["vars"], "docker_engine_version": prefix, "docker_engine_hold": True}

    before = a.sh(SNAPSHOT)
    check, secs = a.play(variables, "--check", "--diff")
    record("(b) --check --diff on the fresh server", secs)
    ok(check)
    assert a.sh(SNAPSHOT) == before, "--check changed the fresh server"

    first, secs = a.play(variables)
    record("(b) first converge", secs)
    assert ok(first)["changed"] > 0
    assert changed(check) == changed(first), "--check on the fresh server did not predict the converge"

    pkgs = a.packages()
    assert pkgs["docker-ce"] == (v1, "hi") and pkgs["docker-ce-cli"] == (v1, "hi"), pkgs
    for name in ("containerd.io", "docker-buildx-plugin", "docker-compose-plugin"):
        assert pkgs[name][1] == "hi", pkgs
    assert sorted(a.sh("apt-mark showhold").split()) == sorted(DOCKER_PACKAGES)
    # The key as served, 0644 root, named by the deb822 source, which apt uses (the install came from it).
    assert a.sh("stat -c '%a %U %G' /etc/apt/keyrings/docker.asc").strip() == "644 root root"
    assert a.sh("cat /etc/apt/keyrings/docker.asc") == repo["key"]
    source = a.sh("cat /etc/apt/sources.list.d/docker.sources")
    for line in (f"URIs: http://127.0.0.1:{REPO_PORT}/linux/debian", "Suites: bookworm", "Components: stable",
                 f"Architectures: {repo['arch']}", "Signed-By: /etc/apt/keyrings/docker.asc"):
        assert line in source.splitlines(), source
    # The engine runs from the repository's packages; Compose is the docker-compose-plugin package's.
    assert a.sh("systemctl is-active docker containerd").split() == ["active", "active"]
    assert a.sh("dpkg-query -S $(readlink -f $(command -v dockerd)) /usr/libexec/docker/cli-plugins/docker-compose"
                " | cut -d: -f1").split() == ["docker-ce", "docker-compose-plugin"]
    assert a.sh("docker compose version --short").strip() == repo["compose_version"].split("-")[0]
    # The hold holds: apt upgrade would take 20.10.25 otherwise.
    assert f"Candidate: {v2}" in a.sh("apt-cache policy docker-ce")
    assert not re.search(r"^Inst docker", a.sh("apt-get -s upgrade"), re.M)

    second, secs = a.play(variables)
    record("(b) second run", secs)
    assert ok(second)["changed"] == 0, explain(second)

    # --check --diff on the converged server, with its package lists cleaned (as minimal images and cleanup jobs
    # leave them): apt cannot be asked, dpkg says everything is there, nothing would change.
    a.sh("rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/apt/lists/partial")
    before = a.sh(SNAPSHOT)
    again, secs = a.play(variables, "--check", "--diff")
    record("(b) --check --diff on the converged server (package lists cleaned)", secs)
    assert ok(again)["changed"] == 0, explain(again)
    assert a.sh(SNAPSHOT) == before


def test_c_switch_from_debians_docker_io_keeps_the_containers_data(ground):
    repo, result = ground["repo"], ground["b_result"]
    v1, _v2 = repo["engine_versions"]
    ground["b_thread"].join(timeout=1800)
    record("(c) the whole scenario on server B (background)", result.get("seconds", 0))
    assert "error" not in result, result.get("error")
    ok(result["prepare"])
    pkgs = result["packages_before"]
    assert pkgs["docker.io"][1] == "ii" and pkgs["containerd"][1] == "ii" and pkgs["runc"][1] == "ii", pkgs
    assert result["compose_copy"].split() == ["docker-compose"]
    assert result["marker_before"] == result["marker"]

    ok(result["switch_check"])
    assert result["switch_snapshot_after"] == result["switch_snapshot_before"], "--check changed the docker.io host"
    ok(result["switch"])
    assert changed(result["switch_check"]) == changed(result["switch"]), "--check did not predict the switch"
    assert "Install the engine packages" in changed(result["switch"])

    pkgs = result["packages_after"]
    assert pkgs["docker-ce"] == (v1, "hi") and pkgs["docker-ce-cli"] == (v1, "hi"), pkgs
    assert pkgs["containerd.io"][1] == "hi", pkgs
    # Debian's packages are gone (their configuration files may stay, as after any removal).
    for name in ("docker.io", "containerd", "runc"):
        assert name not in pkgs or pkgs[name][1] in ("rc", "un"), pkgs
    assert result["binaries"] == ["/usr/bin/dockerd", "/usr/bin/runc"]
    assert sorted(result["holds"]) == sorted(DOCKER_PACKAGES)
    # The copied Compose would shadow the package's: it is gone, `docker compose` is docker-compose-plugin's.
    assert result["plugin_dir"] == ""
    assert result["compose"] == repo["compose_version"].split("-")[0]

    # The container was stopped with dockerd (live-restore off), came back by its restart policy, and its volume
    # still holds what it wrote under docker.io.
    state = result["state"]
    assert state["Running"] is True, state
    assert state["StartedAt"] != result["started_before"], "not restarted: the switch did not stop dockerd"
    assert result["marker_after"] == result["marker"] == result["marker_on_disk"]


def test_d_raising_the_pin_upgrades_and_holds_again(ground):
    repo, result = ground["repo"], ground["b_result"]
    _v1, v2 = repo["engine_versions"]
    ground["b_thread"].join(timeout=1800)
    assert "error" not in result, result.get("error")
    if "raise_check" not in result:
        pytest.skip("the switch (test c) did not get that far")
    expected = ["Release the holds on the Docker packages for the version change", "Install the engine packages",
                "Hold the Docker packages"]
    check = result["raise_check"]
    ok(check)
    assert result["raise_snapshot_after"] == result["raise_snapshot_before"]
    assert changed(check) == expected, explain(check)

    res = result["raise"]
    ok(res)
    assert changed(res) == expected, explain(res)
    pkgs = result["packages_raised"]
    assert pkgs["docker-ce"] == (v2, "hi") and pkgs["docker-ce-cli"] == (v2, "hi"), pkgs
    assert sorted(result["holds_raised"]) == sorted(DOCKER_PACKAGES)
    # The upgrade restarted dockerd (the package's postinst); the container is back and its data is there.
    assert result["pid_after_raise"] not in ("", "0", result["pid_before_raise"])
    assert result["state_raised"]["Running"] is True, result["state_raised"]
    assert result["marker_raised"] == result["marker"]
