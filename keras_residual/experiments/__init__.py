"""The ResNet papers' own experiments, as one training loop shared by three scripts.

- He et al., "Deep Residual Learning for Image Recognition" (2015), Fig. 6:
  plain networks degrade with depth where residual networks do not
  (`examples/degradation.py`).
- He et al., "Identity Mappings in Deep Residual Networks" (2016), Tables 1
  and 2: shortcut variants and activation placements
  (`examples/identity_mappings.py`).
- Xie et al., "Aggregated Residual Transformations for Deep Neural Networks"
  (2017), Tables 2 and 3: cardinality at an equal parameter budget
  (`examples/cardinality.py`).

- Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
  Networks" (2016): every figure on a 54-block residual MLP and effective-path
  training (`ensemble.ensemble54_study`, `examples/lesion_study.py --preset
  ensemble54`), with its results schema (`ensemble.Ensemble54Results`).
- The same studies on a Transformer's residual stream, beside the published
  findings on Transformers (Lad et al. 2024; Sun et al. 2025; He et al.
  2024; Gromov et al. 2025): a pre-norm Transformer reading MNIST rows, or a
  keras-hub GPT-2 / OPT on a text (`transformer.transformer_lesion_study`,
  `transformer.keras_hub_lesion_study`, `examples/transformer_lesion.py`).

`runner` loads the data (the offline MNIST digits or CIFAR-10), trains every
variant for every seed with resume, and summarizes; `networks` builds the
compared networks from the library's builders; `published` holds the papers'
numbers; `plots` draws the figures; `arguments` holds the scripts' shared
options and presets (standard library only, so a script answers `--help`
before Keras loads).
"""

from keras_residual.experiments import (  # noqa: F401
    arguments,
    ensemble,
    networks,
    published,
    results,
    transformer,
)
from keras_residual.experiments.runner import (  # noqa: F401
    PRESETS,
    ExperimentData,
    Recipe,
    accelerator_count,
    add_common_arguments,
    format_error,
    load_data,
    markdown_table,
    prepare,
    run_variants,
    summarize,
    train_run,
    write_results,
)
