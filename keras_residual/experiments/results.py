"""The results schemas of the papers' experiments: what each script writes to `results.json`.

The scripts (`examples/degradation.py`, `examples/identity_mappings.py`,
`examples/cardinality.py`) train the variants with `runner.run_variants` and
hand the summaries to the functions here, which lay them out as the typed
dicts below, beside the papers' numbers (`published`). Notebooks, tables and
plots read these fields. The 54-block lesion study's schema is
`ensemble.Ensemble54Results`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from keras_residual.experiments import networks, published
from keras_residual.experiments.tables import FAMILIES

#: The fields of a variant's row in a table: `runner.summarize` output and the paper's error.
ROW_KEYS = ("params", "train_error", "train_error_std", "test_error", "test_error_std",
            "diverged", "curves")


class DegradationResults(TypedDict):
    """He et al. (2015), Fig. 6: per family ("plain", "residual") and depth (as str)."""

    experiment: str
    paper: str
    settings: dict
    depths: list[int]
    final_train_error: dict[str, dict[str, float]]
    final_test_error: dict[str, dict[str, float]]
    final_train_error_std: dict[str, dict[str, float]]
    final_test_error_std: dict[str, dict[str, float]]
    params: dict[str, dict[str, int]]
    curves: dict[str, dict[str, dict]]
    published_test_error: dict[str, Any]
    variants: dict[str, dict]


class IdentityMappingsResults(TypedDict, total=False):
    """He et al. (2016), Tables 1 (shortcut variants) and 2 (activation placements)."""

    experiment: str
    paper: str
    published_source: str
    depth: int
    settings: dict
    variants: dict[str, dict]
    table1: dict[str, dict]
    table2: dict[str, dict]


class CardinalityResults(TypedDict):
    """Xie et al. (2017), Table 3: one row per cardinality at an equal budget."""

    experiment: str
    paper: str
    published_source: str
    blocks_per_stage: int
    settings: dict
    table3: dict[str, dict]
    variants: dict[str, dict]


def table_row(summary: Mapping[str, Any], paper: float | None) -> dict:
    """One variant's row: its `runner.summarize` fields and the paper's test error.

    Example:
        >>> s = {k: 0.0 for k in ROW_KEYS}
        >>> table_row(s, 6.61)["published_test_error"]
        6.61
    """
    return {**{k: summary[k] for k in ROW_KEYS}, "published_test_error": paper}


def degradation_results(
    summaries: Mapping[str, dict], depths: Sequence[int], settings: dict
) -> DegradationResults:
    """results.json of the degradation experiment from `run_variants`' `{family-depth: summary}`.

    Example:
        >>> s = {k: 1.0 for k in ROW_KEYS}
        >>> r = degradation_results({"plain-8": s, "residual-8": s}, [8], {})
        >>> r["final_test_error"]
        {'plain': {'8': 1.0}, 'residual': {'8': 1.0}}
    """

    def by_family(key):
        return {f: {str(d): summaries[f"{f}-{d}"][key] for d in depths} for f in FAMILIES}

    return {
        "experiment": "degradation",
        "paper": "He et al. 2015, Deep Residual Learning for Image Recognition, Fig. 6",
        "settings": settings,
        "depths": list(depths),
        "final_train_error": by_family("train_error"),
        "final_test_error": by_family("test_error"),
        "final_train_error_std": by_family("train_error_std"),
        "final_test_error_std": by_family("test_error_std"),
        "params": by_family("params"),
        "curves": by_family("curves"),
        "published_test_error": {
            "residual": {str(d): published.RESNET_CIFAR10.get(d) for d in depths},
            "source": "He et al. 2015, Table 6 (CIFAR-10, ResNets; plain nets only in Fig. 6)",
        },
        "variants": dict(summaries),
    }


def identity_mappings_results(
    summaries: Mapping[str, dict], depth: int, settings: dict, tables: Sequence[str] = ("1", "2"),
    original: str = "original",
) -> IdentityMappingsResults:
    """results.json of the identity-mappings experiment: `table1` and/or `table2`.

    Table 2's "original" placement is Table 1's "original" run (`original`).

    Example:
        >>> s = {k: 1.0 for k in ROW_KEYS}
        >>> r = identity_mappings_results({n: s for n in networks.SHORTCUT_VARIANTS}, 8, {}, ["1"])
        >>> r["table1"]["original"]["published_test_error"]
        6.61
    """
    results: IdentityMappingsResults = {
        "experiment": "identity_mappings",
        "paper": "He et al. 2016, Identity Mappings in Deep Residual Networks, Tables 1 and 2",
        "published_source": "He et al. 2016, Tables 1 and 2: ResNet-110 on CIFAR-10 "
                            "(None: the paper's 'fail')",
        "depth": depth,
        "settings": settings,
        "variants": dict(summaries),
    }
    if "1" in tables:
        results["table1"] = {
            name: table_row(summaries[name], published.SHORTCUT_VARIANTS_RESNET110[name])
            for name in networks.SHORTCUT_VARIANTS
        }
    if "2" in tables:
        results["table2"] = {
            name: table_row(summaries[original if placement == "original" else name],
                            published.PLACEMENTS_RESNET110[name])
            for name, placement in networks.PLACEMENT_VARIANTS.items()
        }
    return results


def cardinality_variant(cardinality: int) -> str:
    """Xie et al.'s notation, "Cxd" at the 64-filter stage: 1x64d, ..., 32x4d.

    Example:
        >>> cardinality_variant(32)
        '32x4d'
    """
    return f"{cardinality}x{networks.group_width(cardinality)}d"


def cardinality_results(
    summaries: Mapping[str, dict], cardinalities: Sequence[int], blocks: int, settings: dict
) -> CardinalityResults:
    """results.json of the cardinality experiment: `table3`, one row per cardinality.

    Example:
        >>> s = {k: 1.0 for k in ROW_KEYS}
        >>> r = cardinality_results({"32x4d": s}, [32], 1, {})
        >>> r["table3"]["32x4d"]["group_width"]
        4
    """
    table = {}
    for c in cardinalities:
        name = cardinality_variant(c)
        row = table_row(summaries[name], published.CARDINALITY_RESNEXT50[c])
        table[name] = {"cardinality": c, "group_width": networks.group_width(c), **row}
    return {
        "experiment": "cardinality",
        "paper": "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks, "
                 "Tables 2 and 3",
        "published_source": "Xie et al. 2017, Table 3: ImageNet-1K top-1 error, ResNet-50 / "
                            "ResNeXt-50 at equal complexity",
        "blocks_per_stage": blocks,
        "settings": settings,
        "table3": table,
        "variants": dict(summaries),
    }
