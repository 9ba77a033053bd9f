# The README's commands. Each builds pyserver into ./.venv first.
#   make serve [ARGS='--http-port 9000'] [ADDRESS=0.0.0.0]   only what the example store needs
#   make test                                                 every backend's framework, the test
#                                                             tools and the deployment checks
PYTHON ?= python3
VENV := .venv
STORE := example_store
# make serve listens here only; ADDRESS=0.0.0.0 serves other machines too.
ADDRESS ?= 127.0.0.1
ARGS ?=
# The real v1 client (tensorrtserver 1.11.0) for the test suite, in its own venv.
V1CLIENT := .v1client
# kubernetes-validate and checkov, in a venv of their own (their pins are not pyserver's).
DEPLOY_TOOLS := .venv-deploy

# torch for the TorchScript backend. On x86_64 Linux a plain `torch` from PyPI is the CUDA
# build (with about twenty nvidia-* packages, several GB); the CPU build is published on
# PyTorch's own index as torch==X+cpu, which TORCH_INDEX adds beside the usual index.
# Elsewhere (macOS, aarch64) PyPI's torch is the CPU build already.
TORCH_VERSION ?= 2.13.0
ifeq ($(shell uname -s)-$(shell uname -m),Linux-x86_64)
TORCH ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH ?= torch==$(TORCH_VERSION)
TORCH_INDEX ?=
endif
# The extras `make test` adds (see pyproject.toml).
TEST_EXTRAS := examples,test,backends

.PHONY: serve test install install-serve v1client deploy-tools deploy-check clean peers compare

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip

# Serving the example store: onnxruntime, and onnx + Pillow to make the models and images.
install-serve: $(VENV)/bin/python
	$(VENV)/bin/pip install ".[examples]"

# Everything the test suite needs; the build tools too, so that
# `pip install --no-deps --no-build-isolation .` rebuilds in place after a change.
install: $(VENV)/bin/python
	$(VENV)/bin/pip install $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(VENV)/bin/pip install ".[$(TEST_EXTRAS)]" "scikit-build-core>=0.10" "cython>=3.0" \
	    "grpcio-tools>=1.60"
	# tritonclient 2.51's shared-memory utilities import pkg_resources, gone from setuptools 81.
	$(VENV)/bin/pip install --no-deps "tritonclient[all]==2.51.0" "setuptools<81"

serve: install-serve
	$(VENV)/bin/python -m pyserver.examples.store $(STORE)
	$(VENV)/bin/pyserver --model-store=$(STORE) --http-address=$(ADDRESS) \
	    --grpc-address=$(ADDRESS) --metrics-address=$(ADDRESS) $(ARGS)

v1client:
	PYTHON=$(PYTHON) bash tests/v1client/setup.sh $(V1CLIENT)

$(DEPLOY_TOOLS)/bin/python:
	$(PYTHON) -m venv $(DEPLOY_TOOLS)

deploy-tools: $(DEPLOY_TOOLS)/bin/python
	$(DEPLOY_TOOLS)/bin/pip install -r deploy/check-requirements.txt

# The manifests and Dockerfiles alone (also part of `make test`, in tests/deploy).
deploy-check: install deploy-tools
	cd tests && PYSERVER_DEPLOY_TOOLS=$(abspath $(DEPLOY_TOOLS))/bin \
	    ../$(VENV)/bin/python -m pytest -q -rs deploy

test: install v1client deploy-tools
	V1CLIENT_DIR=$(abspath $(V1CLIENT)) PYSERVER_DEPLOY_TOOLS=$(abspath $(DEPLOY_TOOLS))/bin \
	    $(VENV)/bin/python tests/run.py

# The serving peers of `python -m perf compare`, one venv each under perf/.peers/ (idempotent),
# then pyserver beside them on the same models and load (about 15 minutes).
peers:
	$(PYTHON) -m perf install-peers

compare: install peers
	$(VENV)/bin/python -m perf compare --no-install

clean:
	rm -rf build $(VENV) $(STORE) $(V1CLIENT) $(DEPLOY_TOOLS) images
