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


def main() -> int:
    """Run `keras_residual.cli.main` on `sys.argv`; return its exit status."""
    package = importlib.util.find_spec("keras_residual")  # locates it, imports nothing
    if package is None or not package.submodule_search_locations:
        raise SystemExit("keras-residual: the keras_residual package is not installed")
    path = os.path.join(list(package.submodule_search_locations)[0], "cli.py")
    spec = importlib.util.spec_from_file_location("keras_residual_cli_main", path)
    cli = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cli
    spec.loader.exec_module(cli)
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main())
