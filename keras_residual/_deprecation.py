"""Aliases for names that moved, kept for one release; each warns once.

The 0.2 redesign moved the model walkers to `keras_residual.graph`, the
editing functions to `keras_residual.surgery` and the lesion studies to one
module per study. Old import paths keep working and say where the name lives
now, once per name and process.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any

_warned: set[str] = set()


def warn_once(old: str, new: str) -> None:
    """Emit one `DeprecationWarning` per `old` name per process.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_once("pkg.old_example", "pkg.new_example")
        ...     warn_once("pkg.old_example", "pkg.new_example")
        >>> len(caught)
        1
    """
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(
        f"{old} moved to {new}; the old name will be removed in keras_residual 0.3.",
        DeprecationWarning,
        stacklevel=3,
    )


def moved(old: str, new: str, target: Callable) -> Callable:
    """`target`, wrapped so that a call through the old name `old` warns once.

    Example:
        >>> double = moved("pkg.twice", "pkg.double", lambda x: 2 * x)
        >>> double(3)
        6
    """

    @functools.wraps(target)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warn_once(old, new)
        return target(*args, **kwargs)

    return alias


def module_alias(old_module: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that serves moved names from their new modules, warning once.

    Args:
        old_module: str. The module that used to define the names.
        homes: dict from name to the module that defines it now.

    Example:
        >>> getattr_ = module_alias("pkg.old", {"sqrt": "math"})
        >>> getattr_("sqrt")(4.0)
        2.0
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warn_once(f"{old_module}.{name}", f"{homes[name]}.{name}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
