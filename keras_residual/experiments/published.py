"""The published numbers our experiments are printed beside (test error, percent).

None stands for a run the paper reports as "fail" (it did not converge).
"""

from __future__ import annotations

#: He et al. (2015), Table 6: CIFAR-10 test error of the ResNets (option A).
#: The plain nets appear only in Fig. 6 (left): their error rises with depth,
#: above 10% at 56 layers.
RESNET_CIFAR10 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}

#: He et al. (2016), "Identity Mappings", Table 1: ResNet-110 on CIFAR-10 with
#: the shortcut variants of Fig. 2 on every unit.
SHORTCUT_VARIANTS_RESNET110 = {
    "original": 6.61,
    "constant scaling (0.5, 1)": None,
    "constant scaling (0.5, 0.5)": 12.35,
    "exclusive gating (init -6)": 8.70,
    "shortcut-only gating (init 0)": 12.86,
    "shortcut-only gating (init -6)": 6.91,
    "1x1 conv shortcut": 12.22,
    "dropout shortcut (0.5)": None,
}

#: He et al. (2016), Table 2: the activation placements of Fig. 4 on CIFAR-10.
PLACEMENTS_RESNET110 = {
    "(a) original": 6.61,
    "(b) BN after addition": 8.17,
    "(c) ReLU before addition": 7.84,
    "(d) ReLU-only pre-activation": 6.71,
    "(e) full pre-activation": 6.37,
}
PLACEMENTS_RESNET164 = {
    "(a) original": 5.93,
    "(b) BN after addition": 6.50,
    "(c) ReLU before addition": 6.14,
    "(d) ReLU-only pre-activation": 5.91,
    "(e) full pre-activation": 5.46,
}

#: Xie et al. (2017), Table 2: bottleneck width d per group that keeps a
#: conv2-stage block (256 channels in and out) at about 70k parameters.
EQUAL_BUDGET_GROUP_WIDTH = {1: 64, 2: 40, 4: 24, 8: 14, 32: 4}

#: Xie et al. (2017), Table 3: ImageNet-1K top-1 validation error (224 crop)
#: of ResNet-50 (1x64d) and ResNeXt-50 at the same complexity.
CARDINALITY_RESNEXT50 = {1: 23.9, 2: 23.0, 4: 22.6, 8: 22.3, 32: 22.2}

#: Veit et al. (2016), "Residual Networks Behave Like Ensembles of Relatively
#: Shallow Networks", on CIFAR-10 with the 54-block pre-activation ResNet-110:
#: the 95% range of path lengths (Sec. 5, Fig. 6a), the effective paths (Fig.
#: 6c) and their share of all paths, effective-path training with 23 of 54
#: blocks per mini-batch against normal training (Sec. 5, test error), and
#: the error after deleting 10 blocks (Sec. 4.2, Fig. 5a).
VEIT_2016 = {
    "blocks": 54,
    "path_range_95": "19-35",
    "effective_path_range": "5-17",
    "effective_share_of_paths": 0.0045,
    "ept_m": 23,
    "ept_error": 0.0596,
    "normal_error": 0.0610,
    "k10_error": "about 0.2",
}
