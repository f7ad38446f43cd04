# Quick start: `make demo` and `make test` work on a fresh machine with nothing installed.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override (e.g. TORCH_SPEC=torch) on a machine with CUDA.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev,plots,examples,search]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lodo-tune demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/step_cost.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
