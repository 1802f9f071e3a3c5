# Two commands from a fresh clone: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BH := $(VENV)/bin/benchharness
STAMP := $(VENV)/.installed
WORLD ?= data/synthetic-small
# pytest-xdist workers for `make test` (one per core of the 2-core machines the suite is sized for;
# each gets its share of torch's threads, tests/conftest.py); TEST_WORKERS=0 runs in one process
TEST_WORKERS ?= 2

.PHONY: demo test test-fast test-trackers bench setup clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

$(WORLD)/.complete: $(STAMP)
	$(BH) data synth --out $(WORLD) --size small --seed 0

demo: $(STAMP) $(WORLD)/.complete
	$(BH) run --suite smoke --data-root $(WORLD)
	$(BH) leaderboard --reference
	$(BH) report --reference --out results/report.html
	@echo "report: $(abspath results/report.html) (one self-contained HTML file; open it in a browser)"

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the MLflow and W&B tracker tests need those heavy optional packages (about 200 MB)
test-trackers: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,trackers]"
	$(PY) -m pytest -q tests/test_trackers.py

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_benchmarks.py
