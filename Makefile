# Every target sets up its own virtual environment (.venv) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test bench bench-replica bench-cost bench-cache soak lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/gateway demo

test: $(STAMP)
	$(BIN)/python -m mypy gateway
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m tests.perf.run

# The replica path (PostgreSQL ledger, Redis, required key with budget and rpm/tpm) beside the embedded one, alone
# (issue 16); `make bench` runs it too.
bench-replica: $(STAMP)
	$(BIN)/python -m tests.perf.run --replica-only

# Ten minutes, two replicas on PostgreSQL and Redis, a Redis blip and a PostgreSQL blip (SOAK_ARGS="--duration 90").
soak: $(STAMP)
	$(BIN)/python -m tests.soak.run $(SOAK_ARGS)

# What cache-aware routing saves (the README's table) and what it costs in CPU (issue 14).
bench-cost: $(STAMP)
	$(BIN)/gateway simulate

bench-cache: $(STAMP)
	$(BIN)/python -m tests.perf.cache_bench

lint: $(STAMP)
	$(BIN)/python -m mypy gateway

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
