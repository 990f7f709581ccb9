# claude-auth-sync: every target here runs in CI or is documented in README.md.
#
# The virtual environment is made from Debian's /usr/bin/python3 when it is
# there, because a Python under root's home cannot be run by the other OS
# users that the integration tests and the workstation units run as.

SHELL := /bin/bash
SYSTEM_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
ROSTER ?= roster.yaml
NODE_DIR := tests/node
PYTEST_ARGS ?=

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: help setup node demo test lint synth bench bench-synth bench-agent bench-notice check plan

help:
	@echo "make demo     set up, then run the main job on a local OpenBao and API stub"
	@echo "make test     set up, then run every test (unit and integration)"
	@echo "make synth    write the Vault stack as Terraform JSON under cdktf.out/ (ROSTER=...)"
	@echo "make check    validate the roster and the isolation the stack declares (ROSTER=...)"
	@echo "make plan     what a roster change does: make plan BASE=origin/main [JSON=1]"
	@echo "make lint     ruff and mypy (strict) on the package"
	@echo "make bench    rerun the benchmarks written down in docs/benchmarks.md"
	@echo "make bench-synth  time make synth for 100, 1,000 and 10,000 users"
	@echo "make bench-agent  time one claude-auth-sync run against OpenBao (as root)"
	@echo "make bench-notice time what the login notice adds to a shell's start"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[stack,test]'
	touch $@

node: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

synth: setup
	ROSTER=$(ROSTER) $(PY) main.py

check: setup
	$(PY) -m stacks.review check --roster $(ROSTER)

plan: setup
	@test -n "$(BASE)" || { echo "Give the git ref to compare with: make plan BASE=origin/main"; exit 2; }
	@$(PY) -m stacks.review plan --roster $(ROSTER) --base $(BASE) $(if $(JSON),--json)

demo: setup node
	$(PY) -m tools.demo

# Each benchmark is a prerequisite of bench, so that one command reruns them all.
bench: bench-synth bench-agent bench-notice

bench-synth: setup
	$(PY) bench/synth.py

bench-agent: setup
	$(PY) bench/agent_run.py

bench-notice: setup
	$(PY) bench/notice.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup node lint
	$(PY) -m pytest $(PYTEST_ARGS)

# --- Workstation install (as root) -----------------------------------------
# make install-agent VAULT_ADDR=https://vault.example.com [PREFIX=...]
#   [DESTDIR=...] [ROSTER=...] [WHEELHOUSE=dir: install packages only from it]
# then run claude-auth-provision once as root with an admin VAULT_TOKEN.
PREFIX ?= /opt/claude-auth-sync
DESTDIR ?=
WHEELHOUSE ?=
INSTALL_AGENT = $(SYSTEM_PYTHON) tools/install_agent.py --prefix '$(PREFIX)' \
	--destdir '$(DESTDIR)' --roster '$(ROSTER)' --wheelhouse '$(WHEELHOUSE)'

.PHONY: install-agent uninstall-agent

install-agent:
	@$(INSTALL_AGENT) install

uninstall-agent:
	@$(INSTALL_AGENT) uninstall
