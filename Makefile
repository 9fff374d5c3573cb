# The README's two set-up commands are `make run` (install + main job) and `make test`
# (install + tests). Both create .venv on first use; torch comes first, from its CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo

.PHONY: setup run test test-slow data bench clean

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

# The committed dataset, from scratch: about 40 minutes of Gemma 3 270M on two cores (resumable).
data: setup
	$(BIN)/udrl distill --topics data/seed_topics.txt --n-queries 2600 --out data/distill --threads 1
	$(BIN)/udrl judge data/distill/raw.jsonl --out data/udrl-gemma.jsonl.gz

# The committed benchmark: random-weight mini and gpt2-124m artifacts (speed only), every baseline.
bench: setup
	$(BIN)/python -m udrl.benchmarks.speed_models --data data/udrl-gemma.jsonl.gz --out runs/speed
	$(BIN)/udrl bench runs/speed/mini-*.gguf runs/speed/mini-*.onnx runs/speed/gpt2-124m-*.gguf \
	    runs/speed/gpt2-124m-*.onnx --out benchmarks/results/cpu-2core

clean:
	rm -rf $(VENV) runs .pytest_cache
