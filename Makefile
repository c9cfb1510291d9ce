# Two commands do all set-up on a fresh machine with only Python and pip:
#   make demo   - train the demo preset on the bundled data, then sample from it
#   make test   - run the test suite
# Both create/use a virtualenv in .venv and install torch==2.13.0 first when no torch is present
# (a bare `torch` requirement could pull a multi-GB CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genflow-installed

.PHONY: demo test lint install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[eval,offline,dev]"
	touch $(STAMP)

install: $(STAMP)

DEMO_STEPS ?= 3000
DEMO_PROMPTS := --prompt "a house music kick drum hit" --prompt "an ambient choir pad" \
	--prompt "a crisp snare drum hit" --prompt "the amen break drum loop"

demo: $(STAMP)
	$(VENV)/bin/accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		recipes/tta/train.py --out runs/tta-demo --max-steps $(DEMO_STEPS)
	$(PY) recipes/tta/sample.py --checkpoint runs/tta-demo/release $(DEMO_PROMPTS) --seed 0 \
		--out runs/tta-demo/generated
	@echo "Generated clips, sidecars and spectrograms.png are in runs/tta-demo/generated/"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
