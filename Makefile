# controlsamp: `make demo` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2

.PHONY: setup demo test test-slow theory clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, pinned, so nothing downloads CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/controlsamp demo

test: setup
	$(BIN)/python -m theory
	$(BIN)/python -m pytest -m "not slow" -n $(JOBS) -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -n $(JOBS) -q

theory: setup
	$(BIN)/python -m theory

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
