# Two entry points, each sets up its own environment first:
#   make run    the whole benchmark on the default config (synthetic cohort)
#   make test   the test suite
# TORCH: the torch requirement installed before the project (the CPU wheel by default; on a
# GPU machine use e.g. `make run TORCH=torch` to get the CUDA build for your platform). A
# different TORCH than the one .venv was set up with reinstalls torch and the project.
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CHOICE := $(VENV)/.torch

.PHONY: run test FORCE

# rewritten only when TORCH differs from what it holds, so its date says when TORCH changed
$(TORCH_CHOICE): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH)' | cmp -s - $@ || echo '$(TORCH)' > $@

$(STAMP): pyproject.toml $(TORCH_CHOICE)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip check
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)
