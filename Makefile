# Two commands set everything up on a fresh machine (see README.md):
#   make lab    creates .venv if missing, installs the kit, starts JupyterLab on notebooks/
#   make test   the same set-up, then the whole test suite (unit tests, notebooks, browser)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lab test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,flower]'
	$(VENV)/bin/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $(STAMP)

# as root (containers, cloud VMs) Jupyter refuses to start without --allow-root
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: setup
	$(PY) -m pytest --nbval-lax --durations=15

# unit tests only (no notebooks, no browser): quick feedback while developing
test-fast: setup
	$(PY) -m pytest tests -m "not browser and not slow" -x -q

bench: setup
	$(PY) bench/round_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
