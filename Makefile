# The two Quickstart commands: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/synclipmae: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --prefer-binary -e '.[test]'
	touch $@

.PHONY: install demo test bench
install: $(BIN)/synclipmae

demo: install
	$(BIN)/synclipmae demo --workdir runs/demo

test: install
	$(BIN)/python -m pytest -q --durations=15 tests

bench: install
	$(BIN)/python experiments/bench_pipeline.py
