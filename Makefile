# The two commands: `make up` runs the platform, `make test` runs the tests.
# Both set themselves up on a fresh machine (Python 3.11 + pip are all they need).
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv

.PHONY: help install browser dashboard-assets dashboard-assets-check up test test-fast bench chaos lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --locked --all-packages
	@touch $@

install: $(VENV)/.synced ## create .venv and install the locked packages

# The dashboard's browser tests drive Debian chromium through Playwright (no browser download).
browser: ## install Debian chromium for the browser tests, when missing
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "installing Debian chromium (apt-get) for the browser tests"; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; \
	fi

# The dashboard's chart library is vendored (committed) so `make up`/`make test` never need
# npm; these re-fetch it from the npm registry and check it against package-lock.json.
dashboard-assets: ## re-fetch the dashboard's JS/CSS from npm (pinned, integrity-checked)
	python3 services/rewards/frontend/fetch_assets.py

dashboard-assets-check: ## re-fetch from npm and compare with the vendored files
	python3 services/rewards/frontend/fetch_assets.py --check

up: install ## run the whole platform in the foreground (Ctrl-C stops it)
	$(VENV)/bin/referral-dev up

test: install browser ## run the whole test suite against real components (TEST_WORKERS=2 processes)
	$(VENV)/bin/pytest -n $${TEST_WORKERS:-2} --dist loadfile

test-fast: install ## unit and contract tests only (no service processes)
	$(VENV)/bin/pytest -m "not e2e"

chaos: install ## fault-injection scenarios with an exact oracle (CHAOS_EVENTS=20000); results in tests/artifacts/chaos-results.md
	rm -f tests/artifacts/chaos-results.md
	CHAOS_FULL=1 CHAOS_EVENTS=$${CHAOS_EVENTS:-20000} $(VENV)/bin/pytest tests/chaos -s -p no:cacheprovider; \
		status=$$?; cat tests/artifacts/chaos-results.md 2>/dev/null; exit $$status

bench: install ## run the benchmarks; figures in bench/results/latest.json (+ plot)
	$(VENV)/bin/python -m bench

lint: install ## ruff
	$(VENV)/bin/ruff check libs services tests bench

clean: ## remove local state (.data) and environments
	rm -rf .data .venv .tools tests/artifacts
