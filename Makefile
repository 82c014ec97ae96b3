# Two entry points on a fresh machine: `make demo` (the main job) and `make test`. `make test-fast` is the quick
# tier: the tests not marked slow (markers in setup.cfg), about 3 minutes on 2 cores. `make parity` checks a
# converted checkpoint against PyTorch, `make notebooks` re-executes notebooks/ and saves their outputs, and
# `make bench` times deberta-jax against transformers and keras-hub (experiments/bench/README.md).
# Both create .venv from the pinned requirements on first use.
# `make test-latest` runs the quick tier under today's JAX on Python 3.12 (requirements-latest.txt), in .venv-latest;
# PYTHON_LATEST names the interpreter, PYENV_LATEST the pyenv version it selects where python3.12 is a pyenv shim.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON_LATEST ?= python3.12
PYENV_LATEST ?= 3.12.1
VENV_LATEST := .venv-latest
STAMP_LATEST := $(VENV_LATEST)/.installed

.PHONY: demo parity notebooks bench test test-fast test-latest clean

$(STAMP): requirements.txt requirements-test.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

$(STAMP_LATEST): requirements-latest.txt setup.cfg pyproject.toml
	PYENV_VERSION=$(PYENV_LATEST) $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install -q --upgrade pip
	$(VENV_LATEST)/bin/pip install -q -r requirements-latest.txt
	$(VENV_LATEST)/bin/pip install -q --no-deps -e .
	touch $(STAMP_LATEST)

demo: $(STAMP)
	$(BIN)/python experiments/demo/run_demo.py

parity: $(STAMP)
	$(BIN)/python experiments/parity/run_parity_demo.py

notebooks: $(STAMP)
	$(BIN)/python notebooks/execute_all.py

bench: $(STAMP)
	$(BIN)/pip install -q --no-deps -r requirements-bench.txt
	$(BIN)/python -m benchmarks --models deberta-v3-xsmall --seq-lens 128 --batch 8 \
		--workloads forward,train --impls reference,skew,chunked --reps 5

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 tests

test-latest: $(STAMP_LATEST)
	$(VENV_LATEST)/bin/python -m pytest -q -m "not slow" --durations=10 tests

clean:
	rm -rf $(VENV) $(VENV_LATEST)
