# The two commands a fresh machine needs: `make main` (the main job) and `make test` (the suite).
# Both build the virtual environment first. torch is installed on its own, pinned, before the
# project: an open range would make pip fetch a multi-GB CUDA build instead of the CPU wheel.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedrec-installed
DATASET ?= movielens-1m
OUT    ?= outputs
ROUNDS ?= 5

.PHONY: main test env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

main: $(STAMP)
	$(VENV)/bin/fedrec data info --dataset $(DATASET) --partitioning region --json $(OUT)/data-info.json
	$(VENV)/bin/fedrec evaluate --baseline popularity --dataset $(DATASET) --json $(OUT)/popularity.json
	$(VENV)/bin/fedrec simulate --run-config dataset=$(DATASET) num-server-rounds=$(ROUNDS) output-dir=$(OUT)

clean:
	rm -rf $(VENV) $(OUT)
