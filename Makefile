# The book's single entry point.  `make book`: set up and build the whole book.
# `make test`: set up and run the whole test suite (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch on this kind of machine; GPU users: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
MATHJAX := _build/npm/node_modules/mathjax/es5/tex-chtml.js

.PHONY: setup book test test-fast browser clean

setup: $(VENV)/.installed $(MATHJAX) browser

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	touch $@

$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix _build/npm mathjax@3.2.2

# Debian's chromium (the browser check of the site) and graphviz (the family-tree figure).
browser:
	@{ command -v chromium && command -v dot; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then S=; else S=sudo; fi; \
	  $$S apt-get update -qq && $$S apt-get install -y -qq chromium graphviz >/dev/null; }

book: setup
	$(BIN)/rlbook build

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf _build
