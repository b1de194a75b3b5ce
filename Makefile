# rotator: two commands on a fresh machine with python3 and make.
#   make demo   the main job against the bundled sandbox emulator of the API
#   make test   lint, type checks and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all install demo test lint typecheck pytest bench clean
all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the project's metadata or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rotator.sandbox.demo

lint: $(STAMP)
	$(BIN)/ruff check rotator tests bench
	$(BIN)/ruff format --check rotator

typecheck: $(STAMP)
	$(BIN)/mypy rotator

# The pure core, which decides what is deleted, keeps a floor of branch coverage.
CORE := rotator/retention.py,rotator/planner.py,rotator/markers.py
pytest: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='$(CORE)' --fail-under=97

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_planner.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov
