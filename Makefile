# The two commands a newcomer needs: `make serve` and `make test`. Both install into .venv/ first:
# `make serve` (and `make install`) only what the server needs, `make test` the test extras as well.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test serve test test-services bench clean conformance-deps client-deps

$(VENV)/.installed-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

# The test extras on top of the server's install; pip skips what is already there.
$(VENV)/.installed-test: $(VENV)/.installed-server
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed-server

install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/memory serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# The MCP conformance suite (npm, pinned by its lock file); installed once, when missing.
CONFORMANCE := tests/conformance
$(CONFORMANCE)/node_modules: $(CONFORMANCE)/package.json $(CONFORMANCE)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the MCP conformance suite (apt-get install npm)" >&2; exit 1; }
	cd $(CONFORMANCE) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules

conformance-deps: $(CONFORMANCE)/node_modules

# Claude Code and Codex, which the README's connect commands are run with (tests/test_readme_commands.py).
CLIENTS := tests/clients
$(CLIENTS)/node_modules: $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the client tests (apt-get install npm)" >&2; exit 1; }
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules

client-deps: $(CLIENTS)/node_modules

# Services the suite starts itself; missing ones fail here with the command that installs them.
test-services:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || \
		{ echo "PostgreSQL is needed for the tests: sudo apt-get install postgresql" >&2; exit 1; }
	@test -x /usr/bin/chromium || command -v chromium >/dev/null || \
		{ echo "Chromium is needed for the browser tests: sudo apt-get install chromium" >&2; exit 1; }

test: install-test conformance-deps client-deps test-services
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
