# The two commands a fresh machine needs (see README):
#   make run    set up .venv, then run the quick TakeCover experiment end to end
#   make test   set up .venv, then run the test suite
# Both install the tested versions (constraints.txt pins them, dependencies included; pyproject.toml holds the
# ranges the package accepts). One more for CI and maintainers:
#   make test-latest   a second venv with the newest versions the ranges allow, then the suite's fast subset
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
LATEST := .venv-latest

.PHONY: run test test-latest setup bench clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python experiments/quick.py

# One pytest process per core (pytest-xdist): the suite's time is mostly XLA compiling small programs, one core each.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# No constraints: every package at the newest version pyproject.toml's ranges allow (reinstalled each time, so a new
# release is picked up); prints the versions it got, then runs the tests not marked slow.
test-latest:
	test -x $(LATEST)/bin/python || $(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -c "from wm_jax.sysinfo import versions; print('newest allowed:', versions())"
	$(LATEST)/bin/python -m pytest -q -n auto --dist worksteal -m "not slow"

# Rewrites the tracked benchmarks/*.json (--record) and the README's table.
bench: $(STAMP)
	$(BIN)/wm-jax bench peak --record
	$(BIN)/wm-jax bench collect --env takecover --record
	$(BIN)/wm-jax bench collect --env carracing --record
	$(BIN)/wm-jax bench vae --record
	$(BIN)/wm-jax bench encode --record
	$(BIN)/wm-jax bench mdnrnn --record
	$(BIN)/wm-jax bench dream --record
	$(BIN)/wm-jax bench dream --env takecover --record
	$(BIN)/python -m wm_jax.report

clean-venv:
	rm -rf $(VENV) $(LATEST)
