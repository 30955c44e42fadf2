"""MkDocs hooks: every page of the site comes from the README, the docstrings or the demo.

Nothing in the site is written twice. At build time this hook

- splits `README.md` at its `## ` headings into guide pages (the text before the first
  heading is the home page); the README's pictures live in `docs/images/`, which MkDocs copies
  as it is, and their links are made relative to each page,
- writes one API page per public module, with one mkdocstrings entry (`::: path`) for every
  public name: the module's `__all__` where it has one, otherwise every function and class the
  module defines without a leading underscore (`public_api()` lists them; `tests/test_docs.py`
  checks each one is on the built site with its signature and its example),
- writes a figures page with every figure of a demo run and its caption, read from the run's
  `results.json` (the folder in `KERAS_RESIDUAL_DOCS_FIGURES`, else `demo_output/`, else
  `build/demo-quick/`; `make docs` runs the quick demo when neither exists).

`make docs` builds it with `mkdocs build --strict`, so a reference mkdocstrings cannot resolve,
a docstring griffe cannot parse or a missing figure fails the build.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import os
import re

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The modules whose public names make up the API, in the order the site lists them.
PUBLIC_MODULES = (
    "keras_residual",
    "keras_residual.blocks",
    "keras_residual.models",
    "keras_residual.graph",
    "keras_residual.training",
    "keras_residual.distribution",
    "keras_residual.datasets",
    "keras_residual.viz",
    "keras_residual.lesion",
    "keras_residual.surgery",
    "keras_residual.experiments",
)


def public_api() -> dict[str, list[str]]:
    """The public names of every module in `PUBLIC_MODULES`, in order.

    Returns:
        `{module: [name, ...]}`: the module's `__all__` if it defines one, else the
        functions and classes it defines itself whose names do not start with `_`.
    """
    api = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [
                name for name, obj in vars(module).items()
                if not name.startswith("_")
                and (inspect.isfunction(obj) or inspect.isclass(obj))
                and getattr(obj, "__module__", "").startswith(module_name)
            ]
        # Subpackages listed in a parent's `__all__` have pages of their own.
        api[module_name] = [n for n in names if not inspect.ismodule(getattr(module, n))]
    return api


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower().replace("`", "")).strip("-")


def readme_sections() -> list[tuple[str, str]]:
    """`[(title, markdown)]`: the README's preamble as "Home", then each `## ` section."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    sections, title, lines, fenced = [], "Home", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            sections.append((title, "\n".join(lines)))
            title, lines = line[3:].strip(), [f"# {line[3:].strip()}"]
            continue
        lines.append(line)
    sections.append((title, "\n".join(lines)))
    return sections


def _figures_dir() -> str:
    candidates = [os.environ.get("KERAS_RESIDUAL_DOCS_FIGURES", ""),
                  os.path.join(ROOT, "demo_output"), os.path.join(ROOT, "build", "demo-quick")]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "results.json")):
            return folder
    raise PluginError(
        "No demo run to take the figures from: set KERAS_RESIDUAL_DOCS_FIGURES to a folder "
        "written by examples/demo.py, or run `make demo` (or `make demo-quick`) first.")


def demo_figures() -> tuple[str, list[tuple[str, list[tuple[str, str]]]]]:
    """The demo folder and its figures, `[(section, [(caption, relative_png), ...])]`."""
    folder = _figures_dir()
    results = json.load(open(os.path.join(folder, "results.json"), encoding="utf-8"))
    sections = [(title, [tuple(f) for f in figures])
                for title, figures in results["sections"].items()]
    missing = [path for _, figures in sections for _, path in figures
               if not os.path.isfile(os.path.join(folder, path))]
    if missing:
        raise PluginError(f"{folder}/results.json names figures that are not there: {missing}")
    return folder, sections


def _api_page(module_name: str, names: list[str]) -> str:
    lines = [f"# `{module_name}`", "", f"::: {module_name}", "    options:",
             "      members: false", "      show_root_heading: false", ""]
    for name in names:
        lines += [f"::: {module_name}.{name}", ""]
    return "\n".join(lines)


def _figures_page(sections) -> str:
    lines = ["# Figures of the demo", "",
             "Every figure `make demo` writes to `demo_output/` (this build shows the run in "
             "the folder named on top of `docs/hooks.py`), with its caption.", ""]
    for title, figures in sections:
        lines += [f"## {title}", ""]
        for caption, path in figures:
            lines += [f'<figure><img src="figures/{html.escape(path)}" '
                      f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                      "</figcaption></figure>", ""]
    return "\n".join(lines)


def _api_uri(module_name: str) -> str:
    return f"api/{module_name.replace('.', '_')}.md"


def on_config(config):
    guide = [(title, f"guide/{_slug(title)}.md") for title, _ in readme_sections()[1:]]
    config["nav"] = [
        {"Home": "index.md"},
        {"Guide": [{title: uri} for title, uri in guide]},
        {"API reference": [{module: _api_uri(module)} for module in PUBLIC_MODULES]},
        {"Figures": "figures.md"},
    ]
    return config


def _pictures(markdown: str, prefix: str) -> str:
    """README pictures (`docs/images/...`, relative to the repository) relative to a page."""
    return markdown.replace("](docs/images/", f"]({prefix}images/")


def on_files(files, config):
    sections = readme_sections()
    files.append(File.generated(config, "index.md", content=_pictures(sections[0][1], "")))
    for title, body in sections[1:]:
        files.append(File.generated(config, f"guide/{_slug(title)}.md",
                                    content=_pictures(body, "../")))
    for module_name, names in public_api().items():
        files.append(File.generated(config, _api_uri(module_name),
                                    content=_api_page(module_name, names)))
    folder, figure_sections = demo_figures()
    files.append(File.generated(config, "figures.md", content=_figures_page(figure_sections)))
    for _, figures in figure_sections:
        for _, path in figures:
            files.append(File.generated(config, f"figures/{path}",
                                        abs_src_path=os.path.join(folder, path)))
    return files
