# One command set for people and CI. `make help` lists the targets.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test chaos lint format bench soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the package, its extras and the `processor` command

demo: $(STAMP) ## run the whole pipeline on the embedded stack (ARGS="--images 300 --json")
	@$(BIN)/processor demo $(ARGS)

test: $(STAMP) ## run the test suite (embedded stack; PROCESSOR_TEST_*_URL/DSN for external services)
	$(BIN)/python -m pytest -m "not chaos" $(ARGS)

chaos: $(STAMP) ## run the long failure-injection tests
	$(BIN)/python -m pytest -m chaos $(ARGS)

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check processor tests benchmarks
	$(BIN)/ruff format --check processor tests benchmarks
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format processor tests benchmarks
	$(BIN)/ruff check --fix processor tests benchmarks

bench: $(STAMP) ## run the benchmarks (ARGS="--quick --json bench.json")
	$(BIN)/python -m benchmarks $(ARGS)

soak: $(STAMP) ## stream at a steady rate against a slow CDN and watch worker memory (ARGS="--minutes 30")
	$(BIN)/python -m benchmarks.soak $(ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
