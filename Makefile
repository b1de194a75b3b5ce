# rotator: two commands on a fresh machine with python3 and make.
#   make demo   the main job against the bundled sandbox emulator of the API
#   make test   lint, type checks and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all install demo test lint typecheck pytest bench chaos mutation clean
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

# The planner, the fleet run (about 20 minutes: 1,000 servers, and a cron script beside rotator),
# the idle daemon and the fleet at scale (about 40 minutes: 10,000 and 50,000 servers, 500 requests/s,
# the plan of 100,000 servers; bench/bench_scale.py); writes bench/RESULTS.md with the machine's
# details and the date.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The long fault campaign (bench/chaos): rotator killed and faulted for a few minutes, judged by the
# invariant checker; exits 1 on a violation. Replay one with its printed seed: make chaos SEED=N
# make chaos MODE=replicas: three coordinated `rotator run` on a real 3-member etcd, leader and etcd
# members killed, paused and cut off (needs etcd-server; SECONDS=300 by default)
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(if $(SEED),--seed $(SEED)) $(if $(filter replicas,$(MODE)),--replicas $(if $(SECONDS),--seconds $(SECONDS)))

# Mutation testing of the pure core with mutmut (not part of make test; minutes, on two cores): mutants
# of retention, planner, markers and slots judged by their fast tests; writes bench/MUTATION.md with each
# module's score and the surviving mutants. Another set, e.g. the runner:
#   make mutation MODULES="rotator/runner.py" TESTS="tests/test_runner.py"
MUTATION_STAMP := $(VENV)/.installed-mutation
$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[mutation]'
	@touch $@

mutation: $(MUTATION_STAMP)
	$(BIN)/python bench/mutation.py $(if $(MODULES),--modules $(MODULES)) $(if $(TESTS),--tests $(TESTS)) \
		$(if $(FUNCTIONS),--functions $(FUNCTIONS)) $(if $(PYTEST_ARGS),--pytest-args "$(PYTEST_ARGS)") \
		$(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov mutants
