# pvtt: one virtual environment, made from the project's own files.
#   make demo   set up and build the demo dataset (CPU backends, synthetic catalog)
#   make test   set up and run the test suite
#   make lint   ruff over the package and tests
#
# torch is installed first, pinned, so that pip takes the CPU build this machine
# carries (or the wheel index you point PIP_INDEX_URL at) instead of resolving a
# multi-GB CUDA build through a dependency. Override with TORCH_SPEC=... .

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.pvtt-installed
DEMO_OUT ?= demo-out

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]" "$(TORCH_SPEC)"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pvtt demo $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=15

lint: $(STAMP)
	$(BIN)/ruff check builder loaders schemas tools pvtt tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
