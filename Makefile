# The two commands: `make run` (the demo) and `make test`. Both create .venv and
# install the project into it; only Python 3.11+ and pip are needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test serve lint clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## the demo: two simulated providers and the gateway on :8080
	$(VENV)/bin/smm-gateway demo

serve: $(STAMP)  ## the gateway with providers.yaml
	$(VENV)/bin/smm-gateway serve --config providers.yaml

test: $(STAMP)  ## both tiers: tests/unit (in-process) and tests/e2e (real processes), on real Redis
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: $(STAMP)  ## the benchmark suite: writes bench/results/latest.{json,md,png}
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests
	$(VENV)/bin/mypy gateway

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
