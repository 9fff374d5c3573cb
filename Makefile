# The README's two set-up commands are `make run` (install + main job) and `make test`
# (install + tests). Both create .venv on first use; torch comes first, from its CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo

.PHONY: setup run test test-slow clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

setup: $(VENV)/.installed

# Main job. Until the distilled default model ships, this runs the whole pipeline at tiny scale on
# synthetic data: make a dataset, train a `tiny` UDRL policy, show its manifest and sample outputs.
run: setup
	rm -rf $(RUN)
	$(BIN)/udrl synth $(RUN)/data.jsonl --n 3000
	$(BIN)/udrl train --data $(RUN)/data.jsonl --out $(RUN)/run --preset tiny --length-max 16 \
	    --steps 600 --lr 2e-3 --eval-interval 200 --checkpoint-interval 200
	$(BIN)/udrl info $(RUN)/run/model

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
