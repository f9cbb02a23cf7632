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

SANDBOX_NAME ?= shp-sandbox
SANDBOX_STATE ?= $(ROOT)/.sandbox
export SHP_SANDBOX_STATE := $(SANDBOX_STATE)
STANDINS := shp-test/postgres:latest shp-test/mariadb:latest shp-test/redis:latest shp-test/watchtower:latest \
            shp-test/nginx:latest shp-test/httpapp:latest
PLAYBOOK_ARGS ?=

.PHONY: help setup images test lint unit integration molecule sanity sandbox sandbox-check \
        sandbox-destroy build clean

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

sandbox: setup ## create or reuse the sandbox server and converge playbooks/site.yml on it
	@python3 tests/tools/sandbox.py create --name $(SANDBOX_NAME) --state-dir $(SANDBOX_STATE)
	@mkdir -p $(SANDBOX_STATE)/bin && ln -sfn "$$(readlink -f /usr/local/lib/docker/cli-plugins/docker-compose)" $(SANDBOX_STATE)/bin/docker-compose
	@python3 tests/tools/sandbox.py export-images --output $(SANDBOX_STATE)/images/standins.tar $(STANDINS)
	ansible-playbook playbooks/site.yml -i inventories/sandbox $(PLAYBOOK_ARGS)

sandbox-check: ## --check --diff against the converged sandbox (changes nothing)
	ansible-playbook playbooks/site.yml -i inventories/sandbox --check --diff $(PLAYBOOK_ARGS)

sandbox-destroy: ## remove the sandbox container, its Docker volume and .sandbox/
	@python3 tests/tools/sandbox.py destroy --name $(SANDBOX_NAME) --state-dir $(SANDBOX_STATE) --purge-state

.PHONY: bench
bench: setup ## benchmark compose_stack vs raw Compose and docker_compose_v2 (docs/performance.md)
	.venv/bin/python bench/compose_bench.py $(BENCH_ARGS)

build: setup ## build the collection tarball into .build/
	ansible-galaxy collection build --force --output-path .build .

clean: ## remove build artefacts (keeps .venv and images)
	rm -rf .build tests/output .pytest_cache .ruff_cache
