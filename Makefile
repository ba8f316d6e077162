# The two commands a fresh machine needs (see README):
#   make run    set up .venv, then run the quick TakeCover experiment end to end
#   make test   set up .venv, then run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python experiments/quick.py

# One pytest process per core (pytest-xdist): the suite's time is mostly XLA compiling small programs, one core each.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

bench: $(STAMP)
	$(BIN)/wm-jax bench peak
	$(BIN)/wm-jax bench collect --env takecover
	$(BIN)/wm-jax bench collect --env carracing
	$(BIN)/wm-jax bench vae
	$(BIN)/wm-jax bench encode
	$(BIN)/wm-jax bench mdnrnn
	$(BIN)/wm-jax bench dream
	$(BIN)/wm-jax bench dream --env takecover
	$(BIN)/python -m wm_jax.report

clean-venv:
	rm -rf $(VENV)
