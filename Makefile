# pvtt: one virtual environment, made from the project's own files.
#   make demo   set up (core) and build the demo dataset (CPU backends, synthetic catalog)
#   make test   set up (core + model extras + test tools) and run the test suite
#   make system-deps   (root, optional) Debian packages some tests use: chromium for the
#               report and review pages; without them those tests skip and say why
#   make lint   ruff over the package and tests
#
# torch is installed first, pinned, so that pip takes the CPU build this machine
# carries (or the build you point it at) instead of resolving a multi-GB CUDA
# build through a dependency. Override with TORCH_SPEC=... . SAM2 installs with
# --no-deps: its own requirements would pull a second torch and torchvision.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
CORE := $(VENV)/.pvtt-core
FULL := $(VENV)/.pvtt-full
U2NET_HOME := $(CURDIR)/.cache/u2net
DEMO_OUT ?= demo-out

.PHONY: setup setup-full demo test lint clean system-deps

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[report]" "$(TORCH_SPEC)"
	touch $(CORE)

$(FULL): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[test,models,rembg,report]" "$(TORCH_SPEC)"
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation sam2==1.1.0
	$(BIN)/python -m pvtt.tools.fetch_u2netp $(U2NET_HOME)
	touch $(FULL)

# System packages, installed only when asked (CI asks): Debian's chromium renders the
# HTML report in a headless-browser test. It changes the machine, so it needs root and
# is never a side effect of `make test`.
system-deps:
	@if command -v chromium >/dev/null; then echo "chromium: already installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "system-deps: run as root to apt-get install chromium" >&2; exit 1; \
	else apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  && echo "chromium: installed"; fi

setup: $(CORE)
setup-full: $(FULL)

demo: $(CORE)
	$(BIN)/pvtt demo $(DEMO_OUT)

test: $(FULL)
	U2NET_HOME=$(U2NET_HOME) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -x -rs --durations=15

lint: $(FULL)
	$(BIN)/ruff check builder loaders schemas tools pvtt tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .cache .pytest_cache .ruff_cache
