# rnnlm — common entry points. `make setup` once, then `make repro` (or `make repro CORPUS=ptb`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# dvc.yaml's stage commands call `python`: run them with the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test test-fast lint bench report lock clean-venv

setup: $(BIN)/rnnlm-ready

# requirements.lock pins every package to the versions the results were measured with.
$(BIN)/rnnlm-ready: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

# Rewrite requirements.lock from the current environment (after changing a dependency on purpose).
lock: setup
	{ sed -n '1,3p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^torch==([^+]*)\+.*$$/torch==\1/'; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

# `make repro` runs params.yaml as it is; `make repro CORPUS=ptb` runs recipes/ptb.yaml on top of
# the committed params.yaml as a DVC experiment (see rnnlm/recipes.py).
# CORPUS reaches the shell as one quoted word (rnnlm.recipes accepts only a plain recipe name).
repro: setup
ifdef CORPUS
	$(BIN)/python -m rnnlm.recipes '$(subst ','\'',$(CORPUS))'
else
	$(BIN)/dvc repro
endif

# The test modules run in TEST_WORKERS processes side by side (pytest-xdist; a module's tests stay
# together, as they share its projects). Every test's torch work uses one thread, so 2 workers fit
# 2 cores without oversubscription. `make test TEST_WORKERS=0` runs them one after another.
TEST_WORKERS ?= 2
test: setup lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

# ruff (configured in pyproject.toml): lint and formatting, checked before the tests
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

bench: setup
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/word_level.py
	$(BIN)/dvc repro vocab
	$(BIN)/python bench/processes.py
	$(BIN)/python bench/contention.py

report: setup
	$(BIN)/dvc repro report

clean-venv:
	rm -rf $(VENV)
