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

# Main job. Until the trained default model ships inside the package, this runs the whole pipeline at
# tiny scale on the committed distilled dataset: train a `tiny` UDRL policy (about a minute on two
# cores), export it to a verified q8_0 GGUF, and generate one prompt per task through the SDK.
run: setup
	rm -rf $(RUN)
	$(BIN)/udrl train --data data/udrl-gemma.jsonl.gz --out $(RUN) --preset tiny --vocab-size 4096 \
	    --steps 1500 --lr 2e-3 --eval-interval 500 --checkpoint-interval 500
	$(BIN)/udrl export $(RUN)/model --format gguf --quant q8_0
	$(BIN)/udrl info $(RUN)/model-q8_0.gguf
	for task in image search headline tags; do \
	    $(BIN)/udrl generate "poster for a summer jazz festival by the sea" --task $$task \
	        --model $(RUN)/model-q8_0.gguf; done

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
	    runs/speed/gpt2-124m-*.onnx --reps 7 --decode-tokens 128 --out benchmarks/results/cpu-2core

clean:
	rm -rf $(VENV) runs .pytest_cache
