# keras_residual: `make demo` and `make test` work on a fresh machine, in either order.
#
# Two virtual environments:
#   .venv-core  the core install only (setup.cfg install_requires): what a user gets from
#               `pip install keras-residual`. `make demo` runs in it, and `make test` runs the
#               demo in quick mode in it first, so a dependency missing from install_requires
#               fails CI. It is rebuilt from scratch when setup.cfg changes, so a dependency
#               dropped from install_requires is gone from it too.
#   .venv       core plus the test, JAX and PyTorch extras: the test suite and development.
PYTHON ?= python3
VENV ?= .venv
CORE_VENV ?= .venv-core
PY := $(VENV)/bin/python
CORE_PY := $(CORE_VENV)/bin/python
PYTEST_ARGS ?= -n 2 --dist worksteal -q -rs --durations=10
DEMO_OUT ?= demo_output
QUICK_DEMO_OUT ?= build/demo-quick
SHARED_DEMO ?=

.PHONY: demo demo-quick test test-tf test-backends docs lint clean

$(CORE_VENV)/.installed: setup.cfg pyproject.toml
	rm -rf $(CORE_VENV)
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_PY) -m pip install -q --upgrade pip
	$(CORE_PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,jax,torch,docs]"
	touch $@

demo: $(CORE_VENV)/.installed
	$(CORE_PY) examples/demo.py --out $(DEMO_OUT)

# The demo in quick mode from the core-only install (part of `make test`).
demo-quick: $(CORE_VENV)/.installed
	rm -rf $(QUICK_DEMO_OUT)
	$(CORE_PY) examples/demo.py --quick --out $(QUICK_DEMO_OUT)

# The quick demo runs once: tests/test_scripts.py reads its folder instead of running it again.
# It runs from the core venv while pip fills the test venv (`-j2`: pip mostly waits on the disk,
# the demo mostly computes). Each part prints its wall time; every pytest run prints its ten
# slowest tests.
test:
	@t=$$(date +%s); $(MAKE) --no-print-directory -j2 demo-quick $(VENV)/.test || exit $$?; \
	  echo "[make test] venvs + demo-quick: $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); $(MAKE) test-tf SHARED_DEMO=$(abspath $(QUICK_DEMO_OUT)) || exit $$?; \
	  echo "[make test] test-tf: $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); $(MAKE) test-backends || exit $$?; echo "[make test] test-backends: $$(( $$(date +%s) - t )) s"

# The whole suite on TensorFlow (the default backend), and every docstring example.
test-tf: $(VENV)/.test
	KERAS_RESIDUAL_DEMO_QUICK_OUT=$(SHARED_DEMO) KERAS_BACKEND=tensorflow $(PY) -m pytest $(PYTEST_ARGS) --doctest-modules keras_residual tests

# The backend-neutral part (marked `multibackend`, every docstring example included) again
# on JAX and PyTorch; tests/conftest.py says how each test declares its backends.
# XLA_FLAGS on JAX: the suite's many small networks spend most of their time in XLA's CPU
# compiler; its cheaper code generation cuts the JAX run by a quarter (100 s -> 75 s on
# tests/test_blocks.py + tests/test_models.py, measured twice each way); results are unchanged.
# OMP_NUM_THREADS=1 on PyTorch: two xdist workers on two cores, each with two OpenMP threads
# that spin while they wait, slowed each other down (tests/test_lesion.py, test_models.py and
# test_papers.py: 62 s -> 50 s); TensorFlow and JAX measured no different with one thread.
JAX_TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true
test-backends: $(VENV)/.test
	XLA_FLAGS="$(JAX_TEST_XLA_FLAGS)" KERAS_BACKEND=jax $(PY) -m pytest $(PYTEST_ARGS) -m multibackend --doctest-modules keras_residual tests
	OMP_NUM_THREADS=1 KERAS_BACKEND=torch $(PY) -m pytest $(PYTEST_ARGS) -m multibackend --doctest-modules keras_residual tests

# The API reference site in build/site (MkDocs, Material theme, mkdocstrings), strict: a broken
# reference or an unparsable docstring fails it. Its figures come from a demo run: demo_output/
# after `make demo`, else the quick demo (run here when missing). tests/test_docs.py builds and
# checks it in `make test`.
DOCS_FIGURES ?= $(if $(wildcard $(DEMO_OUT)/results.json),$(DEMO_OUT),$(QUICK_DEMO_OUT))
docs: $(VENV)/.test
	test -f $(DOCS_FIGURES)/results.json || $(MAKE) demo-quick
	KERAS_RESIDUAL_DOCS_FIGURES=$(abspath $(DOCS_FIGURES)) NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint: $(VENV)/.test
	$(VENV)/bin/ruff check keras_residual keras_residual_cli.py tests examples benchmarks notebooks

clean:
	rm -rf $(VENV) $(CORE_VENV) $(DEMO_OUT) build *.egg-info
