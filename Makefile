# Set-up and entry points. Needs only python3; everything else goes in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# train.py's DEFAULT_RUN_DIR: where `python train.py` writes the default run.
RUN ?= runs/default
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install train evaluate test bench clean

install: $(STAMP)

# Re-install only when the dependency files change.
$(STAMP): pyproject.toml $(wildcard requirements*.txt)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,test]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py --run-dir $(RUN)
	$(PY) evaluate.py --run-dir $(RUN) --images images

evaluate: $(STAMP)
	$(PY) evaluate.py --run-dir $(RUN) --images images

# Two worker processes (pytest-xdist): the suite's imports, tracing and subprocess
# start-ups overlap on a 2-core machine; `pytest` alone runs it in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n 2

# The benchmark's PyTorch peer (the `bench` extra), so its column is never
# silently missing; installed once, again only when its pin changes.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install --quiet -e ".[train,test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
