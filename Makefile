# Two entry points, each sets up its own environment first:
#   make run    the whole benchmark on the default config (synthetic cohort)
#   make test   the test suite
# TORCH: the torch requirement installed before the project (the CPU wheel by default; on a
# GPU machine use e.g. `make run TORCH=torch` to get the CUDA build for your platform).
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip check
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)
