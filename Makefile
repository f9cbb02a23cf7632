# selfhosted.platform — developer entry points. Every target sets up what it needs itself.
SHELL := /bin/bash
.SHELLFLAGS := -Eeuo pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/.build/collections
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

# The Debian release of the sandbox servers: bookworm (Debian 12, the default) or trixie (Debian 13). Each release
# has servers of its own (names and state directories get a -trixie suffix), built from shp-test/server:<tag>.
DEBIAN ?= bookworm
ifeq ($(DEBIAN),bookworm)
DEBIAN_SUFFIX :=
SERVER_IMAGE := shp-test/server:latest
else ifeq ($(DEBIAN),trixie)
DEBIAN_SUFFIX := -trixie
SERVER_IMAGE := shp-test/server:trixie
else
$(error DEBIAN=$(DEBIAN): the sandbox servers are Debian bookworm (12) or trixie (13))
endif
SANDBOX_NAME ?= shp-sandbox$(DEBIAN_SUFFIX)
SANDBOX_STATE ?= $(ROOT)/.sandbox$(DEBIAN_SUFFIX)
export SHP_SANDBOX_STATE := $(SANDBOX_STATE)
SANDBOX_INVENTORY ?= inventories/sandbox
# Docker's user-namespace remapping on the sandbox server (docker_engine_userns_remap, e.g. default): the server is made
# for it and the value recorded in its state directory, where inventories/sandbox reads it. Empty: off.
SANDBOX_USERNS_REMAP ?=
STANDINS ?= shp-test/postgres:latest shp-test/mariadb:latest shp-test/redis:latest shp-test/watchtower:latest \
            shp-test/socketproxy:latest shp-test/nginx:latest shp-test/httpapp:latest
# The "0kt" platform (seed 003, reduced copy) gets a sandbox server of its own.
OKT_SANDBOX_NAME ?= shp-sandbox-okt$(DEBIAN_SUFFIX)
OKT_SANDBOX_STATE ?= $(ROOT)/.sandbox-okt$(DEBIAN_SUFFIX)
OKT_STANDINS := shp-test/postgres:latest shp-test/mariadb:latest shp-test/redis:latest shp-test/watchtower:latest \
                shp-test/socketproxy:latest shp-test/httpapp:latest shp-test/npm:latest shp-test/authelia:latest
OKT := SANDBOX_NAME=$(OKT_SANDBOX_NAME) SANDBOX_STATE=$(OKT_SANDBOX_STATE) SANDBOX_INVENTORY=inventories/sandbox-okt \
       STANDINS="$(OKT_STANDINS)"
# A three-node Docker Swarm (inventories/sandbox-swarm): servers <SWARM_SANDBOX_NAME>-swarm-1..3 on the network
# <SWARM_SANDBOX_NAME>-net, their keys, ports and addresses under <SWARM_SANDBOX_STATE>/<host>/.
SWARM_SANDBOX_NAME ?= shp-swarm$(DEBIAN_SUFFIX)
SWARM_SANDBOX_STATE ?= $(ROOT)/.sandbox-swarm$(DEBIAN_SUFFIX)
export SHP_SWARM_SANDBOX_STATE := $(SWARM_SANDBOX_STATE)
SWARM_HOSTS := swarm-1 swarm-2 swarm-3
SWARM_STANDINS := shp-test/httpapp:latest
# The nmt twin's domain (inventories/sandbox-nmt/group_vars/all/main.yml, nmt_domain).
NMT_SANDBOX_DOMAIN := nmt-sandbox.example.test
PLAYBOOK_ARGS ?=

.PHONY: help setup images test lint unit integration molecule sanity sandbox sandbox-server sandbox-check \
        sandbox-destroy sandbox-verify sandbox-okt sandbox-okt-server sandbox-okt-check sandbox-okt-verify \
        sandbox-okt-destroy sandbox-swarm sandbox-swarm-servers sandbox-swarm-check sandbox-swarm-site \
        sandbox-swarm-site-check sandbox-swarm-destroy sandbox-nmt sandbox-nmt-tls sandbox-nmt-check build clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

setup: ## packages, dockerd, .venv, Compose plugin, collection link, test images
	@scripts/testground.sh all

images: ## (re)build the test images (cached by content hash)
	@scripts/testground.sh packages docker venv images

test: setup ## everything CI runs: lint, sanity, unit, integration, molecule
	@scripts/run-tests.sh

lint: setup ## ruff, ansible-lint (production profile)
	@scripts/run-tests.sh -m lint

sanity: setup ## ansible-test sanity on a copy of the collection
	@scripts/run-tests.sh -m sanity

unit: setup ## pytest unit tests
	@scripts/run-tests.sh tests/unit

integration: setup ## integration tests against the real Docker Engine
	@scripts/run-tests.sh -m integration

molecule: setup ## molecule scenarios (converge, idempotence, verify)
	@scripts/run-tests.sh -m molecule

sandbox: sandbox-server ## create or reuse the sandbox server and converge playbooks/site.yml on it (DEBIAN=trixie: on Debian 13)
	ansible-playbook playbooks/site.yml -i $(SANDBOX_INVENTORY) $(PLAYBOOK_ARGS)

sandbox-server: setup ## create or reuse the sandbox server (and what site.yml copies to it), converge nothing
	@python3 tests/tools/sandbox.py create --name $(SANDBOX_NAME) --state-dir $(SANDBOX_STATE) --image $(SERVER_IMAGE) \
	  $(if $(SANDBOX_USERNS_REMAP),--userns-remap $(SANDBOX_USERNS_REMAP))
	@mkdir -p $(SANDBOX_STATE)/bin && ln -sfn "$$(readlink -f /usr/local/lib/docker/cli-plugins/docker-compose)" $(SANDBOX_STATE)/bin/docker-compose
	@python3 tests/tools/sandbox.py export-images --output $(SANDBOX_STATE)/images/standins.tar $(STANDINS)

sandbox-check: ## --check --diff against the sandbox (changes nothing; on a fresh server: what the first converge does)
	ansible-playbook playbooks/site.yml -i $(SANDBOX_INVENTORY) --check --diff $(PLAYBOOK_ARGS)

sandbox-verify: ## playbooks/verify.yml against the sandbox: the live server checked against its inventory
	ansible-playbook playbooks/verify.yml -i $(SANDBOX_INVENTORY) $(PLAYBOOK_ARGS)

sandbox-destroy: ## remove the sandbox container, its Docker volume and .sandbox/
	@python3 tests/tools/sandbox.py destroy --name $(SANDBOX_NAME) --state-dir $(SANDBOX_STATE) --purge-state

sandbox-okt: ## the "0kt" platform (seed 003, reduced copy: inventories/sandbox-okt) on its own sandbox server
	@$(MAKE) --no-print-directory sandbox $(OKT)

sandbox-okt-server: ## create or reuse the okt sandbox server, converge nothing
	@$(MAKE) --no-print-directory sandbox-server $(OKT)

sandbox-okt-check: ## --check --diff against the okt sandbox
	@$(MAKE) --no-print-directory sandbox-check $(OKT)

sandbox-okt-verify: ## playbooks/verify.yml against the okt sandbox
	@$(MAKE) --no-print-directory sandbox-verify $(OKT)

sandbox-okt-destroy: ## remove the okt sandbox server
	@$(MAKE) --no-print-directory sandbox-destroy $(OKT)

sandbox-swarm: sandbox-swarm-servers ## a 3-node Docker Swarm (1 manager, 2 workers) of sandbox servers, converged with playbooks/swarm.yml
	ansible-playbook playbooks/swarm.yml -i inventories/sandbox-swarm $(PLAYBOOK_ARGS)

sandbox-swarm-servers: setup ## create or reuse the swarm's 3 servers on one network, converge nothing
	@python3 tests/tools/sandbox.py cluster-create --prefix $(SWARM_SANDBOX_NAME) --state-dir $(SWARM_SANDBOX_STATE) \
	  --image $(SERVER_IMAGE) $(SWARM_HOSTS)
	@mkdir -p $(SWARM_SANDBOX_STATE)/bin && ln -sfn "$$(readlink -f /usr/local/lib/docker/cli-plugins/docker-compose)" $(SWARM_SANDBOX_STATE)/bin/docker-compose
	@python3 tests/tools/sandbox.py export-images --output $(SWARM_SANDBOX_STATE)/images/standins.tar $(SWARM_STANDINS)
	@python3 tests/tools/sandbox.py export-images --output $(SWARM_SANDBOX_STATE)/images/router.tar shp-test/nginx:latest
	@python3 tests/tools/sandbox.py export-images --output $(SWARM_SANDBOX_STATE)/images/data.tar shp-test/postgres:latest

sandbox-swarm-check: ## --check --diff of playbooks/swarm.yml against the swarm sandbox (changes nothing)
	ansible-playbook playbooks/swarm.yml -i inventories/sandbox-swarm --check --diff $(PLAYBOOK_ARGS)

sandbox-swarm-site: ## site.yml on the swarm sandbox: the site (data tier, stacks, router, backups) across its nodes
	ansible-playbook playbooks/site.yml -i inventories/sandbox-swarm $(PLAYBOOK_ARGS)

sandbox-swarm-site-check: ## --check --diff of site.yml against the swarm sandbox (changes nothing)
	ansible-playbook playbooks/site.yml -i inventories/sandbox-swarm --check --diff $(PLAYBOOK_ARGS)

sandbox-nmt-tls: ## the nmt twin's certificates from a local CA under <swarm sandbox state>/nmt-tls (kept when present)
	@tests/tools/local_ca.sh $(SWARM_SANDBOX_STATE)/nmt-tls backend.$(NMT_SANDBOX_DOMAIN) backend.stage.$(NMT_SANDBOX_DOMAIN)

sandbox-nmt: sandbox-swarm-servers sandbox-nmt-tls ## seed 004's nmt site (inventories/sandbox-nmt) on the swarm sandbox: one site per swarm
	ansible-playbook playbooks/site.yml -i inventories/sandbox-nmt $(PLAYBOOK_ARGS)

sandbox-nmt-check: ## --check --diff of the nmt twin on the swarm sandbox (changes nothing)
	ansible-playbook playbooks/site.yml -i inventories/sandbox-nmt --check --diff $(PLAYBOOK_ARGS)

sandbox-swarm-destroy: ## remove the swarm sandbox's servers, their volumes, their network and .sandbox-swarm/
	@python3 tests/tools/sandbox.py cluster-destroy --prefix $(SWARM_SANDBOX_NAME) --state-dir $(SWARM_SANDBOX_STATE) \
	  --purge-state $(SWARM_HOSTS)

.PHONY: bench bench-swarm bench-warm
bench: setup ## benchmark compose_stack vs raw Compose and docker_compose_v2 (docs/performance.md)
	.venv/bin/python bench/compose_bench.py $(BENCH_ARGS)

# Niced: it shares the machine with other work (the throwaway server's own processes are not niced).
bench-warm: setup ## benchmark the warm_plugins callback: controller CPU of tasks templating the collection's filters, with and without it (docs/performance.md)
	.venv/bin/python bench/warm_plugins_bench.py $(BENCH_ARGS)

bench-swarm: setup ## benchmark swarm_stack vs docker_stack and raw docker stack deploy on a throwaway server (docs/performance.md)
	nice -n 10 .venv/bin/python bench/swarm_bench.py $(BENCH_ARGS)

build: setup ## build the collection tarball into .build/
	ansible-galaxy collection build --force --output-path .build .

clean: ## remove build artefacts (keeps .venv and images)
	rm -rf .build tests/output .pytest_cache .ruff_cache
