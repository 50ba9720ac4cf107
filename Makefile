# controlsamp: `make demo` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2
# torch is installed first, pinned, from PyTorch's CPU wheel index, so that pip never resolves the
# multi-GB CUDA build; torch's own dependencies then come from PyPI with the package's. The CPU index is
# an *extra* index, asked for torch alone: where it cannot be reached, pip retries it for about 10 s,
# then takes torch==2.13.0 from the indexes it has (on this project's machines a CPU wheel on disk).
# GPU users: make clean setup TORCH_INDEX=https://download.pytorch.org/whl/cu128 (the CUDA build for
# your driver; pytorch.org lists them), or TORCH_INDEX= for PyPI's default build (CUDA on Linux x86-64).
# Another version: TORCH=torch==2.14.1
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test test-slow theory clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps '$(TORCH)' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet '$(TORCH)' -e '.[test,plot]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/controlsamp demo

test: setup
	$(BIN)/python -m pytest -m "not slow" -n $(JOBS) --dist worksteal -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -n $(JOBS) --dist worksteal -q

theory: setup
	$(BIN)/python -m theory

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
