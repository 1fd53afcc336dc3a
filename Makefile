# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ml]'
	touch $@

demo: setup
	$(VENV)/bin/reviewbus demo --last 50

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check schemas agents streams infra tests bench
	$(VENV)/bin/mypy schemas agents

clean:
	rm -rf $(VENV) .reviewbus
