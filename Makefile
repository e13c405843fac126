# Siheyi: `make demo` and `make test` do all set-up on a fresh Debian / Raspberry Pi OS machine.
# Re-running is fast: system packages are checked with dpkg, the venv is rebuilt only when
# pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# chromium and a CJK font: the board's browser tests and its screenshot (zh-CN by default)
SYS_PKGS := python3-venv libzbar0 espeak-ng alsa-utils postgresql wrk chromium fonts-wqy-microhei shellcheck systemd
DEMO_ARGS ?=

.PHONY: demo test lint sysdeps venv clean

sysdeps:
	@if ! command -v dpkg >/dev/null 2>&1; then \
		echo "not a Debian system: install $(SYS_PKGS) yourself"; exit 0; fi; \
	missing=""; for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		echo "installing system packages:$$missing"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[device,zxing,server,provisioning,dev]'
	@touch $(STAMP)

venv: sysdeps $(STAMP)

demo: venv
	$(BIN)/kiosk demo $(DEMO_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest -q -n 2 --durations=25

.PHONY: config-docs
config-docs: venv  # the configuration tables in docs/ from the schemas in device/ and server/config.py
	$(BIN)/python -m siheyi.configdoc device.config:DeviceConfig=docs/kiosk-config.md \
		server.config:ServerFile=docs/server.md

.PHONY: openapi
openapi: venv  # docs/openapi.json from the route table and core/wire.py (a test keeps it equal)
	$(BIN)/python -m server.http.openapi docs/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
