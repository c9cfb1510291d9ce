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

demo: $(STAMP)
	$(PY) -m genflow.codecs reconstruct tests/fixtures/audio/speech.wav runs/demo/speech_mel.wav --codec mel

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
