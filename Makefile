# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install data slurm demo test test-fast test-slurm bench mutate clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (needs root, as on CI).
data:
	@test -f $(FMNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

demo: install data
	$(VENV)/bin/autogrow grow --preset demo --run-dir $(RUN_DIR)
	$(VENV)/bin/autogrow history $(RUN_DIR)

# SLURM's daemons and clients for tests/test_slurm.py (a one-node cluster that the tests start on
# localhost with scripts/local_slurm.py): Debian's slurm-wlm and munge, installed when missing
# (needs root, as on CI).
slurm:
	@$(PYTHON) scripts/local_slurm.py install

# One pytest worker per core (pytest-xdist), each test module on one worker (its module-scoped
# runs made once), the longest modules first (tests/conftest.py LONGEST_FIRST), the workers'
# processes on one thread each (conftest.py too).
test: install data slurm
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# The inner loop: the fast tier only (tests that run in this process, no training run; see
# docs/testing.md and tests/conftest.py FAST_MODULES).
test-fast: install
	$(PY) -m pytest -q -m fast

# Every SLURM test: `make test`'s two (scancel, a job array) and the ones that wait on SLURM's own
# clocks, the time limit's USR1 and preemption (about 3 minutes; see docs/testing.md).
test-slurm: install data slurm
	$(PY) -m pytest -q -m slurm tests/test_slurm.py

# Mutation testing of the audit's core modules, preemption, retention, re-execution's comparisons
# and the relaunch plan against their fast in-process tests (pyproject [tool.mutmut]); not part of
# `make test` (about 75 minutes on 2 cores shared with other jobs). Resumable: rerun to continue.
MUTATE_SMOKE := .pytest_cache/mutate-smoke-run
mutate: install data
	rm -rf $(MUTATE_SMOKE)
	$(VENV)/bin/autogrow grow --preset smoke --run-dir $(MUTATE_SMOKE) > /dev/null
	AUTOGROW_TEST_SMOKE_RUN=$(CURDIR)/$(MUTATE_SMOKE) $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

bench: install
	$(PY) benchmarks/log_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis mutants
