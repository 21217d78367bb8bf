# Two commands: `make run` (the demo store) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-smoke clean browser wrk

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m example_store

test: $(STAMP) browser
	$(VENV)/bin/ruff check flask_klaviyo example_store tests benchmarks
	$(PY) -m pytest

# Debian's chromium for tests/test_browser.py, as in CI (as root or with passwordless sudo).
# Without it those tests are skipped, with the reason; under CI=true they fail instead.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)

browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "chromium unavailable: browser tests will be skipped"

# Debian's wrk, the load generator of benchmarks/store_server.py (without it: its Python client).
wrk:
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } || \
	  echo "wrk unavailable: store_server.py uses its Python load generator"

# The performance figures (README "Performance"): each script prints one table, ~1-2 min each.
bench: $(STAMP) wrk
	$(PY) benchmarks/request_overhead.py
	$(PY) benchmarks/store_page.py
	$(PY) benchmarks/store_server.py
	$(PY) benchmarks/drain_throughput.py
	$(PY) benchmarks/rate_limited_drain.py
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/worker_memory.py
	$(PY) benchmarks/catalog_sync.py
	$(PY) benchmarks/backfill.py
	$(PY) benchmarks/replicated_push.py

# Each script in a few seconds on tiny sizes, same code path (tests/test_benchmarks.py does this).
bench-smoke: $(STAMP)
	for script in request_overhead store_page store_server drain_throughput rate_limited_drain \
	  latency worker_memory catalog_sync \
	  backfill replicated_push; do \
	  $(PY) benchmarks/$$script.py --smoke || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check flask_klaviyo example_store tests benchmarks
	$(VENV)/bin/ruff format --check flask_klaviyo example_store tests benchmarks

clean:
	rm -rf $(VENV) instance .pytest_cache
