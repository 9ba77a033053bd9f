# The two commands of the README. Both build pyserver into ./.venv first.
PYTHON ?= python3
VENV := .venv
STORE := example_store

.PHONY: serve test install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip

# The backends' frameworks, so that their tests run. TORCH pins the CPU build
# (on x86_64 Linux a plain `torch` from PyPI is a CUDA build of several GB).
BACKENDS := tensorflow,torch,caffe2
TORCH ?= torch==2.13.0

install: $(VENV)/bin/python
	$(VENV)/bin/pip install ".[examples,test,$(BACKENDS)]" "$(TORCH)"

serve: install
	$(VENV)/bin/python -m pyserver.examples.store $(STORE)
	$(VENV)/bin/pyserver --model-store=$(STORE)

test: install
	$(VENV)/bin/python tests/run.py

clean:
	rm -rf build $(VENV) $(STORE)
