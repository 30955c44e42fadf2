"""Shared test setup: quiet TensorFlow logs, deterministic seeds, and which
backends each test runs on.

`make test` runs the suite on TensorFlow, then the tests marked
`multibackend` (and every docstring example) on JAX and PyTorch. Every test
says where it runs, and a test that runs on fewer than three backends says why:

- `@pytest.mark.multibackend`: TensorFlow, JAX and PyTorch.
- `@pytest.mark.backends("tensorflow", reason="...")`: only the backends named;
  on the others the test is deselected (reported as deselected, not skipped).

A test with neither marker is a collection error. A skipped test fails the
run: every dependency of the suite is in the `test` extra, so a skip means
something a clean clone lacks (set `KERAS_RESIDUAL_ALLOW_SKIPS=1` to look
at them without failing).
"""

import gc
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")


@pytest.fixture(autouse=True)
def _seed_and_reset(request):
    keras.utils.set_random_seed(0)
    if request.node.get_closest_marker("shapes_only"):
        # Weights are created with their shapes and left uninitialized (Keras' public
        # `StatelessScope(initialize_variables=False)`): for tests that read only shapes,
        # parameter counts, multiply-adds and layer wiring. Drawing ResNet-152's 60M initial
        # values is most of its build time (JAX 5.9 s -> 0.6 s, TensorFlow 2.9 s -> 0.9 s).
        with keras.StatelessScope(initialize_variables=False):
            yield
    else:
        yield
    keras.config.set_dtype_policy("float32")
    # `clear_session()` ends in a full `gc.collect()`, which walks every object alive in the
    # process: TensorFlow's, JAX's or PyTorch's modules and everything earlier tests left
    # (about 0.5-1 s per test, close to half the JAX session's time). The same collection runs
    # here, after which the survivors are frozen (`gc.freeze()`), so the next test's collection
    # walks only what that test created. Objects freed by reference counting are freed as before.
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def quick_demo_folder(tmp_path_factory) -> str:
    """The quick demo's folder: the one `make test` ran (`KERAS_RESIDUAL_DEMO_QUICK_OUT`), else
    a fresh `examples/demo.py --quick` run."""
    shared = os.environ.get("KERAS_RESIDUAL_DEMO_QUICK_OUT", "")
    if shared:
        assert os.path.isfile(os.path.join(shared, "results.json")), f"no quick demo in {shared}"
        return shared
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path_factory.mktemp("demo"))
    subprocess.run([sys.executable, "examples/demo.py", "--quick", "--out", out], cwd=root,
                   check=True, capture_output=True, timeout=900)
    return out


def backend() -> str:
    return keras.backend.backend()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): runs only on the backends named, for the reason given",
    )
    config.addinivalue_line(
        "markers",
        "shapes_only: the test reads shapes and counts only; its weights stay uninitialized",
    )


def _backends_of(item) -> tuple[str, ...] | None:
    """The backends a `backends(...)` marker names, checked; None without one."""
    marker = item.get_closest_marker("backends")
    if marker is None:
        return None
    unknown = set(marker.args) - set(BACKENDS)
    if not marker.args or unknown or not marker.kwargs.get("reason"):
        raise pytest.UsageError(
            f"{item.nodeid}: write @pytest.mark.backends(<some of {BACKENDS}>, reason='why'); "
            f"got args {marker.args} and kwargs {marker.kwargs}"
        )
    return marker.args


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark docstring examples `multibackend`; apply `backends(...)`; require a marker.

    Runs before `-m` selection, so that `-m multibackend` on JAX and PyTorch
    picks up every docstring example and every test a `backends` marker names
    those backends for.
    """
    current = keras.backend.backend()
    kept, deselected, unmarked = [], [], []
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.multibackend)
        names = _backends_of(item)
        if names is None:
            if item.get_closest_marker("multibackend") is None:
                unmarked.append(item.nodeid)
            kept.append(item)
            continue
        if set(names) - {"tensorflow"}:
            item.add_marker(pytest.mark.multibackend)
        (kept if current in names else deselected).append(item)
    if unmarked:
        raise pytest.UsageError(
            "tests that say neither `multibackend` nor `backends(..., reason=...)`:\n  "
            + "\n  ".join(unmarked)
        )
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    # Tests marked `slow` (scripts, notebooks, training) first: pytest-xdist hands tests out in
    # this order, and one of them started last would leave the other worker idle at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and not os.environ.get("KERAS_RESIDUAL_ALLOW_SKIPS"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_SKIPPED)} skipped test(s); the suite has no skips "
                "(see the reasons above, -rs):", red=True)
            for nodeid in _SKIPPED:
                reporter.write_line(f"  {nodeid}", red=True)
        if session.exitstatus == 0:
            session.exitstatus = 1
