"""Visualization of what residual networks compute (Chu et al. 2017; Bolte 2016).

The functions here return NumPy arrays; `keras_residual.viz.plots` turns them
into matplotlib figures, and `keras_residual.viz.callbacks` writes them to
TensorBoard during training.

- `receptive_field(model, path)`: size, jump and offset of a layer's units.
- `top_activations(model, paths, data, k=9)`: the k most activating images
  per channel in one streaming pass; `crop_patches` cuts their boxes.
- `guided_backprop`, `deconvnet`, `saliency`: the gradient of one unit with
  respect to the input (Springenberg et al. 2015; Zeiler and Fergus 2014).
- `grad_cam`, `guided_grad_cam`, `GradCam`: class-discriminative heatmaps of
  any layer path (Selvaraju et al. 2017).
- `feature_visualization`, `FourierImage`: the image a channel responds to
  most, by gradient ascent in a decorrelated Fourier space under random
  transforms (Olah et al. 2017).
- `integrated_gradients`, `smoothgrad`: input attributions of a class score
  or a unit with axioms and with noise averaging (Sundararajan et al. 2017;
  Smilkov et al. 2017).
- `kernel_map`, `activation_grid`, `preactivations`, `residual_differences`:
  the images of Bolte (2016) and Chu et al. (2017), Fig. 8.
- `compare_layers`, `shared_topk`: the refinement analysis of Chu et al. (2017).
- `atlas`: all of the above as one static HTML site, stage by stage and block
  by block, with each block's single-deletion error (Veit et al. 2016).

Note that `keras_residual.viz.receptive_field`,
`keras_residual.viz.top_activations` and `keras_residual.viz.atlas` are the
functions; import their modules with
`from keras_residual.viz.receptive_field import ...`.
"""

from keras_residual.viz.atlas import Atlas, atlas
from keras_residual.viz.attribution import integrated_gradients, smoothgrad
from keras_residual.viz.callbacks import (
    FeatureImages,
    FeatureVisualizationImages,
    GradCamImages,
    TopKImages,
)
from keras_residual.viz.feature_vis import FourierImage, feature_visualization
from keras_residual.viz.gradcam import (
    GradCam,
    bilinear_resize,
    grad_cam,
    guided_grad_cam,
    shared_grad_cam,
)
from keras_residual.viz.guided import (
    UnitGradient,
    deconvnet,
    guided_backprop,
    guided_patches,
    rectified_copy,
    saliency,
    shared_unit_gradient,
)
from keras_residual.viz.images import (
    activation_grid,
    kernel_map,
    normalize,
    preactivations,
    residual_difference,
    residual_differences,
    tile,
)
from keras_residual.viz.receptive_field import ReceptiveField, receptive_field, receptive_fields
from keras_residual.viz.refinement import LayerComparison, Refinement, compare_layers, shared_topk
from keras_residual.viz.top_activations import TopK, crop_patches, top_activations

__all__ = [
    "Atlas",
    "FeatureImages",
    "FeatureVisualizationImages",
    "FourierImage",
    "GradCam",
    "GradCamImages",
    "LayerComparison",
    "ReceptiveField",
    "Refinement",
    "TopK",
    "TopKImages",
    "UnitGradient",
    "activation_grid",
    "atlas",
    "bilinear_resize",
    "compare_layers",
    "crop_patches",
    "deconvnet",
    "feature_visualization",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "guided_patches",
    "integrated_gradients",
    "kernel_map",
    "normalize",
    "preactivations",
    "receptive_field",
    "receptive_fields",
    "rectified_copy",
    "residual_difference",
    "residual_differences",
    "saliency",
    "shared_grad_cam",
    "shared_topk",
    "smoothgrad",
    "shared_unit_gradient",
    "tile",
    "top_activations",
]
