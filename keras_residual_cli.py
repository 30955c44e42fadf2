"""Console entry point of `keras-residual` (the command itself is `keras_residual.cli`).

It lives outside the package on purpose: importing `keras_residual.cli`
first runs `keras_residual/__init__.py`, which imports Keras and with it
TensorFlow, whose start-up lines would reach the terminal before the command
could quiet them. Loaded by path, `keras_residual/cli.py` (standard library
only at import) parses the arguments first (`--help`, `--version` and usage
errors answer at once) and imports the package quietly when a command needs it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType


def light_module(name: str) -> ModuleType:
    """A standard-library-only module of keras_residual, imported without the package's `__init__`.

    `import keras_residual.experiments.arguments` would run `keras_residual/__init__.py`
    first, which imports Keras and TensorFlow (seconds). Loaded by path here, the
    module is registered under its own name, so the package's later imports of it
    get the same module object. Only modules that import nothing heavy at import
    time may be loaded this way (`keras_residual.cli`,
    `keras_residual.experiments.arguments`).

    Args:
        name: the module's full name, e.g. "keras_residual.experiments.arguments".

    Returns:
        The module.

    Example:
        >>> arguments = light_module("keras_residual.experiments.arguments")
        >>> arguments.DATASETS
        ('mnist', 'cifar10')
    """
    if name in sys.modules:
        return sys.modules[name]
    package, *parts = name.split(".")
    spec = importlib.util.find_spec(package)  # locates it, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"keras-residual: the {package} package is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts[:-1], parts[-1] + ".py")
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def main() -> int:
    """Run `keras_residual.cli.main` on `sys.argv`; return its exit status."""
    return light_module("keras_residual.cli").main()


if __name__ == "__main__":
    raise SystemExit(main())
