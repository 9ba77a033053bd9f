# The two commands of the README. Both build pyserver into ./.venv first.
PYTHON ?= python3
VENV := .venv
STORE := example_store
# The real v1 client (tensorrtserver 1.11.0) for the test suite, in its own venv.
V1CLIENT := .v1client

.PHONY: serve test install v1client clean peers compare

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip

# The backends' frameworks, so that their tests run. TORCH pins the CPU build
# (on x86_64 Linux a plain `torch` from PyPI is a CUDA build of several GB).
BACKENDS := tensorflow,torch,caffe2
TORCH ?= torch==2.13.0

install: $(VENV)/bin/python
	$(VENV)/bin/pip install ".[examples,test,$(BACKENDS)]" "$(TORCH)"
	$(VENV)/bin/pip install --no-deps "tritonclient[all]==2.51.0"

serve: install
	$(VENV)/bin/python -m pyserver.examples.store $(STORE)
	$(VENV)/bin/pyserver --model-store=$(STORE)

v1client:
	PYTHON=$(PYTHON) bash tests/v1client/setup.sh $(V1CLIENT)

test: install v1client
	V1CLIENT_DIR=$(abspath $(V1CLIENT)) $(VENV)/bin/python tests/run.py

# The serving peers of perf/compare.py, one venv each under perf/.peers/ (idempotent),
# then pyserver beside them on the same models and load (about 15 minutes).
peers:
	$(PYTHON) perf/install_peers.py

compare: install peers
	$(VENV)/bin/python perf/compare.py --no-install

clean:
	rm -rf build $(VENV) $(STORE) $(V1CLIENT)
