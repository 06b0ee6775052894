# Two commands: `make up` runs the fabric on this machine, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: up test install install-dev system-deps lint fuzz clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || (apt-get update && apt-get install -y python3 python3-venv python3-pip)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the scheduler's compiled loops are built once here (cached beside the package), not in the first round
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[networks,ray]'
	$(BIN)/python -m ceti.fabric.warm
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m ceti.fabric.warm
	touch $@ $(STAMP)

install: $(STAMP)
install-dev: $(DEV_STAMP)

# PostgreSQL (the suite runs on it too) and Chromium with Playwright (the dashboard's browser tests).
system-deps:
	@bash scripts/install-system-deps.sh
	@bash scripts/install-browser-deps.sh $(BIN)/python
	@bash scripts/install-container-deps.sh

up: install
	$(BIN)/ceti up

# Two test processes (pytest-xdist), one test file each at a time: most tests wait on real servers and agents, so
# two keep both cores busy. `make test TEST_WORKERS=0` runs them in this one process.
TEST_WORKERS ?= 2

# bandit fails the run on any high-severity finding (medium and low are reviewed by hand: none at medium today)
test: install-dev system-deps
	$(BIN)/bandit -q -r src -lll
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests

# Schemathesis over every REST operation as each kind of caller, 500 examples per operation (the suite runs 20).
fuzz: install-dev
	CETI_FUZZ_EXAMPLES=500 $(BIN)/python -m pytest -q -p no:cacheprovider tests/server/test_fuzz_api.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .ceti build *.egg-info
