# Two commands: `make run` (the demo store) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m example_store

test: $(STAMP)
	$(VENV)/bin/ruff check flask_klaviyo example_store tests benchmarks
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check flask_klaviyo example_store tests benchmarks
	$(VENV)/bin/ruff format --check flask_klaviyo example_store tests benchmarks

clean:
	rm -rf $(VENV) instance .pytest_cache
