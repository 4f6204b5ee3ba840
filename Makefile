# Two entry points: `make quickstart` (the main job on ToyWorld, CPU only) and `make test`.
# Both create .venv/ at the repo root on first use and install the package with its extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/quickstart

.PHONY: quickstart test test-slow install clean

install: $(STAMP)

# The editable install records which top-level packages exist: reinstall when one appears.
PACKAGES := $(wildcard */__init__.py)

$(STAMP): pyproject.toml setup.py $(PACKAGES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[demo,dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/vlp quickstart --out $(OUT)

# pytest exits 5 when a selection (-k, a path) collects no test; that is not a failure.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# End-to-end checks of several minutes each (pytest -m slow); CI runs them after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) runs *.egg-info
