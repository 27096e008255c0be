# The two commands: `make run` (the demo) and `make test`. Both create .venv and
# install the project into it, pinned by constraints.txt; only Python 3.11+ and pip
# are needed. `make run` installs the runtime dependencies only; `make test` adds
# the test tools (pytest, hypothesis, ruff, mypy, matplotlib for the benchmark).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet -c constraints.txt
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test serve lint clean bench chaos system-deps docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[test]'
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)  ## the demo: two simulated providers and the gateway on :8080 (starts clean)
	$(VENV)/bin/smm-gateway demo

serve: $(RUN_STAMP)  ## the gateway with providers.yaml
	$(VENV)/bin/smm-gateway serve --config providers.yaml

test: $(TEST_STAMP)  ## both tiers: tests/unit (in-process) and tests/e2e (real processes), on real Redis
	$(PY) -m pytest -q -n 3 --dist worksteal

# The suite REPEAT times in a row (as `make test` runs it); at the end, every test
# that failed or errored in any run, with how many runs it failed in. Each run's
# output is kept in the directory it names. Exit 1 if any run failed.
REPEAT ?= 3
.PHONY: test-repeat
test-repeat: $(TEST_STAMP)  ## the suite three times; names any test that failed in any run
	@logs=$$(mktemp -d -t smm-test-repeat.XXXXXX); status=0; \
	for run in $$(seq $(REPEAT)); do \
	  $(PY) -m pytest -q -n 3 --dist worksteal -rfE -p no:cacheprovider \
	    > $$logs/run$$run.txt 2>&1 || status=1; \
	  echo "test-repeat: run $$run of $(REPEAT): $$(tail -n 1 $$logs/run$$run.txt)"; \
	done; \
	grep -hE '^(FAILED|ERROR) ' $$logs/run*.txt | sed -E 's/ - .*//' | sort | uniq -c \
	  | sort -rn > $$logs/failed.txt; \
	if [ -s $$logs/failed.txt ]; then \
	  echo "test-repeat: failed in some run (runs, test):"; cat $$logs/failed.txt; \
	else echo "test-repeat: no test failed in $(REPEAT) runs"; fi; \
	echo "test-repeat: logs in $$logs"; exit $$status

# Debian programs some tests drive: nginx (deploy/), Chromium and its driver (the
# dashboard's browser tests). Installed when missing and run as root with apt-get;
# the tests install them themselves otherwise (slower, inside the test run).
SYSTEM_PROGRAMS := nginx:nginx-light chromium:chromium chromedriver:chromium-driver
system-deps:  ## apt-get install what the tests need from Debian (root; no-op when present)
	@missing=""; for pair in $(SYSTEM_PROGRAMS); do \
	  prog=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$prog >/dev/null 2>&1 || [ -x /usr/sbin/$$prog ] || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "system-deps: please install:$$missing"; exit 0; fi; \
	echo "system-deps: apt-get install$$missing"; \
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null

bench: $(TEST_STAMP)  ## the benchmark suite: writes bench/results/latest.{json,md,png}
	$(PY) -m bench

chaos: $(TEST_STAMP)  ## the chaos suite (replicas, Redis and provider faults): chaos/results/latest.json
	$(PY) -m chaos

docs: $(TEST_STAMP)  ## the docs site (mkdocs.yml, docs/) into site/, strictly: a broken link fails
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Mutation testing of the modules that move money and orders (mutants/config.toml):
# slow, so not part of `make test`; run it before a change to those modules lands.
# Writes mutants/report.md; exit 1 if a survivor is neither killed nor explained.
.PHONY: mutants
mutants: $(TEST_STAMP)  ## mutation testing of the money and order paths: mutants/report.md
	$(PY) mutants/mutate.py --jobs 2

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check gateway tests chaos
	$(VENV)/bin/mypy gateway chaos

clean:  ## remove the virtualenv, the demo's data and tool caches; ./data (what `serve` keeps) stays
	rm -rf $(VENV) data/demo .pytest_cache .mypy_cache .ruff_cache
	rmdir data 2>/dev/null || true
