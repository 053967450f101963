# The two commands a newcomer needs: `make serve` and `make test`. Both install into .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test bench clean

$(BIN)/memory: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/memory

serve: install
	$(BIN)/memory serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
