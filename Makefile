# Two commands on a fresh machine:
#   make demo   -- create .venv, install ebm_lfi with every extra, run the main job (MA(2) end to end)
#   make test   -- same install, run the test suite (on WORKERS parallel pytest-xdist workers)
PYTHON ?= python3
WORKERS ?= auto
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench-losses bench-paper data clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo_ma2.py --out outputs/demo

# one worker per core; tests sharing a module-scoped fixture stay on one worker (tests/conftest.py)
XDIST := -n $(WORKERS) --dist loadgroup

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check ebm_lfi tests scripts examples
	$(VENV)/bin/ruff format --check ebm_lfi tests scripts examples

bench-losses: $(STAMP)
	$(PY) scripts/bench_losses.py

bench-paper: $(STAMP)
	$(PY) scripts/bench_paper.py

data: $(STAMP)
	$(PY) -m ebm_lfi.benchmarks.reference --out ebm_lfi/benchmarks/data

clean:
	rm -rf $(VENV) outputs .pytest_cache
