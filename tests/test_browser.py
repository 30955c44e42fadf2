"""The demo's index.html and its atlas, opened from disk in a real browser (headless Chromium).

Every page reachable from the demo's index is loaded from `file://` with every
request that is not a local file blocked and recorded; on each, every image
must have loaded (decoded, non-zero width) and every link must name a file
that exists. Chromium is Debian's `chromium` package (`.ci/run` installs it
when it is missing), driven through Playwright's Python API.
"""

import os
import shutil
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.backends(
    "tensorflow", reason="static HTML, the same whatever backend wrote it")



def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("No Chromium on PATH: `apt-get install chromium` (Debian), as .ci/run does.")


def visit_every_page(start: str, screenshots: str) -> dict[str, dict]:
    """Load `start` and every local page it links to; what each page's images and links did."""
    from playwright.sync_api import sync_playwright

    blocked, report = [], {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})

        def only_files(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_files)
        todo = [start]
        while todo:
            path = todo.pop()
            if path in report:
                continue
            page.goto("file://" + path, wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                "i.naturalWidth])")
            links = page.evaluate("Array.from(document.links).map(a => a.href)")
            report[path] = {"images": images, "links": links}
            name = os.path.relpath(path, os.path.dirname(start)).replace(os.sep, "_")
            page.screenshot(path=os.path.join(screenshots, name + ".png"), full_page=True)
            for link in links:
                target = unquote(urlparse(link).path)
                if target.endswith(".html") and os.path.isfile(target):
                    todo.append(target)
        browser.close()
    assert not blocked, f"pages asked for the network: {blocked}"
    return report


def test_demo_index_and_atlas_load_every_image_and_link_from_disk(quick_demo_folder, tmp_path):
    demo_folder = quick_demo_folder
    index = os.path.join(os.path.abspath(demo_folder), "index.html")
    report = visit_every_page(index, str(tmp_path))
    atlas = os.path.join(os.path.abspath(demo_folder), "atlas")
    pages = {os.path.relpath(p, demo_folder) for p in report}
    # The demo links the atlas; the atlas has an index, a gallery, and stage and block pages.
    assert {"index.html", "atlas/index.html", "atlas/gallery.html", "atlas/stage-1.html",
            "atlas/block-block1.html"} <= pages, sorted(pages)
    assert len([p for p in pages if p.startswith("atlas/block-")]) >= 2
    for path, seen in report.items():
        name = os.path.relpath(path, demo_folder)
        if name in ("index.html", "atlas/gallery.html") or name.startswith("atlas/block-"):
            assert seen["images"], f"{path} shows no image"
        broken = [src for src, complete, width in seen["images"] if not (complete and width > 0)]
        assert not broken, f"{path}: images that did not load: {broken}"
        for link in seen["links"]:
            parsed = urlparse(link)
            assert parsed.scheme == "file", f"{path} links off the disk: {link}"
            assert os.path.isfile(unquote(parsed.path)), f"{path}: broken link {link}"
    block = report[os.path.join(atlas, "block-block1.html")]
    assert len(block["images"]) == 2 * 4  # 4 channels in the quick demo: visualization + top-9
    assert os.path.getsize(tmp_path / "atlas_block-block1.html.png") > 10_000  # a real screenshot
