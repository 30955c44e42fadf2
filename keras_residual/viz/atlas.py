"""An atlas of a residual network: one static HTML site, stage by stage and block by block.

`atlas(model, images, out_dir)` writes pages that need no server and no
network (open `out_dir/index.html` from disk):

- `index.html`: the stages and their blocks, each block's single-deletion
  error beside the intact network's (Veit et al. 2016, Fig. 3), and links to
  every page.
- `stage-<i>.html`: Chu et al.'s (2017, Sec. 3) refinement between
  consecutive blocks of the stage: how many of a channel's top-k images the
  next block's same channel keeps, beside the chance level k^2/N and the
  overlap of two different channels (the empirical null).
- `block-<path>.html`: for each of the block's first channels, its feature
  visualization (Olah et al. 2017) and its top-k patches beside their guided
  backpropagation (Chu et al. 2017, Figs. 2-7; Springenberg et al. 2015).
- `gallery.html`: Grad-CAM of the last block for a few images of every class
  (Selvaraju et al. 2017, Fig. 1).
- `atlas.json`: every number on the pages.

Each part comes from the function of this package that computes it
(`compare_layers`, `guided_patches`, `feature_visualization`,
`single_block_deletion`, `grad_cam`); the atlas only lays them out.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_residual import graph
from keras_residual.probe import probe

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:0 12px;"
    "color:#222}nav{margin:10px 0;font-size:.95em}nav a{margin-right:14px}"
    "table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px "
    "solid #ddd;text-align:left}th{background:#f4f4f4}"
    ".px{image-rendering:pixelated}.unit{display:inline-block;margin:8px 14px 8px 0;"
    "vertical-align:top}.unit figcaption,.cam figcaption{font-size:.85em;color:#555}"
    ".cam{display:inline-block;margin:4px}.note{color:#555;font-size:.9em}"
)


@dataclasses.dataclass
class Atlas:
    """What `atlas` wrote, and the numbers on its pages.

    Attributes:
        index: str. Path of `index.html`.
        stages: list of lists of str. The block paths of each stage.
        channels: dict from path to the channels shown.
        deletion_errors: dict from path to the error with that block deleted
            (blocks that `single_block_deletion` deletes; empty for a model
            without a class output).
        intact_error: float or None. Error of the intact network.
        overlaps: list of dicts, one per consecutive pair of blocks in a stage:
            `stage`, `a`, `b`, `overlap` (mean top-k images a channel keeps),
            `chance` (k^2/N), `null` (mean overlap of two different channels),
            `per_channel` (the shown channels' overlaps).
        gallery: dict from class index to the Grad-CAM image files.
        seconds: float. Generation time.
        bytes: int. Size of everything written.

    Example:
        `atlas` returns one; by hand:

        >>> result = Atlas(index="atlas/index.html", stages=[["b1", "b2"]],
        ...                channels={"b1": [0], "b2": [0]}, deletion_errors={"b1": 0.3, "b2": 0.1},
        ...                intact_error=0.05, overlaps=[], gallery={}, seconds=1.0, bytes=1000)
        >>> max(result.deletion_errors, key=result.deletion_errors.get)  # matters most
        'b1'
    """

    index: str
    stages: list[list[str]]
    channels: dict[str, list[int]]
    deletion_errors: dict[str, float]
    intact_error: float | None
    overlaps: list[dict[str, Any]]
    gallery: dict[int, list[str]]
    seconds: float
    bytes: int


def page_name(path: str) -> str:
    """The file name of a block's page: the path with every unsafe character replaced.

    Example:
        >>> page_name("conv2_block1/branch")
        'block-conv2_block1__branch.html'
    """
    return "block-" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.replace("/", "__")) + ".html"


def _stages(shapes: Sequence[tuple]) -> list[list[int]]:
    """Indices grouped into runs of equal output shape (a shape change starts a stage)."""
    groups: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if not groups or shape != shapes[groups[-1][-1]]:
            groups.append([])
        groups[-1].append(i)
    return groups


def _channels_last(array: np.ndarray, spatial_axis: int) -> np.ndarray:
    """Move the channel axis (just before the spatial axes) of channels_first arrays to the end."""
    if keras.config.image_data_format() == "channels_first" and array.ndim > spatial_axis + 2:
        return np.moveaxis(array, spatial_axis - 1, -1)
    return array


def _shrink(patches: np.ndarray, side: int) -> np.ndarray:
    """(k, h, w, c) patches averaged over f x f pixel blocks so that h, w <= `side` (f integer).

    Deep layers' receptive fields are larger than the image (ResNet-50's conv5: 483 pixels),
    and the page shows a panel of nine in 300 pixels: full-size patches only make it slow.
    """
    factor = -(-max(patches.shape[1:3]) // side)
    if factor <= 1:
        return patches
    k, h, w = patches.shape[:3]
    h, w = h - h % factor, w - w % factor
    blocks = patches[:, :h, :w].reshape(k, h // factor, factor, w // factor, factor,
                                        *patches.shape[3:])
    return blocks.mean(axis=(2, 4))


def _save_png(path: str, image: np.ndarray) -> None:
    """An image in [0, 1], (H, W), (H, W, 1) or (H, W, 3), as a PNG file."""
    import matplotlib.image

    image = np.clip(np.asarray(image, dtype="float32"), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] != 3:
        image = image.mean(axis=-1)
    matplotlib.image.imsave(path, image, cmap="gray", vmin=0.0, vmax=1.0)


def _page(title: str, nav: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    links = "".join(f"<a href='{html.escape(href)}'>{html.escape(text)}</a>" for text, href in nav)
    return "\n".join([
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<nav>{links}</nav>",
        f"<h1>{html.escape(title)}</h1>",
        *body,
        "</body></html>",
        "",
    ])


def _img(src: str, alt: str, width: int) -> str:
    return (f"<img class='px' src='{html.escape(src)}' alt='{html.escape(alt)}' "
            f"width='{int(width)}'>")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def atlas(
    model: keras.Model,
    images: np.ndarray,
    out_dir: str,
    *,
    paths: Sequence[str] | None = None,
    channels: int = 8,
    labels: np.ndarray | None = None,
    display: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    k: int = 9,
    steps: int = 512,
    size: Sequence[int] | None = None,
    per_class: int = 4,
    value_range: tuple[float, float] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    title: str | None = None,
    progress: bool = True,
) -> Atlas:
    """Write a browsable atlas of `model`: index, stage, block and Grad-CAM pages.

    Lays out, block by block, the analyses of Chu et al. (2017) (top-k
    patches with guided backpropagation, Figs. 2-7; refinement across the
    blocks of a stage, Sec. 3), Olah et al. (2017) (feature visualization),
    Veit et al. (2016) (single-block deletion, Fig. 3) and Selvaraju et al.
    (2017) (Grad-CAM, Fig. 1). See the module docstring for the pages.

    Args:
        model: keras.Model of images. With one (N, classes) output the atlas
            includes deletion errors and the Grad-CAM gallery; with another
            output those parts are left out and the pages say so.
        images: array (N, ...) of model inputs: the data set the top-k
            patches, refinement, deletion errors and gallery come from.
        out_dir: str. Folder for the site (created; files of the same names
            are overwritten).
        paths: sequence of str or None. Layer paths to show, in network
            order; None: every top-level `Residual` block. Consecutive paths
            with the same output shape form a stage.
        channels: int. The first `channels` channels of each path. Defaults to 8.
        labels: array (N,) of int, or None: the model's own predictions, and
            the deletion "error" is then the fraction of changed predictions.
        display: array or None. Images to show (e.g. before preprocessing),
            same size as `images`; None: `images`.
        class_names: sequence of str or None. Names of the classes.
        k: int. Top-k images per channel. Defaults to 9.
        steps: int. Feature-visualization steps. Defaults to 512.
        size: (height, width) or None. Feature-visualization size; None: the
            model's input size.
        per_class: int. Grad-CAM images per class. Defaults to 4.
        value_range: (low, high) or None. Range of the feature
            visualizations; None: the range of `images`.
        batch_size: int. Batch size of the passes over `images`. Defaults to 32.
        seed: int. Seed of the feature visualizations. Defaults to 0.
        title: str or None. Title of the index; None: the model's name.
        progress: bool. Print each part as it is made. Defaults to True.

    Returns:
        Atlas.

    Example:
        A two-block network on random images (a few seconds; tests/test_atlas.py
        runs the same on every backend, against a NumPy forward pass):

        >>> import tempfile, keras, numpy as np
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        >>> x = Residual(keras.layers.Conv2D(4, 3, padding="same"), activation="relu",
        ...              name="b1")(x)
        >>> x = Residual(keras.layers.Conv2D(4, 3, padding="same"), activation="relu",
        ...              name="b2")(x)
        >>> x = keras.layers.GlobalAveragePooling2D()(x)
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(x))
        >>> images = np.random.default_rng(0).random((30, 8, 8, 1), dtype="float32")
        >>> result = atlas(model, images, tempfile.mkdtemp(), channels=2, steps=4,
        ...                progress=False)  # doctest: +SKIP
        >>> result.stages, sorted(result.deletion_errors)  # doctest: +SKIP
        ([['b1', 'b2']], ['b1', 'b2'])
        >>> round(result.overlaps[0]["chance"], 2)  # k^2 / N = 81 / 30  # doctest: +SKIP
        2.7
    """
    start = time.perf_counter()
    say = print if progress else (lambda *args, **kwargs: None)
    images = np.asarray(images, dtype="float32")
    display = images if display is None else np.asarray(display)
    if display.shape[0] != images.shape[0]:
        raise ValueError(f"`display` must hold one image per image. Received: "
                         f"{display.shape[0]} display images for {images.shape[0]} images")
    if int(channels) < 1 or int(k) < 1 or int(per_class) < 0:
        raise ValueError(f"`channels` and `k` must be positive and `per_class` non-negative. "
                         f"Received: channels={channels}, k={k}, per_class={per_class}")
    paths, shapes = _layer_shapes(model, paths, images)
    first = keras.config.image_data_format() == "channels_first"
    shown = {p: list(range(min(int(channels), s[0] if first else s[-1])))
             for p, s in zip(paths, shapes, strict=True)}
    stages = [[paths[i] for i in group] for group in _stages(shapes)]
    os.makedirs(os.path.join(out_dir, "img"), exist_ok=True)
    low, high = ((float(images.min()), float(images.max())) if value_range is None
                 else tuple(float(v) for v in value_range))
    labels, predicted, label_source = _labels(model, images, labels, batch_size)
    deletion, intact = _deletion(model, images, None if predicted is None else labels, paths,
                                 batch_size, say)
    say(f"[atlas] top-{k} images of {len(paths)} layers over {len(images)} images ...")
    topk, overlaps = _refinement(model, images, stages, shown, k, batch_size)
    from keras_residual.viz.guided import shared_unit_gradient

    guided = shared_unit_gradient(model, "guided")  # one copy, the weights copied in once
    blocks = {}
    for path, shape in zip(paths, shapes, strict=True):
        say(f"[atlas] {path}: feature visualization ({steps} steps) and top-{k} patches ...")
        blocks[path] = _block(model, guided, path, images, display, topk[path], shown[path],
                              out_dir, k=k, steps=steps, size=size, seed=seed,
                              value_range=(low, high))
        blocks[path].update(shape=list(shape), deletion_error=deletion.get(path))
    gallery = {}
    if predicted is not None and per_class:
        say(f"[atlas] Grad-CAM of {paths[-1]} per class ...")
        gallery = _gallery(model, paths[-1], images, display, labels, per_class, out_dir)
    summary = Atlas(index=os.path.join(out_dir, "index.html"), stages=stages, channels=shown,
                    deletion_errors=deletion, intact_error=intact, overlaps=overlaps,
                    gallery=gallery, seconds=0.0, bytes=0)
    site = _Site(out_dir, model.name, title or f"Atlas of {model.name}", summary, blocks, k,
                 len(images), steps, label_source, paths[-1], predicted, class_names)
    site.write()
    summary.seconds = time.perf_counter() - start
    record = dataclasses.asdict(summary)
    record.update(model=model.name, images=len(images), k=k, steps=steps, labels=label_source,
                  grad_cam_path=paths[-1], blocks=blocks)
    record.pop("bytes")
    with open(os.path.join(out_dir, "atlas.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    summary.bytes = sum(os.path.getsize(os.path.join(root, name))
                        for root, _, names in os.walk(out_dir) for name in names)
    say(f"[atlas] wrote {summary.index} ({summary.seconds:.0f} s, {summary.bytes / 1e6:.1f} MB)")
    return summary


def _layer_shapes(model: keras.Model, paths: Sequence[str] | None,
                  images: np.ndarray) -> tuple[list[str], list[tuple]]:
    """The atlas's paths (top-level blocks by default) and their output shapes, checked."""
    if paths is None:
        paths = [block.name for block in graph.blocks(model)]
        if not paths:
            raise ValueError(f"Model {model.name!r} has no top-level Residual blocks; pass "
                             "`paths` (layer paths, see keras_residual.probe) to show.")
    paths = list(dict.fromkeys(paths))
    shapes = [tuple(t.shape[1:]) for t in probe(model, paths).outputs]
    bad = [p for p, s in zip(paths, shapes, strict=True) if len(s) != len(images.shape) - 1]
    if bad:
        raise ValueError(f"Atlas paths must have the spatial axes of the input images "
                         f"{images.shape[1:]}. Received paths without them: {bad}")
    return paths, shapes


def _labels(model: keras.Model, images: np.ndarray, labels: Any,
            batch_size: int) -> tuple[Any, np.ndarray | None, str]:
    """`(labels, predicted, source)`: the given labels, checked, or the model's predictions.

    `predicted` is None for a model without one (N, classes) output.
    """
    output_shape = tuple(model.outputs[0].shape[1:]) if len(model.outputs) == 1 else ()
    predicted = None
    if len(output_shape) == 1:
        scores = model.predict(images, batch_size=batch_size, verbose=0)
        predicted = np.argmax(np.asarray(scores), axis=-1)
    if labels is None:
        return predicted, predicted, "the model's predictions"
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"`labels` must hold one label per image. Received: {len(labels)} "
                         f"labels for {len(images)} images")
    if predicted is not None and not 0 <= labels.min() <= labels.max() < output_shape[0]:
        raise ValueError(f"`labels` must be class indices of the model's {output_shape[0]} "
                         f"outputs. Received labels from {labels.min()} to {labels.max()}")
    return labels, predicted, "given labels"


def _deletion(model: keras.Model, images: np.ndarray, labels: Any, paths: list[str],
              batch_size: int, say) -> tuple[dict[str, float], float | None]:
    """Error with each shown block deleted, and the intact error (Veit et al. 2016, Fig. 3)."""
    from keras_residual.lesion.deletion import lesion_units, single_block_deletion

    if labels is None or not {unit.name for unit in lesion_units(model)} & set(paths):
        return {}, None
    say("[atlas] single-block deletion ...")
    result = single_block_deletion(model, (images, labels), batch_size=batch_size,
                                   progress=False)
    errors = {str(n): float(e) for n, e in zip(result.names, result.errors, strict=True)
              if str(n) in paths}
    return errors, float(result.intact_error)


def _refinement(model: keras.Model, images: np.ndarray, stages: list[list[str]],
                shown: dict[str, list[int]], k: int, batch_size: int) -> tuple[dict, list]:
    """The top-k of every path and Chu et al.'s (2017) overlaps within stages, in one pass."""
    from keras_residual.viz.refinement import compare_layers
    from keras_residual.viz.top_activations import top_activations

    paths = [p for stage in stages for p in stage]
    pairs = [(a, b) for stage in stages for a, b in zip(stage[:-1], stage[1:], strict=True)]
    if not pairs:
        return top_activations(model, paths, images, k=k, batch_size=batch_size,
                               progress=False), []
    refinement = compare_layers(model, paths, images, k=k, pairs=pairs, batch_size=batch_size,
                                progress=False)
    overlaps = []
    for comparison in refinement.comparisons:
        same = comparison.same_channel_overlap()
        overlaps.append({
            "stage": next(i for i, s in enumerate(stages, 1) if comparison.path_b in s),
            "a": comparison.path_a, "b": comparison.path_b, "overlap": float(same.mean()),
            "chance": float(comparison.chance_overlap()),
            "null": float(comparison.null_overlap()),
            "per_channel": [int(v) for v in same[shown[comparison.path_b]]],
        })
    return refinement.topk, overlaps


def _block(model: keras.Model, guided: Any, path: str, images: np.ndarray, display: np.ndarray,
           top: Any, channels: list[int], out_dir: str, *, k: int, steps: int, size: Any,
           seed: int, value_range: tuple[float, float]) -> dict[str, Any]:
    """One block's images (feature visualization, top-k panel per channel) and their record.

    `guided` is the model's guided-backprop `UnitGradient`.
    """
    from keras_residual.viz.feature_vis import feature_visualization
    from keras_residual.viz.guided import guided_patches
    from keras_residual.viz.plots import _unit_panel
    from keras_residual.viz.receptive_field import receptive_field

    spatial_axis = 1 + int(keras.config.image_data_format() == "channels_first")
    field = receptive_field(model, path)
    patches, grads = guided_patches(guided, path, images, top, field, channels=channels,
                                    display=display)
    vis = _channels_last(feature_visualization(model, path, channels, steps=steps, size=size,
                                               seed=seed, value_range=value_range), spatial_axis)
    low, high = value_range
    slug = page_name(path)[len("block-"):-len(".html")]
    units = []
    for row, channel in enumerate(channels):
        fv_file, top_file = f"img/{slug}-c{channel}-fv.png", f"img/{slug}-c{channel}-top{k}.png"
        _save_png(os.path.join(out_dir, fv_file), (vis[row] - low) / max(high - low, 1e-12))
        panel = _unit_panel(
            _shrink(_channels_last(patches[row], 1 + spatial_axis).astype("float32"), 112),
            _shrink(_channels_last(grads[row], 1 + spatial_axis), 112))
        _save_png(os.path.join(out_dir, top_file), panel)
        units.append({"channel": channel, "feature_visualization": fv_file, "top": top_file,
                      "top_values": [float(v) for v in top.values[channel]],
                      "top_images": [int(i) for i in top.indices[channel]]})
    return {"receptive_field": list(field.size), "units": units}


def _gallery(model: keras.Model, path: str, images: np.ndarray, display: np.ndarray,
             labels: np.ndarray, per_class: int, out_dir: str) -> dict[int, list[str]]:
    """Grad-CAM overlays of the first `per_class` images of each class (Selvaraju et al. 2017)."""
    from keras_residual.viz.gradcam import grad_cam
    from keras_residual.viz.plots import heatmap_overlay

    shown = _channels_last(display, 1 + int(keras.config.image_data_format() == "channels_first"))
    gallery = {}
    for c in np.unique(labels):
        chosen = np.flatnonzero(labels == c)[:per_class]
        files = []
        for index, heat in zip(chosen, grad_cam(model, path, int(c), images[chosen]), strict=True):
            files.append(f"img/gradcam-class{int(c)}-{int(index)}.png")
            _save_png(os.path.join(out_dir, files[-1]), heatmap_overlay(shown[index], heat))
        gallery[int(c)] = files
    return gallery


@dataclasses.dataclass
class _Site:
    """What the pages of `atlas` show; `write()` writes them."""

    out_dir: str
    model_name: str
    title: str
    summary: Atlas
    blocks: dict[str, dict[str, Any]]
    k: int
    n_images: int
    steps: int
    label_source: str
    cam_path: str
    predicted: np.ndarray | None
    class_names: Sequence[str] | None

    def write(self) -> None:
        """The index, every stage and block page, and the gallery."""
        self._index()
        for number, stage in enumerate(self.summary.stages, 1):
            self._stage(number, stage)
        paths = [p for stage in self.summary.stages for p in stage]
        for i, path in enumerate(paths):
            self._block(path, paths[i - 1] if i else None,
                        paths[i + 1] if i + 1 < len(paths) else None)
        if self.summary.gallery:
            self._gallery()

    @property
    def home(self) -> list[tuple[str, str]]:
        return [("Index", "index.html")] + (
            [("Grad-CAM gallery", "gallery.html")] if self.summary.gallery else [])

    @property
    def what(self) -> str:
        return "error" if self.label_source == "given labels" else "changed predictions"

    def class_name(self, c: int) -> str:
        names = self.class_names
        return str(names[c]) if names is not None and c < len(names) else str(c)

    def stage_of(self, path: str) -> int:
        return next(i for i, stage in enumerate(self.summary.stages, 1) if path in stage)

    def _file(self, name: str, title: str, nav: Sequence[tuple[str, str]],
              body: Sequence[str]) -> None:
        with open(os.path.join(self.out_dir, name), "w", encoding="utf-8") as f:
            f.write(_page(title, nav, body))

    def _index(self) -> None:
        esc = html.escape
        rows = [
            f"<tr><td><a href='stage-{self.stage_of(p)}.html'>stage {self.stage_of(p)}</a></td>"
            f"<td><a href='{esc(page_name(p))}'>{esc(p)}</a></td>"
            f"<td>{esc(' x '.join(str(s) for s in self.blocks[p]['shape']))}</td>"
            f"<td>{_fmt(self.summary.deletion_errors.get(p))}</td></tr>"
            for stage in self.summary.stages for p in stage]
        body = [
            f"<p>{self.n_images} images; labels: {esc(self.label_source)}. "
            f"Intact network's {self.what}: {_fmt(self.summary.intact_error)}.</p>",
            "<table><tr><th>stage</th><th>layer</th><th>output</th>"
            f"<th>{self.what} with the block deleted</th></tr>", *rows, "</table>",
            "<p class='note'>Deleting a block keeps its shortcut (Veit et al. 2016, Fig. 3). "
            "Each block page shows, per channel, the feature visualization (Olah et al. 2017) "
            f"and the top-{self.k} patches beside their guided backpropagation (Chu et al. "
            "2017, Figs. 2-7); each stage page the top-k images a channel keeps from one block "
            "to the next (Chu et al. 2017, Sec. 3).</p>",
        ]
        if self.predicted is None:
            body.append("<p class='note'>The model has no (N, classes) output: no deletion "
                        "errors and no Grad-CAM gallery.</p>")
        self._file("index.html", self.title, self.home, body)

    def _stage(self, number: int, stage: list[str]) -> None:
        esc, k = html.escape, self.k
        pairs = [o for o in self.summary.overlaps if o["stage"] == number]
        body = ["<p>Blocks: " + ", ".join(
            f"<a href='{esc(page_name(p))}'>{esc(p)}</a>" for p in stage) + "</p>"]
        if not pairs:
            body.append("<p class='note'>One block in this stage: no consecutive pair to "
                        "compare.</p>")
        else:
            body += [
                f"<table><tr><th>from</th><th>to</th><th>mean top-{k} images kept by the "
                "same channel</th><th>chance (k&sup2;/N)</th><th>two different channels"
                "</th></tr>",
                *(f"<tr><td>{esc(o['a'])}</td><td>{esc(o['b'])}</td><td>{o['overlap']:.3f}"
                  f"</td><td>{o['chance']:.3f}</td><td>{o['null']:.3f}</td></tr>"
                  for o in pairs),
                "</table>",
                "<p class='note'>Chu et al. (2017, Sec. 3): in a residual network a channel "
                "keeps many of its top images from block to block of a stage; the chance "
                f"level is k&sup2;/N = {k}&sup2;/{self.n_images} for unrelated top-{k} sets, "
                "and the last column is the overlap of two different channels of the later "
                "block.</p>",
            ]
        self._file(f"stage-{number}.html", f"Stage {number}", self.home, body)

    def _block(self, path: str, previous: str | None, following: str | None) -> None:
        esc, block, stage = html.escape, self.blocks[path], self.stage_of(path)
        nav = self.home + [(f"Stage {stage}", f"stage-{stage}.html")]
        if previous:
            nav.append((f"< {previous}", page_name(previous)))
        if following:
            nav.append((f"{following} >", page_name(following)))
        error = block["deletion_error"]
        body = [f"<p>Output {esc(' x '.join(map(str, block['shape'])))}; receptive field "
                f"{esc(' x '.join(map(str, block['receptive_field'])))} pixels. "
                + ("" if error is None else
                   f"{self.what.capitalize()} with this block deleted: {error:.4f} (intact: "
                   f"{_fmt(self.summary.intact_error)}).") + "</p>",
                f"<p class='note'>Per channel: its feature visualization ({self.steps} steps of "
                f"gradient ascent on the channel's mean, Olah et al. 2017), the {self.k} image "
                "patches that activate it most, and their guided backpropagation (Chu et al. "
                "2017).</p>"]
        for unit in block["units"]:
            c = unit["channel"]
            body.append(
                f"<figure class='unit'><figcaption>channel {c}: feature visualization | "
                f"top-{self.k} | guided backprop</figcaption>"
                + _img(unit["feature_visualization"], f"feature visualization of channel {c}",
                       128) + " "
                + _img(unit["top"], f"top-{self.k} patches of channel {c}", 300) + "</figure>")
        self._file(page_name(path), f"{path} (stage {stage})", nav, body)

    def _gallery(self) -> None:
        esc = html.escape
        body = [f"<p>Grad-CAM of {esc(self.cam_path)} for the class of each image "
                f"({esc(self.label_source)}; Selvaraju et al. 2017, Fig. 1).</p>"]
        for c, files in self.summary.gallery.items():
            body.append(f"<h2>class {esc(self.class_name(c))}</h2>")
            for f in files:
                image = int(f.rsplit("-", 1)[1][:-len(".png")])
                body.append(
                    f"<figure class='cam'>{_img(f, f'Grad-CAM, class {self.class_name(c)}', 112)}"
                    f"<figcaption>image {image}, predicted "
                    f"{esc(self.class_name(int(self.predicted[image])))}</figcaption></figure>")
        self._file("gallery.html", "Grad-CAM gallery", self.home, body)
