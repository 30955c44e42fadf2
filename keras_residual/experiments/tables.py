"""The experiments' tables, ours beside the papers' numbers, as markdown.

Each function takes the `results.json` of one script (`examples/degradation.py`,
`examples/identity_mappings.py`, `examples/cardinality.py`); errors are in
percent, "a ± b" is the mean and sample standard deviation over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping

from keras_residual.experiments.runner import format_error, markdown_table

FAMILIES = ("plain", "residual")


def degradation_table(results: Mapping) -> str:
    """He et al. (2015), Fig. 6 as a table, and whether the deepest net trains worse.

    Example:
        >>> one = lambda v: {"plain": {"8": v}, "residual": {"8": v}}
        >>> r = {"settings": {"seeds": [0]}, "depths": [8], "params": one(5054),
        ...      "final_train_error": one(1.0), "final_test_error": one(2.0),
        ...      "final_train_error_std": one(0.0), "final_test_error_std": one(0.0),
        ...      "published_test_error": {"residual": {"8": None}}}
        >>> print(degradation_table(r).splitlines()[2])
        | 8 | 5,054 | 1.00 | 2.00 | 1.00 | 2.00 | - |
    """
    n = len(results["settings"]["seeds"])
    rows = []
    for d in results["depths"]:
        key = str(d)
        cells = [d, f"{results['params']['residual'][key]:,}"]
        for family in FAMILIES:
            for kind in ("train", "test"):
                cells.append(format_error(results[f"final_{kind}_error"][family][key],
                                          results[f"final_{kind}_error_std"][family][key], n))
        paper = results["published_test_error"]["residual"][key]
        cells.append("-" if paper is None else f"{paper:.2f}")
        rows.append(cells)
    table = markdown_table(
        ["depth", "params", "plain train", "plain test", "ResNet train", "ResNet test",
         "ResNet test, He et al. 2015 (CIFAR-10)"], rows)
    shallow, deep = str(results["depths"][0]), str(results["depths"][-1])
    lines = [table, ""]
    for family, name in (("plain", "plain"), ("residual", "ResNet")):
        a = results["final_train_error"][family][shallow]
        b = results["final_train_error"][family][deep]
        verdict = "worse" if b > a else "not worse"
        lines.append(f"{name}-{deep} trains {verdict} than {name}-{shallow}: final training "
                     f"error {b:.2f}% vs {a:.2f}%")
    return "\n".join(lines)


def identity_tables(results: Mapping) -> str:
    """He et al. (2016), Tables 1 and 2: ours beside the paper's ResNet-110 numbers.

    Example:
        >>> row = {"params": 1, "train_error": 0.5, "train_error_std": 0.0, "test_error": 2.0,
        ...        "test_error_std": 0.0, "published_test_error": None}
        >>> r = {"settings": {"seeds": [0]}, "depth": 20, "table1": {"dropout shortcut (0.5)": row}}
        >>> print(identity_tables(r).splitlines()[3])
        | dropout shortcut (0.5) | 1 | 0.50 | 2.00 | fail |
    """
    n = len(results["settings"]["seeds"])
    depth = results["depth"]
    out = []
    for key, title in (("table1", "Table 1, shortcut variants"),
                       ("table2", "Table 2, activation placements")):
        if key not in results:
            continue
        rows = [
            [name, f"{row['params']:,}", format_error(row["train_error"], row["train_error_std"], n),
             format_error(row["test_error"], row["test_error_std"], n),
             format_error(row["published_test_error"])]
            for name, row in results[key].items()
        ]
        out += [f"He et al. 2016, {title}: our ResNet-{depth} vs the paper's ResNet-110 (CIFAR-10)",
                markdown_table(["variant", "params", "train error %", "test error %",
                                "paper test error %"], rows), ""]
    return "\n".join(out)


def cardinality_table(results: Mapping) -> str:
    """Xie et al. (2017), Table 3: ours beside the paper's ResNeXt-50 ImageNet numbers.

    Example:
        >>> row = {"cardinality": 1, "params": 100, "train_error": 0.5, "train_error_std": 0.0,
        ...        "test_error": 2.0, "test_error_std": 0.0, "published_test_error": 23.9}
        >>> r = {"settings": {"seeds": [0]}, "table3": {"1x64d": row}}
        >>> print(cardinality_table(r).splitlines()[3])
        | 1x64d | 1 | 100 | 100.0% | 0.50 | 2.00 | 23.9 |
    """
    n = len(results["settings"]["seeds"])
    base = results["table3"][next(iter(results["table3"]))]["params"]
    rows = [
        [name, row["cardinality"], f"{row['params']:,}", f"{100.0 * row['params'] / base:.1f}%",
         format_error(row["train_error"], row["train_error_std"], n),
         format_error(row["test_error"], row["test_error_std"], n),
         f"{row['published_test_error']:.1f}"]
        for name, row in results["table3"].items()
    ]
    return "\n".join([
        "Xie et al. 2017, Table 3: cardinality at an equal budget (ours: MNIST-scale ResNeXt; "
        "paper: ResNeXt-50, ImageNet-1K top-1)",
        markdown_table(["setting", "C", "params", "of first", "train error %", "test error %",
                        "paper top-1 error %"], rows),
    ])
