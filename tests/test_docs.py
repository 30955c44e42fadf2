"""The API reference site (`make docs`): built in strict mode, complete, with the demo's figures.

The site is built once per session from the real `mkdocs.yml` (docs/hooks.py generates its
pages); the checks read the HTML it wrote. The list of public names comes from the modules
themselves (`__all__`, or the functions and classes a module defines), not from the site.
"""

import filecmp
import html
import importlib
import inspect
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))
import hooks  # noqa: E402  (docs/hooks.py)

pytestmark = pytest.mark.backends(
    "tensorflow", reason="the site is built from source text; it is the same on every backend")



def _mkdocs(config: str, site: str, figures: str, cwd: str = ROOT):
    env = dict(os.environ, KERAS_RESIDUAL_DOCS_FIGURES=figures, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", site],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_folder(quick_demo_folder):
    return quick_demo_folder


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_folder):
    site = str(tmp_path_factory.mktemp("site"))
    done = _mkdocs(os.path.join(ROOT, "mkdocs.yml"), site, demo_folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def _objects_on_page(site: str, module: str) -> dict[str, str]:
    """`{full name: HTML of its entry}` for the top-level entries of a module's API page."""
    html = open(os.path.join(site, hooks._api_uri(module)[:-3] + ".html"), encoding="utf-8").read()
    parts = html.split('<h2 id="')[1:]
    return {part.split('"', 1)[0]: part for part in parts}


def test_every_public_name_has_an_entry_with_signature_and_example(site):
    missing = []
    total = 0
    for module_name in hooks.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [
            n for n, o in vars(module).items()
            if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
            and o.__module__.startswith(module_name)]
        entries = _objects_on_page(site, module_name)
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                assert name in [m.rsplit(".", 1)[-1] for m in hooks.PUBLIC_MODULES], name
                continue
            total += 1
            entry = entries.get(f"{module_name}.{name}")
            if entry is None:
                missing.append(f"{module_name}.{name}: no entry")
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # constants: documented, no signature
            if "doc-signature" not in entry:
                missing.append(f"{module_name}.{name}: no signature")
            if "Examples:" not in entry or "&gt;&gt;&gt;" not in entry:
                missing.append(f"{module_name}.{name}: no example")
    assert total > 150
    assert not missing, "\n".join(missing)


def test_guide_pages_are_the_readme_sections(site):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    titles = [line[3:].strip() for line in readme.splitlines() if line.startswith("## ")]
    assert len(titles) >= 8
    for title in titles:
        page = os.path.join(site, "guide", hooks._slug(title) + ".html")
        assert os.path.isfile(page), title
        text = re.sub(r"<[^>]+>", "", open(page, encoding="utf-8").read())
        assert title.replace("`", "") in text
    # README pictures (docs/images/, where GitHub finds them) are on the site, linked per page.
    pictures = re.findall(r"\]\(docs/images/([^)]+)\)", readme)
    assert pictures
    guide = "".join(open(os.path.join(site, "guide", hooks._slug(t) + ".html"),
                         encoding="utf-8").read() for t in titles)
    for picture in pictures:
        assert os.path.isfile(os.path.join(site, "images", picture)), picture
        assert f'src="../images/{picture}"' in guide, picture


def test_figures_page_shows_every_demo_figure_with_its_caption(site, demo_folder):
    results = json.load(open(os.path.join(demo_folder, "results.json"), encoding="utf-8"))
    page = open(os.path.join(site, "figures.html"), encoding="utf-8").read()
    figures = [f for section in results["sections"].values() for f in section]
    assert len(figures) >= 5
    for caption, path in figures:
        assert f'src="figures/{path}"' in page, path
        assert filecmp.cmp(os.path.join(site, "figures", path),
                           os.path.join(demo_folder, path), shallow=False)
        assert f"<figcaption>{html.escape(caption)}</figcaption>" in page, caption


def test_strict_build_fails_on_a_broken_reference(tmp_path):
    """The site's own plugin setup, one page that names a symbol that does not exist."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Broken\n\nSee [the wrapper][keras_residual.NoSuchName].\n", encoding="utf-8")
    config = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    config = re.sub(r"(?ms)^hooks:.*?(?=^theme:)", "", config)
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("paths: [.]", f"paths: [{ROOT}]")
    config = config.replace("docs/griffe_examples.py", os.path.join(ROOT, "docs", "griffe_examples.py"))
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    done = _mkdocs(str(tmp_path / "mkdocs.yml"), str(tmp_path / "site"), "", cwd=str(tmp_path))
    assert done.returncode != 0
    assert "keras_residual.NoSuchName" in done.stdout + done.stderr
