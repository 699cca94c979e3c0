# Two commands for a fresh clone (see README.md):
#   make book   -- create .venv, execute every chapter not already executed from the same sources
#                  (quick mode on a CPU), build the HTML book
#   make test   -- create .venv, run the test suite: library tests, every chapter, the book build
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned; override for another platform, e.g. TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# Use the shared offline copy of MNIST when it is there (CI, the project's machines);
# otherwise sa_utils downloads MNIST into its user cache.
ifneq ($(wildcard ../shared/data/MNIST/raw),)
export SA_DATA_DIR ?= $(abspath ../shared/data)
endif
export SA_CACHE_DIR ?= $(CURDIR)/_build/cache

.PHONY: venv book test unit lint chapters benchmark clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	@# -qq: errors only; -q still shows setuptools' notice about editable installs of a
	@# top-level package (informational, nothing to act on)
	$(PY) -m pip install -qq -e ".[book,test,sd,nudenet]"
	touch $@

book: venv
	$(PY) tools/book.py --reuse

test: venv
	$(PY) -m pytest tests -rs --durations=12

# ruff (lint + format check, settings in pyproject.toml), notebooks without outputs, and an
# install that prints no deprecation warning; .ci/run runs it before the tests
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tools/strip_outputs.py --check book/*/*.ipynb
	@if $(PY) -m pip install --no-deps --no-build-isolation -e . 2>&1 | grep -i "deprecat"; then \
		echo "pip install -e . printed a deprecation warning (above): fix pyproject.toml"; exit 1; fi

unit: venv
	$(PY) -m pytest tests -m "not slow"

benchmark: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf _build
