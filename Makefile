# Two entry points on a fresh machine: `make demo` (the main job) and `make test`. `make test-fast` is the quick
# tier: the tests not marked slow (markers in setup.cfg), about 3 minutes on 2 cores. `make parity` checks a
# converted checkpoint against PyTorch, `make notebooks` re-executes notebooks/ and saves their outputs, and
# `make bench` times deberta-jax against transformers and keras-hub (experiments/bench/README.md).
# Both create .venv from the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo parity notebooks bench test test-fast clean

$(STAMP): requirements.txt requirements-test.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

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

clean:
	rm -rf $(VENV)
