# Two Towers: build the book and test it.
#   make book   set up .venv if needed, clean build with warnings as errors, print where index.html is
#   make test   set up .venv if needed, unit tests, then nbval (strict) on every notebook
#   make venv   create/update .venv (re-installs only when requirements.txt or pyproject.toml change)
#   make clean  remove build outputs (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT  := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV  := $(ROOT)/.venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.tt-installed

# First interpreter that actually runs: python3.11, else python3 (pyproject.toml requires >= 3.11).
PYTHON_BOOTSTRAP ?= $(shell for p in python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys' >/dev/null 2>&1; then echo $$p; break; fi; done)

# MovieLens 100K: use the copy beside the repository when there is one and the caller has not chosen
# a folder; otherwise tt_helpers downloads it from GroupLens into the user's cache (md5-verified).
LOCAL_DATA := $(abspath $(ROOT)/../shared/data/movielens)
ifeq ($(origin TT_HELPERS_DATA),undefined)
ifneq ($(wildcard $(LOCAL_DATA)/ml-100k/u.data),)
export TT_HELPERS_DATA := $(LOCAL_DATA)
endif
endif

# nbval re-executes the notebooks in a kernel started from pytest's own interpreter (--nbval-current-env).
# The kernel must use the inline matplotlib backend, as when the notebooks were executed: with Agg, figures
# are not displayed (their `<Figure size ...>` outputs go missing) and plt.show() warns on stderr.
NBVAL_ENV := PYTHONHASHSEED=0 MPLBACKEND=module://matplotlib_inline.backend_inline
NBVAL_ARGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

.PHONY: help venv book test test-unit test-notebooks clean distclean

help:
	@echo "make book   - set up .venv and build the book (clean, warnings are errors)"
	@echo "make test   - set up .venv, run unit tests and nbval on every notebook"
	@echo "make clean  - remove build outputs;  make distclean - also remove .venv"

venv: $(STAMP)

$(STAMP): $(ROOT)/requirements.txt $(ROOT)/pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then \
		if [ -z "$(PYTHON_BOOTSTRAP)" ]; then echo "error: no python3.11 or python3 found" >&2; exit 1; fi; \
		echo "Creating $(VENV) with $(PYTHON_BOOTSTRAP) ($$($(PYTHON_BOOTSTRAP) --version 2>&1))"; \
		$(PYTHON_BOOTSTRAP) -m venv "$(VENV)"; \
	fi
	cd "$(ROOT)" && "$(BIN)/python" -m pip install -r requirements.txt -e .
	@touch "$(STAMP)"

book: venv
	@echo "TT_HELPERS_DATA=$${TT_HELPERS_DATA:-<unset: download to the user cache>}"
	cd "$(ROOT)" && rm -rf _build
	cd "$(ROOT)" && "$(BIN)/jupyter-book" build . -W -n --keep-going
	@echo "Book built: $(ROOT)/_build/html/index.html"

# pytest exits 5 when it collects no test; for the unit-test step that is reported, not failed
# (the notebook step always runs tests).
define run_unit_tests
	@echo "TT_HELPERS_DATA=$${TT_HELPERS_DATA:-<unset: download to the user cache>}"
	cd "$(ROOT)" && rc=0 && MPLBACKEND=Agg "$(BIN)/python" -m pytest tests -p no:cacheprovider || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "(no unit tests collected)"; elif [ $$rc -ne 0 ]; then exit $$rc; fi
endef

define run_notebook_tests
	cd "$(ROOT)" && $(NBVAL_ENV) "$(BIN)/python" -m pytest $(NBVAL_ARGS) notebooks
endef

# Unit tests first, then every notebook; in this order even under `make -j`.
test: venv
	$(run_unit_tests)
	$(run_notebook_tests)

test-unit: venv
	$(run_unit_tests)

test-notebooks: venv
	$(run_notebook_tests)

clean:
	cd "$(ROOT)" && rm -rf _build .pytest_cache *.egg-info
	cd "$(ROOT)" && find . -path ./.venv -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf "$(VENV)"
