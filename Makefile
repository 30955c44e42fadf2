# keras_residual: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 -q
DEMO_OUT ?= demo_output

.PHONY: demo test test-tf test-backends lint clean

# The core install (the demo's needs).
$(VENV)/.core: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# Core plus the test, JAX and PyTorch extras.
$(VENV)/.test: $(VENV)/.core
	$(PY) -m pip install -q -e ".[test,jax,torch]"
	touch $@

demo: $(VENV)/.core
	$(PY) examples/demo.py --out $(DEMO_OUT)

test: $(VENV)/.test
	$(MAKE) test-tf test-backends

# The whole suite on TensorFlow (the default backend), and every docstring example.
test-tf: $(VENV)/.test
	KERAS_BACKEND=tensorflow $(PY) -m pytest $(PYTEST_ARGS) --doctest-modules keras_residual tests

# The backend-neutral part (marked `multibackend`) again on JAX and PyTorch.
test-backends: $(VENV)/.test
	KERAS_BACKEND=jax $(PY) -m pytest $(PYTEST_ARGS) -m multibackend tests
	KERAS_BACKEND=torch $(PY) -m pytest $(PYTEST_ARGS) -m multibackend tests

lint: $(VENV)/.test
	$(VENV)/bin/ruff check keras_residual tests examples benchmarks notebooks

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
