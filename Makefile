# Two commands set everything up on a fresh machine (see README.md):
#   make lab    creates .venv if missing, installs the kit, starts JupyterLab on notebooks/
#   make test   the same set-up, then the whole test suite (unit tests, notebooks, browser),
#               then the website from the notebooks the suite executed (make site)
#
# Options (make lab TORCH=cpu, make lab WHEELHOUSE=/media/usb/wheels):
#   TORCH=cpu       PyTorch's CPU-only build from PyTorch's own index (a much smaller venv
#                   than the default CUDA build on Linux; the kit never needs a GPU)
#   WHEELHOUSE=dir  install offline from a folder of wheels (see README: offline rooms)
PYTHON     ?= python3
TORCH      ?= default
WHEELHOUSE ?=
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
PIP_FROM := $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE),)

.PHONY: setup lab test test-fast bench site clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $(PIP_FROM) || true
	@case "$(TORCH)" in \
	  cpu) echo "installing PyTorch's CPU-only build from $(TORCH_CPU_INDEX)"; \
	       $(PY) -m pip install --quiet torch torchvision --index-url $(TORCH_CPU_INDEX) ;; \
	  default) ;; \
	  *) echo "TORCH must be 'cpu' or left unset (the default build); got '$(TORCH)'" >&2; exit 2 ;; \
	esac
	$(PY) -m pip install --quiet $(PIP_FROM) -e '.[test,flower]'
	$(VENV)/bin/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $(STAMP)

# as root (containers, cloud VMs) Jupyter refuses to start without --allow-root
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: setup
	$(PY) -m pytest --nbval-lax --durations=15
	$(PY) tools/build_site.py

# the static website of the executed notebooks (MkDocs + mkdocs-jupyter): build/site/index.html;
# reuses the notebooks `make test` executed, runs the ones it has no up-to-date copy of
site: setup
	$(PY) tools/build_site.py

# unit tests only (no notebooks, no browser): quick feedback while developing
test-fast: setup
	$(PY) -m pytest tests -m "not browser and not slow" -x -q

bench: setup
	$(PY) bench/round_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build
