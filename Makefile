# The two Quickstart commands: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/synclipmae: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --prefer-binary -e '.[test]'
	touch $@

.PHONY: install demo test test-beam bench
install: $(BIN)/synclipmae

demo: install
	$(BIN)/synclipmae demo --workdir runs/demo

# Two pytest-xdist workers: the suite is compile-bound (XLA compiles on one core), so two processes use CI's two
# cores. The trained model the downstream tests share is built once (tests/conftest.py).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

bench: install
	$(BIN)/python experiments/bench_pipeline.py

# The Beam build test, in an environment of its own (apache-beam pins protobuf and pyarrow below the core's).
.venv-beam/bin/python: setup.cfg pyproject.toml
	$(PYTHON) -m venv .venv-beam
	.venv-beam/bin/pip install --quiet --upgrade pip
	.venv-beam/bin/pip install --quiet --prefer-binary -e '.[beam]'
	touch $@

test-beam: .venv-beam/bin/python
	.venv-beam/bin/python -m pytest -q tests/test_beam.py
