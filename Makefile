# The two commands a fresh machine needs: `make main` (the main job) and `make test` (the suite;
# `make test-fast` for its fast tier).
# Both build the virtual environment first. torch is installed on its own, pinned, before the
# project: an open range would make pip fetch a multi-GB CUDA build instead of the CPU wheel.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedrec-installed
DATASET ?= movielens-1m
OUT    ?= outputs
# One round: three scored the same (simulations/results/main-job.md as of d4926ff against
# main-job-1-round.md) and overran the 10-minute budget on a 2-core machine.
ROUNDS ?= 1
CONSENT ?= 0.1
PRETRAIN_EPOCHS ?= 15
# The private recipe (docs/private-model.md): the server pretrains on the consented users and
# counts their transitions; the silos fine-tune the head with large-batch DP-SGD at epsilon 8 each.
RECIPE ?= use-item-bias=true finetune=head optimizer=sgd lr=0.05 batch-size=256

.PHONY: main test test-fast env clean docs

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

# Both tiers: the fast one, then the tests that start real Flower processes (marked `slow`).
test: $(STAMP)
	$(PY) -m pytest

# The fast tier only: one process, no SuperLink, no Ray (under 3 minutes on a 2-core machine).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

main: $(STAMP)
	$(VENV)/bin/fedrec data info --dataset $(DATASET) --partitioning region --json $(OUT)/data-info.json
	$(VENV)/bin/fedrec evaluate --baseline popularity --dataset $(DATASET) --consent-fraction $(CONSENT) \
		--users non-consented --json $(OUT)/popularity.json
	$(VENV)/bin/fedrec train --dataset $(DATASET) --consent-fraction $(CONSENT) --consented-only \
		--no-id-embedding --item-bias --transitions --epochs $(PRETRAIN_EPOCHS) --patience $(PRETRAIN_EPOCHS) \
		--output $(OUT)/pretrained
	$(VENV)/bin/fedrec evaluate --checkpoint $(OUT)/pretrained --dataset $(DATASET) --consent-fraction $(CONSENT) \
		--users non-consented --json $(OUT)/pretrained.json
	$(VENV)/bin/fedrec simulate --compare $(OUT)/popularity.json $(OUT)/pretrained.json --run-config dataset=$(DATASET) \
		num-server-rounds=$(ROUNDS) output-dir=$(OUT) consent-fraction=$(CONSENT) \
		pretrained=$(abspath $(OUT))/pretrained $(RECIPE)

# docs/configuration.md from the run-config dataclasses in shared/config.py, then BENCHMARKS.md and
# the benchmark numbers README.md and docs/ quote, from simulations/results/; tests/test_docs.py
# fails while a committed page differs from what this writes.
docs: $(STAMP)
	$(PY) -m shared.config_docs
	$(PY) -m simulations.page

clean:
	rm -rf $(VENV) $(OUT)
