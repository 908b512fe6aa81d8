# The two commands: `make run` (serve on http://localhost:8080) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test fuzz lint format worker migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the package metadata changes. The server's install carries the
# client's package (clients/python/nick_jobs_client, setup.cfg's package_dir), so these
# never install clients/python as well: the two distributions share those files.
$(VENV)/.installed-run: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[server]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[testing]'
	touch $@

# The benchmarks run on PostgreSQL, Redis and RabbitMQ: the extras of all three.
$(VENV)/.installed-bench: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[server,postgresql,redis,rabbitmq]'
	touch $@

run: $(VENV)/.installed-run
	mkdir -p var
	$(BIN)/pserve development.ini

# The tests run in TEST_WORKERS processes (pytest-xdist): most of their time is spent
# waiting on servers, workers and browsers, so more processes than cores still pay. Each
# process has its own PostgreSQL database and its own queues. The tests marked
# `exclusive` restart PostgreSQL or RabbitMQ under every other test, or run many
# processes against deadlines, so they run after, alone.
TEST_WORKERS ?= 3

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not exclusive"
	$(BIN)/pytest -m exclusive

# The fuzz tests alone, with many examples per operation (docs/reliability.md#fuzzing);
# `make test` runs them with a few. NICK_JOBS_FUZZ_EXAMPLES=N make fuzz runs N.
NICK_JOBS_FUZZ_EXAMPLES ?= 1000

fuzz: $(VENV)/.installed-test
	NICK_JOBS_FUZZ_EXAMPLES=$(NICK_JOBS_FUZZ_EXAMPLES) $(BIN)/pytest tests/web/test_fuzz.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var *.egg-info clients/python/*.egg-info

# Benchmarks (docs/benchmarks.md): every figure beside its baseline, run side by side.
# They start PostgreSQL, Redis and RabbitMQ when they are down, and write
# benchmarks/results.json and the results table of docs/benchmarks.md.
.PHONY: bench bench-quick

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

bench-quick: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py --quick
