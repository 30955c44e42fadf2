"""Setup for the docstring examples under keras_residual/ (tests/conftest.py covers tests/).

Docstring examples that only build networks and read their shapes, names and
parameter counts run with uninitialized weights (Keras' public
`StatelessScope(initialize_variables=False)`), as tests marked `shapes_only`
do: drawing the initial values of the ResNet-50s in `models.imagenet`'s
examples was most of their time (about 20 s on JAX), and of the small and
CIFAR builders' examples. The examples print the same either way.
"""

import keras
import pytest

#: Modules whose every docstring example reads only shapes, names and counts.
SHAPES_ONLY_DOCTESTS = ("keras_residual.models.imagenet.", "keras_residual.models.small.",
                        "keras_residual.models.cifar.", "keras_residual.models.table.",
                        "keras_residual.models.get_model")


@pytest.fixture(autouse=True)
def _uninitialized_weights_for_shape_examples(request):
    name = getattr(getattr(request.node, "dtest", None), "name", "")
    if name.startswith(SHAPES_ONLY_DOCTESTS):
        with keras.StatelessScope(initialize_variables=False):
            yield
    else:
        yield
