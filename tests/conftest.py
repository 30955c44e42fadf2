"""Shared test setup: quiet TensorFlow logs, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_reset():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


def backend() -> str:
    return keras.backend.backend()


#: Modules whose docstring examples need TensorFlow itself (tf.data pipelines,
#: tf.distribute); every other example also runs on JAX and PyTorch.
TENSORFLOW_ONLY_DOCTESTS = ()


def pytest_collection_modifyitems(config, items):
    """Docstring examples are backend-neutral: mark them `multibackend`, so that
    `pytest -m multibackend --doctest-modules keras_residual tests` runs them on JAX and torch."""
    for item in items:
        if isinstance(item, pytest.DoctestItem) and not item.name.startswith(
            TENSORFLOW_ONLY_DOCTESTS
        ):
            item.add_marker(pytest.mark.multibackend)
