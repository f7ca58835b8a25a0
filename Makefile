# Two Towers: build the book and test it.
#   make book   set up .venv if needed, clean build with warnings as errors, print where index.html is
#   make test   set up .venv if needed, unit tests, then nbval (strict) on every notebook
#   make venv   create/update .venv (re-installs only when requirements.txt or pyproject.toml change)
#   make lint   ruff (package, tests, notebooks), codespell, notebook hygiene (tools/check_notebooks.py)
#   make check-site  after `make book`: the built site in headless Chromium (tests/site, screenshots)
#   make clean  remove build outputs (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT  := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV  := $(ROOT)/.venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.tt-installed
DEV_STAMP := $(VENV)/.tt-dev-installed
PIP_LOG := $(VENV)/pip-install.log

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
# The CPU caps keep torch's kernels (ATen, oneDNN) and MKL's to AVX2 on CPUs that have more (AVX-512): kernels for
# other instruction sets sum in another order, and the last digits move. The stored outputs were made under these
# caps (on an Intel Xeon with AVX-512).
CPU_CAPS := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
# MKL also chooses its kernels by the CPU's vendor: on AMD it runs a generic path that ignores the cap, and chapters
# 2 and 3 then train to other digits (README, "Two torch threads"). On Linux x86-64 CPUs with AVX2 and FMA, nbval's
# kernel preloads tools/mkl_intel_path.c, which answers MKL's vendor check with "Intel": AMD and Intel CPUs then
# run the same AVX2 kernels (on an AMD EPYC, chapters 2 and 3 gave the outputs stored on a Xeon in every cell).
MKL_SHIM := $(VENV)/lib/libtt_mkl_intel_path.so
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
ifeq ($(shell uname -s)-$(shell uname -m)-$(filter avx2,$(CPU_FLAGS))-$(filter fma,$(CPU_FLAGS)),Linux-x86_64-avx2-fma)
MKL_PRELOAD := LD_PRELOAD=$(MKL_SHIM)
MKL_SHIM_TARGET := $(MKL_SHIM)
endif
NBVAL_ENV := PYTHONHASHSEED=0 MPLBACKEND=module://matplotlib_inline.backend_inline $(CPU_CAPS) $(MKL_PRELOAD)
NBVAL_ARGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# What `make test-notebooks` re-executes: every notebook, or e.g. NOTEBOOKS=notebooks/01_retrieval_vs_ranking.ipynb
NOTEBOOKS ?= notebooks

.PHONY: help venv venv-dev book test test-unit test-notebooks lint check-site clean distclean

help:
	@echo "make book   - set up .venv and build the book (clean, warnings are errors)"
	@echo "make test   - set up .venv, run unit tests and nbval on every notebook"
	@echo "make lint   - ruff, codespell and the notebook hygiene check (installs requirements-dev.txt)"
	@echo "make check-site - after make book: check the built site in headless Chromium, save screenshots"
	@echo "make clean  - remove build outputs;  make distclean - also remove .venv"

define create_venv
	@if [ ! -x "$(BIN)/python" ]; then \
		if [ -z "$(PYTHON_BOOTSTRAP)" ]; then echo "error: no python3.11 or python3 found" >&2; exit 1; fi; \
		echo "Creating $(VENV) with $(PYTHON_BOOTSTRAP) ($$($(PYTHON_BOOTSTRAP) --version 2>&1))"; \
		$(PYTHON_BOOTSTRAP) -m venv "$(VENV)"; \
	fi
endef

# Annoy (requirements.txt) is built from source: without a C++ compiler pip fails deep in a build log.
# When that is what happened, say so and name the fix. pip's whole output is kept in $(PIP_LOG).
define explain_pip_failure
	if grep -Eiq 'failed (building wheel for|to build) annoy|failed to build installable wheels.*annoy|wheel for annoy.*(did not run successfully|error)' "$(PIP_LOG)"; then \
		echo "" >&2; \
		echo "error: installing the requirements failed while building Annoy. pip compiles it from source (the" >&2; \
		echo "  pinned release has no wheels), which needs a C++ compiler. Install one, then run make again:" >&2; \
		echo "    Debian/Ubuntu:  sudo apt-get install build-essential python3-dev" >&2; \
		echo "    Fedora/RHEL:    sudo dnf install gcc-c++ python3-devel" >&2; \
		echo "    macOS:          xcode-select --install   (the Xcode command line tools)" >&2; \
		echo "    Windows:        the Microsoft C++ Build Tools (or WSL)" >&2; \
		echo "    conda:          conda install -c conda-forge cxx-compiler" >&2; \
		echo "  pip's full output: $(PIP_LOG)" >&2; \
	else \
		echo "error: pip install failed; its full output is in $(PIP_LOG)" >&2; \
	fi
endef

# TorchRec (chapter 6's sharded tables) has wheels for Linux x86-64 only; elsewhere chapter 6's TorchRec
# section raises an ImportError that says so, and everything else runs. See requirements-scale.txt.
define install_torchrec
	@if [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ]; then \
		cd "$(ROOT)" && "$(BIN)/python" -m pip install -r requirements-scale.txt \
		&& "$(BIN)/python" -m pip install --no-deps torchrec==1.8.0; \
	else \
		echo "note: TorchRec is not installed ($$(uname -s)-$$(uname -m)): chapter 6's sharded tables need Linux x86-64"; \
	fi
endef

venv: $(STAMP)

# Annoy's setup.py compiles with -march=native: its distance loops then use AVX-512 on one machine and AVX on
# another, the trees split differently, and chapter 5's recall changes from CPU to CPU. Built with its other
# default flags and no -march, it runs the same instructions everywhere (slower; chapter 5 measures it).
# Nor with -ffast-math (also a setup.py default): with it GCC computes 1/sqrt(x) with rsqrtss/rsqrtps, estimate
# instructions that round differently on Intel and AMD CPUs, and Annoy normalises vectors with them, so its
# angular trees depended on the CPU's vendor (README, "Two torch threads"). Of -ffast-math it keeps what lets
# GCC vectorise the distance loops' sums (-fassociative-math and the two flags it needs), which adds no estimate
# instruction: the order of the sums is fixed when the module is compiled, whatever the CPU, and the build and
# search are as fast as with -ffast-math (without them: build 2x and search
# 1.4x slower on 100K x 65 vectors; benchmarks/vendor_independence.py).
# --no-cache-dir: a wheel pip cached from a -march=native build would otherwise be reused.
ANNOY_SUMS := -fassociative-math,-fno-signed-zeros,-fno-trapping-math
ANNOY_FLAGS := -D_CRT_SECURE_NO_WARNINGS,-fpermissive,-O3,$(ANNOY_SUMS),-DANNOYLIB_MULTITHREADED_BUILD,-std=c++14
ANNOY_PIN := $(shell grep -E '^annoy==' $(ROOT)/requirements.txt)
# The stamp is named after the flags and the pin: a .venv built with others rebuilds Annoy (only Annoy).
ANNOY_STAMP := $(VENV)/.annoy-$(shell printf '%s %s' '$(ANNOY_FLAGS)' '$(ANNOY_PIN)' | md5sum | cut -c1-12)

$(ANNOY_STAMP):
	$(create_venv)
	cd "$(ROOT)" && { ANNOY_COMPILER_ARGS='$(ANNOY_FLAGS)' "$(BIN)/python" -m pip install --no-cache-dir \
		--no-binary annoy --force-reinstall --no-deps "$(ANNOY_PIN)" 2>&1 | tee "$(PIP_LOG)"; } \
		|| { $(explain_pip_failure); exit 1; }
	@rm -f "$(VENV)"/.annoy-* && touch "$@"

$(STAMP): $(ROOT)/requirements.txt $(ROOT)/requirements-scale.txt $(ROOT)/pyproject.toml $(ANNOY_STAMP)
	$(create_venv)
	cd "$(ROOT)" && { "$(BIN)/python" -m pip install -r requirements.txt -e . 2>&1 | tee -a "$(PIP_LOG)"; } \
		|| { $(explain_pip_failure); exit 1; }
	$(install_torchrec)
	@touch "$(STAMP)"

# Lint and browser-check tools (requirements-dev.txt); `make test` and `make book` do not need them.
venv-dev: $(DEV_STAMP)

$(DEV_STAMP): $(ROOT)/requirements-dev.txt
	$(create_venv)
	cd "$(ROOT)" && "$(BIN)/python" -m pip install -r requirements-dev.txt
	@touch "$(DEV_STAMP)"

# Built after .venv (so after Annoy, which needs a compiler too).
$(MKL_SHIM): $(ROOT)/tools/mkl_intel_path.c | $(STAMP)
	$(CC) -shared -fPIC -O2 -o "$@" "$<"

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
	cd "$(ROOT)" && $(NBVAL_ENV) "$(BIN)/python" -m pytest $(NBVAL_ARGS) $(NOTEBOOKS)
endef

# Unit tests first, then every notebook; in this order even under `make -j`.
test: venv $(MKL_SHIM_TARGET)
	$(run_unit_tests)
	$(run_notebook_tests)

test-unit: venv
	$(run_unit_tests)

test-notebooks: venv $(MKL_SHIM_TARGET)
	$(run_notebook_tests)

# Every check runs even when an earlier one fails; the target fails if any did.
lint: venv-dev
	@cd "$(ROOT)" && rc=0; \
	echo "== ruff check"; "$(BIN)/ruff" check --output-format concise . || rc=1; \
	echo "== codespell"; "$(BIN)/codespell" || rc=1; \
	echo "== notebook hygiene"; "$(BIN)/python" tools/check_notebooks.py || rc=1; \
	exit $$rc

# Needs the built book (`make book`) and a Chromium or Chrome (Debian: apt-get install chromium; another
# browser binary: TT_BROWSER=/path/to/chrome). Screenshots go to _build/screenshots/.
check-site: venv-dev
	@test -f "$(ROOT)/_build/html/index.html" || { echo "error: no _build/html/index.html: run make book first" >&2; exit 1; }
	cd "$(ROOT)" && "$(BIN)/python" -m pytest tests/site -p no:cacheprovider

clean:
	cd "$(ROOT)" && rm -rf _build .pytest_cache *.egg-info
	cd "$(ROOT)" && find . -path ./.venv -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf "$(VENV)"
