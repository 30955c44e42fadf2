"""Griffe extension for the API site: runtime docstrings, and `Example:` read as `Examples:`.

- Some builders get their docstrings at import time (the `*_vd` ResNets share one template,
  `resnet50_vd.__doc__ = ...`), which griffe's static analysis does not see; an object that has
  no docstring in the source takes the one Python gives it after import.
- The docstrings of keras_residual head their doctests `Example:`, which the Google style guide
  allows. Griffe's Google parser knows only the plural and would render the doctest as Markdown
  (where `x[:3]` reads as a link), so the heading is renamed when griffe loads each object.
"""

import importlib
import inspect
import re

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)


def _runtime_docstring(obj: griffe.Object) -> str | None:
    """The docstring Python gives `obj` after import, if keras_residual wrote it.

    A method without a docstring of its own inherits its base's (`AddMerge.without_branch`
    shows `Merge.without_branch`'s); one inherited from Keras (a callback's `on_epoch_end`)
    is left out: it is not written in this package's style.
    """
    try:
        owner, value = None, importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1:].split("."):
            owner, value = value, getattr(value, part)
    except (ImportError, AttributeError):
        return None
    if inspect.isclass(owner):
        name = obj.name
        defining = next((cls for cls in owner.__mro__
                         if getattr(cls.__dict__.get(name), "__doc__", None)), None)
        if defining is None or not defining.__module__.startswith("keras_residual"):
            return None
    return inspect.getdoc(value)


class ExampleSections(griffe.Extension):
    """Fill docstrings set at import time; rename `Example:` headings to `Examples:`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        if obj.docstring is None and (obj.is_function or obj.is_class):
            text = _runtime_docstring(obj)
            if text:
                # The parser and options mkdocs.yml gives the docstrings griffe reads; without
                # a parser, the sections would render as plain text.
                obj.docstring = griffe.Docstring(
                    text, parent=obj, parser="google",
                    parser_options={"warn_missing_types": False})
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
