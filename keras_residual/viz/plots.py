"""Matplotlib figures of the visualization arrays; the only plotting module of `viz`.

Each function takes arrays from `viz.images`, `viz.top_activations` or
`viz.guided` and returns a `matplotlib.figure.Figure`. Figures are made
without pyplot, so they open no window, need no `close`, leave the user's
backend alone and render with Agg: `save_figure` writes a PNG,
`figure_to_array` gives the RGB pixels (for TensorBoard), `figure_to_png`
the PNG bytes (for `IPython.display.Image`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_residual.figures import save_figure  # noqa: F401  (re-exported)
from keras_residual.viz.images import normalize, tile


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """A gradient map for display: zero at mid-gray, the largest magnitude at 0 or 1.

    The usual rendering of guided backpropagation and deconvnet images
    (Springenberg et al. 2015, Fig. 3; Chu et al. 2017, Figs. 2-7).

    Example:
        >>> import numpy as np
        >>> gradient_image(np.array([[-2.0, 0.0, 1.0]])).tolist()
        [[0.0, 0.5, 0.75]]
    """
    gradient = np.asarray(gradient, dtype="float32")
    scale = np.abs(gradient).max()
    if scale == 0:
        return np.full_like(gradient, 0.5)
    return 0.5 + 0.5 * gradient / scale


def _show(ax, image: np.ndarray, **kwargs) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap=kwargs.pop("cmap", "gray" if image.ndim == 2 else None),
              interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def _unit_panel(patches: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """k patches in a square grid beside their k gradient images in a square grid."""
    # One scale for the k patches, so Chu et al.'s (2017) gray off-image fill stays gray;
    # gray separators stay visible against black-and-white digits.
    left = tile(normalize(patches), pad_value=0.5)
    right = tile(np.stack([gradient_image(g) for g in gradients]))
    gap = np.ones((left.shape[0], max(2, left.shape[1] // 12)) + left.shape[2:], "float32")
    return np.concatenate([left, gap, right], axis=1)


def topk_figure(
    patches: Mapping[str, np.ndarray],
    gradients: Mapping[str, np.ndarray],
    channels: Sequence[int],
    title: str | None = None,
    cell_inches: float = 2.4,
) -> Figure:
    """Chu et al.'s (2017) layout: per channel, top-k patches beside their guided-backprop images.

    One row per layer (e.g. the blocks res2a, res2b, res2c of a stage), one
    column per channel, as in Figs. 2-7 of Chu et al. (2017).

    Args:
        patches: dict from layer path to array (len(channels), k, h, w[, c])
            (`guided_patches`' first output).
        gradients: dict with the same keys, arrays of the same shapes.
        channels: sequence of int. The channel numbers, for the titles.
        title: str or None. Figure title.
        cell_inches: float. Width of one channel's panel. Defaults to 2.4.

    Returns:
        matplotlib Figure.

    Example:
        >>> import numpy as np
        >>> p = {"b1": np.random.rand(2, 9, 5, 5, 3)}
        >>> fig = topk_figure(p, {"b1": np.random.randn(2, 9, 5, 5, 3)}, [4, 7])
        >>> len(fig.axes)
        2
    """
    if set(patches) != set(gradients):
        raise ValueError(
            "`patches` and `gradients` must have the same layer paths. Received: "
            f"{sorted(patches)} and {sorted(gradients)}"
        )
    rows = list(patches)
    fig = Figure(figsize=(cell_inches * 2 * len(channels), 1.2 * cell_inches * len(rows) + 0.4))
    axes = fig.subplots(len(rows), len(channels), squeeze=False)
    for r, path in enumerate(rows):
        if len(patches[path]) != len(channels):
            raise ValueError(
                f"Layer {path!r} has panels for {len(patches[path])} channels but "
                f"`channels` lists {len(channels)}."
            )
        for c, channel in enumerate(channels):
            ax = axes[r, c]
            _show(ax, _unit_panel(patches[path][c], gradients[path][c]))
            ax.set_title(f"{path} ch {channel}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def kernel_figure(kernel_map: np.ndarray, title: str = "conv1 kernels") -> Figure:
    """A kernel pixel map (Chu et al. 2017, Fig. 8; Bolte's (2016) first-layer filters).

    Args:
        kernel_map: array (H, W[, 3]) from `viz.images.kernel_map`.
        title: str. Axes title.

    Example:
        >>> import numpy as np
        >>> kernel_figure(np.random.rand(20, 20, 3)).axes[0].get_title()
        'conv1 kernels'
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    _show(ax, kernel_map)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def activation_figure(grids: Mapping[str, np.ndarray], image: np.ndarray | None = None) -> Figure:
    """Activation grids of several layers side by side (Bolte's (2016) MNIST figure).

    Args:
        grids: dict from layer path to a grid from `viz.images.activation_grid`.
        image: array or None. The input, shown first when given.

    Example:
        >>> import numpy as np
        >>> len(activation_figure({"c1": np.random.rand(9, 9)}, np.random.rand(28, 28)).axes)
        2
    """
    panels = ([("input", np.asarray(image))] if image is not None else []) + list(grids.items())
    fig = Figure(figsize=(3.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, grid) in zip(axes[0], panels, strict=True):
        _show(ax, grid)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def difference_grid(difference: np.ndarray) -> np.ndarray:
    """One block's F(x) (h, w, c) or (c,) as a tiled image, zero at mid-gray.

    The scale is shared by all channels of the block so their sizes compare.

    Example:
        >>> import numpy as np
        >>> difference_grid(np.zeros((4, 4, 4))).shape
        (9, 9)
    """
    difference = np.asarray(difference, dtype="float32")
    if difference.ndim == 1:
        return gradient_image(difference[None, :])
    maps = np.moveaxis(difference, -1, 0) if difference.ndim == 3 else difference[None]
    scale = np.abs(maps).max()
    return tile(0.5 + 0.5 * maps / scale if scale else np.full_like(maps, 0.5), pad_value=1.0)


def residual_difference_figure(
    differences: Mapping[str, np.ndarray], image: np.ndarray | None = None
) -> Figure:
    """What each residual block adds, F(x), on one input; zero is gray.

    Args:
        differences: dict from block path to array, from
            `viz.images.residual_differences`.
        image: array or None. The input, shown first when given.

    Example:
        >>> import numpy as np
        >>> len(residual_difference_figure({"b1": np.random.randn(6, 6, 4)}).axes)
        1
    """
    panels = {name: difference_grid(d) for name, d in differences.items()}
    fig = activation_figure(panels, image)
    for ax in fig.axes[1 if image is not None else 0 :]:
        ax.set_title(f"F(x) at {ax.get_title()}", fontsize=9)
    return fig


def heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.5,
    cmap: str = "jet",
    vmax: float | None = None,
) -> np.ndarray:
    """A heatmap blended over an image, as RGB pixels in [0, 1] (H, W, 3).

    The rendering of Grad-CAM in Selvaraju et al. 2017, Fig. 1(c, i): the
    image min-max scaled (gray images repeated to RGB), the heatmap resized
    to it with `bilinear_resize`, mapped through `cmap` on [0, vmax] and mixed
    in with weight `alpha`.

    Args:
        image: array (H, W) or (H, W, C), channels last; C other than 3 is
            shown as the mean over channels.
        heatmap: array (h, w), e.g. one map of `viz.gradcam.grad_cam`.
        alpha: float. Weight of the heatmap colours. Defaults to 0.5.
        cmap: str. Matplotlib colormap. Defaults to "jet".
        vmax: float or None. Heat that gets the top colour; None: the
            heatmap's maximum.

    Example:
        >>> import numpy as np
        >>> heatmap_overlay(np.zeros((8, 8)), np.ones((2, 2)), alpha=1.0, cmap="gray")[0, 0].tolist()
        [1.0, 1.0, 1.0]
    """
    import matplotlib

    from keras_residual.viz.gradcam import bilinear_resize

    base = normalize(image)
    if base.ndim == 3 and base.shape[-1] != 3:
        base = base.mean(axis=-1)  # gray, or the mean of channels that are not RGB
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=-1)
    heat = bilinear_resize(np.asarray(heatmap, dtype="float32")[None], base.shape[:2])[0]
    top = float(heat.max()) if vmax is None else float(vmax)
    colours = matplotlib.colormaps[cmap](np.clip(heat / top, 0, 1) if top > 0 else heat * 0)
    return ((1 - alpha) * base + alpha * colours[..., :3]).astype("float32")


def gradcam_figure(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    guided: np.ndarray | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    cell_inches: float = 2.6,
) -> Figure:
    """Grad-CAM heatmaps over their images with a colour bar each; guided images below.

    The layout of Selvaraju et al. 2017, Fig. 1: per image, the Grad-CAM map
    over the image (c, i) and, when given, Guided Grad-CAM (d, j) shown with
    zero at mid-gray. Each colour bar gives that map's own scale (Grad-CAM
    values are not normalized).

    Args:
        images: array (N, H, W[, C]), channels last (for display).
        heatmaps: array (N, h, w) from `viz.gradcam.grad_cam`.
        titles: sequence of N str or None. Panel titles (e.g. the class).
        guided: array (N, H, W[, C]) or None. `viz.gradcam.guided_grad_cam`
            output (channels last), shown in a second row.
        alpha: float. Heatmap weight in the overlay. Defaults to 0.5.
        cmap: str. Colormap of the heat and its colour bar. Defaults to "jet".
        cell_inches: float. Width of one panel. Defaults to 2.6.

    Returns:
        matplotlib Figure.

    Example:
        >>> import numpy as np
        >>> fig = gradcam_figure(np.random.rand(2, 8, 8), np.random.rand(2, 4, 4), ["3", "5"])
        >>> len(fig.axes)  # two panels, two colour bars
        4
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    images, heatmaps = np.asarray(images), np.asarray(heatmaps, dtype="float32")
    if len(images) != len(heatmaps) or (titles is not None and len(titles) != len(images)):
        raise ValueError(
            "`images`, `heatmaps` and `titles` need one entry per image. Received: "
            f"{len(images)} images, {len(heatmaps)} heatmaps, "
            f"{None if titles is None else len(titles)} titles"
        )
    rows = 1 if guided is None else 2
    fig = Figure(figsize=(cell_inches * len(images), cell_inches * rows * 0.9 + 0.4),
                 layout="constrained")
    axes = fig.subplots(rows, len(images), squeeze=False)
    for n, (image, heat) in enumerate(zip(images, heatmaps, strict=True)):
        top = float(heat.max()) or 1.0
        _show(axes[0, n], heatmap_overlay(image, heat, alpha, cmap, vmax=top))
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, top), cmap), ax=axes[0, n],
                           fraction=0.046)
        bar.ax.tick_params(labelsize=6)
        axes[0, n].set_title("Grad-CAM" if titles is None else titles[n], fontsize=8)
        if guided is not None:
            _show(axes[1, n], gradient_image(guided[n]), vmin=0.0, vmax=1.0)  # 0 at mid-gray
            axes[1, n].set_title("Guided Grad-CAM", fontsize=8)
    return fig


def attribution_figure(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    titles: Sequence[str] | None = None,
    cell_inches: float = 2.0,
) -> Figure:
    """Each image beside its attribution maps, one row per image, red positive and blue negative.

    For `viz.integrated_gradients` (Sundararajan et al. 2017) and
    `viz.smoothgrad` (Smilkov et al. 2017; their Fig. 1 shows the maps beside
    each image). A map is summed over channels and drawn on a symmetric scale,
    `[-m, m]` with `m` its largest absolute value in that image, so white is zero.

    Args:
        images: array (N, H, W[, C]), channels last (for display).
        maps: `{column title: array shaped like images}`.
        titles: sequence of N str or None. Row labels (e.g. the class).
        cell_inches: float. Width of one panel. Defaults to 2.0.

    Returns:
        matplotlib Figure with N rows and 1 + len(maps) columns.

    Example:
        >>> import numpy as np
        >>> x = np.random.rand(2, 8, 8, 1)
        >>> fig = attribution_figure(x, {"IG": x - 0.5, "SmoothGrad": 0.5 - x})
        >>> len(fig.axes)
        6
    """
    images = np.asarray(images)
    columns = {name: np.asarray(m, dtype="float32") for name, m in maps.items()}
    wrong = {name: m.shape for name, m in columns.items() if m.shape[:1] != images.shape[:1]}
    if wrong or (titles is not None and len(titles) != len(images)):
        raise ValueError(
            "Every map and `titles` need one entry per image. Received: "
            f"{len(images)} images, maps shaped {wrong or 'as the images'}, "
            f"{None if titles is None else len(titles)} titles"
        )
    fig = Figure(figsize=(cell_inches * (1 + len(columns)), cell_inches * len(images)),
                 layout="constrained")
    axes = fig.subplots(len(images), 1 + len(columns), squeeze=False)
    for n, image in enumerate(images):
        _show(axes[n, 0], image)
        axes[n, 0].set_title("image" if titles is None else titles[n], fontsize=8)
        for k, (name, m) in enumerate(columns.items(), start=1):
            heat = m[n].sum(axis=-1) if m[n].ndim == 3 else m[n]
            top = float(np.abs(heat).max()) or 1.0
            axes[n, k].imshow(heat, cmap="bwr", vmin=-top, vmax=top)
            axes[n, k].set_axis_off()
            axes[n, k].set_title(name, fontsize=8)
    return fig


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, e.g. for `IPython.display.Image(figure_to_png(fig))`.

    Example:
        >>> import numpy as np
        >>> figure_to_png(kernel_figure(np.zeros((4, 4))))[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_to_array(fig: Figure) -> np.ndarray:
    """The figure's pixels as uint8 RGB (H, W, 3), e.g. for `tf.summary.image`.

    Example:
        >>> import numpy as np
        >>> figure_to_array(kernel_figure(np.zeros((4, 4)))).shape[-1]
        3
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
